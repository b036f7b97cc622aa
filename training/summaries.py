"""TensorBoard output of training: writers, mel / f0 images (4.1 ``utils.summarize`` and plots)."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

log = logging.getLogger(__name__)


def open_writer(log_dir: str | os.PathLike) -> Any | None:
    """A ``SummaryWriter`` on ``log_dir``, or None (with a warning) when TensorBoard is unavailable."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # tensorboard not installed
        log.warning("TensorBoard logging is off (%s); install the 'tensorboard' package to get it", e)
        return None
    return SummaryWriter(log_dir=str(log_dir))


_MIN_WIDTH = 512   # pixels: short slices (20 frames) are widened so TensorBoard shows them legibly


@lru_cache(maxsize=1)
def _viridis() -> np.ndarray:
    """The 256-entry viridis colour table as uint8 ``[256, 3]``."""
    from matplotlib import colormaps

    return (colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def plot_spectrogram_to_numpy(spectrogram: np.ndarray) -> np.ndarray:
    """``[bins, frames]`` → an ``[H, W, 3]`` uint8 image: low bins at the bottom, min–max scaled,
    viridis colours, each frame widened to at least :data:`_MIN_WIDTH` pixels in total.

    Rendered directly (no figure): 4.1 drew a matplotlib figure, ~0.2 s per image.
    """
    x = np.nan_to_num(np.asarray(spectrogram, dtype=np.float32))
    lo, hi = float(x.min()), float(x.max())
    idx = ((x - lo) / (hi - lo) * 255).astype(np.uint8) if hi > lo else np.zeros(x.shape, np.uint8)
    img = _viridis()[idx[::-1]]
    rep_w = max(1, -(-_MIN_WIDTH // max(img.shape[1], 1)))
    rep_h = 2 if img.shape[0] < 256 else 1
    return np.ascontiguousarray(img.repeat(rep_h, axis=0).repeat(rep_w, axis=1))


def plot_data_to_numpy(x: np.ndarray, y: np.ndarray, height: int = 160) -> np.ndarray:
    """Two curves over frames (e.g. target and predicted log-f0) → an ``[H, W, 3]`` uint8 image:
    x in blue, y in orange on white, a common vertical scale."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float32).reshape(-1))
    y = np.nan_to_num(np.asarray(y, dtype=np.float32).reshape(-1))
    n = max(len(x), len(y), 1)
    rep = max(1, -(-_MIN_WIDTH // n))
    both = np.concatenate([x, y]) if len(x) + len(y) else np.zeros(1, np.float32)
    lo, hi = float(both.min()), float(both.max())
    scale = (height - 1) / (hi - lo) if hi > lo else 0.0
    img = np.full((height, n * rep, 3), 255, np.uint8)
    for curve, colour in ((x, (31, 119, 180)), (y, (255, 127, 14))):
        if not len(curve):
            continue
        rows = (height - 1 - np.round((curve - lo) * scale)).astype(int)
        cols = np.arange(len(curve) * rep)
        r = np.repeat(rows, rep)
        for dr in (-1, 0, 1):  # 3-pixel-wide line
            img[np.clip(r + dr, 0, height - 1), cols] = colour
    return img


def summarize(writer: Any | None, global_step: int, *, scalars: Mapping[str, float] | None = None,
              images: Mapping[str, np.ndarray] | None = None, audios: Mapping[str, Any] | None = None,
              audio_sampling_rate: int = 22050) -> None:
    """Write scalars, ``[H, W, 3]`` images and ``[1, L]`` / ``[L]`` audio clips at ``global_step``."""
    if writer is None:
        return
    for k, v in (scalars or {}).items():
        writer.add_scalar(k, float(v), global_step)
    for k, v in (images or {}).items():
        writer.add_image(k, v, global_step, dataformats="HWC")
    for k, v in (audios or {}).items():
        writer.add_audio(k, v, global_step, audio_sampling_rate)
