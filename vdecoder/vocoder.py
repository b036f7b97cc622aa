"""Mel extraction + mel-to-audio with a standalone vocoder (4.1's ``diffusion.vocoder.Vocoder``)."""

from __future__ import annotations

import os

import torch

from modules.audio import sinc_resample
from modules.device import resolve_device
from modules.mel_processing import STFT
from modules.pretrained import require
from vdecoder.registry import get_vocoder_spec

# 4.1 resampled to the vocoder rate with torchaudio Resample(lowpass_filter_width=128).
RESAMPLE_FILTER_WIDTH = 128


def default_device() -> str:
    """The ``auto`` device's name (kept for callers of 4.1's helper)."""
    from modules.device import auto_device

    return str(auto_device())


class Vocoder:
    """A registered mel vocoder with its own mel front end.

    ``extract(audio [B, L], sample_rate) → mel [B, T, n_mels]`` (natural log, T = L'/hop where
    L' is the length at the vocoder rate); ``infer(mel [B, T, n_mels], f0 [B, T', 1] Hz) →
    audio [B, 1, T·hop]`` at :attr:`vocoder_sample_rate`.

    The config is read at construction; the weights load (once per process, shared with the
    enhancer) on the first :meth:`infer`, so mel extraction and training need no weights in
    memory. A missing file is reported at construction.
    """

    def __init__(self, vocoder_type: str, vocoder_ckpt: str | os.PathLike, device: str | torch.device | None = None) -> None:
        from vdecoder.nsf_hifigan.loader import load_config

        self.spec = get_vocoder_spec(vocoder_type)
        self.vocoder_type = vocoder_type
        self.device = resolve_device(device)
        self.ckpt = require(self.spec.pretrained_key, vocoder_ckpt)
        self.h = load_config(self.ckpt, pretrained_key=self.spec.pretrained_key)
        self.stft = STFT(self.h.sampling_rate, self.h.num_mels, self.h.n_fft, self.h.win_size, self.h.hop_size,
                         self.h.fmin, self.h.fmax)
        self.vocoder_sample_rate = self.h.sampling_rate
        self.vocoder_hop_size = self.h.hop_size
        self.dimension = self.h.num_mels
        self._model = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model, _ = self.spec.loader(self.ckpt, self.device)
        return self._model

    def extract(self, audio: torch.Tensor, sample_rate: int, keyshift: float = 0) -> torch.Tensor:
        """``[B, L]`` audio at ``sample_rate`` → ``[B, T, n_mels]`` log mel at the vocoder rate."""
        if sample_rate != self.vocoder_sample_rate:
            audio = sinc_resample(audio, sample_rate, self.vocoder_sample_rate, lowpass_filter_width=RESAMPLE_FILTER_WIDTH)
        return self.stft.get_mel(audio, keyshift=keyshift).transpose(1, 2)

    @torch.inference_mode()
    def infer(self, mel: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        """``mel [B, T, n_mels]``, ``f0 [B, ≥T, 1]`` (Hz, cut to T) → audio ``[B, 1, T·hop]``."""
        if mel.dim() != 3 or mel.size(-1) != self.dimension:
            raise ValueError(f"vocoder input must be [B, T, {self.dimension}], got {tuple(mel.shape)}")
        if f0.dim() == 2:
            f0 = f0.unsqueeze(-1)
        if f0.size(1) < mel.size(1):
            raise ValueError(f"f0 has {f0.size(1)} frames but the mel has {mel.size(1)}; they must cover the same audio")
        f0 = f0[:, : mel.size(1), 0]
        c = mel.transpose(1, 2)
        if self.spec.mel_scale != 1.0:
            c = self.spec.mel_scale * c
        model = self.model
        dtype = next(model.parameters()).dtype
        return model(c.to(self.device, dtype), f0.to(self.device)).float()
