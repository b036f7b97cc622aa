"""Speech encoders (spec §4): registry, loaders and the common ``encoder(wav16k) -> [1, C, N]`` API.

>>> from vencoder import get_speech_encoder, encoder_dim
>>> enc = get_speech_encoder("vec768l12", device="cpu")   # reads pretrain/checkpoint_best_legacy_500.pt
>>> units = enc.encoder(wav16k)                            # [1, 768, N] at 50 Hz

Every published format is read without fairseq or torchaudio, through the safe loader in
:mod:`modules.checkpoint`. Models are loaded once per process (cached by name, device, file and
dtype).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from .base import HOP, SAMPLE_RATE, SpeechEncoder, resolve_device, resolve_dtype
from .registry import ENCODERS, EncoderSpec, encoder_dim, get_spec, list_encoders, make_random_checkpoint

log = logging.getLogger(__name__)

__all__ = ["ENCODERS", "EncoderSpec", "SpeechEncoder", "list_encoders", "encoder_dim", "get_speech_encoder",
           "make_random_checkpoint", "clear_cache", "SAMPLE_RATE", "HOP"]

_cache: dict[tuple, SpeechEncoder] = {}
_lock = threading.Lock()


def get_speech_encoder(name: str, device: Any = None, path: str | os.PathLike | None = None,
                       dtype: Any = None) -> SpeechEncoder:
    """Load speech encoder ``name`` (once per process) and return it.

    Args:
        name: a name from :func:`list_encoders` (e.g. ``"vec768l12"``).
        device: ``None`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        path: the weight file; default ``pretrain/<published name>`` (see ``modules.pretrained``).
        dtype: compute dtype; default float32. float16/bfloat16 only on CUDA.

    Raises:
        SvcError: unknown name; MissingPretrainedError: the file is missing (names the path and
        the download URL); CheckpointError / UnsafeFileError: unreadable, wrong kind or unsafe file.
    """
    from modules.pretrained import require

    spec = get_spec(name)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    file = require(spec.pretrained, path)
    st = Path(file).stat()  # a file replaced on disk is loaded again
    key = (spec.name, str(dev), str(Path(file).resolve()), st.st_mtime_ns, st.st_size, str(dt))
    with _lock:
        enc = _cache.get(key)
        if enc is None:
            log.info("Loading speech encoder %s from %s (%s, %s)", spec.name, file, dev, dt)
            enc = spec.resolve(spec.loader)(spec, Path(file), dev, dt)
            _cache[key] = enc
    return enc


def clear_cache() -> None:
    """Forget every loaded encoder (frees memory; the next call loads again)."""
    with _lock:
        _cache.clear()
