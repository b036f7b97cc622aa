"""Fixtures for the vocoder / diffusion tests: golden paths, detrng, tiny models and datasets
written in the exact 4.1 file formats."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).parent / "data"
VOCODER_DIR = DATA / "vocoder"      # golden random NSF-HiFiGAN (64 channels) + its outputs
DIFFUSION_DIR = DATA / "diffusion"  # golden tiny Unit2Mel + shallow-diffusion outputs
GOLDEN_DIR = DATA / "golden"        # shared golden inputs (clip, pm f0)
SR, HOP = 44100, 512


def close(a, b, rel: float, max_abs: float) -> None:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    rel_l2 = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)
    assert rel_l2 <= rel, f"relative L2 {rel_l2:.3e} > {rel}"
    assert np.abs(a - b).max() <= max_abs, f"max abs {np.abs(a - b).max():.3e} > {max_abs}"


@contextlib.contextmanager
def detrng():
    """Every random draw → the mean of its distribution (golden README, 'detrng')."""

    def _shape(args):
        return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else args

    def _kw(kw):
        return {k: v for k, v in kw.items() if k in ("dtype", "device")}

    saved = (torch.rand, torch.randn, torch.rand_like, torch.randn_like, torch.Tensor.uniform_, torch.Tensor.normal_)
    torch.rand = lambda *a, **kw: torch.full(_shape(a), 0.5, **_kw(kw))
    torch.randn = lambda *a, **kw: torch.zeros(_shape(a), **_kw(kw))
    torch.rand_like = lambda x, **kw: torch.full_like(x, 0.5)
    torch.randn_like = lambda x, **kw: torch.zeros_like(x)
    torch.Tensor.uniform_ = lambda self, a=0.0, b=1.0, **kw: self.fill_((a + b) / 2)
    torch.Tensor.normal_ = lambda self, mean=0.0, std=1.0, **kw: self.fill_(mean)
    try:
        yield
    finally:
        (torch.rand, torch.randn, torch.rand_like, torch.randn_like, torch.Tensor.uniform_,
         torch.Tensor.normal_) = saved


def golden_clip() -> torch.Tensor:
    return torch.from_numpy(np.load(GOLDEN_DIR / "clip.npy"))[None]  # [1, 131072]


# --- tiny vocoder -------------------------------------------------------------------------------
def vocoder_config(num_mels: int = 32, channels: int = 32) -> dict:
    return {
        "resblock": "1", "num_gpus": 1, "batch_size": 4, "learning_rate": 0.0002, "adam_b1": 0.8, "adam_b2": 0.99,
        "lr_decay": 0.999, "seed": 1234, "upsample_rates": [8, 8, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4, 4],
        "upsample_initial_channel": channels, "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "discriminator_periods": [3, 5, 7, 11, 17],
        "segment_size": 16384, "num_mels": num_mels, "num_freq": 1025, "n_fft": 2048, "hop_size": HOP, "win_size": 2048,
        "sampling_rate": SR, "fmin": 40, "fmax": 16000, "fmax_for_loss": None, "num_workers": 1,
    }


def write_tiny_vocoder(directory: Path, *, num_mels: int = 32, channels: int = 32, seed: int = 0) -> Path:
    """``directory/model`` ({"generator": legacy weight-norm state dict}) + ``config.json``."""
    from vdecoder.nsf_hifigan.loader import load_config
    from vdecoder.nsf_hifigan.models import Generator

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(vocoder_config(num_mels, channels), indent=2))
    torch.manual_seed(seed)
    gen = Generator(load_config(directory / "model"))
    torch.save({"generator": gen.state_dict()}, directory / "model")
    return directory / "model"


# --- tiny diffusion dataset -----------------------------------------------------------------------
def _voice(seconds: float, f0_hz: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = f0_hz * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.3 + 0.01 * rng.standard_normal(n)
    frames = n // HOP
    return y.astype(np.float32), f0[::HOP][:frames].astype(np.float64)


def write_dataset(root: Path, vocoder_path: Path, *, speakers=("spk0", "spk1"), per_speaker: int = 3,
                  seconds: float = 1.5, units_dim: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """Synthetic 44.1 kHz wavs + every ``--use_diff`` artifact in 4.1's formats + filelists.

    Returns (train list, val list); the last file of each speaker goes to validation.
    """
    import soundfile as sf

    from modules.volume import VolumeExtractor
    from preprocessing import features as art
    from vdecoder.vocoder import Vocoder

    rng = np.random.default_rng(seed)
    voc = Vocoder("nsf-hifigan", vocoder_path, device="cpu")
    vol_ex = VolumeExtractor(HOP)
    train, val = [], []
    for s_idx, spk in enumerate(speakers):
        d = root / spk
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_speaker):
            wav = d / f"{i:03d}.wav"
            y, f0 = _voice(seconds, 140.0 + 60 * s_idx + 10 * i, rng)
            sf.write(str(wav), y, SR, subtype="PCM_16")
            y = sf.read(str(wav), dtype="float32")[0]
            audio = torch.from_numpy(y)[None]
            n_frames = len(y) // HOP
            art.save_f0(art.f0_path(wav), f0[:n_frames], np.ones(n_frames))
            art.save_float_array(art.vol_path(wav), vol_ex.extract(audio))
            art.save_float_array(art.mel_path(wav), voc.extract(audio, SR)[0])
            keyshift = float(rng.uniform(-5, 5))
            scaled = audio * 10 ** float(rng.uniform(-1, 0))
            art.save_aug_mel(art.aug_mel_path(wav), voc.stft.get_mel(scaled, keyshift=keyshift)[0].T.numpy(), keyshift)
            art.save_float_array(art.aug_vol_path(wav), vol_ex.extract(scaled))
            n_units = int(round(len(y) * 16000 / SR)) // 320
            units = torch.from_numpy(rng.standard_normal((1, units_dim, n_units)).astype(np.float32))
            art.save_soft(art.soft_path(wav), units)
            (val if i == per_speaker - 1 else train).append(str(wav))
    lists = root / "filelists"
    lists.mkdir(exist_ok=True)
    (lists / "train.txt").write_text("\n".join(train) + "\n")
    (lists / "val.txt").write_text("\n".join(val) + "\n")
    return lists / "train.txt", lists / "val.txt"


def write_config(path: Path, *, train_list: Path, val_list: Path, vocoder_path: Path, expdir: Path,
                 units_dim: int = 8, **overrides) -> Path:
    """A diffusion.yaml from the 4.1 template with tiny sizes; ``overrides``: ``section__key=value`` or ``key=value``."""
    import yaml

    template = Path(__file__).parent.parent / "configs" / "diffusion_template.yaml"
    cfg = yaml.safe_load(template.read_text())
    cfg["data"].update(training_files=str(train_list), validation_files=str(val_list), encoder_out_channels=units_dim,
                       duration=0.5)
    cfg["model"].update(n_layers=2, n_chans=64, n_hidden=16, n_spk=2, k_step_max=0)
    cfg["vocoder"]["ckpt"] = str(vocoder_path)
    cfg["env"]["expdir"] = str(expdir)
    cfg["device"] = "cpu"
    cfg["spk"] = {"spk0": 0, "spk1": 1}
    cfg["train"].update(num_workers=0, batch_size=4, epochs=40, interval_log=5, interval_val=20,
                        interval_force_save=1000, lr=0.003, cache_fp16=False)
    cfg["infer"]["speedup"] = 50
    for k, v in overrides.items():
        if "__" in k:
            sec, key = k.split("__")
            cfg[sec][key] = v
        else:
            cfg[k] = v
    path.write_text(yaml.safe_dump(cfg, sort_keys=True))
    return path


@contextlib.contextmanager
def single_thread():
    """Tiny models gain nothing from threads, and on a busy CI machine OpenMP barriers cost more
    than the work; run them on one thread and restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
