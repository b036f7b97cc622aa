"""Compute precision of inference: names, what the hardware runs natively, ``auto``.

One name per precision, used by ``ConversionOptions.precision``, ``inference_main.py --precision``,
the web UI and the realtime settings:

====== ================ =====================================================================
name   dtype            where it pays
====== ================ =====================================================================
fp32   float32          everywhere (default; the reference output)
bf16   bfloat16         GPUs with bf16 (Ampere and later), CPUs with native bf16 (AVX512-BF16,
                        AMX): about 2x faster decoder on such a CPU, audio ≈ 35-40 dB SNR to fp32
fp16   float16          GPUs; CPUs with AVX512-FP16 / AMX-FP16 only (elsewhere very slow)
auto   one of the above bf16 where it is native (GPU or CPU), else fp32
====== ================ =====================================================================

Parts that stay float32 whatever the precision (range or phase accuracy; docs/compat/speed.md):
the harmonic source's phase and the f0 itself, the F0 predictors, mel / log-mel and STFT
computations (vocoder front end, enhancer, diffusion's mel input), the loudness envelope.
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "PrecisionWarning", "autocast", "cpu_flags", "native_precisions", "precision_dtype",
           "precision_name", "resolve_precision"]

#: Valid precision names (``auto`` is resolved by :func:`resolve_precision`).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "auto")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionWarning(UserWarning):
    """A reduced precision was asked for on hardware that does not run it natively (slow)."""


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _torch_cpu_check(name: str) -> bool:
    fn = getattr(torch.cpu, name, None)  # private helpers of torch.cpu (present in torch ≥ 2.3)
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # noqa: BLE001 (a probe: any failure means "not known to be supported")
        return False


def native_precisions(device: Any = "cpu") -> tuple[str, ...]:
    """The precisions ``device`` computes natively (fast), ``fp32`` always first.

    CPU: bf16 with AVX512-BF16 or AMX-BF16, fp16 with AVX512-FP16 or AMX-FP16. CUDA: fp16
    always, bf16 where ``torch.cuda.is_bf16_supported()`` (compute capability ≥ 8.0).
    """
    dev = torch.device(device)
    out = ["fp32"]
    if dev.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            out.append("bf16")
        out.append("fp16")
        return tuple(out)
    if dev.type != "cpu":
        return tuple(out)
    flags = cpu_flags()
    if {"avx512_bf16", "amx_bf16"} & flags or _torch_cpu_check("_is_avx512_bf16_supported") \
            or _torch_cpu_check("_is_amx_tile_supported"):
        out.append("bf16")
    if {"avx512_fp16", "amx_fp16"} & flags or _torch_cpu_check("_is_amx_fp16_supported"):
        out.append("fp16")
    return tuple(out)


def resolve_precision(precision: str, device: Any = "cpu", *, warn: bool = True) -> str:
    """``precision`` (a name of :data:`PRECISIONS`) → the concrete name used on ``device``.

    ``auto`` becomes ``bf16`` where the device runs it natively, else ``fp32``. A reduced
    precision the device does not run natively is kept (the user asked for it) but warns
    (:class:`PrecisionWarning`): it will be slower than fp32, not faster.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    native = native_precisions(device)
    if precision == "auto":
        return "bf16" if "bf16" in native else "fp32"
    if precision != "fp32" and precision not in native and warn:
        where = torch.device(device).type.upper()
        hint = ("this CPU lacks AVX512-BF16/AMX" if precision == "bf16" else "this CPU lacks AVX512-FP16/AMX-FP16") \
            if where == "CPU" else f"this {where} device does not support it natively"
        warnings.warn(f"precision {precision} requested but {hint}: it is emulated and will be slow "
                      f"(use fp32 or auto)", PrecisionWarning, stacklevel=2)
    return precision


def precision_dtype(precision: str) -> torch.dtype:
    """A concrete precision name (not ``auto``) → its torch dtype."""
    try:
        return _DTYPES[precision]
    except KeyError:
        raise ValueError(f"precision must be one of {', '.join(_DTYPES)} here (resolve 'auto' first), "
                         f"got {precision!r}") from None


def precision_name(dtype: torch.dtype) -> str:
    """A torch dtype → its precision name (``torch.float32`` → ``"fp32"``)."""
    for name, dt in _DTYPES.items():
        if dt == dtype:
            return name
    raise ValueError(f"no precision name for dtype {dtype}; valid: {', '.join(map(str, _DTYPES.values()))}")


def autocast(precision: str, device: Any):
    """A context that runs matrix products and convolutions in ``precision`` (a concrete name)
    on ``device`` and everything else in float32 (``torch.autocast``); a no-op for fp32. For
    models built with float32 arithmetic inside (diffusion schedule, step embeddings)."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=precision_dtype(precision))
