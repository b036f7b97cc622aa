"""Tiny random-weight models for the web-UI tests (tests/test_webui*.py).

Reuses the inference tests' writers (tests/infer_helpers.py) with a 2-speaker tiny config: a
``G_0.pth`` + ``config.json`` in the real 4.1 formats and a tiny ContentVec checkpoint in a
pretrain folder (point ``SVC_PRETRAIN_DIR`` at it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from infer_helpers import model_config, voice, write_diffusion, write_generator, write_vocoder

SPEAKERS = {"alto": 0, "tenor": 1}


@dataclass
class TinyModels:
    root: Path
    pretrain: Path
    g: Path
    config: Path
    g2: Path          # same config, other weights (for mixing)


def build_tiny_models(root: Path) -> TinyModels:
    from vencoder import get_spec, make_random_checkpoint

    pretrain = root / "pretrain"
    make_random_checkpoint("vec768l12", pretrain / get_spec("vec768l12").filename, size="tiny")
    cfg = model_config(n_speakers=len(SPEAKERS))
    cfg["spk"] = dict(SPEAKERS)
    config = root / "model" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(cfg, indent=2))
    g = write_generator(root / "model" / "G_0.pth", cfg, seed=0)
    g2 = write_generator(root / "model2" / "G_0.pth", cfg, seed=7)
    return TinyModels(root, pretrain, g, config, g2)


def build_diffusion(root: Path, pretrain: Path) -> tuple[Path, Path]:
    """A tiny diffusion model + config (its vocoder written into ``pretrain/nsf_hifigan``)."""
    vocoder = write_vocoder(pretrain / "nsf_hifigan")
    return write_diffusion(root / "diffusion", vocoder)


def write_song(path: Path, seconds: float = 1.0, sr: int = 44100, stereo: bool = False) -> Path:
    """A short voice-like wav (float tone with harmonics)."""
    y = voice(seconds, sr, 220.0, seed=1)
    data = np.stack([y, 0.6 * y], axis=1) if stereo else y
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr)
    return path
