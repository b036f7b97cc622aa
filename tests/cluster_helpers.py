"""Synthetic preprocessing artifacts for the clustering / retrieval tests.

A speaker's frames are drawn around a few well-separated "blob" centres, so a working k-means
must find them. Files are written exactly as preprocess_hubert_f0.py writes them:
``torch.save`` of float32 ``[1, C, N]`` to ``<root>/<speaker>/<name>.wav.soft.pt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DIM = 16


def blob_centres(speaker_index: int, n_blobs: int = 4, dim: int = DIM) -> np.ndarray:
    """Blob centres of a speaker: ±10 on distinct axes, shifted per speaker ([n_blobs, dim])."""
    c = np.zeros((n_blobs, dim), dtype=np.float32)
    for b in range(n_blobs):
        c[b, b % dim] = 10.0 * (1 if b % 2 == 0 else -1) + 3.0 * speaker_index
        c[b, (b + 5) % dim] += 4.0
    return c


def write_units(path: Path, frames: np.ndarray) -> None:
    """Write ``frames [N, C]`` as a 4.1 ``.soft.pt`` (float32 ``[1, C, N]``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torch.from_numpy(np.ascontiguousarray(frames.T[None], dtype=np.float32)), path)


def make_dataset(
    root: Path,
    speakers: dict[str, int] | None = None,
    *,
    files: int = 3,
    frames: int = 80,
    dim: int = DIM,
    n_blobs: int = 4,
    noise: float = 0.05,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Create ``root/<speaker>/<i>.wav.soft.pt``; returns each speaker's frames [N, C] in file order."""
    speakers = speakers or {"alice": 0, "bob": 1}
    rng = np.random.default_rng(seed)
    out = {}
    for name, sidx in speakers.items():
        centres = blob_centres(sidx, n_blobs, dim)
        parts = []
        for i in range(files):
            lab = rng.integers(0, n_blobs, size=frames)
            x = centres[lab] + noise * rng.standard_normal((frames, dim)).astype(np.float32)
            write_units(root / name / f"{i:03d}.wav.soft.pt", x)
            parts.append(x.astype(np.float32))
        out[name] = np.concatenate(parts)
    return out


def match_error(found: np.ndarray, expected: np.ndarray) -> float:
    """Largest distance from an expected centre to the nearest found centre."""
    d = np.linalg.norm(expected[:, None, :] - found[None, :, :], axis=-1)
    return float(d.min(axis=1).max())
