"""Tiny random-weight model set for the inference tests (tests/test_infer*.py).

Everything is written in the real file formats: a SoVITS ``G_0.pth`` (4.1 checkpoint dict) and
its ``config.json`` (the tiny template made smaller still so tests run in seconds), a fairseq
ContentVec checkpoint (``vencoder.make_random_checkpoint``, 32 channels), an NSF-HiFiGAN
``model`` + ``config.json``, a diffusion ``model_0.pt`` + ``config.yaml``, a k-means file and a
feature index.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEAKERS = {"alice": 0, "bob": 1, "carol": 2}
UNIT_DIM = 32  # output width of the tiny ContentVec


def voice(seconds: float, sr: int = 44100, f0: float = 220.0, seed: int = 0, peak: float = 0.5) -> np.ndarray:
    """A voice-like tone: vibrato harmonics with 50 ms fades and light noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 5.0 * t))) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.05)
    y = y * env + 0.003 * rng.standard_normal(n)
    return (y / np.abs(y).max() * peak).astype(np.float32)


def song(sr: int = 44100) -> tuple[np.ndarray, tuple[int, int]]:
    """5.4 s of voice, 0.9 s of digital silence, 1 s of voice; returns (audio, silence [start, end))."""
    a, b = voice(5.4, sr, 220.0, 1), voice(1.0, sr, 300.0, 2)
    gap = np.zeros(int(0.9 * sr), np.float32)
    return np.concatenate([a, gap, b]), (len(a), len(a) + len(gap))


def model_config(**model_overrides) -> dict:
    """config_tiny_template.json shrunk further (2 layers, 16/32 channels, one resblock kernel)."""
    cfg = json.loads((ROOT / "configs" / "config_tiny_template.json").read_text())
    cfg["model"].update(inter_channels=16, hidden_channels=32, filter_channels=64, n_layers=2,
                        upsample_initial_channel=32, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                        gin_channels=16, ssl_dim=UNIT_DIM, n_speakers=len(SPEAKERS), speech_encoder="vec768l12")
    cfg["model"].update(model_overrides)
    cfg["spk"] = dict(SPEAKERS)
    return cfg


def write_generator(path: Path, cfg: dict, seed: int = 0) -> Path:
    """A ``G_*.pth`` for ``cfg`` with seeded random weights (flow ``post`` layers perturbed so
    the flow is not the identity)."""
    from models import SynthesizerTrn
    from modules.checkpoint import save_checkpoint
    from modules.hparams import HParams

    h = HParams(**copy.deepcopy(cfg))
    torch.manual_seed(seed)
    net = SynthesizerTrn(h.data.filter_length // 2 + 1, h.train.segment_size // h.data.hop_length, **h.model)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".post." in name or "emb_g" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(net, None, 1e-4, 1, path)
    return path


def write_vocoder(directory: Path, seed: int = 0) -> Path:
    """An NSF-HiFiGAN release folder (``model`` + ``config.json``) with 32 initial channels."""
    from vdecoder.nsf_hifigan.models import Generator, NsfHifiganConfig

    h = NsfHifiganConfig(upsample_initial_channel=32, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),))
    torch.manual_seed(seed)
    gen = Generator(h)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": gen.state_dict()}, directory / "model")
    conf = {"resblock": "1", "upsample_rates": [8, 8, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4, 4],
            "upsample_initial_channel": 32, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]],
            "num_mels": 128, "n_fft": 2048, "hop_size": 512, "win_size": 2048, "sampling_rate": 44100,
            "fmin": 40, "fmax": 16000}
    (directory / "config.json").write_text(json.dumps(conf, indent=2))
    return directory / "model"


