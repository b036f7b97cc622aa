"""Shared fixtures of the speech-encoder tests (tests/test_encoders*.py)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data" / "encoders"

#: encoder name → golden checkpoint under tests/data/encoders/pretrain/
GOLDEN = {
    "vec768l12": "checkpoint_best_legacy_500.pt",
    "vec256l9": "checkpoint_best_legacy_500.pt",
    "cnhubertlarge": "chinese-hubert-large-fairseq-ckpt.pt",
    "whisper-ppg": "medium.pt",
    "wavlmbase+": "WavLM-Base+.pt",
    "dphubert": "DPHuBERT-sp0.75.pth",
}


def speech16k() -> torch.Tensor:
    """The golden input: float32 [32000] at 16 kHz."""
    return torch.from_numpy(np.load(DATA / "speech16k.npy"))


def rel_err(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(relative L2, max |Δ|)."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b)), float(np.abs(a - b).max())


def noise(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(n, generator=g)).float()


_TINY: dict[str, Path] = {}


def _tiny_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="svc_enc_tiny_"))
    atexit.register(shutil.rmtree, d, True)
    return d


@pytest.fixture(scope="session")
def tiny_ckpts() -> dict[str, Path]:
    """One tiny random checkpoint per encoder name, in its published format.

    Written once per test process (cached here, not per module: both encoder test files use it).
    """
    import vencoder

    if not _TINY:
        d = _tiny_dir()
        for name in vencoder.list_encoders():
            path = d / name / vencoder.ENCODERS[name].filename
            _TINY[name] = vencoder.make_random_checkpoint(name, path, size="tiny", seed=0)
    return dict(_TINY)
