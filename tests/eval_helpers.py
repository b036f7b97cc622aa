"""Shared helpers for the evaluation tests: synthetic singing, shifted copies, espeak-ng speech."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tools.synth_voice import Controls, get_voice, make_controls, render

SR = 32000  # rate of the synthetic clips (a multiple of the synthesiser's 200 Hz control rate)


def sung(seconds: float = 3.0, *, voice: str = "alto", seed: int = 0, semitones: float = 0.0,
         sr: int = SR) -> np.ndarray:
    """A synthetic sung clip; ``semitones`` shifts its pitch and keeps everything else (timbre, noise)."""
    v = get_voice(voice)
    ctrl = make_controls(v, seconds, np.random.default_rng(seed))
    ctrl = Controls(ctrl.f0 * 2.0 ** (semitones / 12.0), ctrl.loudness, ctrl.formants)
    return render(v, ctrl, np.random.default_rng(seed + 1), sr)


def write(path: Path, y: np.ndarray, sr: int = SR) -> Path:
    sf.write(str(path), y, sr)
    return path


def have_speaker_weights() -> bool:
    from evaluation.speaker import resemblyzer_weights

    return resemblyzer_weights() is not None


needs_speaker_weights = pytest.mark.skipif(
    not have_speaker_weights(),
    reason="resemblyzer wheel not installed (pip install --no-deps -r requirements-nodeps.txt)")

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (apt-get install espeak-ng; packages-debian.txt)")


def espeak(path: Path, text: str, voice: str) -> Path:
    """Speak ``text`` with espeak-ng ``voice`` (e.g. ``en-us+m3``) into a wav file (22.05 kHz)."""
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path