def write_diffusion(directory: Path, vocoder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A diffusion ``model_0.pt`` + ``config.yaml`` (2 layers, 16 channels, 3 speakers)."""
    from diffusion.unit2mel import build_model

    args = yaml.safe_load((ROOT / "configs" / "diffusion_template.yaml").read_text())
    args["data"].update(encoder="vec768l12", encoder_out_channels=UNIT_DIM)
    args["model"].update(n_layers=2, n_chans=16, n_hidden=16, n_spk=len(SPEAKERS))
    args["vocoder"]["ckpt"] = str(vocoder)
    args["device"] = "cpu"
    args["spk"] = dict(SPEAKERS)
    torch.manual_seed(seed)
    model = build_model(args, 128)
    with torch.no_grad():  # the output projection is zero-initialised; make the model do something
        out = model.decoder.denoise_fn.output_projection.weight
        out.add_(0.02 * torch.randn(out.shape))
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": 0, "model": model.state_dict()}, directory / "model_0.pt")
    (directory / "config.yaml").write_text(yaml.safe_dump(args))
    return directory / "model_0.pt", directory / "config.yaml"


def write_kmeans(path: Path, n_clusters: int = 16, seed: int = 0) -> Path:
    from cluster import save_kmeans

    rng = np.random.default_rng(seed)
    save_kmeans({name: {"cluster_centers_": rng.standard_normal((n_clusters, UNIT_DIM)).astype(np.float32),
                        "n_features_in_": UNIT_DIM, "_n_threads": 4} for name in SPEAKERS}, path)
    return path


def write_index(path: Path, n: int = 400, seed: int = 0) -> Path:
    import faiss

    from cluster import write_index_file

    rng = np.random.default_rng(seed)
    indexes = {}
    for sid in SPEAKERS.values():
        x = rng.standard_normal((n, UNIT_DIM)).astype(np.float32)
        index = faiss.index_factory(UNIT_DIM, "IVF4,Flat")
        index.train(x)
        index.add(x)
        indexes[sid] = index
    write_index_file(indexes, path)
    return path


@dataclass
class ModelSet:
    root: Path
    pretrain: Path
    g: Path
    config: Path
    g_vol: Path
    config_vol: Path
    diffusion: Path
    diffusion_config: Path
    kmeans: Path
    index: Path
    vocoder: Path


def build_model_set(root: Path) -> ModelSet:
    """Write every file the inference tests need under ``root``."""
    from vencoder import make_random_checkpoint, get_spec

    pretrain = root / "pretrain"
    make_random_checkpoint("vec768l12", pretrain / get_spec("vec768l12").filename, size="tiny")
    vocoder = write_vocoder(pretrain / "nsf_hifigan")
    cfg = model_config()
    config = root / "logs" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(cfg, indent=2))
    g = write_generator(root / "logs" / "G_0.pth", cfg)
    cfg_vol = model_config(vol_embedding=True)
    config_vol = root / "logs_vol" / "config.json"
    config_vol.parent.mkdir(parents=True, exist_ok=True)
    config_vol.write_text(json.dumps(cfg_vol, indent=2))
    g_vol = write_generator(root / "logs_vol" / "G_0.pth", cfg_vol, seed=5)
    dm, dc = write_diffusion(root / "logs" / "diffusion", vocoder)
    kmeans = write_kmeans(root / "logs" / "kmeans_10000.pt")
    index = write_index(root / "logs" / "feature_and_index.pkl")
    return ModelSet(root, pretrain, g, config, g_vol, config_vol, dm, dc, kmeans, index, vocoder)


@contextmanager
def models_in_use(root: Path, build: Callable[[Path], Any] | None = None) -> Iterator[Any]:
    """Build a tiny model set under ``root`` (:func:`build_model_set`, or ``build``, e.g.
    ``webui_helpers.build_tiny_models``) and use it for the ``with`` block: ``SVC_PRETRAIN_DIR``
    points at its ``pretrain/`` and PyTorch runs one thread (tiny models: more threads only add
    overhead, and stall on a busy 2-core machine); both are restored afterwards. For module-scoped
    fixtures: ``with models_in_use(tmp_path_factory.mktemp(...)) as ms: yield ms``."""
    import pytest

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ms = (build or build_model_set)(root)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SVC_PRETRAIN_DIR", str(ms.pretrain))
            yield ms
    finally:
        torch.set_num_threads(threads)
