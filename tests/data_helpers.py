"""Synthetic datasets for the dataset-preparation tests: clean speech-like clips and one planted
problem per kind of the quality report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preprocess_helpers import voice, write

SR = 44100


def speech(seconds: float, sr: int = SR, f0: float = 200.0, seed: int = 0, peak: float = 0.5,
           noise: float = 0.003) -> np.ndarray:
    """Syllables (0.15-0.4 s of voice, 0.05-0.15 s pauses, random per seed) over a broadband noise floor."""
    rng = np.random.default_rng(seed)
    y = voice(seconds, sr, f0=f0, seed=seed, peak=peak)
    env = np.zeros(len(y), np.float32)
    pos = int(0.1 * sr)
    while pos < len(y):
        n = int(rng.uniform(0.15, 0.4) * sr)
        ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.02 * sr))
        env[pos:pos + n] = ramp[: len(env) - pos]
        pos += n + int(rng.uniform(0.05, 0.15) * sr)
    return (y * env + noise * rng.standard_normal(len(y))).astype(np.float32)


def long_recording(seconds: float, sr: int = SR, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Phrases of 3-8 s of speech separated by 0.6-1.2 s of silence → (audio, phrase start samples)."""
    rng = np.random.default_rng(seed)
    parts, starts, pos = [], [], 0
    while pos < seconds * sr:
        gap = np.zeros(int(rng.uniform(0.6, 1.2) * sr), np.float32)
        phrase = speech(rng.uniform(3.0, 8.0), sr, f0=rng.uniform(150, 250), seed=int(rng.integers(1 << 30)),
                        noise=0.0)
        parts += [gap, phrase]
        starts.append(pos + len(gap))
        pos += len(gap) + len(phrase)
    return np.concatenate(parts), starts


PLANTED = {
    "upsampled16k.wav": "upsampled",
    "clipped.wav": "clipped",
    "dc.wav": "dc_offset",
    "silent.wav": "silent",
    "dup_copy.wav": "duplicate",
    "forty_s.wav": "too_long",
    "blip.wav": "too_short",
    "noise_only.wav": "no_voice",
}


def make_quality_dataset(root: Path, *, planted: bool = True) -> dict[str, str]:
    """``root/clean/`` (and ``root/bad/``) of 44.1 kHz 16-bit clips; returns planted file name → kind."""
    from modules.audio import resample

    for i in range(4):
        write(root / "clean" / f"c{i}.wav", speech(5.0 + i, f0=150 + 30 * i, seed=i), SR, "PCM_16")
    if not planted:
        return {}
    bad = root / "bad"
    write(bad / "upsampled16k.wav", resample(speech(6.0, 16000, f0=210, seed=20), 16000, SR), SR, "PCM_16")
    write(bad / "clipped.wav", np.clip(4 * speech(6.0, f0=230, seed=21), -1, 1), SR, "PCM_16")
    write(bad / "dc.wav", speech(6.0, f0=190, seed=22) + 0.1, SR, "PCM_16")
    write(bad / "silent.wav", np.zeros(5 * SR, np.float32), SR, "PCM_16")
    original = write(bad / "a_original.wav", speech(5.5, f0=170, seed=23), SR, "PCM_16")
    (bad / "dup_copy.wav").write_bytes(original.read_bytes())
    write(bad / "forty_s.wav", speech(40.0, f0=160, seed=24), SR, "PCM_16")
    write(bad / "blip.wav", speech(0.2, f0=200, seed=25), SR, "PCM_16")
    write(bad / "noise_only.wav", 0.1 * np.random.default_rng(26).standard_normal(6 * SR), SR, "PCM_16")
    return dict(PLANTED)
