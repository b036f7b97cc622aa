"""NSF-HiFiGAN decoder inside the synthesizer (4.1-Latest ``vdecoder/hifigan/models.py``).

``Generator(h)`` turns the flow output ``z [B, inter, T]`` and frame f0 ``[B, T]`` (Hz) into a
waveform ``[B, 1, T·prod(upsample_rates)]`` in [-1, 1]. A harmonic sine source built from f0
(:class:`SourceModuleHnNSF`) is injected after every upsampling stage.

Sine source, as 4.1-Latest computes it (spec §6.8, §13.10)::

    f0 (frame rate) ──nearest×upp──► f0 per sample ──×(1..9)──► r = (k·f0/sr) mod 1
    r[0] += random initial phase (harmonics 2..9 only)
    phase = cumsum(r − 1 at every wrap of cumsum(r) mod 1)   # keeps the sum small
    sine  = 0.1 · sin(2π · phase)

How f0 becomes per-sample sines is a strategy passed to ``forward`` (``source=``, see
:mod:`vdecoder.hifigan.sources`): the sample-rate path above (default), 4.1's frame-rate ("ONNX")
formula, optionally carrying the phase across realtime blocks, or the exporter's exact frame-rate
path. Inference options (2-D layout, chunked residual blocks) belong to the inference-ready copy
made by :meth:`Generator.for_inference`; nothing here reads the environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules import rng
from modules.commons import init_weights
from modules.modules import convs_to_2d, fold_weight_norm, inference_copy, weight_norm
from vdecoder.blocks import LRELU_SLOPE, ResBlock1, ResBlock2
from vdecoder.hifigan.sources import FrameRateSource, HarmonicSource, SampleRateSource

__all__ = ["Generator", "SineGen", "SourceModuleHnNSF", "chunking_pays", "receptive_radius_frames"]

RESBLOCKS = {"1": ResBlock1, "2": ResBlock2}


class SineGen(nn.Module):
    """Harmonic sine generator (fundamental + ``harmonic_num`` overtones).

    ``forward(f0, upp, source=None) -> sines [B, L, harmonic_num+1]``: with a ``source``
    strategy (:mod:`vdecoder.hifigan.sources`) ``f0`` is ``[B, T]`` Hz per frame and ``L = T·upp``;
    without one (4.1's call), ``[B, L, 1]`` Hz per sample, or per frame when ``onnx`` is set.
    One ``torch.rand(B, harmonic_num+1)`` draw per call (initial phases; the fundamental's is 0).

    ``uv_noise`` (4.1-Stable behaviour, kept by the snake decoder): unvoiced samples are zeroed
    and Gaussian noise is added (std ``noise_std`` voiced, ``sine_amp/3`` unvoiced), which costs
    one more ``randn_like`` draw of the output's shape.
    """

    def __init__(self, samp_rate: int, harmonic_num: int = 0, sine_amp: float = 0.1, noise_std: float = 0.003,
                 voiced_threshold: float = 0, *, uv_noise: bool = False) -> None:
        super().__init__()
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.harmonic_num = harmonic_num
        self.dim = harmonic_num + 1
        self.sampling_rate = samp_rate
        self.voiced_threshold = voiced_threshold
        self.uv_noise = uv_noise
        self.onnx = False

    def _f02uv(self, f0: torch.Tensor) -> torch.Tensor:
        return (f0 > self.voiced_threshold).type(torch.float32)

    def _initial_phase(self, rad_values: torch.Tensor, phase_offset: torch.Tensor | None = None) -> torch.Tensor:
        """Add the initial phases to the first increment: ``phase_offset [dim]`` (cycles) when
        given (no draw), else one ``rand [B, dim]`` draw with the fundamental's set to 0 (4.1)."""
        if phase_offset is not None:
            rad_values[:, 0, :] = rad_values[:, 0, :] + phase_offset.to(rad_values)
            return rad_values
        rand_ini = rng.rand(rad_values.shape[0], rad_values.shape[2], device=rad_values.device)
        rand_ini[:, 0] = 0
        rad_values[:, 0, :] = rad_values[:, 0, :] + rand_ini
        return rad_values

    def _sample_rate_sines(self, f0: torch.Tensor) -> torch.Tensor:
        """``f0 [B, L, 1]`` per sample → ``sin(2π·phase) [B, L, dim]`` (without amplitude)."""
        harmonics = torch.arange(1, self.dim + 1, dtype=torch.float32, device=f0.device)
        rad_values = (f0 * harmonics / self.sampling_rate) % 1
        rad_values = self._initial_phase(rad_values)
        # Subtract 1 wherever the running phase wraps so the second cumsum stays in a small range
        # (float32 precision); numerically sin(2π·Σr) as in 4.1.
        wrapped = torch.cumsum(rad_values, 1) % 1
        cumsum_shift = torch.zeros_like(rad_values)
        cumsum_shift[:, 1:, :] = (wrapped[:, 1:, :] - wrapped[:, :-1, :] < 0) * -1.0
        return torch.sin(torch.cumsum(rad_values + cumsum_shift, dim=1) * 2 * np.pi)

    def _frame_rate_sines(self, f0: torch.Tensor, upp: int, phase_offset: torch.Tensor | None = None) -> torch.Tensor:
        """``f0 [B, T]`` per frame → ``[B, T·upp, dim]`` (4.1's ONNX path; realtime with ``phase_offset``)."""
        f0 = f0[:, None].transpose(1, 2)  # [B, T, 1]
        harmonics = torch.arange(1, self.dim + 1, dtype=torch.float32, device=f0.device)
        rad_values = (f0 * harmonics / self.sampling_rate) % 1
        rad_values = self._initial_phase(rad_values, phase_offset)
        phase = torch.cumsum(rad_values, 1) * upp
        phase = F.interpolate(phase.transpose(2, 1), scale_factor=float(upp), mode="linear",
                              align_corners=True).transpose(2, 1)
        rad_values = F.interpolate(rad_values.transpose(2, 1), scale_factor=float(upp),
                                   mode="nearest").transpose(2, 1)
        phase = phase % 1
        cumsum_shift = torch.zeros_like(rad_values)
        cumsum_shift[:, 1:, :] = (phase[:, 1:, :] - phase[:, :-1, :] < 0) * -1.0
        return torch.sin(torch.cumsum(rad_values + cumsum_shift, dim=1) * 2 * np.pi)

    @torch.no_grad()
    def forward(self, f0: torch.Tensor, upp: int | None = None,
                source: HarmonicSource | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(sine_waves [B, L, dim], uv [B, L, 1] or None)``."""
        f0 = f0.float()  # the phase sum needs float32 even when the model runs in half precision
        if source is not None:
            sines = source.sines(self, f0, int(upp))
        elif self.onnx:
            sines = self._frame_rate_sines(f0, int(upp))
        else:
            sines = self._sample_rate_sines(f0)
        sine_waves = sines * self.sine_amp
        if not self.uv_noise:
            return sine_waves, None
        if source is not None:
            uv = source.uv(self, f0, int(upp))
        elif self.onnx:
            uv = FrameRateSource().uv(self, f0, int(upp))
        else:
            uv = self._f02uv(f0)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        noise = noise_amp * rng.randn_like(sine_waves)
        return sine_waves * uv + noise, uv


class SourceModuleHnNSF(nn.Module):
    """Merge the sines into one excitation: ``tanh(Linear(dim → 1)(sines))`` → ``[B, L, 1]``.

    ``forward`` returns ``(sine_merge, noise, uv)``; ``noise``/``uv`` are ``None`` unless
    ``uv_noise`` (snake decoder), where 4.1 also draws an (unused) noise branch.
    """

    def __init__(self, sampling_rate: int, harmonic_num: int = 0, sine_amp: float = 0.1,
                 add_noise_std: float = 0.003, voiced_threshod: float = 0, *, uv_noise: bool = False) -> None:
        super().__init__()
        self.sine_amp = sine_amp
        self.noise_std = add_noise_std
        self.uv_noise = uv_noise
        self.l_sin_gen = SineGen(sampling_rate, harmonic_num, sine_amp, add_noise_std, voiced_threshod,
                                 uv_noise=uv_noise)
        self.l_linear = nn.Linear(harmonic_num + 1, 1)
        self.l_tanh = nn.Tanh()

    def forward(self, x: torch.Tensor, upp: int | None = None, source: HarmonicSource | None = None):
        sine_wavs, uv = self.l_sin_gen(x, upp, source)
        sine_merge = self.l_tanh(self.l_linear(sine_wavs.to(self.l_linear.weight.dtype)))
        if not self.uv_noise:
            return sine_merge, None, None
        noise = rng.randn_like(uv) * self.sine_amp / 3
        return sine_merge, noise, uv


def receptive_radius_frames(dec) -> int:
    """Frames of z / f0 on each side that influence a decoder output sample (NSF-HiFiGAN).

    conv_pre (kernel 7) reaches 3 frames; each upsampling stage adds ceil(k/u) input samples of
    its transposed conv and the widest residual block's reach at the new rate; conv_post adds 3
    samples. The snake variant's anti-aliasing filters add 6 samples at every stage. +2 frames slack.
    """
    h = dec.h
    key = str(h["resblock"])
    n_dil = 3 if key == "1" else 2
    mrf = max(sum((k - 1) // 2 * d for d in dil[:n_dil]) + (n_dil * ((k - 1) // 2) if key == "1" else 0)
              for k, dil in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]))
    snake = 6 if hasattr(dec, "snakes") else 0
    reach, rate = 3.0, 1
    for u, k in zip(h["upsample_rates"], h["upsample_kernel_sizes"]):
        reach += (math.ceil(k / u) + snake) / rate
        rate *= int(u)
        reach += (mrf + snake * n_dil * 2) / rate
    reach += (3 + snake) / rate
    return math.ceil(reach) + 2


def chunking_pays(threads: int, omp_wait_policy: str | None) -> bool:
    """Whether chunked residual blocks (``mrf_chunk="auto"``) pay off: with one intra-op thread or
    with non-spinning OpenMP threads (``OMP_WAIT_POLICY=PASSIVE``). Chunking multiplies the number
    of parallel regions, and with spinning threads on a busy machine their barriers cost more than
    the cache saves (measured on the shared 2-core machine: 15 % faster passive, 2x slower spinning
    under load). The caller passes the process's settings; the decoder never reads them."""
    return int(threads) == 1 or (omp_wait_policy or "").upper() == "PASSIVE"


MrfChunk = int | Literal["auto"]


class Generator(nn.Module):
    """NSF-HiFiGAN generator (state-dict names as 4.1: ``m_source``, ``noise_convs``, ``conv_pre``,
    ``ups``, ``resblocks``, ``conv_post``, ``cond``).

    ``h`` holds ``sampling_rate``, ``inter_channels``, ``resblock``, ``resblock_kernel_sizes``,
    ``resblock_dilation_sizes``, ``upsample_rates``, ``upsample_initial_channel``,
    ``upsample_kernel_sizes``, ``gin_channels``.
    ``forward(x [B, inter, T], f0 [B, T] Hz, g [B, gin, 1 or T]) -> [B, 1, T·upp]``.
    """

    uv_noise = False  # the snake variant keeps 4.1-Stable's uv gating + noise

    def __init__(self, h: Mapping) -> None:
        super().__init__()
        self.h = h
        rates = list(h["upsample_rates"])
        kernels = list(h["upsample_kernel_sizes"])
        u0 = int(h["upsample_initial_channel"])
        self.num_kernels = len(h["resblock_kernel_sizes"])
        self.num_upsamples = len(rates)
        self.upp = int(np.prod(rates))
        self.m_source = SourceModuleHnNSF(sampling_rate=h["sampling_rate"], harmonic_num=8, uv_noise=self.uv_noise)
        self.noise_convs = nn.ModuleList()
        self.conv_pre = weight_norm(nn.Conv1d(h["inter_channels"], u0, 7, 1, padding=3))
        resblock_key = str(h["resblock"])
        if resblock_key not in RESBLOCKS:
            raise ValueError(f"unknown resblock {resblock_key!r}; valid: {sorted(RESBLOCKS)}")
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(rates, kernels)):
            c_cur = u0 // (2 ** (i + 1))
            self.ups.append(weight_norm(nn.ConvTranspose1d(u0 // (2**i), c_cur, k, u, padding=(k - u + 1) // 2)))
            if i + 1 < len(rates):
                # Strided conv bringing the sample-rate source down to this stage's rate.
                stride_f0 = int(np.prod(rates[i + 1:]))
                self.noise_convs.append(nn.Conv1d(1, c_cur, kernel_size=stride_f0 * 2, stride=stride_f0,
                                                  padding=(stride_f0 + 1) // 2))
            else:
                self.noise_convs.append(nn.Conv1d(1, c_cur, kernel_size=1))
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = u0 // (2 ** (i + 1))
            for k, d in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]):
                self.resblocks.append(self._make_resblock(resblock_key, ch, k, d, stage=i))
        # Receptive radius (samples each side) of the widest residual block: every conv adds
        # (k−1)/2·dilation; ResBlock1 has a dilated and an undilated conv per dilation.
        n_dil = 3 if resblock_key == "1" else 2
        self._mrf_halo = max(
            sum((k - 1) // 2 * dd for dd in d[:n_dil]) + (n_dil * ((k - 1) // 2) if resblock_key == "1" else 0)
            for k, d in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]))
        self._build_stage_activations(u0)
        self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, 1, padding=3))
        self.ups.apply(init_weights)
        self.conv_post.apply(init_weights)
        self._build_post_activation(ch)
        self.cond = nn.Conv1d(h["gin_channels"], u0, 1)
        self.onnx = False
        self._conv2d = False
        self._mrf_chunk: MrfChunk = 0

    # --- variant hooks (the snake decoder overrides these) ---
    def _make_resblock(self, key: str, ch: int, k: int, d, *, stage: int) -> nn.Module:
        return RESBLOCKS[key](ch, k, d)

    def _build_stage_activations(self, u0: int) -> None:
        pass

    def _build_post_activation(self, ch: int) -> None:
        pass

    def _stage_activation(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, LRELU_SLOPE, inplace=not torch.is_grad_enabled())

    def _post_activation(self, x: torch.Tensor) -> torch.Tensor:
        # PyTorch's default slope 0.01 here, not 0.1, as 4.1 (spec §13.11)
        return F.leaky_relu(x, 0.01, inplace=not torch.is_grad_enabled())

    # --- public API ---
    def OnnxExport(self) -> None:  # noqa: N802 (4.1 name)
        """4.1 compatibility: make 4.1's frame-rate formula (:class:`FrameRateSource`) the default
        source of this decoder. Code of this project passes ``source=`` to ``forward`` instead."""
        self.onnx = True
        self.m_source.l_sin_gen.onnx = True

    @property
    def conv2d(self) -> bool:
        """Whether convolutions run in the channels-last 2-D layout (inference-ready copies only)."""
        return self._conv2d

    @property
    def mrf_chunk(self) -> MrfChunk:
        """Samples per residual-block chunk at inference (0 off, "auto" 4 MiB of activations)."""
        return self._mrf_chunk

    def default_source(self) -> HarmonicSource:
        """The source used when ``forward`` gets none: sample rate (4.1 offline), or 4.1's frame-rate
        formula after :meth:`OnnxExport`."""
        return FrameRateSource() if self.onnx else SampleRateSource()

    def harmonic_source(self, f0: torch.Tensor, source: HarmonicSource | None = None) -> torch.Tensor:
        """``f0 [B, T]`` (Hz per frame) → merged harmonic source ``[B, 1, T·upp]`` via ``source``."""
        har_source = self.m_source(f0, self.upp, source or self.default_source())[0]
        return har_source.transpose(1, 2)

    def forward(self, x: torch.Tensor, f0: torch.Tensor, g: torch.Tensor | None = None,
                source: HarmonicSource | None = None, keep: tuple[int, int] | None = None) -> torch.Tensor:
        """``x [B, inter, T]``, ``f0 [B, T]`` Hz, ``g [B, gin, 1 or T]``, ``source`` strategy
        (default :meth:`default_source`) → audio ``[B, 1, T·upp]``.

        ``keep=(a, b)``: only frames ``[a, b)`` of the output are wanted (the rest is the caller's
        receptive margin or padding, cut off afterwards). The input is first cut to those frames
        plus the receptive radius (the harmonic source is still computed over all of ``f0``, so its
        phase and random draws are the full decode's), then every stage to the samples the kept
        frames still depend on (:meth:`_stage_reach`): the margin shrinks stage by stage instead of
        being carried at every rate. Frames ``[a, b)`` equal the full decode up to float rounding;
        the rest of the output is zero."""
        T = x.shape[-1]
        if keep is not None:
            a, b = max(0, int(keep[0])), min(T, int(keep[1]))
            if not self.supports_keep or (a == 0 and b == T) or b <= a:
                y = self.forward(x, f0, g, source)
                if b <= a:
                    return y.new_zeros(y.shape)
                y[..., :a * self.upp] = 0
                y[..., b * self.upp:] = 0
                return y
        har_source = self.harmonic_source(f0, source).to(x.dtype)
        base = 0  # first frame of the input window (keep: a receptive radius before a)
        if keep is not None:
            radius = receptive_radius_frames(self)
            base, end = max(0, a - radius), min(T, b + radius)
            x, har_source = x[..., base:end], har_source[..., base * self.upp:end * self.upp]
            g = g[..., base:end] if g.shape[-1] > 1 else g
            a, b = a - base, b - base
            reach = self._stage_reach()
        if self.conv2d:
            # Inference layout [B, C, 1, L] channels-last (inference-ready copies, see for_inference).
            cl = torch.channels_last
            x = x.unsqueeze(2).contiguous(memory_format=cl)
            har_source = har_source.unsqueeze(2).contiguous(memory_format=cl)
            g = g.unsqueeze(2)
        inplace = not torch.is_grad_enabled()
        x = self.conv_pre(x)
        x = x + self.cond(g)
        rate, start = 1, 0  # samples per frame at this stage; the first sample x holds (stage samples)
        if keep is not None:
            x, start = self._crop(x, start, a, b, rate, reach[0])
        for i in range(self.num_upsamples):
            x = self._stage_activation(i, x)
            x = self.ups[i](x)
            rate *= int(self.h["upsample_rates"][i])
            start *= int(self.h["upsample_rates"][i])
            source = self.noise_convs[i](har_source)
            if keep is not None:
                source = source[..., start:start + x.shape[-1]]
                x = x[..., :source.shape[-1]]
            x = x.add_(source) if inplace else x + source
            if keep is not None:
                x, start = self._crop(x, start, a, b, rate, reach[i + 1])
            x = self._mrf(i, x, inplace)
        x = self._post_activation(x)
        x = self.conv_post(x)
        if self.conv2d:
            x = x.squeeze(2)
        x = torch.tanh(x)
        if keep is None:
            return x
        out = x.new_zeros(x.shape[0], 1, T * rate)
        lo, hi = a * rate, b * rate
        out[..., (base * rate + lo):(base * rate + hi)] = x[..., lo - start:hi - start]
        return out

    supports_keep = True  # the snake variant's anti-aliasing filters widen every stage: it decodes whole

    def _stage_reach(self) -> list[int]:
        """Samples, at each crop point's rate, that the kept output still depends on beyond the kept
        range: index 0 before the first upsampling (frames), i ≥ 1 before stage i's residual blocks.
        From the last stage back: conv_post (kernel 7) reaches 3 samples; a stage's residual blocks
        add their halo; the transposed conv into a stage needs ⌈k/u⌉ input samples plus what its
        output needs, divided by u. One sample of slack per stage."""
        rates = [int(u) for u in self.h["upsample_rates"]]
        kernels = [int(k) for k in self.h["upsample_kernel_sizes"]]
        reach = [0] * (len(rates) + 1)
        after = 3 + 1                                  # conv_post, at the last stage's rate
        for i in range(len(rates) - 1, -1, -1):
            reach[i + 1] = after + self._mrf_halo       # before stage i's residual blocks
            after = -(-reach[i + 1] // rates[i]) + -(-kernels[i] // rates[i]) + 1
        reach[0] = after
        return reach

    @staticmethod
    def _crop(x: torch.Tensor, start: int, a: int, b: int, rate: int, reach: int) -> tuple[torch.Tensor, int]:
        """``x`` (holding stage samples ``[start, start + len)``) cut to what frames ``[a, b)``
        depend on at this stage: ``[a·rate − reach, b·rate + reach)`` → ``(x, new start)``."""
        lo = max(start, a * rate - reach)
        hi = min(start + x.shape[-1], b * rate + reach)
        if lo == start and hi == start + x.shape[-1]:
            return x, start
        x = x[..., lo - start:hi - start]
        if x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return x, lo

    # mrf_chunk "auto": chunks of 4 MiB of activations (at least 8192 samples, ~7 per stage at
    # 44.1 kHz), so the ~30 elementwise passes per stage mostly hit the cache (CPU only; whether it
    # pays depends on the thread settings: see chunking_pays, decided by the caller).

    def _mrf(self, i: int, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        """Mean of the stage's ``num_kernels`` residual blocks applied to ``x``.

        At inference (2-D layout, no autograd) long signals are processed in chunks with a halo
        of the blocks' receptive radius, so every output sample sees exactly the inputs it sees
        unchunked (same result) while the intermediate tensors stay small::

            x:      |<halo>|======= chunk =======|<halo>|
            output:        |======= chunk =======|
        """
        blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
        length = x.shape[-1]
        chunk = self._mrf_chunk
        if chunk == "auto":
            # 4 MiB whatever the precision (bf16 chunks hold twice the samples of fp32 ones)
            chunk = max(8192, (4 << 20) // (x.shape[1] * x.element_size())) if x.device.type == "cpu" else 0
        halo = self._mrf_halo
        if not (self.conv2d and inplace) or chunk <= 0 or length <= chunk + 2 * halo:
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs += block(x)
            return xs.div_(self.num_kernels) if inplace else xs / self.num_kernels
        out = torch.empty_like(x)
        for start in range(0, length, chunk):
            stop = min(length, start + chunk)
            lo, hi = max(0, start - halo), min(length, stop + halo)
            xc = x[..., lo:hi]
            xs = blocks[0](xc)
            for block in blocks[1:]:
                xs += block(xc)
            out[..., start:stop] = xs[..., start - lo:stop - lo]
        return out.div_(self.num_kernels)

    def remove_weight_norm(self) -> None:
        """Fold every weight-normed layer into a plain weight (inference)."""
        fold_weight_norm(self)

    def for_inference(self, *, conv2d: bool = True, mrf_chunk: MrfChunk = 0) -> Generator:
        """A new inference-ready decoder made from this one, which is left unchanged: weight norm
        folded, eval mode, no gradients, and the inference options fixed at construction:

        Args:
            conv2d: run the convolutions in the channels-last 2-D layout (faster on CPU, same output
                up to float summation order; ignored where ``supports_conv2d`` is False).
            mrf_chunk: samples per chunk of the residual blocks (0: no chunking, "auto": 4 MiB of
                activations per chunk on CPU; pass "auto" where :func:`chunking_pays`).

        Unchanged tensors are shared with this decoder (no copy); its state dict no longer
        matches 4.1 files (save the loaded checkpoint, not this copy).
        """
        if mrf_chunk != "auto" and (not isinstance(mrf_chunk, int) or mrf_chunk < 0):
            raise ValueError(f"mrf_chunk must be 'auto' or a sample count ≥ 0 (0: off), got {mrf_chunk!r}")
        dec = inference_copy(self)
        dec._make_inference_ready(conv2d=conv2d, mrf_chunk=mrf_chunk)
        return dec

    def _make_inference_ready(self, *, conv2d: bool, mrf_chunk: MrfChunk) -> None:
        """In place, on a fresh copy only (see :meth:`for_inference`)."""
        self.eval()
        self.remove_weight_norm()
        if conv2d and self.supports_conv2d:
            convs_to_2d(self)
            self._conv2d = True
        self._mrf_chunk = mrf_chunk

    def prepare_for_inference(self, *, conv2d: bool = True, mrf_chunk: MrfChunk = 0) -> Generator:
        """Earlier name of :meth:`for_inference`: returns the new inference-ready decoder (this one
        is no longer changed in place; use the returned object)."""
        return self.for_inference(conv2d=conv2d, mrf_chunk=mrf_chunk)

    supports_conv2d = True

