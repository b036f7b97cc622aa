"""Loudness-envelope matching at inference (4.1 ``utils.change_rms``, spec §3.6)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _half_second_rms(y: np.ndarray, sr: int) -> torch.Tensor:
    from modules.audio import frame_rms

    hop = sr // 2
    return torch.from_numpy(frame_rms(y, hop * 2, hop))  # [1, n] (librosa.feature.rms's values)


def change_rms(data1: np.ndarray, sr1: int, data2: torch.Tensor, sr2: int, rate: float) -> torch.Tensor:
    """Blend the loudness envelope of ``data1`` (input, numpy ``[L1]``) into ``data2`` (output ``[L2]``).

    One RMS value per half second for each signal, both linearly interpolated to ``L2`` samples;
    ``data2 · rms1^(1 − rate) · rms2^(rate − 1)`` (rms2 floored at 1e-6). ``rate`` = 1 returns
    ``data2`` unchanged; 0 imposes the input's envelope completely. Returns a new tensor on
    ``data2``'s device.
    """
    n = data2.shape[0]
    rms1 = _half_second_rms(np.asarray(data1, dtype=np.float32), sr1)
    rms2 = _half_second_rms(data2.detach().float().cpu().numpy(), sr2)
    rms1 = F.interpolate(rms1.unsqueeze(0), size=n, mode="linear").squeeze().to(data2.device)
    rms2 = F.interpolate(rms2.unsqueeze(0), size=n, mode="linear").squeeze().to(data2.device)
    rms2 = torch.clamp(rms2, min=1e-6)
    gain = torch.pow(rms1, torch.tensor(1 - rate)) * torch.pow(rms2, torch.tensor(rate - 1))
    return data2 * gain.to(data2.dtype)
