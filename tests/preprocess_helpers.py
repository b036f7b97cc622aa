"""Synthetic datasets for the preprocessing tests (tests/test_preprocess*.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf


def voice(seconds: float, sr: int = 44100, f0: float = 220.0, seed: int = 0, peak: float = 0.5,
          pad: float = 0.0) -> np.ndarray:
    """A voice-like clip: harmonics of a vibrato tone, a slow envelope, light noise; ``pad`` s of silence each side."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    inst_f0 = f0 * (1 + 0.02 * np.sin(2 * np.pi * 5.0 * t))
    phase = 2 * np.pi * np.cumsum(inst_f0) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.05) if n else t
    y = y * env + 0.01 * rng.standard_normal(n)
    y = y / max(np.abs(y).max(), 1e-9) * peak
    if pad:
        z = np.zeros(int(pad * sr))
        y = np.concatenate([z, y, z])
    return y.astype(np.float32)


def write(path: str | os.PathLike, y: np.ndarray, sr: int, subtype: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, subtype=subtype)
    return path


def make_raw_dataset(root: Path, *, speakers=("alice", "bob"), clips: int = 4, seconds: float = 0.8,
                     sr: int = 48000) -> Path:
    """Two speakers of stereo 48 kHz clips in mixed formats (wav, flac, ogg), silence padded."""
    formats = ["wav", "flac", "ogg", "wav"]
    for s, spk in enumerate(speakers):
        for i in range(clips):
            y = voice(seconds, sr, f0=150.0 + 40 * s + 15 * i, seed=10 * s + i, pad=0.15)
            stereo = np.stack([y, 0.8 * y], axis=1)
            write(root / spk / f"{spk}_{i:02d}.{formats[i % len(formats)]}", stereo, sr)
    return root


def make_bad_dataset(root: Path, sr: int = 44100) -> dict[str, set[str]]:
    """A raw dataset holding everything users really have; returns expected names per outcome.

    ``good`` speaker: 4 clean clips + a non-ASCII / space name + a 0.1 s clip + a long clip +
    junk (.DS_Store, notes.txt, a text file named .wav, a 0-byte wav, a truncated wav, a silent
    clip). ``other``: 3 clean clips. ``empty``: a folder with no audio.
    """
    good, other = root / "good", root / "other"
    for i in range(4):
        write(good / f"g{i}.wav", voice(0.7, sr, f0=180 + 20 * i, seed=i), sr, "PCM_16")
    for i in range(3):
        write(other / f"o{i}.wav", voice(0.7, sr, f0=120 + 20 * i, seed=50 + i), sr, "PCM_16")
    write(good / "名前 with space.wav", voice(0.7, sr, f0=250, seed=9), sr, "PCM_16")
    write(good / "tiny.wav", voice(0.1, sr, f0=200, seed=7), sr, "PCM_16")
    write(good / "long.wav", voice(20.0, sr, f0=210, seed=8), sr, "PCM_16")
    write(good / "silent.wav", np.zeros(sr, dtype=np.float32), sr, "PCM_16")
    (good / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (good / "notes.txt").write_text("recorded on tuesday\n")
    (good / "fake.wav").write_text("this is not audio\n")
    (good / "zero.wav").write_bytes(b"")
    full = write(good / "cut.wav", voice(0.7, sr, seed=11), sr, "PCM_16").read_bytes()
    (good / "cut.wav").write_bytes(full[: len(full) // 2])
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("nothing here yet\n")
    return {
        "failed": {"fake.wav", "zero.wav", "cut.wav", "silent.wav"},
        "ignored": {".DS_Store", "notes.txt", "empty"},
        "done": {"g0.wav", "g1.wav", "g2.wav", "g3.wav", "o0.wav", "o1.wav", "o2.wav", "名前 with space.wav",
                 "tiny.wav", "long.wav"},
    }
