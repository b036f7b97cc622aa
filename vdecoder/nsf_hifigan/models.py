"""The standalone NSF-HiFiGAN vocoder (openvpi ``nsf_hifigan_20221211``, 4.1's ``vdecoder/nsf_hifigan``).

Used by shallow diffusion (mel → audio) and by the enhancer; never trained here. Modules only,
no file I/O (loading lives in :mod:`vdecoder.nsf_hifigan.loader`).

It differs from the synthesizer's decoder (``vdecoder/hifigan``, spec §6.8) in three ways that
trained weights depend on (spec §7.7, §13.10):

* no speaker ``cond`` layer; input is a log-mel ``[B, n_mels, T]``;
* the harmonic source works at *frame* rate: the cumulative phase is summed per frame in
  float64, linearly interpolated to sample rate only to find where it wraps, and the sines
  are gated by voicing with additive noise (std 0.003 voiced, 0.1/3 unvoiced);
* padding of the up-sampling convolutions is ``(k − u) // 2`` and of the source convolutions
  ``s // 2`` (equal to the decoder's for the published rates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules.commons import init_weights
from modules.modules import convs_to_2d, fold_weight_norm, weight_norm
from vdecoder.blocks import LRELU_SLOPE, ResBlock1, ResBlock2

HARMONIC_NUM = 8  # 9 sines: f0·1 … f0·9 (hard-coded in the published vocoder)
SINE_AMP = 0.1
NOISE_STD = 0.003  # additive noise in voiced frames; unvoiced frames get SINE_AMP / 3


@dataclass(frozen=True)
class NsfHifiganConfig:
    """The fields of the vocoder's ``config.json`` that the model and its mel front end read."""

    sampling_rate: int = 44100
    num_mels: int = 128
    n_fft: int = 2048
    win_size: int = 2048
    hop_size: int = 512
    fmin: float = 40.0
    fmax: float = 16000.0
    resblock: str = "1"
    resblock_kernel_sizes: Sequence[int] = (3, 7, 11)
    resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: Sequence[int] = (8, 8, 2, 2, 2)
    upsample_kernel_sizes: Sequence[int] = (16, 16, 4, 4, 4)
    upsample_initial_channel: int = 512
    extra: dict = field(default_factory=dict, compare=False, repr=False)  # keys not read (training)

    @property
    def upsample_factor(self) -> int:
        return int(np.prod(self.upsample_rates))


class SineGen(nn.Module):
    """Harmonic sine source driven by frame-rate f0 (the openvpi vocoder's variant).

    ``forward(f0 [B, T] Hz, upp) → [B, T·upp, harmonic_num + 1]`` at sample rate.

    Draws from torch's global generator, in this order: ``rand(1, dim)`` (initial phases; the
    fundamental's is set to 0), then ``randn`` of the output's shape (noise), exactly as 4.1,
    so a seeded call reproduces 4.1's audio.
    """

    def __init__(self, sampling_rate: int, harmonic_num: int = HARMONIC_NUM, sine_amp: float = SINE_AMP,
                 noise_std: float = NOISE_STD, voiced_threshold: float = 0.0) -> None:
        super().__init__()
        self.sampling_rate = sampling_rate
        self.dim = harmonic_num + 1
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold

    def _phase_sines(self, f0_harm: torch.Tensor, upp: int) -> torch.Tensor:
        """``[B, T, dim]`` harmonic frequencies (Hz) → ``[B, T·upp, dim]`` sines (float64 phase).

        Per frame, r = (f/sr) mod 1 is the phase advance per sample. The phase of sample n is
        Σ r (nearest-upsampled) with −1 added wherever the *frame-level* cumulative phase,
        linearly interpolated to sample rate, wraps (4.1's construction, kept for fidelity).

            frame:     |----0----|----1----|----2----|      cumsum(r)·upp at frame boundaries
            samples:   ..........^ wrap found here → −1 added to the running sum
        """
        rad = torch.fmod(f0_harm / self.sampling_rate, 1.0)
        initial = torch.rand(1, self.dim, device=f0_harm.device)
        initial[:, 0] = 0
        rad[:, 0, :] += initial.to(rad.dtype)
        frame_phase = torch.cumsum(rad.double(), dim=1).to(rad.dtype) * upp
        sample_phase = F.interpolate(frame_phase.transpose(2, 1), scale_factor=upp, mode="linear",
                                     align_corners=True).transpose(2, 1)
        sample_phase = sample_phase % 1
        wraps = (sample_phase[:, 1:, :] - sample_phase[:, :-1, :]) < 0
        del sample_phase  # the sample-rate tensors are large: keep few alive at once
        increment = F.interpolate(rad.transpose(2, 1), scale_factor=upp, mode="nearest").transpose(2, 1).double()
        increment[:, 1:, :] -= wraps.double()
        del wraps
        # Same operations and order as (cumsum · 2) · π → sin. The cumsum is out of place on
        # purpose: its output layout (contiguous) decides how the later randn_like fills the
        # noise, which must be 4.1's for seeded runs to match.
        phase = torch.cumsum(increment, dim=1)
        del increment
        return phase.mul_(2).mul_(np.pi).sin_()

    @torch.no_grad()
    def forward(self, f0: torch.Tensor, upp: int) -> torch.Tensor:
        dtype = f0.dtype
        f0 = f0.float().unsqueeze(-1)  # [B, T, 1]
        harmonics = torch.arange(1, self.dim + 1, device=f0.device, dtype=f0.dtype).reshape(1, 1, -1)
        sines = self._phase_sines(f0 * harmonics, upp).float().mul_(self.sine_amp)
        uv = (f0 > self.voiced_threshold).float()
        uv = F.interpolate(uv.transpose(2, 1), scale_factor=upp, mode="nearest").transpose(2, 1)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        noise = torch.randn_like(sines).mul_(noise_amp)
        return sines.mul_(uv).add_(noise).to(dtype)


