"""The F0-predictor interface and the post-processing every predictor shares (spec §5.1).

A predictor turns a mono waveform at the model rate into one f0 value per synthesizer frame::

    f0, uv = predictor.compute_f0_uv(wav, p_len=None)

* ``wav``: 1-D float array (numpy or torch), samples in [-1, 1] at ``sampling_rate``.
* ``p_len``: number of frames wanted; default ``len(wav) // hop_length``.
* ``f0``: float64 ``[p_len]`` in Hz with unvoiced frames filled by linear interpolation
  (held constant before the first / after the last voiced frame, all 0 when nothing is voiced).
* ``uv``: float32 ``[p_len]``, 1.0 where the raw estimate was voiced.

Subclasses implement :meth:`F0Predictor.raw_f0`, which returns the raw track already matched
to ``p_len`` frames (0 = unvoiced) the way 4.1 matched it for that family; the interpolation
is common. Neural models are loaded through :func:`cached_model`, so each checkpoint is read
once per process and shared by every predictor object.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Hashable

import numpy as np
import torch

from modules.audio import check_finite
from modules.device import resolve_device  # noqa: F401  (re-exported: predictors import it from here)
from modules.errors import AudioError, SvcError
from modules.f0 import interpolate_f0
from modules.f0_repair import OctaveRepair, resolve_repair

log = logging.getLogger(__name__)

# 4.1's range for every predictor that has one (spec §5.1).
F0_MIN_DEFAULT = 50.0
F0_MAX_DEFAULT = 1100.0


_MODEL_CACHE: dict[Hashable, torch.nn.Module] = {}
_MODEL_LOCK = threading.Lock()


def cached_model(key: Hashable, load: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Return the model stored under ``key``, calling ``load()`` only the first time.

    Keys name the file (resolved path and modification time), device and dtype, so a changed
    file or another device loads a fresh copy while repeated predictor objects share one.
    """
    with _MODEL_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = load()
            _MODEL_CACHE[key] = model
        return model


def clear_model_cache() -> None:
    """Drop every cached F0 model (frees memory; the next predictor reloads)."""
    with _MODEL_LOCK:
        _MODEL_CACHE.clear()


def nearest_resize(f0: torch.Tensor, p_len: int) -> torch.Tensor:
    """``[T]`` → ``[p_len]`` with ``F.interpolate(mode="nearest")``, exactly as 4.1's ``repeat_expand``."""
    return torch.nn.functional.interpolate(f0[None, None].float(), size=p_len, mode="nearest")[0, 0]


