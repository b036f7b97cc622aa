"""NSF-HiFiGAN decoder inside the synthesizer (4.1-Latest ``vdecoder/hifigan/models.py``).

``Generator(h)`` turns the flow output ``z [B, inter, T]`` and frame f0 ``[B, T]`` (Hz) into a
waveform ``[B, 1, T·prod(upsample_rates)]`` in [-1, 1]. A harmonic sine source built from f0
(:class:`SourceModuleHnNSF`) is injected after every upsampling stage.

Sine source, as 4.1-Latest computes it (spec §6.8, §13.10)::

    f0 (frame rate) ──nearest×upp──► f0 per sample ──×(1..9)──► r = (k·f0/sr) mod 1
    r[0] += random initial phase (harmonics 2..9 only)
    phase = cumsum(r − 1 at every wrap of cumsum(r) mod 1)   # keeps the sum small
    sine  = 0.1 · sin(2π · phase)

The frame-rate ("ONNX") path computes the wrap points from a frame-rate cumulative phase
interpolated to sample rate; ``Generator.OnnxExport()`` switches to it (ONNX export, realtime).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules.commons import init_weights
from modules.modules import convs_to_2d, fold_weight_norm, weight_norm
from vdecoder.blocks import LRELU_SLOPE, ResBlock1, ResBlock2

__all__ = ["Generator", "SineGen", "SourceModuleHnNSF"]

RESBLOCKS = {"1": ResBlock1, "2": ResBlock2}


class SineGen(nn.Module):
    """Harmonic sine generator (fundamental + ``harmonic_num`` overtones).

    ``forward(f0, upp) -> sines [B, L, harmonic_num+1]`` where ``f0`` is ``[B, L, 1]`` Hz per
    sample (normal path) or ``[B, T]`` Hz per frame with ``L = T·upp`` (``onnx`` path).
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

    #: Initial phases in cycles, ``[dim]``, used instead of the random draw (which is then
    #: skipped); ``None`` (default) draws them as 4.1 does. Streaming code sets it to carry the
    #: sine phase across blocks.
    phase_offset: torch.Tensor | None = None

    def _initial_phase(self, rad_values: torch.Tensor) -> torch.Tensor:
        if self.phase_offset is not None:
            rad_values[:, 0, :] = rad_values[:, 0, :] + self.phase_offset.to(rad_values)
            return rad_values
        rand_ini = torch.rand(rad_values.shape[0], rad_values.shape[2], device=rad_values.device)
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

    def _frame_rate_sines(self, f0: torch.Tensor, upp: int) -> torch.Tensor:
        """``f0 [B, T]`` per frame → ``[B, T·upp, dim]`` (the ONNX / realtime path)."""
        f0 = f0[:, None].transpose(1, 2)  # [B, T, 1]
        harmonics = torch.arange(1, self.dim + 1, dtype=torch.float32, device=f0.device)
        rad_values = (f0 * harmonics / self.sampling_rate) % 1
        rad_values = self._initial_phase(rad_values)
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
    def forward(self, f0: torch.Tensor, upp: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(sine_waves [B, L, dim], uv [B, L, 1] or None)``."""
        f0 = f0.float()  # the phase sum needs float32 even when the model runs in half precision
        if self.onnx:
            sines = self._frame_rate_sines(f0, int(upp))
            f0_samples = None
        else:
            sines = self._sample_rate_sines(f0)
            f0_samples = f0
        sine_waves = sines * self.sine_amp
        if not self.uv_noise:
            return sine_waves, None
        if f0_samples is None:
            uv = F.interpolate(self._f02uv(f0[:, None]), scale_factor=float(upp), mode="nearest").transpose(2, 1)
        else:
            uv = self._f02uv(f0_samples)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        noise = noise_amp * torch.randn_like(sine_waves)
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

    def forward(self, x: torch.Tensor, upp: int | None = None):
        sine_wavs, uv = self.l_sin_gen(x, upp)
        sine_merge = self.l_tanh(self.l_linear(sine_wavs.to(self.l_linear.weight.dtype)))
        if not self.uv_noise:
            return sine_merge, None, None
        noise = torch.randn_like(uv) * self.sine_amp / 3
        return sine_merge, noise, uv


def _chunking_pays() -> bool:
    """Chunked residual blocks pay off with one thread or non-spinning OpenMP threads."""
    return torch.get_num_threads() == 1 or os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


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
    def OnnxExport(self) -> None:  # noqa: N802 (4.1 name, used by the ONNX exporter / realtime engine)
        """Switch to the frame-rate sine path: ``forward`` then takes f0 at frame rate as is."""
        self.onnx = True
        self.m_source.l_sin_gen.onnx = True

    def harmonic_source(self, f0: torch.Tensor) -> torch.Tensor:
        """``f0 [B, T]`` (Hz per frame) → merged harmonic source ``[B, 1, T·upp]``."""
        if not self.onnx:
            f0 = F.interpolate(f0[:, None], scale_factor=float(self.upp), mode="nearest").transpose(1, 2)
        har_source = self.m_source(f0, self.upp)[0]
        return har_source.transpose(1, 2)

    def forward(self, x: torch.Tensor, f0: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        har_source = self.harmonic_source(f0).to(x.dtype)
        if self.conv2d:
            # Inference layout [B, C, 1, L] channels-last (see prepare_for_inference).
            cl = torch.channels_last
            x = x.unsqueeze(2).contiguous(memory_format=cl)
            har_source = har_source.unsqueeze(2).contiguous(memory_format=cl)
            g = g.unsqueeze(2)
        inplace = not torch.is_grad_enabled()
        x = self.conv_pre(x)
        x = x + self.cond(g)
        for i in range(self.num_upsamples):
            x = self._stage_activation(i, x)
            x = self.ups[i](x)
            source = self.noise_convs[i](har_source)
            x = x.add_(source) if inplace else x + source
            x = self._mrf(i, x, inplace)
        x = self._post_activation(x)
        x = self.conv_post(x)
        if self.conv2d:
            x = x.squeeze(2)
        return torch.tanh(x)

    conv2d = False  # set by prepare_for_inference
    # Samples per chunk of the multi-receptive-field blocks at inference; 0 disables chunking.
    # None (auto): chunks of 4 MiB of activations (at least 8192 samples, ~7 per stage at
    # 44.1 kHz), so the ~30 elementwise passes per stage mostly hit the cache, but only with one
    # intra-op thread or with OMP_WAIT_POLICY=PASSIVE: chunking multiplies the number of parallel
    # regions, and with spinning OpenMP threads on a busy machine their barriers cost more than
    # the cache saves (measured on the shared 2-core machine: 15 % faster passive, 2x slower
    # spinning under load).
    mrf_chunk: int | None = None

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
        chunk = self.mrf_chunk
        if chunk is None:
            chunk = max(8192, (1 << 20) // x.shape[1]) if x.device.type == "cpu" and _chunking_pays() else 0
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

    def prepare_for_inference(self, *, conv2d: bool = True) -> Generator:
        """Fold weight norm and (``conv2d``) switch to the channels-last 2-D layout, which is
        faster on CPU with the same output up to float summation order. Inference only: the
        state dict of a prepared generator no longer matches 4.1 files."""
        self.remove_weight_norm()
        if conv2d and self.supports_conv2d:
            convs_to_2d(self)
            self.conv2d = True
        return self

    supports_conv2d = True

