"""Tiny synthetic training set-ups for tests/test_train*.py (real 4.1 file formats, tiny sizes).

Also runnable as ``torchrun ... -m tests.train_helpers -c CONFIG -m MODEL [--max_steps N]``: the
real ``train.main`` with the tiny discriminator below, recording which dataset items each rank
loaded into ``<cwd>/indices_rank<r>.json`` (used by the 2-process test).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
SR = 44100
HOP = 512
SSL_DIM = 16

# A SynthesizerTrn of a few hundred thousand parameters: fast enough to train for dozens of steps
# in a test, with every 4.1 sub-module present (F0 decoder, shared depthwise flow, NSF decoder).
TINY_MODEL = {
    "inter_channels": 16, "hidden_channels": 16, "filter_channels": 32, "n_heads": 2, "n_layers": 1,
    "kernel_size": 3, "p_dropout": 0.1, "resblock": "1", "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3, 5]], "upsample_rates": [8, 8, 8], "upsample_initial_channel": 32,
    "upsample_kernel_sizes": [16, 16, 16], "gin_channels": 16, "ssl_dim": SSL_DIM, "n_speakers": 2,
}


def tone(frames: int, f0: float, seed: int) -> np.ndarray:
    """A harmonic tone with vibrato and a little noise, ``frames · 512`` samples, peak 0.5."""
    rng = np.random.default_rng(seed)
    n = frames * HOP
    t = np.arange(n) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 6)) + 0.02 * rng.standard_normal(n)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def write_clip(wav: Path, frames: int, f0: float, seed: int, *, ssl_dim: int = SSL_DIM, vol: bool = False,
               spec: bool = True) -> None:
    """A 16-bit wav plus its preprocessing artifacts, in exactly 4.1's formats."""
    import soundfile as sf

    from modules.audio import load_audio
    from modules.mel_processing import spectrogram_torch
    from modules.volume import VolumeExtractor
    from preprocessing.features import save_f0, save_float_array, save_soft, save_spec, spec_path

    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(wav), tone(frames, f0, seed), SR, subtype="PCM_16")
    audio, _ = load_audio(wav)
    a = torch.from_numpy(audio)[None]
    t = len(audio) // HOP
    uv = np.ones(t)
    uv[:2] = 0.0
    save_f0(str(wav) + ".f0.npy", np.full(t, f0), uv)
    n_units = max(2, round(len(audio) / SR * 50))
    rng = np.random.default_rng(seed + 1000)
    units = np.cumsum(rng.standard_normal((1, ssl_dim, n_units)), axis=-1) / 3
    save_soft(str(wav) + ".soft.pt", torch.from_numpy(units.astype(np.float32)))
    if spec:
        save_spec(spec_path(wav), spectrogram_torch(a, 2048, SR, HOP, 2048, center=False)[0])
    if vol:
        save_float_array(str(wav) + ".vol.npy", VolumeExtractor(HOP).extract(a))


def make_dataset(root: Path, *, clips_per_speaker: int = 4, frames: int = 40, vol: bool = False) -> dict:
    """``root/dataset/44k/spk{0,1}/*.wav`` with artifacts + filelists; returns the paths."""
    train, val = [], []
    for s, spk in enumerate(("spk0", "spk1")):
        for i in range(clips_per_speaker + 1):
            rel = f"dataset/44k/{spk}/{spk}_{i}.wav"
            write_clip(root / rel, frames + 4 * i, 110.0 + 60 * s + 15 * i, seed=100 * s + i, vol=vol)
            (val if i == clips_per_speaker else train).append(rel)
    (root / "filelists").mkdir(parents=True, exist_ok=True)
    (root / "filelists/train.txt").write_text("\n".join(train) + "\n")
    (root / "filelists/val.txt").write_text("\n".join(val) + "\n")
    return {"train": train, "val": val}


