"""Multi-period discriminator of the SoVITS GAN (4.1 ``models.MultiPeriodDiscriminator``).

One scale discriminator plus period discriminators for periods 2, 3, 5, 7, 11 (spec §6.9).
Every conv is weight-normed (spectral-normed with ``use_spectral_norm``); state-dict names as 4.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from modules.commons import get_padding
from modules.modules import LRELU_SLOPE, weight_norm

__all__ = ["DiscriminatorP", "DiscriminatorS", "MultiPeriodDiscriminator"]


def _norm(use_spectral_norm: bool):
    return spectral_norm if use_spectral_norm else weight_norm


class DiscriminatorP(nn.Module):
    """Period discriminator: reflect-pad to a multiple of ``period``, fold to ``[B, 1, T/p, p]``,
    then 2-D convs with kernel (k, 1). ``forward(x [B, 1, L]) -> (logits [B, N], feature maps)``."""

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3, use_spectral_norm: bool = False) -> None:
        super().__init__()
        self.period = period
        self.use_spectral_norm = use_spectral_norm
        # One pass over the batch [y; ŷ] instead of two (4.1): each item is convolved on its own,
        # so the outputs are the same up to float rounding, with fewer, larger kernel calls.
        # Spectral norm advances its power iteration once per call, so with it (or with this set
        # to False) the two calls of 4.1 are kept.
        self.joint_pass = not use_spectral_norm
        norm_f = _norm(use_spectral_norm)
        pad = (get_padding(kernel_size, 1), 0)
        chans = [1, 32, 128, 512, 1024]
        convs = [norm_f(nn.Conv2d(cin, cout, (kernel_size, 1), (stride, 1), padding=pad))
                 for cin, cout in zip(chans[:-1], chans[1:])]
        convs.append(norm_f(nn.Conv2d(1024, 1024, (kernel_size, 1), 1, padding=pad)))
        self.convs = nn.ModuleList(convs)
        self.conv_post = norm_f(nn.Conv2d(1024, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor):
        fmap = []
        b, c, t = x.shape
        if t % self.period != 0:
            n_pad = self.period - (t % self.period)
            x = F.pad(x, (0, n_pad), "reflect")
            t = t + n_pad
        x = x.view(b, c, t // self.period, self.period)
        for layer in self.convs:
            x = F.leaky_relu(layer(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class DiscriminatorS(nn.Module):
    """Scale discriminator on the raw waveform (grouped strided 1-D convs)."""

    def __init__(self, use_spectral_norm: bool = False) -> None:
        super().__init__()
        norm_f = _norm(use_spectral_norm)
        self.convs = nn.ModuleList([
            norm_f(nn.Conv1d(1, 16, 15, 1, padding=7)),
            norm_f(nn.Conv1d(16, 64, 41, 4, groups=4, padding=20)),
            norm_f(nn.Conv1d(64, 256, 41, 4, groups=16, padding=20)),
            norm_f(nn.Conv1d(256, 1024, 41, 4, groups=64, padding=20)),
            norm_f(nn.Conv1d(1024, 1024, 41, 4, groups=256, padding=20)),
            norm_f(nn.Conv1d(1024, 1024, 5, 1, padding=2)),
        ])
        self.conv_post = norm_f(nn.Conv1d(1024, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor):
        fmap = []
        for layer in self.convs:
            x = F.leaky_relu(layer(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """``forward(y [B, 1, L], y_hat [B, 1, L]) -> (y_d_rs, y_d_gs, fmap_rs, fmap_gs)``, one entry
    per discriminator (scale first, then periods 2, 3, 5, 7, 11)."""

    def __init__(self, use_spectral_norm: bool = False) -> None:
        super().__init__()
        periods = [2, 3, 5, 7, 11]
        self.use_spectral_norm = use_spectral_norm
        # One pass over the batch [y; ŷ] instead of two (4.1): each item is convolved on its own,
        # so the outputs are the same up to float rounding, with fewer, larger kernel calls.
        # Spectral norm advances its power iteration once per call, so with it (or with this set
        # to False) the two calls of 4.1 are kept.
        self.joint_pass = not use_spectral_norm
        discs = [DiscriminatorS(use_spectral_norm=use_spectral_norm)]
        discs += [DiscriminatorP(p, use_spectral_norm=use_spectral_norm) for p in periods]
        self.discriminators = nn.ModuleList(discs)

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        joint = self.joint_pass and y.shape == y_hat.shape
        b = y.shape[0]
        for d in self.discriminators:
            if joint:
                out, fmap = d(torch.cat([y, y_hat]))
                y_d_r, y_d_g = out[:b], out[b:]
                fmap_r, fmap_g = [f[:b] for f in fmap], [f[b:] for f in fmap]
            else:
                y_d_r, fmap_r = d(y)
                y_d_g, fmap_g = d(y_hat)
            y_d_rs.append(y_d_r)
            y_d_gs.append(y_d_g)
            fmap_rs.append(fmap_r)
            fmap_gs.append(fmap_g)
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs
