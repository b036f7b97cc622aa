"""The one STFT / mel front end of the project (spec §3).

Two front ends exist in 4.1 and both live here:

* the synthesizer's (``spectrogram_torch``, ``spec_to_mel_torch``, ``mel_spectrogram_torch``):
  reflect padding of (n_fft − hop)/2, ``center=False``, magnitude sqrt(re²+im²+1e-6), 80 Slaney
  mel bins, natural log of max(·, 1e-5). T = floor(L / hop) frames.
* the NSF-HiFiGAN vocoder's (:class:`STFT`, 4.1's ``nvSTFT``): used by the vocoder, the
  enhancer, shallow diffusion and FCPE; magnitude sqrt(re²+im²+1e-9), optional key shift.

The arithmetic follows the original operation by operation, so results are bitwise equal to
4.1's on the same torch build. Filter banks and windows are cached per (parameters, dtype,
device); 4.1 keyed its mel cache on fmax only, so two front ends with the same fmax collided.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

MAX_WAV_VALUE = 32768.0


@lru_cache(maxsize=32)
def _mel_basis_np(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk)


# Cached tensors are always built outside inference mode: one first built inside
# ``torch.inference_mode`` (a conversion) would be an inference tensor, which autograd refuses to
# save, so a later training step in the same process (tests, a web UI that also trains) would fail.
_tensor_cache: dict[tuple, torch.Tensor] = {}


def mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, *, htk: bool = False,
              dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """librosa's Slaney-normalised mel filter bank ``[n_mels, n_fft//2+1]`` as a cached tensor."""
    key = ("mel", sr, n_fft, n_mels, float(fmin), None if fmax is None else float(fmax), htk, dtype, str(device))
    t = _tensor_cache.get(key)
    if t is None:
        with torch.inference_mode(False):  # see _tensor_cache
            t = torch.from_numpy(_mel_basis_np(sr, n_fft, n_mels, float(fmin), None if fmax is None else float(fmax),
                                               htk))
            t = t.to(dtype=dtype, device=device)
        _tensor_cache[key] = t
    return t


