"""The SoVITS inference graph that ``onnx_export.py`` writes (4.1 ``onnxexport/model_onnx_speaker_mix.py``).

:class:`SovitsOnnx` wraps a loaded :class:`models.SynthesizerTrn`: it takes over the
synthesizer's own submodules under the same attribute names (``emb_g``, ``pre``, ``emb_uv``,
``emb_vol``, ``enc_p``, ``flow``, ``dec``), so the ONNX initialisers keep the 4.1 state-dict names,
and its ``forward`` is the inference path with every input explicit (spec §12.1)::

    c [1, N, ssl_dim] ─pad one zero row in front─► [1, N+1, ssl_dim]
    mel2ph [1, T] (1-based unit index per frame; 0 = zero row) ─gather─► content [1, ssl_dim, T]
    x = pre(content) + emb_uv(uv) (+ emb_vol(vol))
    m_p, logs_p = enc_p(x, coarse(f0));   z_p = m_p + noise·exp(logs_p)
    audio = dec(flow⁻¹(z_p, g), f0, g)    (frame-rate sine source, 1 random phase draw [1, 9])

``noise`` replaces 4.1's ``ε·noice_scale``: the caller scales a standard normal. The mask is all
ones (no padding). The F0 decoder and ``enc_q`` are not part of the graph.

The decoder's sine generator is replaced by :class:`FrameRateSineGen` (f0 enters at frame rate,
as spec §12.1 requires, but the phase is exact; see its docstring and docs/compat/onnx.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import math

import torch
import torch.nn.functional as F
from torch import nn

from modules.f0 import f0_to_coarse

__all__ = ["FrameRateSineGen", "SovitsOnnx"]


class FrameRateSineGen(nn.Module):
    """Harmonic sines from frame-rate f0, with the phase of the offline (sample-rate) path.

    ``forward(f0 [B, T] Hz per frame, upp) -> (sines [B, T·upp, dim], uv [B, T·upp, 1] | None)``:
    the same values as the synthesizer's ``SineGen`` on nearest-upsampled f0, i.e.
    ``sine_amp·sin(2π·(φ_h + Σ_{i≤n} r_h[i]))`` with ``r_h = (h·f0/sr) mod 1`` and one random
    initial phase ``φ_h`` per harmonic (0 for the fundamental), one ``rand [B, dim]`` draw.

    Why not 4.1's ONNX formula: it adds φ_h to every sample of frame 0 (harmonics 2–9 sweep
    through random high frequencies for one frame) and then sums ~10⁵ samples whose running
    total reaches hundreds of cycles; onnxruntime's float32 CumSum drifts there by up to 0.05
    cycles per 20k samples (PyTorch sums in double), so the ONNX audio was not the PyTorch audio.
    Here the sum runs over frames, in float64 (``T`` values per harmonic), and each sample adds
    its in-frame part ``(j+1)·r`` reduced mod 1 (float32, error ~1e-6 cycle)::

        frame k, sample j:  phase = frac(φ + upp·Σ_{m<k} r[m])  +  frac((j+1)·r[k])
                                    └── float64, frame rate ──┘    └─ float32, per sample ─┘

    With ``uv_noise`` (snake decoder) unvoiced samples are zeroed and Gaussian noise is added as
    ``SineGen`` does (one ``randn`` of the output's shape).
    """

    def __init__(self, sine) -> None:
        super().__init__()
        self.dim = int(sine.dim)
        self.sampling_rate = sine.sampling_rate
        self.sine_amp = sine.sine_amp
        self.noise_std = sine.noise_std
        self.voiced_threshold = sine.voiced_threshold
        self.uv_noise = bool(sine.uv_noise)

    @torch.no_grad()
    def forward(self, f0: torch.Tensor, upp: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        upp = int(upp)
        f0 = f0.float()
        batch = f0.shape[0]
        harmonics = torch.arange(1, self.dim + 1, dtype=torch.float32, device=f0.device)
        # Same float32 operations as SineGen on upsampled f0, so r is bitwise the same.
        rad = (f0.unsqueeze(-1) * harmonics / self.sampling_rate) % 1  # [B, T, dim]
        initial = torch.rand(batch, self.dim, device=f0.device) * (harmonics > 1)  # φ_1 = 0
        per_frame = rad.double() * upp
        start = torch.cumsum(per_frame, dim=1) - per_frame + initial.double().unsqueeze(1)
        start = (start - torch.floor(start)).float()  # phase at each frame start, cycles
        steps = torch.arange(1, upp + 1, dtype=torch.float32, device=f0.device)[:, None]  # [upp, 1]
        within = rad.unsqueeze(2) * steps  # [B, T, upp, dim]
        phase = start.unsqueeze(2) + (within - torch.floor(within))
        sines = torch.sin(phase.reshape(batch, -1, self.dim) * (2 * math.pi)) * self.sine_amp
        if not self.uv_noise:
            return sines, None
        uv = (f0 > self.voiced_threshold).float()
        uv = uv.unsqueeze(-1).expand(-1, -1, upp).reshape(batch, -1, 1)  # nearest upsampling
        noise = (uv * self.noise_std + (1 - uv) * self.sine_amp / 3) * torch.randn_like(sines)
        return sines * uv + noise, uv


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
        net: a loaded :class:`models.SynthesizerTrn` (float32). Its modules are shared, not
            copied, and its decoder is switched to frame-rate f0 with :class:`FrameRateSineGen`,
            so the net is meant for this graph only afterwards.
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
        # f0 stays at frame rate (4.1's switch), with the exact-phase source
        self.dec.OnnxExport()
        self.dec.m_source.l_sin_gen = FrameRateSineGen(self.dec.m_source.l_sin_gen)
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
        g = self.speaker(sid)
        x_mask = torch.ones_like(f0).unsqueeze(1)  # [1, 1, T]
        # As SynthesizerTrn.embed_content: uv and volume terms are added after masking.
        x = self.pre(content) * x_mask + self.emb_uv(uv.long()).transpose(1, 2)
        if self.vol_embedding and vol is not None:
            x = x + self.emb_vol(vol[:, :, None]).transpose(1, 2)
        # As TextEncoder.forward, with the prior noise given instead of drawn.
        enc_p = self.enc_p
        x = x + enc_p.f0_emb(f0_to_coarse(f0)).transpose(1, 2)
        x = enc_p.enc_(x * x_mask, x_mask)
        stats = enc_p.proj(x) * x_mask
        m_p, logs_p = torch.split(stats, enc_p.out_channels, dim=1)
        z_p = (m_p + noise * torch.exp(logs_p)) * x_mask
        z = self.flow(z_p, x_mask, g=g, reverse=True)
        return self.dec(z * x_mask, g=g, f0=f0)
