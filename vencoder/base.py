"""The common speech-encoder interface (spec §4.1).

``encoder(wav16k)`` takes 16 kHz audio as a 1-D float tensor (a 2-D tensor is averaged over its
last dimension, as 4.1 does for "double channel" input) and returns units ``[1, C, N]`` at 50 Hz
(hop 320). Subclasses implement :meth:`SpeechEncoder._encode` on a prepared ``[N16]`` tensor that
already sits on the encoder's device in its compute dtype; the base class does input checks,
device/dtype placement and ``torch.inference_mode``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from modules.device import resolve_device  # noqa: F401  (re-exported by vencoder)
from modules.errors import AudioError, ConfigError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz, input rate of every speech encoder
HOP = 320            # samples at 16 kHz per unit frame (50 Hz)

_HALF_TYPES = (torch.float16, torch.bfloat16)
_DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
                "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
                "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    """``None`` → float32. float16 only on CUDA (slow on most CPUs); bfloat16 on CUDA and on CPU
    (the ``precision`` option: fast on CPUs with AVX512-BF16 / AMX, see modules.precision)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPE_NAMES:
            raise ConfigError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPE_NAMES)}")
        dtype = _DTYPE_NAMES[dtype.lower()]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"unsupported speech-encoder dtype {dtype!r}; use float32, bfloat16, or float16 on CUDA")
    if dtype in _HALF_TYPES and device.type != "cuda" and not (dtype == torch.bfloat16 and device.type == "cpu"):
        raise ConfigError(f"dtype {dtype} is only supported on CUDA devices (device is {device}); "
                          "use float32 on CPU")
    return dtype


def prepare_wav(wav: Any) -> torch.Tensor:
    """Validate the input and return a float32 1-D CPU-or-device tensor ``[N16]``."""
    if isinstance(wav, np.ndarray):
        wav = torch.from_numpy(np.ascontiguousarray(wav))
    if not isinstance(wav, torch.Tensor):
        raise AudioError(f"speech encoder input must be a tensor or numpy array of 16 kHz audio, got {type(wav).__name__}")
    if wav.dim() == 2:  # 4.1: "double channels" → mean over the last dimension
        wav = wav.mean(-1)
    if wav.dim() != 1:
        raise AudioError(f"speech encoder input must be 1-D audio [samples] (or 2-D, averaged over the last "
                         f"dimension); got shape {tuple(wav.shape)}")
    if not wav.is_floating_point():
        raise AudioError(f"speech encoder input must be float audio in [-1, 1], got dtype {wav.dtype}")
    if wav.numel() == 0:
        raise AudioError("speech encoder input is empty (0 samples)")
    if not bool(torch.isfinite(wav).all()):
        raise AudioError("speech encoder input contains NaN or infinite samples")
    return wav


class SpeechEncoder:
    """Base class of every speech encoder. Attributes: ``name``, ``dim`` (C), ``device``, ``dtype``,
    ``model`` (the torch module or onnxruntime session), ``path`` (the weight file)."""

    name: str = "?"
    dim: int = 0
    sample_rate: int = SAMPLE_RATE
    hop: int = HOP

    def __init__(self, *, name: str, dim: int, model: Any, device: torch.device, dtype: torch.dtype, path: Any) -> None:
        self.name = name
        self.dim = int(dim)
        self.model = model
        self.device = device
        self.dev = device  # 4.1 attribute name
        self.dtype = dtype
        self.path = path

    @property
    def hidden_dim(self) -> int:  # 4.1 attribute name
        return self.dim

    def encoder(self, wav: Any) -> torch.Tensor:
        """16 kHz audio ``[N16]`` → units ``[1, C, N]`` on ``self.device``, in the compute dtype."""
        wav = prepare_wav(wav)
        with torch.inference_mode():
            units = self._encode(wav.to(self.device, self.dtype))
        # a normal tensor again (inference tensors refuse in-place edits and autograd downstream)
        return units.clone()

    __call__ = encoder

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} dim={self.dim} device={self.device} dtype={self.dtype} path={self.path}>"


class ModuleEncoder(SpeechEncoder):
    """A torch module ``[1, N16] -> [1, C, N]`` that needs at least ``min_len`` samples (one
    receptive field): shorter input is zero-padded at the end. HuBERT/ContentVec, DPHuBERT and
    WavLM all wrap their network in this."""

    def __init__(self, *, min_len: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.min_len = int(min_len)

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.numel() < self.min_len:
            wav = torch.nn.functional.pad(wav, (0, self.min_len - wav.numel()))
        return self.model(wav[None])