class F0Predictor:
    """Base class: argument checks, input validation and the shared interpolation.

    Args:
        hop_length: samples per synthesizer frame at ``sampling_rate``.
        sampling_rate: rate of the waveforms given to :meth:`compute_f0_uv` (Hz).
        f0_min, f0_max: search range in Hz. ``None`` keeps the family's 4.1 behaviour
            (50–1100 Hz for dio/harvest/pm/crepe; RMVPE and FCPE use their full model range).
        threshold: voicing threshold of the neural predictors (4.1's ``cr_threshold``).
        device: torch device for the neural predictors (``None``: CUDA if available).
        f0_repair: octave repair of the raw track (:mod:`modules.f0_repair`): ``True`` for the
            default settings, an :class:`~modules.f0_repair.OctaveRepair`, or off (default).
    """

    name = "base"
    #: 4.1's dio/harvest/pm fill a track holding a single voiced frame with ``f0[0]`` (spec §13.25).
    single_voiced_uses_first = False

    def __init__(self, hop_length: int = 512, sampling_rate: int = 44100, *, f0_min: float | None = None,
                 f0_max: float | None = None, threshold: float = 0.05, device: str | torch.device | None = None,
                 f0_repair: bool | OctaveRepair | None = False) -> None:
        if int(hop_length) != hop_length or hop_length <= 0:
            raise SvcError(f"f0 predictor '{self.name}': hop_length must be a positive integer, got {hop_length!r}")
        if int(sampling_rate) != sampling_rate or sampling_rate <= 0:
            raise SvcError(f"f0 predictor '{self.name}': sampling_rate must be a positive integer, got {sampling_rate!r}")
        lo = F0_MIN_DEFAULT if f0_min is None else float(f0_min)
        hi = F0_MAX_DEFAULT if f0_max is None else float(f0_max)
        check_f0_range(lo, hi, what=f"f0 predictor '{self.name}'")
        if not (0.0 <= float(threshold) <= 1.0):
            raise SvcError(f"f0 predictor '{self.name}': threshold must be in [0, 1], got {threshold!r}")
        self.hop_length = int(hop_length)
        self.sampling_rate = int(sampling_rate)
        self.f0_min = lo
        self.f0_max = hi
        # Whether the caller chose the range (the neural models apply it only then).
        self.f0_range_given = f0_min is not None or f0_max is not None
        self.threshold = float(threshold)
        self.device = resolve_device(device)
        self.repair = resolve_repair(f0_repair)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(hop_length={self.hop_length}, sampling_rate={self.sampling_rate}, "
                f"f0_min={self.f0_min}, f0_max={self.f0_max}, threshold={self.threshold})")

    # -- public API ---------------------------------------------------------------------------
    def compute_f0_uv(self, wav, p_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``wav [L]`` → ``(f0 float64 [p_len] Hz, uv float32 [p_len])``; see the module docstring."""
        x = self._as_waveform(wav)
        n = self._frames(x, p_len)
        if n == 0 or x.size == 0:  # nothing to analyse: every frame unvoiced
            return np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.float32)
        f0, uv = interpolate_f0(self.raw_track(x, n), single_voiced_uses_first=self.single_voiced_uses_first)
        return f0, uv

    def raw_track(self, wav: np.ndarray, p_len: int) -> np.ndarray:
        """Raw f0 ``[p_len]`` (Hz, 0 = unvoiced) of a checked waveform, octave-repaired when asked."""
        if self.repair is None:
            raw, conf = np.asarray(self.raw_f0(wav, p_len), dtype=np.float64), None
        else:
            raw, conf = self.raw_f0_confidence(wav, p_len)
            raw = np.asarray(raw, dtype=np.float64)
        if raw.shape != (p_len,):
            raise AssertionError(f"{self.name}: raw f0 has shape {raw.shape}, expected ({p_len},)")
        if self.repair is not None:
            raw = self.repair(raw, conf, self.frame_rate)
        return raw

    @property
    def frame_rate(self) -> float:
        """Frames per second (``sampling_rate / hop_length``)."""
        return self.sampling_rate / self.hop_length

    def compute_f0(self, wav, p_len: int | None = None) -> np.ndarray:
        """Only the interpolated f0 (Hz, float64 ``[p_len]``)."""
        return self.compute_f0_uv(wav, p_len)[0]

    # -- for subclasses -----------------------------------------------------------------------
    def raw_f0(self, wav: np.ndarray, p_len: int) -> np.ndarray:
        """Raw f0 ``[p_len]`` in Hz, 0 where unvoiced. ``wav`` is float32 ``[L]``, finite."""
        raise NotImplementedError

    def raw_f0_confidence(self, wav: np.ndarray, p_len: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(raw f0 [p_len] Hz, confidence [p_len] in [0, 1] or None)``; the signal-processing
        trackers have no confidence, the neural ones override this."""
        return self.raw_f0(wav, p_len), None

    # -- helpers ------------------------------------------------------------------------------
    def _as_waveform(self, wav) -> np.ndarray:
        if isinstance(wav, torch.Tensor):
            wav = wav.detach().cpu().float().numpy()
        x = np.asarray(wav)
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        if x.ndim != 1:
            raise AudioError(f"f0 predictor '{self.name}': expected mono audio of shape [samples], got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise AudioError(f"f0 predictor '{self.name}': expected float samples in [-1, 1], got dtype {x.dtype}")
        check_finite(x, what=f"input audio of f0 predictor '{self.name}' ({x.size} samples)")
        return np.ascontiguousarray(x, dtype=np.float32)

    def _frames(self, x: np.ndarray, p_len: int | None) -> int:
        if p_len is None:
            return x.shape[0] // self.hop_length
        if int(p_len) != p_len or p_len < 0:
            raise SvcError(f"f0 predictor '{self.name}': p_len must be a non-negative integer, got {p_len!r}")
        return int(p_len)


class NeuralF0Predictor(F0Predictor):
    """Shared post-processing of crepe / rmvpe / fcpe: nearest resize of the model track to
    ``p_len`` frames, then the common interpolation (4.1's ``post_process``)."""

    def raw_f0(self, wav: np.ndarray, p_len: int) -> np.ndarray:
        return self._resize(self.model_f0(wav), None, p_len)[0]

    def raw_f0_confidence(self, wav: np.ndarray, p_len: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self._resize(*self.model_track(wav), p_len)

    @staticmethod
    def _resize(track: torch.Tensor, conf: torch.Tensor | None, p_len: int) -> tuple[np.ndarray, np.ndarray | None]:
        track = torch.nan_to_num(track, nan=0.0)  # [T] Hz, 0 = unvoiced
        if not bool((track > 0).any()):
            return np.zeros(p_len, dtype=np.float64), (None if conf is None else np.zeros(p_len))
        f0 = nearest_resize(track.float().cpu(), p_len).numpy()
        return f0, (None if conf is None else nearest_resize(conf.float().cpu(), p_len).numpy().astype(np.float64))

    def model_f0(self, wav: np.ndarray) -> torch.Tensor:
        """Model-rate f0 track ``[T]`` (float32 Hz, 0 = unvoiced)."""
        return self.model_track(wav)[0]

    def model_track(self, wav: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f0 [T] float32 Hz with 0 = unvoiced, confidence [T] in [0, 1])`` at the model's rate."""
        raise NotImplementedError


def check_f0_range(f0_min: float, f0_max: float, *, what: str = "f0 range") -> None:
    """Refuse a range that is empty or not positive (``f0_min >= f0_max``), naming both values."""
    if not (np.isfinite(f0_min) and np.isfinite(f0_max) and 0 < f0_min < f0_max):
        raise SvcError(f"{what}: need 0 < f0_min < f0_max, got f0_min={f0_min:g} Hz, f0_max={f0_max:g} Hz; "
                       "set --f0_min below --f0_max")


def restrict_salience(salience: torch.Tensor, bin_hz: torch.Tensor, f0_min: float, f0_max: float) -> torch.Tensor:
    """Zero the salience ``[..., bins]`` of bins whose centre frequency (``bin_hz [bins]``) lies outside
    [f0_min, f0_max]; used when a caller sets a range for a model that 4.1 ran unrestricted."""
    keep = (bin_hz >= f0_min) & (bin_hz <= f0_max)
    return salience * keep.to(salience.dtype)
