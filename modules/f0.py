"""f0 helpers shared by preprocessing, training and inference (spec §5.1, §6.3).

Units: f0 in Hz per synthesizer frame; ``uv`` is 1.0 for voiced frames, 0.0 for unvoiced.
"""

from __future__ import annotations

import numpy as np
import torch

F0_BIN = 256
F0_MIN = 50.0
F0_MAX = 1100.0
F0_MEL_MIN = 1127 * np.log(1 + F0_MIN / 700)
F0_MEL_MAX = 1127 * np.log(1 + F0_MAX / 700)


def f0_to_coarse(f0: torch.Tensor) -> torch.Tensor:
    """Quantise f0 (Hz) to the 256-bin pitch-embedding index (int64), exactly as 4.1.

    f0 ≤ ~51.3 Hz (and 0) → 1; 1100 Hz → 255. Kept from 4.1 (spec §13.5) because trained
    models depend on it: f0 above ~1103.1 Hz maps to bin 0, not 255.
    """
    f0_mel = 1127 * (1 + f0 / 700).log()
    a = (F0_BIN - 2) / (F0_MEL_MAX - F0_MEL_MIN)
    b = F0_MEL_MIN * a - 1.0
    f0_mel = torch.where(f0_mel > 0, f0_mel * a - b, f0_mel)
    coarse = torch.round(f0_mel).long()
    coarse = coarse * (coarse > 0)
    coarse = coarse + ((coarse < 1) * 1)
    coarse = coarse * (coarse < F0_BIN)
    coarse = coarse + ((coarse >= F0_BIN) * (F0_BIN - 1))
    return coarse


def interpolate_f0(f0: np.ndarray, single_voiced_uses_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Fill unvoiced frames of a raw f0 track by linear interpolation (spec §5.1).

    Returns ``(f0_filled, uv)``; uv = 1.0 where ``f0 > 0``. Before the first / after the last
    voiced frame the nearest voiced value is held. With no voiced frame f0 is all zeros.
    With exactly one voiced frame the whole track takes its value; 4.1's dio/harvest/pm used
    ``f0[0]`` there instead (spec §13.25), reproduced when ``single_voiced_uses_first``.
    """
    f0 = np.asarray(f0, dtype=np.float64).reshape(-1)
    uv = (f0 > 0).astype(np.float32)
    voiced = np.nonzero(uv)[0]
    if len(voiced) == 0:
        return np.zeros_like(f0), uv
    if len(voiced) == 1:
        value = f0[0] if single_voiced_uses_first else f0[voiced[0]]
        return np.full_like(f0, value), uv
    filled = np.interp(np.arange(len(f0)), voiced, f0[voiced])
    return filled, uv


def shift_f0(f0: np.ndarray | torch.Tensor, semitones: float):
    """Transpose an f0 track by ``semitones`` (f0 · 2^(n/12))."""
    return f0 * 2 ** (semitones / 12)


def f0_to_lf0(f0: torch.Tensor) -> torch.Tensor:
    """Log-f0 used by the F0 decoder: 2595·log10(1 + f0/700) / 500."""
    return 2595.0 * torch.log10(1.0 + f0 / 700.0) / 500


def lf0_to_f0(lf0: torch.Tensor) -> torch.Tensor:
    return 700 * (torch.pow(10, lf0 * 500 / 2595) - 1)


def normalize_f0(lf0: torch.Tensor, x_mask: torch.Tensor, uv: torch.Tensor, random_scale: bool = True) -> torch.Tensor:
    """Mean-normalise log-f0 over voiced frames (4.1 ``utils.normalize_f0``).

    Args:
        lf0: ``[B, 1, T]``; x_mask: ``[B, 1, T]``; uv: ``[B, T]``.
    With ``random_scale`` (training) the result is scaled by U(0.8, 1.2) per item, drawn with
    ``Tensor.uniform_`` from the global generator exactly as 4.1 draws it.
    """
    uv_sum = torch.sum(uv, dim=1, keepdim=True)
    uv_sum[uv_sum == 0] = 9999
    means = torch.sum(lf0[:, 0, :] * uv, dim=1, keepdim=True) / uv_sum
    if random_scale:
        factor = torch.Tensor(lf0.shape[0], 1).uniform_(0.8, 1.2).to(lf0.device)
    else:
        factor = torch.ones(lf0.shape[0], 1).to(lf0.device)
    f0_norm = (lf0 - means.unsqueeze(-1)) * factor.unsqueeze(-1)
    if torch.isnan(f0_norm).any():
        raise FloatingPointError("NaN in normalised log-f0: the f0 input holds NaN or negative values")
    return f0_norm * x_mask
