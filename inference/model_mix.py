"""Static model mixing (4.1 ``utils.mix_model``, spec §11.1 / §7.5).

Several ``G_*.pth`` files of the same architecture are merged into one: every tensor of the
``model`` state dict becomes Σ rate_i · model_i[key]. Rates are given in percent, as in 4.1's web
UI. Two modes:

* ``convex`` (4.1 mode 0): the rates are passed through a **softmax** of rate/100 — 4.1's
  definition, kept so the same inputs give the same mixed model. Equal rates give the plain
  average; 100/0 gives ≈ 0.731/0.269, not 1/0.
* ``linear`` (4.1 mode 1): rate/100 used as given (use this for exact weights such as 70/30).

The other entries of the output (``iteration``, ``optimizer``, ``learning_rate``) are the first
file's, as in 4.1. Files are read one at a time (memory ≈ two models), through the safe loader.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Sequence

import torch

from modules.checkpoint import atomic_torch_save, torch_load
from modules.errors import CheckpointError, SvcError

log = logging.getLogger(__name__)

MIX_MODES = {"convex": 0, "linear": 1}


def mix_weights(rates_percent: Sequence[float], mode: int | str) -> torch.Tensor:
    """The per-model weights (float32) for ``rates_percent`` in ``mode`` (0/"convex" or 1/"linear")."""
    mode_id = MIX_MODES.get(mode, mode) if isinstance(mode, str) else mode
    if mode_id not in (0, 1):
        raise SvcError(f"unknown mixing mode {mode!r}; use 'convex' (0) or 'linear' (1)")
    if not all(math.isfinite(float(r)) for r in rates_percent):
        raise SvcError(f"mixing rates must be finite numbers, got {list(rates_percent)}")
    rates = torch.tensor([float(r) for r in rates_percent], dtype=torch.float32) / 100
    if mode_id == 0:
        rates = torch.softmax(rates, dim=0)
    return rates


def _state_dict(ckpt: object, path: Path) -> dict:
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: not a so-vits-svc G checkpoint (expected a dict with a 'model' state dict)")
    return ckpt["model"]


def mix_model(model_paths: Sequence[str | os.PathLike], mix_rate: Sequence[float], mode: int | str = 0,
              output_path: str | os.PathLike = "output.pth") -> str:
    """Merge ``model_paths`` with rates ``mix_rate`` (percent) and write ``output_path`` (atomically).

    Every file must have the same state-dict keys and shapes as the first (same config); otherwise
    the error names the file and the first differing key. Returns the output path.
    """
    paths = [Path(p) for p in model_paths]
    if not paths:
        raise SvcError("no models to mix")
    if len(mix_rate) != len(paths):
        raise SvcError(f"{len(paths)} models but {len(mix_rate)} rates; give one rate per model")
    weights = mix_weights(mix_rate, mode)
    if int(MIX_MODES.get(mode, mode) if isinstance(mode, str) else mode) == 1 and abs(float(sum(mix_rate)) - 100) > 1e-6:
        log.warning("linear mixing rates sum to %s%%, not 100%%: the mixed weights are scaled by %.3f",
                    sum(mix_rate), float(sum(mix_rate)) / 100)
    log.info("mixing %d models with weights %s", len(paths), [round(float(w), 6) for w in weights])

    base = torch_load(paths[0], what="so-vits-svc checkpoint")
    first = _state_dict(base, paths[0])
    mixed = {}
    for key, value in first.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            mixed[key] = torch.zeros_like(value)
    for i, path in enumerate(paths):
        sd = first if i == 0 else _state_dict(torch_load(path, what="so-vits-svc checkpoint"), path)
        if i > 0:
            missing = [k for k in first if k not in sd]
            extra = [k for k in sd if k not in first]
            if missing or extra:
                raise CheckpointError(
                    f"{path}: does not have the same layers as {paths[0]} (missing {missing[:5]}, extra {extra[:5]}); "
                    "only models trained with the same config can be mixed")
        for key, acc in mixed.items():
            t = sd[key]
            if tuple(t.shape) != tuple(acc.shape):
                raise CheckpointError(
                    f"{path}: '{key}' has shape {tuple(t.shape)} but {paths[0]} has {tuple(acc.shape)}; only models "
                    "with the same config (encoder, speaker count, sizes) can be mixed")
            # Same order of operations as 4.1 (acc starts at 0, += model_i · w_i in file order).
            acc += t * weights[i]
        del sd
    first.update(mixed)
    out = Path(output_path)
    atomic_torch_save(base, out)
    log.info("wrote mixed model %s", out)
    return str(out)