def write_config(root: Path, name: str = "config.json", *, model: dict | None = None, **train) -> Path:
    """The tiny template with :data:`TINY_MODEL`, two speakers and the given ``train`` overrides."""
    cfg = json.loads((REPO / "configs/config_tiny_template.json").read_text())
    cfg["model"].update(TINY_MODEL)
    cfg["model"].update(model or {})
    cfg["spk"] = {"spk0": 0, "spk1": 1}
    cfg["train"].update({"log_interval": 1000, "eval_interval": 1000, "batch_size": 4, "segment_size": 5120,
                         "learning_rate": 2e-3, "num_workers": 0, "keep_ckpts": 0})
    cfg["train"].update(train)
    path = root / "configs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2))
    return path


class _TinyDiscriminator(nn.Module):
    """Two weight-normed strided convs on the (optionally period-folded) waveform."""

    def __init__(self, period: int) -> None:
        super().__init__()
        from modules.modules import weight_norm

        self.period = period
        self.convs = nn.ModuleList([weight_norm(nn.Conv1d(period, 8, 15, 4, padding=7)),
                                    weight_norm(nn.Conv1d(8, 16, 15, 4, padding=7))])
        self.conv_post = weight_norm(nn.Conv1d(16, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor):
        b, _, t = x.shape
        x = x[..., : t - t % self.period].reshape(b, -1, self.period).transpose(1, 2)
        fmap = []
        for conv in self.convs:
            x = torch.nn.functional.leaky_relu(conv(x), 0.1)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1), fmap


class TinyMultiPeriodDiscriminator(nn.Module):
    """Stand-in for the 46.7 M-parameter discriminator, with its interface."""

    def __init__(self, use_spectral_norm: bool = False) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([_TinyDiscriminator(1), _TinyDiscriminator(3)])

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        rs, gs, frs, fgs = [], [], [], []
        for d in self.discriminators:
            r, fr = d(y)
            g, fg = d(y_hat)
            rs.append(r)
            gs.append(g)
            frs.append(fr)
            fgs.append(fg)
        return rs, gs, frs, fgs


def use_tiny_discriminator() -> None:
    import training.loop

    training.loop.MultiPeriodDiscriminator = TinyMultiPeriodDiscriminator


def read_scalars(log_dir: Path, tag: str) -> dict[int, float]:
    """``{step: value}`` of a TensorBoard scalar written under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


@pytest.fixture
def one_thread():
    """Train with one thread: on a busy 2-core machine two OpenMP threads per op spin-wait on each
    other and a tiny step takes seconds instead of tenths."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tiny_run(tmp_path, monkeypatch, one_thread):
    """cwd = a fresh folder with the tiny dataset + config; the tiny discriminator is in use."""
    import training.loop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training.loop, "MultiPeriodDiscriminator", TinyMultiPeriodDiscriminator)
    make_dataset(tmp_path, clips_per_speaker=2)
    return tmp_path


def run_train(*args: str) -> int:
    """``train.py`` exactly as the command line runs it (exit status)."""
    import train
    from modules.cli import run_main

    return run_main(train.main, list(args))


def _record_indices() -> None:
    """Make every ``__getitem__`` append its index to ``indices_rank<RANK>.json`` in the cwd."""
    from training.data import TextAudioSpeakerLoader

    original = TextAudioSpeakerLoader.__getitem__
    out = Path(f"indices_rank{os.environ.get('RANK', '0')}.json")

    def getitem(self, index):
        if self.source.endswith("train.txt"):  # not the validation set
            seen = json.loads(out.read_text()) if out.exists() else []
            out.write_text(json.dumps(seen + [self.audiopaths[index]]))
        return original(self, index)

    TextAudioSpeakerLoader.__getitem__ = getitem


if __name__ == "__main__":
    import sys

    import train
    from modules.cli import run_main

    use_tiny_discriminator()
    _record_indices()
    sys.exit(run_main(train.main, sys.argv[1:]))
