"""The SoVITS inference graph that ``onnx_export.py`` writes (4.1 ``onnxexport/model_onnx_speaker_mix.py``).

:class:`SovitsOnnx` wraps a loaded :class:`models.SynthesizerTrn`: it takes over the
synthesizer's own submodules under the same attribute names (``emb_g``, ``pre``, ``emb_uv``,
``emb_vol``, ``enc_p``, ``flow``, ``dec``), so the ONNX initialisers keep the 4.1 state-dict names,
and its ``forward`` runs the synthesizer's inference stages with every input explicit (spec §12.1)::

    c [1, N, ssl_dim] ─pad one zero row in front─► [1, N+1, ssl_dim]
    mel2ph [1, T] (1-based unit index per frame; 0 = zero row) ─gather─► content [1, ssl_dim, T]
    x = embed_content(content, uv, vol)
    m_p, logs_p = prior(x, f0);   z_p = sample(m_p, logs_p, noise)  = m_p + noise·exp(logs_p)
    audio = decode(flow_inverse(z_p, g), f0, g, source=ExactFrameRateSource())   (1 phase draw [1, 9])

``noise`` replaces 4.1's ``ε·noice_scale``: the caller scales a standard normal. The mask is all
ones (no padding). The F0 decoder and ``enc_q`` are not part of the graph.

The decoder's harmonic source is :class:`vdecoder.hifigan.sources.ExactFrameRateSource` (f0 enters
at frame rate, as spec §12.1 requires, but the phase is exact; see its docstring and
docs/compat/onnx.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vdecoder.hifigan.sources import ExactFrameRateSource

__all__ = ["SovitsOnnx"]


class _StaticUpSample1d(nn.Module):
    """Trace-friendly copy of the snake decoder's ``UpSample1d`` for ``channels`` channels.

    The original expands its ``[1, 1, k]`` filter to ``x.shape[1]`` channels on every call; a
    tracer records that as a kernel of unknown shape, which the ONNX exporter refuses. Here the
    grouped filter is expanded once (same values, same operations otherwise).
    """

    def __init__(self, up: nn.Module, channels: int) -> None:
        super().__init__()
        self.ratio, self.stride = up.ratio, up.stride
        self.pad, self.pad_left, self.pad_right = up.pad, up.pad_left, up.pad_right
        self.channels = channels
        self.register_buffer("weight", up.filter.expand(channels, -1, -1).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.weight, stride=self.stride, groups=self.channels)
        return x[..., self.pad_left:-self.pad_right]


class _StaticLowPass1d(nn.Module):
    """Trace-friendly copy of the snake decoder's ``LowPassFilter1d`` (see :class:`_StaticUpSample1d`)."""

    def __init__(self, lowpass: nn.Module, channels: int) -> None:
        super().__init__()
        self.pad_left, self.pad_right, self.stride = lowpass.pad_left, lowpass.pad_right, lowpass.stride
        self.channels = channels
        self.register_buffer("weight", lowpass.filter.expand(channels, -1, -1).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.weight, stride=self.stride, groups=self.channels)


def _static_snake_filters(dec: nn.Module) -> None:
    """Give every anti-aliased activation of a snake decoder fixed-size filters (no-op otherwise)."""
    for module in list(dec.modules()):
        act, up, down = (getattr(module, name, None) for name in ("act", "upsample", "downsample"))
        if act is None or up is None or down is None or not hasattr(act, "in_features"):
            continue
        channels = int(act.in_features)
        module.upsample = _StaticUpSample1d(up, channels)
        down.lowpass = _StaticLowPass1d(down.lowpass, channels)


class SovitsOnnx(nn.Module):
    """Inference graph around a loaded synthesizer.

    Args:
        net: an inference-ready :class:`models.SynthesizerTrn` (float32, ``for_inference``) made
            for this graph: its modules are shared, and a snake decoder's anti-aliasing filters
            are given fixed-size copies for tracing (same values).
        speaker_rows: ``None`` for the speaker-id graph (``sid`` int64 ``[1]``); otherwise the
            ``emb_g`` row of every mix column (``sid`` float ``[T, len(speaker_rows)]`` weights,
            column ``i`` → embedding row ``speaker_rows[i]``).

    ``forward(c [1, N, ssl_dim], f0 [1, T] Hz, mel2ph [1, T] int64, uv [1, T], noise [1, inter, T],
    sid, vol [1, T] | None) -> audio [1, 1, T·hop]``.
    """

    def __init__(self, net: nn.Module, *, speaker_rows: Sequence[int] | None = None) -> None:
        super().__init__()
        self.ssl_dim = int(net.ssl_dim)
        self.gin_channels = int(net.gin_channels)
        self.inter_channels = int(net.inter_channels)
        self.vol_embedding = bool(net.vol_embedding)
        self.emb_g = net.emb_g
        self.pre = net.pre
        self.emb_uv = net.emb_uv
        if self.vol_embedding:
            self.emb_vol = net.emb_vol
        self.enc_p = net.enc_p
        self.flow = net.flow
        self.dec = net.dec
        # The stages are the synthesizer's own methods; held outside the module tree so that the
        # initialisers keep the 4.1 names above (not "net.*").
        self._stages = (net,)
        self.source = ExactFrameRateSource()  # f0 at frame rate, exact phase
        _static_snake_filters(self.dec)
        self.speaker_mix = speaker_rows is not None
        if self.speaker_mix:
            rows = torch.as_tensor(list(speaker_rows), dtype=torch.long)
            with torch.no_grad():
                # [S, gin]: a constant of the graph, as 4.1's speaker_map
                self.register_buffer("speaker_map", self.emb_g(rows).detach().clone(), persistent=False)

    @property
    def n_mix(self) -> int:
        """Number of mix columns (0 for the speaker-id graph)."""
        return int(self.speaker_map.shape[0]) if self.speaker_mix else 0

    def speaker(self, sid: torch.Tensor) -> torch.Tensor:
        """``sid`` → speaker conditioning ``[1, gin, 1]`` (id) or ``[1, gin, T]`` (mix weights)."""
        if self.speaker_mix:
            # [T, S] @ [S, gin] = Σ_s w[t, s]·emb_g(row_s); 4.1 sums the broadcast products
            # (same value up to float summation order).
            return torch.matmul(sid, self.speaker_map).transpose(0, 1).unsqueeze(0)
        return self.emb_g(sid.reshape(1, -1)).transpose(1, 2)

    def forward(self, c: torch.Tensor, f0: torch.Tensor, mel2ph: torch.Tensor, uv: torch.Tensor,
                noise: torch.Tensor, sid: torch.Tensor, vol: torch.Tensor | None = None) -> torch.Tensor:
        units = F.pad(c, (0, 0, 1, 0))  # row 0 = zeros, selected by mel2ph == 0
        index = mel2ph.unsqueeze(2).expand(-1, -1, c.shape[-1])
        content = torch.gather(units, 1, index).transpose(1, 2)  # [1, ssl_dim, T]
        net = self._stages[0]
        g = self.speaker(sid)
        x_mask = torch.ones_like(f0).unsqueeze(1)  # [1, 1, T]
        x = net.embed_content(content, uv, x_mask, vol if self.vol_embedding else None)
        m_p, logs_p = net.prior(x, x_mask, f0)
        z_p = net.sample(m_p, logs_p, x_mask, noise=noise)  # the caller scales the noise
        z = net.flow_inverse(z_p, x_mask, g)
        return net.decode(z * x_mask, f0, g, source=self.source)
