"""Audio I/O and resampling: the one place that reads, writes and resamples audio.

* :func:`load_audio` reads wav/flac/ogg/mp3 (anything libsndfile reads) as float32 mono.
* :func:`resample` is the high-quality offline resampler (soxr "HQ", what librosa ≥ 0.10 uses
  by default), used by dataset preparation and preprocessing.
* :class:`SincResampler` / :func:`sinc_resample` reproduce torchaudio's
  ``functional.resample`` (Hann-windowed sinc, spec §3.5) in plain PyTorch, so inference,
  RMVPE/FCPE and the vocoder resample exactly as 4.1 did without torchaudio.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modules.errors import AudioError
from modules.io_utils import atomic_path

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aif", ".aiff", ".m4a")


def load_audio(path: str | os.PathLike, sr: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read an audio file → ``(samples float32, sample_rate)``.

    ``mono`` down-mixes by the channel mean (librosa's rule) → shape ``[L]``; otherwise
    ``[channels, L]``. ``sr`` resamples with :func:`resample`. Raises :class:`AudioError`
    naming the file for a missing, empty, non-audio or NaN/inf file.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: audio file is empty (0 bytes)")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AudioError(f"{path}: not a readable audio file ({msg})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    data = data.T  # [channels, L]
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio holds NaN or infinite samples; re-export it")
    y = data.mean(axis=0) if mono else data
    y = np.ascontiguousarray(y, dtype=np.float32)
    if sr is not None and sr != file_sr:
        y = resample(y, file_sr, sr)
        file_sr = sr
    return y, int(file_sr)


def check_finite(y: np.ndarray | torch.Tensor, what: str = "audio") -> None:
    ok = torch.isfinite(y).all().item() if isinstance(y, torch.Tensor) else np.isfinite(y).all()
    if not ok:
        raise AudioError(f"{what}: holds NaN or infinite samples")


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """High-quality resampling along the last axis (soxr HQ), float32 out."""
    if orig_sr == target_sr:
        return np.asarray(y, dtype=np.float32)
    import soxr

    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32)
    return np.stack([soxr.resample(ch, orig_sr, target_sr, quality="HQ") for ch in y]).astype(np.float32)


def save_audio(path: str | os.PathLike, y: np.ndarray | torch.Tensor, sr: int, format: str | None = None,
               subtype: str | None = None) -> None:
    """Write audio atomically (temporary name + rename) with soundfile.

    ``y`` is ``[L]`` or ``[L, channels]`` float. The format comes from ``format`` or the suffix.
    """
    import soundfile as sf

    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().float().numpy()
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".") or "wav").upper()
    with atomic_path(path) as tmp:
        sf.write(str(tmp), y, sr, format=fmt, subtype=subtype)


# --- torchaudio-compatible sinc resampling ------------------------------------------------------
@lru_cache(maxsize=32)
def _sinc_kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """Polyphase kernel ``[new, 1, 2·width + orig]`` (float64) for reduced rates orig → new."""
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t *= base_freq
    t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    scale = base_freq / orig
    kernels = torch.where(t == 0, torch.tensor(1.0, dtype=torch.float64), t.sin() / t)
    kernels *= window * scale
    return kernels, width


def sinc_resample(waveform: torch.Tensor, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
                  rolloff: float = 0.99) -> torch.Tensor:
    """Resample ``[..., L]`` like ``torchaudio.functional.resample`` (sinc_interp_hann).

    Output length is ceil(new · L / orig) (with the rates reduced by their gcd).
    """
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    kernel, width = _sinc_kernel(orig, new, lowpass_filter_width, rolloff)
    kernel = kernel.to(dtype=waveform.dtype, device=waveform.device)
    shape = waveform.size()
    x = waveform.reshape(-1, shape[-1])
    length = x.size(-1)
    x = F.pad(x, (width, width + orig))
    out = F.conv1d(x[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(x.size(0), -1)
    target_length = int(math.ceil(new * length / orig))
    out = out[..., :target_length]
    return out.view(shape[:-1] + out.shape[-1:])


class SincResampler(torch.nn.Module):
    """Module form of :func:`sinc_resample` (4.1 used ``torchaudio.transforms.Resample``)."""

    def __init__(self, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> None:
        super().__init__()
        self.orig_freq, self.new_freq = int(orig_freq), int(new_freq)
        self.lowpass_filter_width, self.rolloff = lowpass_filter_width, rolloff

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return sinc_resample(waveform, self.orig_freq, self.new_freq, self.lowpass_filter_width, self.rolloff)


def frame_rms(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """Centred frame RMS of real ``y`` ``[..., L]`` → float32 ``[..., 1, 1 + L // hop_length]``: the values of
    ``librosa.feature.rms(y=y, frame_length=..., hop_length=...)`` (zero padding of
    ``frame_length // 2`` on each side, mean of squares per frame, square root), bit for bit.

    Written out because librosa's first call in a process costs 0.7-1.5 s of lazy imports (a
    cold ``inference_main.py`` run paid it before the first slice)."""
    y = np.asarray(y)
    pad = [(0, 0)] * (y.ndim - 1) + [(frame_length // 2, frame_length // 2)]
    padded = np.pad(y, pad, mode="constant")
    # [..., frame_length, n_frames] views, reduced over the window axis as librosa does
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length, axis=-1)[..., ::hop_length, :]
    frames = np.moveaxis(frames, -1, -2)
    # librosa squares in float32 whatever the input (its ``dtype`` argument's default)
    power = np.mean(np.square(frames, dtype=np.float32), axis=-2, keepdims=True)
    return np.sqrt(power)
