"""SoVITS synthesizer (4.1 ``models.SynthesizerTrn``) and its parts.

Shapes: ``B`` batch, ``T`` synthesizer frames (sampling_rate / hop, 86.13 Hz at 44.1 kHz / 512),
``L = T·hop`` samples. Attribute names are the 4.1 state-dict prefixes (spec §6.1, §7.2), and
modules are created in 4.1's order so that a seeded construction draws the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import nn

from modules import attentions, rng
from modules import modules as m
from modules.commons import rand_slice_segments_with_pitch, sequence_mask
from modules.errors import ConfigError
from modules.f0 import f0_to_coarse, f0_to_lf0, lf0_to_f0, normalize_f0
from modules.modules import fold_weight_norm, inference_copy
from modules.precision import precision_dtype, precision_name
from vdecoder.hifigan.models import Generator as NsfHifiganGenerator
from vdecoder.hifigan.models import MrfChunk, receptive_radius_frames
from vdecoder.hifigan.sources import HarmonicSource
from vdecoder.hifiganwithsnake.models import Generator as NsfSnakeHifiganGenerator

log = logging.getLogger(__name__)

__all__ = ["DECODERS", "Embedding", "F0Decoder", "PosteriorEncoder", "ResidualCouplingBlock", "SynthesizerTrn",
           "TextEncoder", "TransformerCouplingBlock", "sample_prior"]

# vocoder_name → decoder class (constructed as ``cls(h)``); the one table of synthesizer decoders.
DECODERS: dict[str, Callable[[Mapping], nn.Module]] = {
    "nsf-hifigan": NsfHifiganGenerator,
    "nsf-snake-hifigan": NsfSnakeHifiganGenerator,
}


class _CouplingBlock(nn.Module):
    """Stack of ``n_flows`` × [coupling layer, Flip]; optional shared encoder ``wn``.

    ``forward(x [B, C, T], x_mask [B, 1, T], g, reverse)``: forward maps posterior z → z_p,
    reverse maps prior samples back (inference).
    """

    def _build(self, n_flows: int, make_layer: Callable[[nn.Module | None], nn.Module],
               make_shared: Callable[[], nn.Module] | None) -> None:
        self.flows = nn.ModuleList()
        # 4.1 registers ``flows`` before ``wn``: state-dict order flows.*, then wn.*, and
        # parameters() counts the shared tensors once, under flows.0.enc.
        self.wn = make_shared() if make_shared is not None else None
        for _ in range(n_flows):
            self.flows.append(make_layer(self.wn))
            self.flows.append(m.Flip())

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None,
                reverse: bool = False) -> torch.Tensor:
        if not reverse:
            for flow in self.flows:
                x, _ = flow(x, x_mask, g=g, reverse=reverse)
        else:
            for flow in reversed(self.flows):
                x = flow(x, x_mask, g=g, reverse=reverse)
        return x


class ResidualCouplingBlock(_CouplingBlock):
    """4 residual (WN) coupling layers; ``n_layers`` is the WN depth (4.1's ``n_flow_layer``)."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 n_flows: int = 4, gin_channels: int = 0, share_parameter: bool = False,
                 depthwise: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.n_flows = n_flows
        self.gin_channels = gin_channels

        def make_wn() -> nn.Module:
            return m.WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels,
                        p_dropout=0, depthwise=depthwise)

        def make_layer(shared: nn.Module | None) -> nn.Module:
            return m.CouplingLayer(channels, hidden_channels, (lambda: shared) if shared is not None else make_wn,
                                   mean_only=True)

        self._build(n_flows, make_layer, make_wn if share_parameter else None)


