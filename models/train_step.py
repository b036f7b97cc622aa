"""One SoVITS training step's forward passes and losses, as 4.1 ``train.py`` computes them.

The loop (optimisers, scaler, logging, checkpoints) lives with the training script; these
functions only compute, so they can be tested against the golden step and reused::

    out = generator_forward(net_g, batch, hps)                 # G forward, slices, mels
    loss_d, r, g = discriminator_step_loss(net_d, out)         # D on (y, ŷ.detach())
    ... loss_d.backward(); optim_d.step() ...                  # 4.1 steps D first, then
    losses = generator_step_losses(net_d, out, hps)            # G losses use the updated D
    ... losses["loss_gen_all"].backward(); optim_g.step() ...

Random draws happen only in ``generator_forward`` (see ``SynthesizerTrn.forward``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from modules.commons import slice_segments
from modules.losses import discriminator_loss, feature_loss, generator_loss, kl_loss
from modules.mel_processing import mel_spectrogram_torch, spec_to_mel_torch

__all__ = ["GeneratorOutputs", "discriminator_step_loss", "generator_forward", "generator_step_losses"]


@dataclass
class GeneratorOutputs:
    """Everything one G forward produces for the losses (B batch, T frames, S segment frames)."""

    y_hat: torch.Tensor  # [B, 1, S·hop] generated audio
    y: torch.Tensor  # [B, 1, S·hop] the matching slice of the target audio
    ids_slice: torch.Tensor  # [B] segment start frames
    z_mask: torch.Tensor  # [B, 1, T]
    z: torch.Tensor  # [B, inter, T] posterior sample
    z_p: torch.Tensor  # flow(z)
    m_p: torch.Tensor
    logs_p: torch.Tensor
    m_q: torch.Tensor
    logs_q: torch.Tensor
    pred_lf0: torch.Tensor | int  # [B, 1, T] (0 without the F0 decoder)
    norm_lf0: torch.Tensor | int
    lf0: torch.Tensor | int
    y_mel: torch.Tensor  # [B, n_mels, S] target mel slice (from the stored spectrogram)
    y_hat_mel: torch.Tensor  # [B, n_mels, S] mel of y_hat
    use_f0_loss: bool


def generator_forward(net_g: torch.nn.Module, batch: Mapping[str, torch.Tensor | None], hps) -> GeneratorOutputs:
    """Run ``net_g`` on a collated batch (keys ``c, f0, spec, y, spk, lengths, uv`` and optional
    ``volume``, as ``TextAudioCollate`` returns them) and build the mel slices (spec §6.10)."""
    data, train = hps.data, hps.train
    hop = data.hop_length
    mel = spec_to_mel_torch(batch["spec"], data.filter_length, data.n_mel_channels, data.sampling_rate,
                            data.mel_fmin, data.mel_fmax)
    (y_hat, ids_slice, z_mask, (z, z_p, m_p, logs_p, m_q, logs_q), pred_lf0, norm_lf0, lf0) = net_g(
        batch["c"], batch["f0"], batch["uv"], batch["spec"], g=batch["spk"], c_lengths=batch["lengths"],
        spec_lengths=batch["lengths"], vol=batch.get("volume"))
    y_mel = slice_segments(mel, ids_slice, train.segment_size // hop)
    y_hat_mel = mel_spectrogram_torch(y_hat.squeeze(1), data.filter_length, data.n_mel_channels, data.sampling_rate,
                                      hop, data.win_length, data.mel_fmin, data.mel_fmax)
    y = slice_segments(batch["y"], ids_slice * hop, train.segment_size)
    core = getattr(net_g, "module", net_g)
    return GeneratorOutputs(y_hat, y, ids_slice, z_mask, z, z_p, m_p, logs_p, m_q, logs_q, pred_lf0, norm_lf0, lf0,
                            y_mel, y_hat_mel, bool(core.use_automatic_f0_prediction))


def discriminator_step_loss(net_d: torch.nn.Module, out: GeneratorOutputs):
    """D loss on (real slice, generated audio detached) → ``(loss, real losses, fake losses)``."""
    y_d_hat_r, y_d_hat_g, _, _ = net_d(out.y, out.y_hat.detach())
    return discriminator_loss(y_d_hat_r, y_d_hat_g)


def generator_step_losses(net_d: torch.nn.Module, out: GeneratorOutputs, hps) -> dict[str, torch.Tensor | list]:
    """G losses (call after the D update, as 4.1 does). Keys: ``loss_gen``, ``losses_gen``,
    ``loss_fm``, ``loss_mel`` (×c_mel), ``loss_kl`` (×c_kl), ``loss_lf0``, ``loss_gen_all``."""
    _, y_d_hat_g, fmap_r, fmap_g = net_d(out.y, out.y_hat)
    loss_mel = F.l1_loss(out.y_mel, out.y_hat_mel) * hps.train.c_mel
    loss_kl = kl_loss(out.z_p, out.logs_q, out.m_p, out.logs_p, out.z_mask) * hps.train.c_kl
    loss_fm = feature_loss(fmap_r, fmap_g)
    loss_gen, losses_gen = generator_loss(y_d_hat_g)
    loss_lf0 = F.mse_loss(out.pred_lf0, out.lf0) if out.use_f0_loss else 0
    loss_gen_all = loss_gen + loss_fm + loss_mel + loss_kl + loss_lf0
    return {"loss_gen": loss_gen, "losses_gen": losses_gen, "loss_fm": loss_fm, "loss_mel": loss_mel,
            "loss_kl": loss_kl, "loss_lf0": loss_lf0, "loss_gen_all": loss_gen_all}
