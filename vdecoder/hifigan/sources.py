"""Harmonic-source strategies of the NSF-HiFiGAN decoder: how frame-rate f0 becomes per-sample sines.

The decoder (:class:`vdecoder.hifigan.models.Generator`) takes one of these as ``source=`` in
``forward``; it is a small stateless (or per-window) object, not a mode of the model. Each
``sines(gen, f0 [B, T] Hz per frame, upp)`` returns ``sin(2π·phase) [B, T·upp, dim]`` for the
harmonics 1..dim of :class:`~vdecoder.hifigan.models.SineGen` ``gen`` (amplitude and the snake
decoder's uv noise are applied by ``gen``). Draws: one ``rand [B, dim]`` (initial phases, the
fundamental's forced to 0) unless a phase is given.

===================== ============================================ =========================
strategy              phase                                          used by
===================== ============================================ =========================
SampleRateSource      f0 nearest-upsampled, cumsum per sample        offline ``infer`` (4.1)
FrameRateSource       4.1's frame-rate ("ONNX") formula; with        ``OnnxExport()`` (4.1),
                      ``phase_offset`` the phase is carried in       realtime engine
ExactFrameRateSource  frame-rate f0, exact sample-rate phase         ONNX exporter
===================== ============================================ =========================
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from modules import rng

__all__ = ["ExactFrameRateSource", "FrameRateSource", "HarmonicSource", "SampleRateSource"]


class HarmonicSource:
    """Base strategy (see the module docstring). Subclasses implement :meth:`sines`."""

    def sines(self, gen, f0: torch.Tensor, upp: int) -> torch.Tensor:
        raise NotImplementedError

    def uv(self, gen, f0: torch.Tensor, upp: int) -> torch.Tensor:
        """Voiced flag per sample ``[B, T·upp, 1]`` (snake decoder's gating): nearest upsampling."""
        return F.interpolate(gen._f02uv(f0[:, None]), scale_factor=float(upp), mode="nearest").transpose(2, 1)


class SampleRateSource(HarmonicSource):
    """The offline path of 4.1: f0 repeated to every sample, then the phase summed per sample."""

    def sines(self, gen, f0: torch.Tensor, upp: int) -> torch.Tensor:
        f0 = F.interpolate(f0[:, None], scale_factor=float(upp), mode="nearest").transpose(1, 2)  # [B, L, 1]
        return gen._sample_rate_sines(f0)

    def uv(self, gen, f0: torch.Tensor, upp: int) -> torch.Tensor:
        f0 = F.interpolate(f0[:, None], scale_factor=float(upp), mode="nearest").transpose(1, 2)
        return gen._f02uv(f0)


class FrameRateSource(HarmonicSource):
    """4.1's frame-rate ("ONNX") formula: the wrap points come from a frame-rate cumulative phase
    interpolated to sample rate.

    Args:
        phase_offset: initial phases (cycles / upp, ``[dim]``) added to frame 0's increment instead
            of the random draw; ``None`` draws them as 4.1 does. The realtime engine passes the
            phase its previous windows reached, so consecutive blocks agree (phase carrying).
    """

    def __init__(self, phase_offset: torch.Tensor | None = None) -> None:
        self.phase_offset = phase_offset

    def sines(self, gen, f0: torch.Tensor, upp: int) -> torch.Tensor:
        return gen._frame_rate_sines(f0, int(upp), self.phase_offset)


class ExactFrameRateSource(HarmonicSource):
    """Frame-rate f0 in, the phase of the sample-rate path out (what the ONNX graph computes).

    Why not 4.1's ONNX formula: it adds φ_h to every sample of frame 0 (harmonics 2–9 sweep through
    random high frequencies for one frame) and then sums ~10⁵ samples whose running total reaches
    hundreds of cycles; onnxruntime's float32 CumSum drifts there by up to 0.05 cycles per 20k
    samples (PyTorch sums in double). Here the sum runs over frames, in float64 (``T`` values per
    harmonic), and each sample adds its in-frame part ``(j+1)·r`` reduced mod 1 (float32)::

        frame k, sample j:  phase = frac(φ + upp·Σ_{m<k} r[m])  +  frac((j+1)·r[k])
                                    └── float64, frame rate ──┘    └─ float32, per sample ─┘
    """

    def sines(self, gen, f0: torch.Tensor, upp: int) -> torch.Tensor:
        upp = int(upp)
        batch = f0.shape[0]
        harmonics = torch.arange(1, gen.dim + 1, dtype=torch.float32, device=f0.device)
        # Same float32 operations as SineGen on upsampled f0, so r is bitwise the same.
        rad = (f0.unsqueeze(-1) * harmonics / gen.sampling_rate) % 1  # [B, T, dim]
        initial = rng.rand(batch, gen.dim, device=f0.device) * (harmonics > 1)  # φ_1 = 0
        per_frame = rad.double() * upp
        start = torch.cumsum(per_frame, dim=1) - per_frame + initial.double().unsqueeze(1)
        start = (start - torch.floor(start)).float()  # phase at each frame start, cycles
        steps = torch.arange(1, upp + 1, dtype=torch.float32, device=f0.device)[:, None]  # [upp, 1]
        within = rad.unsqueeze(2) * steps  # [B, T, upp, dim]
        phase = start.unsqueeze(2) + (within - torch.floor(within))
        return torch.sin(phase.reshape(batch, -1, gen.dim) * (2 * math.pi))

    def uv(self, gen, f0: torch.Tensor, upp: int) -> torch.Tensor:
        uv = (f0 > gen.voiced_threshold).float()
        return uv.unsqueeze(-1).expand(-1, -1, int(upp)).reshape(f0.shape[0], -1, 1)  # nearest upsampling