class TransformerCouplingBlock(_CouplingBlock):
    """``n_flows`` (4.1's ``n_flow_layer``) coupling layers whose encoder is a conditioned FFT
    of ``n_layers`` (``n_layers_trans_flow``) layers with kernel ``kernel_size`` (5)."""

    def __init__(self, channels: int, hidden_channels: int, filter_channels: int, n_heads: int, n_layers: int,
                 kernel_size: int, p_dropout: float, n_flows: int = 4, gin_channels: int = 0,
                 share_parameter: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.n_flows = n_flows
        self.gin_channels = gin_channels

        def make_fft() -> nn.Module:
            return attentions.FFT(hidden_channels, filter_channels, n_heads, n_layers, kernel_size, p_dropout,
                                  isflow=True, gin_channels=gin_channels)

        def make_layer(shared: nn.Module | None) -> nn.Module:
            return m.CouplingLayer(channels, hidden_channels, (lambda: shared) if shared is not None else make_fft,
                                   mean_only=True)

        self._build(n_flows, make_layer, make_fft if share_parameter else None)


class PosteriorEncoder(nn.Module):
    """``enc_q``: linear spectrogram → posterior sample (training only; 4.1 ``models.Encoder``).

    ``forward(x [B, spec_channels, T], x_lengths [B], g [B, gin, 1])`` →
    ``(z, m, logs [B, out, T], x_mask [B, 1, T])``; draws one ``randn_like(m)``.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, kernel_size: int,
                 dilation_rate: int, n_layers: int, gin_channels: int = 0, depthwise: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.pre = nn.Conv1d(in_channels, hidden_channels, 1)
        self.enc = m.WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels,
                        depthwise=depthwise)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(self, x: torch.Tensor, x_lengths: torch.Tensor, g: torch.Tensor | None = None):
        x_mask = torch.unsqueeze(sequence_mask(x_lengths, x.size(2)), 1).to(x.dtype)
        x = self.pre(x) * x_mask
        x = self.enc(x, x_mask, g=g)
        stats = self.proj(x) * x_mask
        mean, logs = torch.split(stats, self.out_channels, dim=1)
        z = (mean + rng.randn_like(mean) * torch.exp(logs)) * x_mask
        return z, mean, logs, x_mask


def sample_prior(mean: torch.Tensor, logs: torch.Tensor, x_mask: torch.Tensor, *, noise: torch.Tensor | None = None,
                 noise_scale: float = 1.0) -> torch.Tensor:
    """``z = (m + ε·e^logs·noise_scale)·mask`` for ``m, logs [B, C, T]``, ``x_mask [B, 1, T]``.

    ``noise`` is ε ``[B, C, T]``; without it one ``randn_like(m)`` is drawn (also when
    ``noise_scale`` is 0, as 4.1). ``noise_scale`` 1 skips the multiplication (same value)."""
    eps = rng.randn_like(mean) if noise is None else noise
    scaled = eps * torch.exp(logs)
    if noise_scale != 1:
        scaled = scaled * noise_scale
    return (mean + scaled) * x_mask


class TextEncoder(nn.Module):
    """``enc_p``: content features + coarse-pitch embedding → prior (m_p, logs_p) and a sample.

    ``forward(x [B, H, T], x_mask, f0 coarse [B, T] int64, noice_scale, sample=True)`` →
    ``(z, m, logs [B, out, T], x_mask)`` with ``z = (m + ε·e^logs·noice_scale)·mask``;
    ε is drawn (``randn_like``) even when ``noice_scale`` is 0, as in 4.1.
    """

    def __init__(self, out_channels: int, hidden_channels: int, kernel_size: int, n_layers: int,
                 gin_channels: int = 0, filter_channels: int | None = None, n_heads: int | None = None,
                 p_dropout: float | None = None) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)
        self.f0_emb = nn.Embedding(256, hidden_channels)
        self.enc_ = attentions.Encoder(hidden_channels, filter_channels, n_heads, n_layers, kernel_size, p_dropout)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, f0: torch.Tensor | None = None,
                noice_scale: float = 1, *, sample: bool = True):
        """``sample=False``: no draw, ``z`` is None (the staged inference samples separately)."""
        x = x + self.f0_emb(f0).transpose(1, 2)
        x = self.enc_(x * x_mask, x_mask)
        stats = self.proj(x) * x_mask
        mean, logs = torch.split(stats, self.out_channels, dim=1)
        z = sample_prior(mean, logs, x_mask, noise_scale=noice_scale) if sample else None
        return z, mean, logs, x_mask


class F0Decoder(nn.Module):
    """Predicts normalised log-f0 from content features (``use_automatic_f0_prediction``).

    ``forward(x [B, H, T] (detached inside), norm_f0 [B, 1, T], x_mask, spk_emb [B, gin, 1])``
    → predicted lf0 ``[B, 1, T]``.
    """

    def __init__(self, out_channels: int, hidden_channels: int, filter_channels: int, n_heads: int, n_layers: int,
                 kernel_size: int, p_dropout: float, spk_channels: int = 0) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.prenet = nn.Conv1d(hidden_channels, hidden_channels, 3, padding=1)
        self.decoder = attentions.FFT(hidden_channels, filter_channels, n_heads, n_layers, kernel_size, p_dropout)
        self.proj = nn.Conv1d(hidden_channels, out_channels, 1)
        self.f0_prenet = nn.Conv1d(1, hidden_channels, 3, padding=1)
        self.cond = nn.Conv1d(spk_channels, hidden_channels, 1)

    def forward(self, x: torch.Tensor, norm_f0: torch.Tensor, x_mask: torch.Tensor,
                spk_emb: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.detach(x)
        if spk_emb is not None:
            x = x + self.cond(spk_emb)
        x = x + self.f0_prenet(norm_f0)
        x = self.prenet(x) * x_mask
        x = self.decoder(x * x_mask, x_mask)
        return self.proj(x) * x_mask


class Embedding(NamedTuple):
    """Output of :meth:`SynthesizerTrn.embed`: ``content [B, H, T]``, ``mask [B, 1, T]``,
    ``speaker [B, gin, 1]`` (or ``[1, gin, T]`` for per-frame speaker mixes)."""

    content: torch.Tensor
    mask: torch.Tensor
    speaker: torch.Tensor


class SynthesizerTrn(nn.Module):
    """The SoVITS synthesizer, built as ``SynthesizerTrn(filter_length // 2 + 1,
    segment_size // hop_length, **hps.model)``.

    Config switches (spec §2.1, §6): ``vol_embedding``, ``use_depthwise_conv``,
    ``flow_share_parameter``, ``use_transformer_flow`` (+ ``n_layers_trans_flow``, ``n_flow_layer``;
    spec §13.7), ``use_automatic_f0_prediction``, ``vocoder_name`` (see :data:`DECODERS`).
    Unused config keys (``n_layers_q``, ``speech_encoder``, ...) are accepted and ignored as in 4.1.
    """

    def __init__(self, spec_channels: int, segment_size: int, inter_channels: int, hidden_channels: int,
                 filter_channels: int, n_heads: int, n_layers: int, kernel_size: int, p_dropout: float,
                 resblock: str, resblock_kernel_sizes, resblock_dilation_sizes, upsample_rates,
                 upsample_initial_channel: int, upsample_kernel_sizes, gin_channels: int, ssl_dim: int,
                 n_speakers: int, sampling_rate: int = 44100, vol_embedding: bool = False,
                 vocoder_name: str = "nsf-hifigan", use_depthwise_conv: bool = False,
                 use_automatic_f0_prediction: bool = True, flow_share_parameter: bool = False,
                 n_flow_layer: int = 4, n_layers_trans_flow: int = 3, use_transformer_flow: bool = False,
                 **kwargs) -> None:
        super().__init__()
        if vocoder_name not in DECODERS:
            raise ConfigError(
                f"model.vocoder_name {vocoder_name!r} is not a known synthesizer decoder; valid names: "
                f"{', '.join(sorted(DECODERS))}. Fix 'vocoder_name' in the model section of config.json."
            )
        self.spec_channels = spec_channels
        self.inter_channels = inter_channels
        self.hidden_channels = hidden_channels
        self.filter_channels = filter_channels
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.kernel_size = kernel_size
        self.p_dropout = p_dropout
        self.resblock = resblock
        self.resblock_kernel_sizes = resblock_kernel_sizes
        self.resblock_dilation_sizes = resblock_dilation_sizes
        self.upsample_rates = upsample_rates
        self.upsample_initial_channel = upsample_initial_channel
        self.upsample_kernel_sizes = upsample_kernel_sizes
        self.segment_size = segment_size
        self.gin_channels = gin_channels
        self.ssl_dim = ssl_dim
        self.n_speakers = n_speakers
        self.sampling_rate = sampling_rate
        self.vol_embedding = vol_embedding
        self.vocoder_name = vocoder_name
        self.use_depthwise_conv = use_depthwise_conv
        self.use_automatic_f0_prediction = use_automatic_f0_prediction
        self.use_transformer_flow = use_transformer_flow
        self.flow_share_parameter = flow_share_parameter
        self.n_flow_layer = n_flow_layer
        self.n_layers_trans_flow = n_layers_trans_flow

        self.emb_g = nn.Embedding(n_speakers, gin_channels)
        if vol_embedding:
            self.emb_vol = nn.Linear(1, hidden_channels)
        self.pre = nn.Conv1d(ssl_dim, hidden_channels, kernel_size=5, padding=2)
        self.enc_p = TextEncoder(inter_channels, hidden_channels, filter_channels=filter_channels, n_heads=n_heads,
                                 n_layers=n_layers, kernel_size=kernel_size, p_dropout=p_dropout)
        dec_h = {
            "sampling_rate": sampling_rate,
            "inter_channels": inter_channels,
            "resblock": resblock,
            "resblock_kernel_sizes": resblock_kernel_sizes,
            "resblock_dilation_sizes": resblock_dilation_sizes,
            "upsample_rates": upsample_rates,
            "upsample_initial_channel": upsample_initial_channel,
            "upsample_kernel_sizes": upsample_kernel_sizes,
            "gin_channels": gin_channels,
            "use_depthwise_conv": use_depthwise_conv,
        }
        self.dec = DECODERS[vocoder_name](dec_h)
        # The posterior encoder's depth is fixed at 16 in 4.1; n_layers_q is ignored (spec §13.9).
        self.enc_q = PosteriorEncoder(spec_channels, inter_channels, hidden_channels, 5, 1, 16,
                                      gin_channels=gin_channels, depthwise=use_depthwise_conv)
        if use_transformer_flow:
            self.flow = TransformerCouplingBlock(inter_channels, hidden_channels, filter_channels, n_heads,
                                                 n_layers_trans_flow, 5, p_dropout, n_flow_layer,
                                                 gin_channels=gin_channels, share_parameter=flow_share_parameter)
        else:
            self.flow = ResidualCouplingBlock(inter_channels, hidden_channels, 5, 1, n_flow_layer,
                                              gin_channels=gin_channels, share_parameter=flow_share_parameter,
                                              depthwise=use_depthwise_conv)
        if use_automatic_f0_prediction:
            self.f0_decoder = F0Decoder(1, hidden_channels, filter_channels, n_heads, n_layers, kernel_size,
                                        p_dropout, spk_channels=gin_channels)
        self.emb_uv = nn.Embedding(2, hidden_channels)
        self.character_mix = False

    # ------------------------------------------------------------------ stages
    def embed_content(self, c: torch.Tensor, uv: torch.Tensor, x_mask: torch.Tensor,
                 vol: torch.Tensor | None) -> torch.Tensor:
        """Frame features entering the prior encoder: ``pre(c)·mask + emb_uv(uv) (+ emb_vol(vol))``.

        ``c [B, ssl_dim, T]``, ``uv [B, T]``, ``x_mask [B, 1, T]``, ``vol [B, T]`` or None →
        ``[B, H, T]`` (uv/vol are added after masking, as 4.1). Public for streaming and export
        code that runs the synthesizer's stages separately."""
        x = self.pre(c) * x_mask + self.emb_uv(uv.long()).transpose(1, 2)
        if vol is not None and self.vol_embedding:
            x = x + self.emb_vol(vol[:, :, None]).transpose(1, 2)
        return x

    def EnableCharacterMix(self, n_speakers_map: int, device) -> None:  # noqa: N802 (4.1 name)
        """Allow ``infer(g=weights [T, n_speakers_map])``: per-frame weighted speaker embeddings."""
        with torch.no_grad():
            ids = torch.arange(n_speakers_map, device=device)
            self.speaker_map = self.emb_g(ids).detach()[None, :, None, None, :]  # [1, S, 1, 1, gin]
        self.character_mix = True

    def embed_speaker(self, g: torch.Tensor) -> torch.Tensor:
        """Speaker ids ``[B, 1]`` (or ``[B]``) → ``emb_g`` ``[B, gin, 1]``; after
        :meth:`EnableCharacterMix`, per-frame weights ``[T, n_speakers]`` → ``[1, gin, T]``."""
        if self.character_mix and len(g) > 1:
            # g: [T, S] mixing weights → [1, gin, T]
            mixed = torch.sum(g.reshape(g.shape[0], g.shape[1], 1, 1, 1) * self.speaker_map, dim=1)  # [T, 1, 1, gin]
            return mixed.transpose(0, -1).transpose(0, -2).squeeze(0)
        if g.dim() == 1:
            g = g.unsqueeze(0)
        return self.emb_g(g).transpose(1, 2)

    # ------------------------------------------------------------------ training
    def forward(self, c: torch.Tensor, f0: torch.Tensor, uv: torch.Tensor, spec: torch.Tensor,
                g: torch.Tensor | None = None, c_lengths: torch.Tensor | None = None,
                spec_lengths: torch.Tensor | None = None, vol: torch.Tensor | None = None):
        """Training pass (spec §6.4).

        Args:
            c: ``[B, ssl_dim, T]`` units stretched to frames; f0: ``[B, T]`` Hz; uv: ``[B, T]``;
            spec: ``[B, spec_channels, T]``; g: speaker ids ``[B, 1]``; lengths ``[B]``;
            vol: ``[B, T]`` or None.
        Returns:
            ``(y_hat [B, 1, segment·hop], ids_slice [B], spec_mask [B, 1, T],
            (z, z_p, m_p, logs_p, m_q, logs_q), pred_lf0, norm_lf0, lf0)``; the last three are
            ``[B, 1, T]`` (0 without the F0 decoder).
        Random draws, in order: normalize_f0 scale ``uniform_`` [B, 1] (F0 decoder only), enc_p
        ε, enc_q ε, slice starts ``rand`` [B], sine phases ``rand`` [B, 9] (+ dropout masks).
        """
        g = self.emb_g(g).transpose(1, 2)
        x_mask = torch.unsqueeze(sequence_mask(c_lengths, c.size(2)), 1).to(c.dtype)
        x = self.embed_content(c, uv, x_mask, vol)
        if self.use_automatic_f0_prediction:
            lf0 = f0_to_lf0(f0.unsqueeze(1))
            norm_lf0 = normalize_f0(lf0, x_mask, uv)
            pred_lf0 = self.f0_decoder(x, norm_lf0, x_mask, spk_emb=g)
        else:
            lf0 = norm_lf0 = pred_lf0 = 0
        _, m_p, logs_p, _ = self.enc_p(x, x_mask, f0=f0_to_coarse(f0))
        z, m_q, logs_q, spec_mask = self.enc_q(spec, spec_lengths, g=g)
        z_p = self.flow(z, spec_mask, g=g)
        z_slice, pitch_slice, ids_slice = rand_slice_segments_with_pitch(z, f0, spec_lengths, self.segment_size)
        o = self.dec(z_slice, g=g, f0=pitch_slice)
        return o, ids_slice, spec_mask, (z, z_p, m_p, logs_p, m_q, logs_q), pred_lf0, norm_lf0, lf0

    # ------------------------------------------------------------------ inference stages
    # infer = embed → (predict_f0) → prior → sample → flow_inverse → decode. The realtime engine
    # and the ONNX graph call the same stages with their own inputs (given noise, a window of the
    # decoder, another harmonic source); none of them re-implements a stage.
    def embed(self, c: torch.Tensor, uv: torch.Tensor, g: torch.Tensor, vol: torch.Tensor | None = None) -> Embedding:
        """Content + speaker embedding of a whole (unpadded) batch.

        ``c [B, ssl_dim, T]`` units, ``uv [B, T]``, ``g`` speaker ids ``[B, 1]`` (or mix weights, see
        :meth:`embed_speaker`), ``vol [B, T]`` or None → :class:`Embedding` in the model's dtype."""
        dtype = self.pre.weight.dtype
        c = c.to(dtype)
        if vol is not None:
            vol = vol.to(dtype)
        c_lengths = (torch.ones(c.size(0)) * c.size(-1)).to(c.device)
        speaker = self.embed_speaker(g).to(dtype)
        x_mask = torch.unsqueeze(sequence_mask(c_lengths, c.size(2)), 1).to(c.dtype)
        return Embedding(self.embed_content(c, uv, x_mask, vol), x_mask, speaker)

    def predict_f0(self, x: torch.Tensor, f0: torch.Tensor, uv: torch.Tensor, x_mask: torch.Tensor,
                   g: torch.Tensor) -> torch.Tensor:
        """The F0 decoder's f0 ``[B, T]`` Hz from content ``x [B, H, T]``, input ``f0 [B, T]`` Hz,
        ``uv``, mask and speaker ``g`` (``use_automatic_f0_prediction`` models only)."""
        if not self.use_automatic_f0_prediction:
            raise ValueError("this model has no F0 decoder (use_automatic_f0_prediction is false)")
        lf0 = f0_to_lf0(f0.unsqueeze(1))
        norm_lf0 = normalize_f0(lf0, x_mask, uv, random_scale=False)
        pred_lf0 = self.f0_decoder(x, norm_lf0.to(x.dtype), x_mask, spk_emb=g).to(f0)
        return lf0_to_f0(pred_lf0).squeeze(1)

    def prior(self, x: torch.Tensor, x_mask: torch.Tensor, f0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior ``(m, logs) [B, inter, T]`` from content ``x`` and ``f0 [B, T]`` Hz (no draw)."""
        _, m, logs, _ = self.enc_p(x, x_mask, f0=f0_to_coarse(f0), sample=False)
        return m, logs

    @staticmethod
    def sample(m: torch.Tensor, logs: torch.Tensor, x_mask: torch.Tensor, *, noise: torch.Tensor | None = None,
               noise_scale: float = 1.0) -> torch.Tensor:
        """Prior sample ``z_p = (m + ε·e^logs·noise_scale)·mask`` (see :func:`sample_prior`)."""
        return sample_prior(m, logs, x_mask, noise=noise, noise_scale=noise_scale)

    def flow_inverse(self, z_p: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Inverse flow: prior sample ``[B, inter, T]`` → decoder input ``z`` (same shape)."""
        return self.flow(z_p, x_mask, g=g, reverse=True)

    def decode(self, z: torch.Tensor, f0: torch.Tensor, g: torch.Tensor,
               source: HarmonicSource | None = None, keep: tuple[int, int] | None = None) -> torch.Tensor:
        """Decoder: ``z [B, inter, T]``, ``f0 [B, T]`` Hz, speaker ``g`` → audio ``[B, 1, T·hop]``.

        ``source`` is the harmonic-source strategy (:mod:`vdecoder.hifigan.sources`); default the
        decoder's own (sample rate). Decoding a window ``z[:, :, i:]`` gives the full decode's
        samples away from its left edge when the source's phase is carried to frame ``i``.
        ``keep=(a, b)``: only frames ``[a, b)`` are wanted (the rest is zero; the decoder then
        skips what those frames do not depend on, see ``Generator.forward``)."""
        return self.dec(z, g=g, f0=f0, source=source, keep=keep)

    def decode_range(self, z: torch.Tensor, f0: torch.Tensor, g: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Decoder output of frames ``[start, stop)`` only (audio ``[B, 1, T·hop]``, zero outside
        them): the same samples as :meth:`decode` there, up to float rounding — :meth:`decode` with
        ``keep``, so the decoder skips what those frames do not depend on. For callers that cut
        padding off the output (``Svc``'s slices). Where the range reaches both ends within the
        receptive radius, or for decoders that cannot skip (the snake variant, which draws noise of
        the output's shape), this is the whole decode."""
        start, stop = int(start), int(stop)
        radius = receptive_radius_frames(self.dec)
        if (start - radius <= 0 and stop + radius >= z.shape[-1]) or stop <= start or not self.dec.supports_keep:
            return self.decode(z, f0, g)
        return self.decode(z, f0, g, keep=(start, stop))

    @torch.no_grad()
    def infer(self, c: torch.Tensor, f0: torch.Tensor, uv: torch.Tensor, g: torch.Tensor | None = None,
              noice_scale: float = 0.35, seed: int = 52468, predict_f0: bool = False,
              vol: torch.Tensor | None = None,
              decode_frames: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert units + f0 to audio (spec §6.7).

        Args:
            c: ``[1, ssl_dim, T]``; f0: ``[1, T]`` Hz; uv: ``[1, T]``; g: speaker id ``[1, 1]``
            (or ``[T, n_spk]`` weights after :meth:`EnableCharacterMix`); noice_scale: prior
            noise scale (``noice_scale`` is 4.1's spelling); seed: ``torch.manual_seed`` is
            called with it first, so the same seed gives the same audio; predict_f0: replace f0
            by the F0 decoder's prediction; vol: ``[1, T]`` loudness (``vol_embedding`` models);
            decode_frames: ``(start, stop)`` frames the caller keeps: the decoder skips what lies
            beyond its receptive radius of them, which is zero in the output (:meth:`decode_range`).
        Returns:
            ``(audio [1, 1, T·hop] float32, f0 used [1, T])``.
        Random draws: enc_p ε ``[1, inter, T]``, then the sine phases ``[1, 9]``.
        """
        z, f0, g = self.latent(c, f0, uv, g, noice_scale=noice_scale, seed=seed, predict_f0=predict_f0, vol=vol)
        if decode_frames is None:
            o = self.decode(z, f0, g)
        else:
            o = self.decode_range(z, f0, g, *decode_frames)
        return o.float(), f0

    @torch.no_grad()
    def latent(self, c: torch.Tensor, f0: torch.Tensor, uv: torch.Tensor, g: torch.Tensor | None = None, *,
               noice_scale: float = 0.35, seed: int = 52468, predict_f0: bool = False,
               vol: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first half of :meth:`infer` (same arguments): seed, embed, (predict f0), prior,
        sample, inverse flow → ``(z·mask [1, inter, T], f0 used [1, T], speaker embedding g)``, what
        :meth:`decode` / :meth:`decode_range` take. The next random draw is the decoder's."""
        # 4.1 only seeds CUDA for device "cuda" without index, which never matches a tensor's
        # device, so it always ends up in torch.manual_seed (which seeds every device).
        # (modules.rng: the global generator, or the thread's own when slices run in parallel)
        rng.manual_seed(seed)
        x, x_mask, g = self.embed(c, uv, g, vol)
        if self.use_automatic_f0_prediction and predict_f0:
            f0 = self.predict_f0(x, f0, uv, x_mask, g)
        m_p, logs_p = self.prior(x, x_mask, f0)
        z_p = self.sample(m_p, logs_p, x_mask, noise_scale=noice_scale)
        z = self.flow_inverse(z_p, x_mask, g)
        return z * x_mask, f0, g

    @property
    def inference_ready(self) -> bool:
        """True for objects made by :meth:`for_inference` (no ``enc_q``, folded weights)."""
        return getattr(self, "_inference_ready", False)

    @property
    def precision(self) -> str:
        """Compute precision of this (inference-ready) model: ``fp32``, ``bf16`` or ``fp16``
        (fixed when :meth:`for_inference` made it; see :mod:`modules.precision`)."""
        return precision_name(self.pre.weight.dtype)

    def for_inference(self, *, dtype: torch.dtype | None = None, conv2d: bool = True,
                      mrf_chunk: MrfChunk = 0, precision: str | None = None) -> SynthesizerTrn:
        """A new inference-ready synthesizer made from this (loaded) one, which stays unchanged.

        The new object: eval mode, no gradients, no ``enc_q`` (training only), weight norm folded
        into plain weights (each computed once instead of on every call), a decoder made by
        :meth:`vdecoder.hifigan.models.Generator.for_inference` with ``conv2d`` (channels-last 2-D
        layout) and ``mrf_chunk`` (0 off, "auto" where
        :func:`vdecoder.hifigan.models.chunking_pays`), cast to ``dtype`` if given (float16/bfloat16
        are GPU options). Output equals this model's up to float rounding. Unchanged tensors are
        shared, not copied. Its state dict no longer matches 4.1 files (save the loaded model).

        ``precision`` (``fp32``, ``bf16``, ``fp16``; resolve ``auto`` first with
        :func:`modules.precision.resolve_precision`, which also warns where it is not native)
        casts the copy on any device, CPU included; the harmonic source's phase and the f0 stay
        float32 inside (docs/compat/speed.md). Made from an inference-ready model, only the
        precision changes (same decoder options). fp32 gives the same object as no precision.
        """
        if precision is not None:
            want = precision_dtype(precision)
            if dtype is not None and dtype != want:
                raise ValueError(f"dtype {dtype} contradicts precision {precision!r}; give one of them")
            dtype = None if want == torch.float32 else want
        elif dtype is not None and dtype != torch.float32 and self.pre.weight.device.type == "cpu":
            raise ValueError(
                f"{dtype} inference is a GPU option; on CPU the synthesizer runs in float32 "
                "(leave dtype unset or move the model to a GPU first)"
            )
        dec = self.dec.for_inference(conv2d=conv2d, mrf_chunk=mrf_chunk)
        replace = {self.dec: dec}
        enc_q = getattr(self, "enc_q", None)
        if enc_q is not None:
            replace[enc_q] = nn.Identity()  # placeholder, deleted below: enc_q is not walked or copied
        net = inference_copy(self, replace)
        if enc_q is not None:
            del net.enc_q
        net.eval()
        fold_weight_norm(net)
        if dtype is not None and dtype != torch.float32:
            net.to(dtype)
        net._inference_ready = True
        return net

    def prepare_for_inference(self, *, dtype: torch.dtype | None = None, conv2d: bool = True,
                              mrf_chunk: MrfChunk = 0) -> SynthesizerTrn:
        """Earlier name of :meth:`for_inference`; returns the new object (this model is no longer
        changed in place: use the returned one)."""
        return self.for_inference(dtype=dtype, conv2d=conv2d, mrf_chunk=mrf_chunk)
