"""The one device resolver: ``"auto"`` / ``None`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` / ``"mps"``.

Every package that places a model (F0 predictors, speech encoders, vocoders, the synthesizer,
the training runners) resolves its device here, so a bad value gets the same message everywhere.
"""

from __future__ import annotations

from typing import Any

import torch

from modules.errors import ConfigError

AUTO_NAMES = ("", "auto")
CHOICES = "auto, cpu, cuda, cuda:N or mps"


def auto_device() -> torch.device:
    """CUDA when available, else CPU (4.1's rule; MPS only when asked for by name)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: Any = None) -> torch.device:
    """``None`` / ``""`` / ``"auto"`` → :func:`auto_device`; anything else must exist on this machine.

    Raises :class:`~modules.errors.ConfigError` (an ``SvcError``) naming the value and the choices
    for an unknown name, a CUDA device without CUDA (or beyond the device count) and MPS without MPS.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() in AUTO_NAMES):
        return auto_device()
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; use {CHOICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was requested but CUDA is not available here (PyTorch "
                              f"{torch.__version__}); use device 'cpu' (or 'auto')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} "
                              "CUDA device(s)")
    elif dev.type == "mps":
        if not _mps_available():
            raise ConfigError(f"device {device!r} was requested but MPS is not available here; use device 'cpu' "
                              "(or 'auto')")
    elif dev.type != "cpu":
        raise ConfigError(f"unknown device {device!r}; use {CHOICES}")
    return dev
