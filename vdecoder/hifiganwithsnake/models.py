"""Snake variant of the synthesizer's NSF-HiFiGAN decoder (4.1 ``vdecoder/hifiganwithsnake``).

Every leaky ReLU of :class:`vdecoder.hifigan.models.Generator` becomes an anti-aliased SnakeBeta
(:class:`SnakeAlias`: 2× upsample → ``x + sin²(x·e^α)/(e^β + 1e-9)`` → 2× low-pass downsample).
Its sine source keeps 4.1-Stable's uv gating and additive noise (spec §13.10).

State-dict additions: ``snakes.{i}``, ``resblocks.{r}.activations.{j}``, ``snake_post``, each
with ``act.alpha``, ``act.beta``, ``upsample.filter`` and ``downsample.lowpass.filter``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modules.commons import get_padding, init_weights
from modules.modules import remove_weight_norm, weight_norm
from vdecoder.hifigan.models import Generator as _NsfGenerator

__all__ = ["DownSample1d", "Generator", "SnakeAlias", "SnakeBeta", "SnakeResBlock1", "SnakeResBlock2",
           "UpSample1d", "kaiser_sinc_filter1d"]


def kaiser_sinc_filter1d(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass (cutoff and half width in cycles/sample) → ``[1, 1, k]``."""
    even = kernel_size % 2 == 0
    half_size = kernel_size // 2
    delta_f = 4 * half_width
    attenuation = 2.285 * (half_size - 1) * math.pi * delta_f + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    time = torch.arange(-half_size, half_size) + 0.5 if even else torch.arange(kernel_size) - half_size
    if cutoff == 0:
        filt = torch.zeros_like(time)
    else:
        filt = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
        filt /= filt.sum()  # unit DC gain
    return filt.view(1, 1, kernel_size)


class UpSample1d(nn.Module):
    """Zero-stuffing ×ratio upsampler with a Kaiser-sinc filter, replicate-padded at the edges."""

    def __init__(self, ratio: int = 2, kernel_size: int | None = None) -> None:
        super().__init__()
        self.ratio = ratio
        self.kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        self.stride = ratio
        self.pad = self.kernel_size // ratio - 1
        self.pad_left = self.pad * self.stride + (self.kernel_size - self.stride) // 2
        self.pad_right = self.pad * self.stride + (self.kernel_size - self.stride + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter1d(0.5 / ratio, 0.6 / ratio, self.kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(c, -1, -1).to(x.dtype), stride=self.stride, groups=c)
        return x[..., self.pad_left:-self.pad_right]


class LowPassFilter1d(nn.Module):
    def __init__(self, cutoff: float = 0.5, half_width: float = 0.6, stride: int = 1, kernel_size: int = 12) -> None:
        super().__init__()
        if not 0.0 <= cutoff <= 0.5:
            raise ValueError(f"cutoff must be in [0, 0.5], got {cutoff}")
        self.kernel_size = kernel_size
        even = kernel_size % 2 == 0
        self.pad_left = kernel_size // 2 - int(even)
        self.pad_right = kernel_size // 2
        self.stride = stride
        self.register_buffer("filter", kaiser_sinc_filter1d(cutoff, half_width, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(c, -1, -1).to(x.dtype), stride=self.stride, groups=c)


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, kernel_size: int | None = None) -> None:
        super().__init__()
        self.ratio = ratio
        self.kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, stride=ratio, kernel_size=self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class SnakeBeta(nn.Module):
    """``x + 1/(e^β + 1e-9) · sin²(x · e^α)`` with per-channel log-scale ``alpha``, ``beta`` (init 0)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.alpha = nn.Parameter(torch.zeros(in_features))
        self.beta = nn.Parameter(torch.zeros(in_features))
        self.no_div_by_zero = 0.000000001

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(self.alpha.unsqueeze(0).unsqueeze(-1))
        beta = torch.exp(self.beta.unsqueeze(0).unsqueeze(-1))
        return x + (1.0 / (beta + self.no_div_by_zero)) * torch.pow(torch.sin(x * alpha), 2)


class SnakeAlias(nn.Module):
    """Anti-aliased SnakeBeta: ``[B, C, T] → [B, C, T]``."""

    def __init__(self, channels: int, up_ratio: int = 2, down_ratio: int = 2, up_kernel_size: int = 12,
                 down_kernel_size: int = 12) -> None:
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = UpSample1d(up_ratio, up_kernel_size)
        self.downsample = DownSample1d(down_ratio, down_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


def _wn_conv(channels: int, kernel_size: int, dilation: int) -> nn.Conv1d:
    return weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=dilation,
                                 padding=get_padding(kernel_size, dilation)))


class SnakeResBlock1(nn.Module):
    """ResBlock1 with SnakeAlias activations (``convs1``, ``convs2``, ``activations``)."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3, 5)) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList([_wn_conv(channels, kernel_size, d) for d in dilation[:3]])
        self.convs1.apply(init_weights)
        self.convs2 = nn.ModuleList([_wn_conv(channels, kernel_size, 1) for _ in dilation[:3]])
        self.convs2.apply(init_weights)
        self.activations = nn.ModuleList([SnakeAlias(channels) for _ in range(len(self.convs1) + len(self.convs2))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations[::2], self.activations[1::2]):
            xt = c2(a2(c1(a1(x))))
            x = xt + x
        return x

    def remove_weight_norm(self) -> None:
        for conv in [*self.convs1, *self.convs2]:
            remove_weight_norm(conv)


class SnakeResBlock2(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3)) -> None:
        super().__init__()
        self.convs = nn.ModuleList([_wn_conv(channels, kernel_size, d) for d in dilation[:2]])
        self.convs.apply(init_weights)
        self.activations = nn.ModuleList([SnakeAlias(channels) for _ in range(len(self.convs))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c, a in zip(self.convs, self.activations):
            x = c(a(x)) + x
        return x

    def remove_weight_norm(self) -> None:
        for conv in self.convs:
            remove_weight_norm(conv)


SNAKE_RESBLOCKS = {"1": SnakeResBlock1, "2": SnakeResBlock2}


class Generator(_NsfGenerator):
    """NSF-HiFiGAN generator with SnakeAlias activations (same interface as the plain one)."""

    uv_noise = True
    supports_conv2d = False  # the anti-aliasing filters work on [B, C, L] only
    supports_keep = False    # and widen every stage's reach (forward(keep=) decodes whole)

    def _make_resblock(self, key: str, ch: int, k: int, d, *, stage: int) -> nn.Module:
        return SNAKE_RESBLOCKS[key](ch, k, d)

    def _build_stage_activations(self, u0: int) -> None:
        self.snakes = nn.ModuleList([SnakeAlias(u0 // (2**i)) for i in range(self.num_upsamples)])

    def _build_post_activation(self, ch: int) -> None:
        self.snake_post = SnakeAlias(ch)

    def _stage_activation(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.snakes[i](x)

    def _post_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.snake_post(x)