class SourceModuleHnNSF(nn.Module):
    """Sines → one excitation channel: ``tanh(Linear(dim → 1))``; ``[B, T] → [B, T·upp, 1]``."""

    def __init__(self, sampling_rate: int, harmonic_num: int = HARMONIC_NUM, sine_amp: float = SINE_AMP,
                 add_noise_std: float = NOISE_STD, voiced_threshold: float = 0.0) -> None:
        super().__init__()
        self.l_sin_gen = SineGen(sampling_rate, harmonic_num, sine_amp, add_noise_std, voiced_threshold)
        self.l_linear = nn.Linear(harmonic_num + 1, 1)
        self.l_tanh = nn.Tanh()

    def forward(self, f0: torch.Tensor, upp: int) -> torch.Tensor:
        sines = self.l_sin_gen(f0, upp).to(self.l_linear.weight.dtype)
        return self.l_tanh(self.l_linear(sines))


class Generator(nn.Module):
    """NSF-HiFiGAN: ``forward(mel [B, n_mels, T] natural-log, f0 [B, T] Hz) → [B, 1, T·hop]``.

    State-dict keys are the published ones (spec §7.7): ``m_source.l_linear``, ``noise_convs``,
    ``conv_pre``, ``ups``, ``resblocks.{i}.convs1/convs2`` (weight-normed: ``weight_g`` /
    ``weight_v``), ``conv_post``. Call :meth:`prepare_for_inference` after loading.
    """

    def __init__(self, h: NsfHifiganConfig) -> None:
        super().__init__()
        self.h = h
        self.num_kernels = len(h.resblock_kernel_sizes)
        self.num_upsamples = len(h.upsample_rates)
        self.upp = h.upsample_factor
        self.m_source = SourceModuleHnNSF(sampling_rate=h.sampling_rate, harmonic_num=HARMONIC_NUM)
        self.noise_convs = nn.ModuleList()
        self.conv_pre = weight_norm(nn.Conv1d(h.num_mels, h.upsample_initial_channel, 7, 1, padding=3))
        resblock = ResBlock1 if str(h.resblock) == "1" else ResBlock2

        self.ups = nn.ModuleList()
        ch = h.upsample_initial_channel
        for i, (u, k) in enumerate(zip(h.upsample_rates, h.upsample_kernel_sizes)):
            c_out = h.upsample_initial_channel // (2 ** (i + 1))
            self.ups.append(weight_norm(nn.ConvTranspose1d(ch, c_out, k, u, padding=(k - u) // 2)))
            if i + 1 < len(h.upsample_rates):
                stride = int(np.prod(h.upsample_rates[i + 1:]))
                self.noise_convs.append(nn.Conv1d(1, c_out, kernel_size=stride * 2, stride=stride, padding=stride // 2))
            else:
                self.noise_convs.append(nn.Conv1d(1, c_out, kernel_size=1))
            ch = c_out

        self.resblocks = nn.ModuleList()
        ch = h.upsample_initial_channel
        for _ in range(len(self.ups)):
            ch //= 2
            for k, d in zip(h.resblock_kernel_sizes, h.resblock_dilation_sizes):
                self.resblocks.append(resblock(ch, k, d))
        self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, 1, padding=3))
        self.ups.apply(init_weights)
        self.conv_post.apply(init_weights)

    conv2d = False  # set by prepare_for_inference

    def forward(self, x: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        source = self.m_source(f0, self.upp).transpose(1, 2).to(x.dtype)  # [B, 1, L]
        if self.conv2d:  # inference layout [B, C, 1, L], channels-last (see prepare_for_inference)
            x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            source = source.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        # Without autograd, fresh intermediate tensors are updated in place (same values).
        inplace = not torch.is_grad_enabled()
        x = self.conv_pre(x)
        for i in range(self.num_upsamples):
            x = F.leaky_relu(x, LRELU_SLOPE, inplace=inplace)
            x = self.ups[i](x)
            s = self.noise_convs[i](source)
            x = x.add_(s) if inplace else x + s
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                r = self.resblocks[i * self.num_kernels + j](x)
                xs = xs.add_(r) if inplace else xs + r
            x = xs.div_(self.num_kernels) if inplace else xs / self.num_kernels
        x = F.leaky_relu(x, inplace=inplace)  # PyTorch's default slope 0.01, as the published vocoder
        x = self.conv_post(x)
        if self.conv2d:
            x = x.squeeze(2)
        return torch.tanh(x)

    def remove_weight_norm(self) -> "Generator":
        """Fold g·v/‖v‖ into plain weights (inference: each weight computed once, not per call)."""
        fold_weight_norm(self)
        return self

    def prepare_for_inference(self, *, conv2d: bool = True) -> "Generator":
        """Fold weight norm and (``conv2d``) run every convolution as a channels-last 2-D one.

        oneDNN then skips the layout reorders around each 1-D call; outputs differ from the
        1-D path only by float summation order. Inference only: the state dict no longer has
        4.1's layout afterwards.
        """
        self.remove_weight_norm()
        if conv2d:
            convs_to_2d(self)
            self.conv2d = True
        return self
