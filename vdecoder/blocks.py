"""Weight-normed HiFi-GAN residual blocks shared by the synthesizer decoder and the vocoder.

State-dict names follow 4.1: ``ResBlock1`` → ``convs1.{0,1,2}`` / ``convs2.{0,1,2}``,
``ResBlock2`` → ``convs.{0,1}``, each with ``bias``, ``weight_g``, ``weight_v``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modules.commons import get_padding, init_weights
from modules.modules import remove_weight_norm as _remove_wn
from modules.modules import weight_norm

LRELU_SLOPE = 0.1

__all__ = ["LRELU_SLOPE", "ResBlock1", "ResBlock2"]


def _wn_conv(channels: int, kernel_size: int, dilation: int) -> nn.Conv1d:
    return weight_norm(
        nn.Conv1d(channels, channels, kernel_size, 1, dilation=dilation, padding=get_padding(kernel_size, dilation))
    )


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs with leaky-ReLU(0.1) pre-activations and residual adds.

    ``forward(x [B, C, T]) -> [B, C, T]``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3, 5)) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList([_wn_conv(channels, kernel_size, d) for d in dilation[:3]])
        self.convs1.apply(init_weights)  # a no-op on g/v, kept because it consumes RNG draws as 4.1
        self.convs2 = nn.ModuleList([_wn_conv(channels, kernel_size, 1) for _ in dilation[:3]])
        self.convs2.apply(init_weights)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Without autograd the fresh conv outputs are updated in place (same values, less memory
        # traffic); the layout-agnostic ops also accept the [B, C, 1, L] inference layout.
        inplace = not x.requires_grad
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = F.leaky_relu(x, LRELU_SLOPE)
            if x_mask is not None:
                xt = xt * x_mask
            xt = c1(xt)
            xt = F.leaky_relu(xt, LRELU_SLOPE, inplace=inplace)
            if x_mask is not None:
                xt = xt * x_mask
            xt = c2(xt)
            x = xt.add_(x) if inplace else xt + x
        if x_mask is not None:
            x = x * x_mask
        return x

    def remove_weight_norm(self) -> None:
        for conv in [*self.convs1, *self.convs2]:
            _remove_wn(conv)

    fold = remove_weight_norm


class ResBlock2(nn.Module):
    """Two dilated convs (dilations ``dilation[:2]``) with leaky-ReLU(0.1) pre-activations.

    ``forward(x [B, C, T]) -> [B, C, T]``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3)) -> None:
        super().__init__()
        self.convs = nn.ModuleList([_wn_conv(channels, kernel_size, d) for d in dilation[:2]])
        self.convs.apply(init_weights)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor | None = None) -> torch.Tensor:
        inplace = not x.requires_grad
        for c in self.convs:
            xt = F.leaky_relu(x, LRELU_SLOPE)
            if x_mask is not None:
                xt = xt * x_mask
            xt = c(xt)
            x = xt.add_(x) if inplace else xt + x
        if x_mask is not None:
            x = x * x_mask
        return x

    def remove_weight_norm(self) -> None:
        for conv in self.convs:
            _remove_wn(conv)

    fold = remove_weight_norm
