"""GAN and VAE losses of the synthesizer (4.1 ``modules/losses.py``, spec §6.10).

Everything is computed in float32 (tensors are cast), as 4.1 does under mixed precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["discriminator_loss", "feature_loss", "generator_loss", "kl_loss"]


def feature_loss(fmap_r: Sequence[Sequence[torch.Tensor]], fmap_g: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Feature matching: ``2 · Σ_d Σ_layer mean|real.detach() − fake|``."""
    loss = 0
    for dr, dg in zip(fmap_r, fmap_g):
        for rl, gl in zip(dr, dg):
            loss += torch.mean(torch.abs(rl.float().detach() - gl.float()))
    return loss * 2


def discriminator_loss(disc_real_outputs: Sequence[torch.Tensor], disc_generated_outputs: Sequence[torch.Tensor]):
    """LSGAN discriminator loss → ``(loss, [real losses as floats], [fake losses as floats])``."""
    loss = 0
    r_losses, g_losses = [], []
    for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
        dr = dr.float()
        dg = dg.float()
        r_loss = torch.mean((1 - dr) ** 2)
        g_loss = torch.mean(dg**2)
        loss += r_loss + g_loss
        r_losses.append(r_loss.item())
        g_losses.append(g_loss.item())
    return loss, r_losses, g_losses


def generator_loss(disc_outputs: Sequence[torch.Tensor]):
    """LSGAN generator loss → ``(loss, [per-discriminator loss tensors])``."""
    loss = 0
    gen_losses = []
    for dg in disc_outputs:
        dg = dg.float()
        dl = torch.mean((1 - dg) ** 2)
        gen_losses.append(dl)
        loss += dl
    return loss, gen_losses


def kl_loss(z_p: torch.Tensor, logs_q: torch.Tensor, m_p: torch.Tensor, logs_p: torch.Tensor,
            z_mask: torch.Tensor) -> torch.Tensor:
    """KL(posterior ‖ prior) per masked element: all tensors ``[B, C, T]``, ``z_mask [B, 1, T]``.

    ``Σ[(logs_p − logs_q − 0.5 + 0.5·(z_p − m_p)²·e^(−2·logs_p))·mask] / Σ mask``.
    """
    z_p = z_p.float()
    logs_q = logs_q.float()
    m_p = m_p.float()
    logs_p = logs_p.float()
    z_mask = z_mask.float()
    kl = logs_p - logs_q - 0.5
    kl += 0.5 * ((z_p - m_p) ** 2) * torch.exp(-2.0 * logs_p)
    kl = torch.sum(kl * z_mask)
    return kl / torch.sum(z_mask)
