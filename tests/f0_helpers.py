"""Shared helpers for the F0-predictor tests: data paths and synthetic harmonic tones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "f0"
HOP, SR = 512, 44100


def harmonic_tone(f0: float, seconds: float, sr: int = SR, *, lead: float = 0.0, tail: float = 0.0,
                  amplitude: float = 0.5, n_harmonics: int = 12) -> np.ndarray:
    """A steady harmonic tone (harmonic k at amplitude 1/k, below sr/2) with silent lead/tail.

    WORLD's Harvest needs harmonics; a pure sine is not a realistic voice for any tracker.
    """
    n = int(seconds * sr)
    t = np.arange(n) / sr
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, n_harmonics + 1) if k * f0 < 0.45 * sr)
    fade = np.minimum(1.0, np.minimum(t / 0.01, (seconds - t) / 0.01))  # 10 ms ramps, no clicks
    tone = amplitude * tone * fade / np.abs(tone).max()
    return np.concatenate([np.zeros(int(lead * sr)), tone, np.zeros(int(tail * sr))]).astype(np.float32)


def cents(a: np.ndarray, b: float | np.ndarray) -> np.ndarray:
    return 1200 * np.abs(np.log2(np.maximum(a, 1e-6) / b))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))