def hann_window(win_size: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """Periodic Hann window (``torch.hann_window``), cached."""
    key = ("hann", win_size, dtype, str(device))
    t = _tensor_cache.get(key)
    if t is None:
        with torch.inference_mode(False):  # see _tensor_cache
            t = torch.hann_window(win_size).to(dtype=dtype, device=device)
        _tensor_cache[key] = t
    return t


def spectral_normalize_torch(magnitudes: torch.Tensor, clip_val: float = 1e-5) -> torch.Tensor:
    """Natural log of max(x, clip_val)."""
    return torch.log(torch.clamp(magnitudes, min=clip_val))


def spectral_de_normalize_torch(magnitudes: torch.Tensor) -> torch.Tensor:
    return torch.exp(magnitudes)


def spectrogram_torch(y: torch.Tensor, n_fft: int, sampling_rate: int, hop_size: int, win_size: int,
                      center: bool = False) -> torch.Tensor:
    """Linear magnitude spectrogram.

    Args:
        y: ``[B, L]`` audio in [-1, 1].
    Returns:
        ``[B, n_fft//2+1, floor(L / hop_size)]`` magnitudes sqrt(re²+im²+1e-6).
    """
    if log.isEnabledFor(logging.DEBUG) and y.numel():
        lo, hi = float(y.detach().min()), float(y.detach().max())
        if lo < -1.0 or hi > 1.0:
            log.debug("spectrogram input outside [-1, 1]: min %.3f max %.3f", lo, hi)
    pad = int((n_fft - hop_size) / 2)
    if y.shape[-1] <= pad:
        raise ValueError(f"audio of {y.shape[-1]} samples is too short for a spectrogram (needs > {pad})")
    y = F.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    y_dtype = y.dtype
    if y.dtype == torch.bfloat16:
        y = y.to(torch.float32)
    window = hann_window(win_size, dtype=y.dtype, device=y.device)
    spec = torch.stft(y, n_fft, hop_length=hop_size, win_length=win_size, window=window, center=center,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = torch.view_as_real(spec).to(y_dtype)
    return torch.sqrt(spec.pow(2).sum(-1) + 1e-6)


def spec_to_mel_torch(spec: torch.Tensor, n_fft: int, num_mels: int, sampling_rate: int, fmin: float,
                      fmax: float | None) -> torch.Tensor:
    """``[B, n_fft//2+1, T]`` magnitudes → ``[B, num_mels, T]`` natural-log Slaney mel."""
    basis = mel_basis(sampling_rate, n_fft, num_mels, fmin, fmax, dtype=spec.dtype, device=spec.device)
    return spectral_normalize_torch(torch.matmul(basis, spec))


def mel_spectrogram_torch(y: torch.Tensor, n_fft: int, num_mels: int, sampling_rate: int, hop_size: int,
                          win_size: int, fmin: float, fmax: float | None, center: bool = False) -> torch.Tensor:
    """``[B, L]`` audio → ``[B, num_mels, floor(L / hop)]`` log mel (synthesizer loss front end)."""
    spec = spectrogram_torch(y, n_fft, sampling_rate, hop_size, win_size, center)
    return spec_to_mel_torch(spec, n_fft, num_mels, sampling_rate, fmin, fmax)


class STFT:
    """The NSF-HiFiGAN / diffusion mel front end (4.1's ``vdecoder.nsf_hifigan.nvSTFT.STFT``).

    ``get_mel(y [B, L]) → [B, n_mels, T]`` natural-log mel, T = floor(L / hop) for L ≥ win.
    """

    def __init__(self, sr: int = 22050, n_mels: int = 80, n_fft: int = 1024, win_size: int = 1024,
                 hop_length: int = 256, fmin: float = 20, fmax: float = 11025, clip_val: float = 1e-5) -> None:
        self.target_sr = sr
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.win_size = win_size
        self.hop_length = hop_length
        self.fmin = fmin
        self.fmax = fmax
        self.clip_val = clip_val

    def get_mel(self, y: torch.Tensor, keyshift: float = 0, speed: float = 1, center: bool = False,
                train: bool = False) -> torch.Tensor:
        factor = 2 ** (keyshift / 12)
        n_fft_new = int(np.round(self.n_fft * factor))
        win_size_new = int(np.round(self.win_size * factor))
        hop_length_new = int(np.round(self.hop_length * speed))
        basis = mel_basis(self.target_sr, self.n_fft, self.n_mels, self.fmin, self.fmax, dtype=torch.float32, device=y.device)
        window = hann_window(win_size_new, dtype=torch.float32, device=y.device)
        pad_left = (win_size_new - hop_length_new) // 2
        pad_right = max((win_size_new - hop_length_new + 1) // 2, win_size_new - y.size(-1) - pad_left)
        mode = "reflect" if pad_right < y.size(-1) else "constant"
        y = F.pad(y.unsqueeze(1), (pad_left, pad_right), mode=mode).squeeze(1)
        spec = torch.stft(y, n_fft_new, hop_length=hop_length_new, win_length=win_size_new, window=window,
                          center=center, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        spec = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
        if keyshift != 0:
            size = self.n_fft // 2 + 1
            resize = spec.size(1)
            if resize < size:
                spec = F.pad(spec, (0, 0, 0, size - resize))
            spec = spec[:, :size, :] * self.win_size / win_size_new
        spec = torch.matmul(basis, spec)
        return spectral_normalize_torch(spec, clip_val=self.clip_val)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        return self.get_mel(audio.unsqueeze(0)).squeeze(0)


# --- centred STFT front ends (F0 predictors) ---------------------------------------------------
def stft_magnitude(y: torch.Tensor, n_fft: int, hop_length: int, win_size: int, *, center: bool = True,
                   pad_mode: str = "constant") -> torch.Tensor:
    """``[B, L]`` audio → ``[B, n_fft//2+1, T]`` magnitudes sqrt(re²+im²) (no epsilon), periodic Hann.

    With ``center`` the signal is padded by n_fft//2 on both sides (``pad_mode``), so
    T = 1 + L // hop_length. ``pad_mode="constant"`` is librosa.stft's default (CREPE's loudness);
    RMVPE's mel uses ``"reflect"``.
    """
    window = hann_window(win_size, dtype=y.dtype, device=y.device)
    spec = torch.stft(y, n_fft, hop_length=hop_length, win_length=win_size, window=window, center=center,
                      pad_mode=pad_mode, normalized=False, onesided=True, return_complex=True)
    return torch.sqrt(spec.real.pow(2) + spec.imag.pow(2))


def htk_log_mel_spectrogram(y: torch.Tensor, *, sampling_rate: int = 16000, n_fft: int = 1024, win_size: int = 1024,
                            hop_length: int = 160, n_mels: int = 128, fmin: float = 30.0, fmax: float = 8000.0,
                            clip_val: float = 1e-5) -> torch.Tensor:
    """RMVPE's front end: ``[B, L]`` 16 kHz audio → ``[B, n_mels, 1 + L // hop]`` natural-log mel.

    ``center=True`` with reflect padding, magnitude sqrt(re²+im²), librosa mel bank on the HTK
    scale (``htk=True``) with Slaney area normalisation, log of max(·, clip_val) (spec §5.2).
    """
    mag = stft_magnitude(y, n_fft, hop_length, win_size, center=True, pad_mode="reflect")
    basis = mel_basis(sampling_rate, n_fft, n_mels, fmin, fmax, htk=True, dtype=mag.dtype, device=mag.device)
    return spectral_normalize_torch(torch.matmul(basis, mag), clip_val=clip_val)


# --- Whisper's log-mel (speech encoders whisper-ppg / whisper-ppg-large) ------------------------
def whisper_log_mel_spectrogram(audio: torch.Tensor, *, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160,
                                sampling_rate: int = 16000) -> torch.Tensor:
    """OpenAI Whisper's front end: ``[B, L]`` 16 kHz audio → ``[B, n_mels, L // hop]``.

    Centred STFT (reflect padding), periodic Hann, power spectrum with the last frame dropped,
    librosa Slaney mel bank (fmin 0, fmax sr/2), log10 of max(·, 1e-10), floored at
    (max − 8) per item, then (x + 4) / 4 (spec §4.2). Computed in float32.
    """
    audio = audio.float()
    window = hann_window(n_fft, dtype=audio.dtype, device=audio.device)
    spec = torch.stft(audio, n_fft, hop_length, window=window, return_complex=True)
    power = spec[..., :-1].abs() ** 2
    basis = mel_basis(sampling_rate, n_fft, n_mels, 0.0, None, dtype=audio.dtype, device=audio.device)
    log_spec = torch.clamp(basis @ power, min=1e-10).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0
