"""WaveNet noise predictor of the shallow-diffusion model (spec §8.3, 4.1 ``diffusion/wavenet.py``).

Parameter names are 4.1's so ``model_*.pt`` files load unchanged. Inference can precompute the
conditioning projections of all layers once per sampling run (:meth:`WaveNet.project_condition`)
because the condition does not change between denoising steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Conv1d(nn.Conv1d):
    """Conv1d with Kaiming-normal weight init (4.1's initialisation)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        nn.init.kaiming_normal_(self.weight)


class SinusoidalPosEmb(nn.Module):
    """Step embedding: ``[B]`` (integer or fractional step) → ``[B, dim]`` = [sin, cos]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half_dim = self.dim // 2
        scale = math.log(10000) / (half_dim - 1)
        freqs = torch.exp(torch.arange(half_dim, device=x.device) * -scale)
        emb = x[:, None] * freqs[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, encoder_hidden: int, residual_channels: int, dilation: int) -> None:
        super().__init__()
        self.residual_channels = residual_channels
        self.dilated_conv = nn.Conv1d(residual_channels, 2 * residual_channels, kernel_size=3, padding=dilation,
                                      dilation=dilation)
        self.diffusion_projection = nn.Linear(residual_channels, residual_channels)
        self.conditioner_projection = nn.Conv1d(encoder_hidden, 2 * residual_channels, 1)
        self.output_projection = nn.Conv1d(residual_channels, 2 * residual_channels, 1)

    def forward(self, x: torch.Tensor, conditioner: torch.Tensor, diffusion_step: torch.Tensor,
                projected: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, C, T]``, ``conditioner [B, H, T]``, ``diffusion_step [B, C]`` → (next x, skip).

        ``projected`` is ``conditioner_projection(conditioner)`` when already computed.
        """
        if projected is None:
            projected = self.conditioner_projection(conditioner)
        y = x + self.diffusion_projection(diffusion_step).unsqueeze(-1)
        y = self.dilated_conv(y) + projected
        gate, filt = torch.split(y, [self.residual_channels, self.residual_channels], dim=1)
        y = torch.sigmoid(gate) * torch.tanh(filt)
        y = self.output_projection(y)
        residual, skip = torch.split(y, [self.residual_channels, self.residual_channels], dim=1)
        return (x + residual) / math.sqrt(2.0), skip


class WaveNet(nn.Module):
    """``forward(spec [B, 1, M, T], step [B], cond [B, H, T]) → predicted noise [B, 1, M, T]``."""

    def __init__(self, in_dims: int = 128, n_layers: int = 20, n_chans: int = 384, n_hidden: int = 256) -> None:
        super().__init__()
        self.input_projection = Conv1d(in_dims, n_chans, 1)
        self.diffusion_embedding = SinusoidalPosEmb(n_chans)
        self.mlp = nn.Sequential(nn.Linear(n_chans, n_chans * 4), nn.Mish(), nn.Linear(n_chans * 4, n_chans))
        self.residual_layers = nn.ModuleList(
            [ResidualBlock(encoder_hidden=n_hidden, residual_channels=n_chans, dilation=1) for _ in range(n_layers)]
        )
        self.skip_projection = Conv1d(n_chans, n_chans, 1)
        self.output_projection = Conv1d(n_chans, in_dims, 1)
        nn.init.zeros_(self.output_projection.weight)

    def project_condition(self, cond: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's ``conditioner_projection(cond)``: ``[B, H, T]`` → n_layers × ``[B, 2C, T]``.

        Computed once per sampling run instead of once per step (the condition is fixed).
        """
        return [layer.conditioner_projection(cond) for layer in self.residual_layers]

    def forward(self, spec: torch.Tensor, diffusion_step: torch.Tensor, cond: torch.Tensor,
                projected: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = F.relu(self.input_projection(spec.squeeze(1)))
        if diffusion_step.dim() == 0:
            diffusion_step = diffusion_step.expand(spec.size(0))
        step = self.mlp(self.diffusion_embedding(diffusion_step))
        skip_sum = None
        for i, layer in enumerate(self.residual_layers):
            x, skip = layer(x, cond, step, None if projected is None else projected[i])
            skip_sum = skip if skip_sum is None else skip_sum + skip
        x = skip_sum / math.sqrt(len(self.residual_layers))
        x = F.relu(self.skip_projection(x))
        x = self.output_projection(x)
        return x[:, None, :, :]
