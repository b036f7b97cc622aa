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

Inputs may also be ``.svc.safetensors`` model files (read without any pickle). They hold only
inference weights, so when one is among the inputs the training-only ``enc_q`` layers of
``G_*.pth`` inputs are left out of the mix. An output named ``*.svc.safetensors`` is written as a
model file (config and speakers from the first model-file input, or from ``config_path``; the
cluster and diffusion parts are not carried over, they no longer fit a mixed model).
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


def _read(path: Path, inference_only: bool) -> dict:
    """A 4.1 checkpoint dict from a ``G_*.pth`` or a model file (``{"model", "iteration",
    "optimizer": None, "learning_rate", "config"}``; the stored dtype is kept)."""
    from modelfile import is_model_file, load_model_file
    from modelfile.importers import TRAINING_ONLY_PREFIX

    if is_model_file(path):
        bundle = load_model_file(path, dtype=None, load_cluster=False, load_diffusion=False)
        iteration = bundle.metadata.get("source", {}).get("iteration")
        return {"model": bundle.state_dict, "iteration": iteration if isinstance(iteration, int) else 0,
                "optimizer": None, "learning_rate": float(bundle.config.train.learning_rate),
                "config": bundle.metadata["config"]}
    ckpt = torch_load(path, what="so-vits-svc checkpoint")
    state = _state_dict(ckpt, path)
    if inference_only:
        ckpt["model"] = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIX)}
    return ckpt


def mix_model(model_paths: Sequence[str | os.PathLike], mix_rate: Sequence[float], mode: int | str = 0,
              output_path: str | os.PathLike = "output.pth", *, config_path: str | os.PathLike | None = None) -> str:
    """Merge ``model_paths`` (``G_*.pth`` or ``.svc.safetensors``) with rates ``mix_rate``
    (percent) and write ``output_path`` (atomically).

    Every file must have the same state-dict keys and shapes as the first (same config); otherwise
    the error names the file and the first differing key. An output ending in ``.svc.safetensors``
    is a model file (its config: the first model-file input's, else ``config_path``). Returns the
    output path.
    """
    from modelfile import FILE_SUFFIX, is_model_file

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

    out = Path(output_path)
    to_model_file = out.name.lower().endswith(FILE_SUFFIX)
    file_inputs = [p for p in paths if is_model_file(p)]
    if to_model_file and not file_inputs and config_path is None:
        raise SvcError(f"{out}: a model-file output needs the models' config.json (-c) when no input is a "
                       ".svc.safetensors model file")
    inference_only = bool(file_inputs)
    if inference_only:
        log.info("model files hold inference weights only: enc_q layers of the checkpoints are not mixed")
    base = _read(paths[0], inference_only)
    first = base["model"]
    mixed = {}
    for key, value in first.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            mixed[key] = torch.zeros_like(value)
    for i, path in enumerate(paths):
        sd = first if i == 0 else _read(path, inference_only)["model"]
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
    if to_model_file:
        if config_path is None and "config" not in base:
            from modelfile import read_info

            base["config"] = read_info(file_inputs[0]).metadata["config"]
        _write_model_file(base, out, config_path, paths, weights)
    else:
        atomic_torch_save(base, out)  # a model file first: its config travels in the checkpoint
    log.info("wrote mixed model %s", out)
    return str(out)


def _write_model_file(ckpt: dict, out: Path, config_path: str | os.PathLike | None, paths: Sequence[Path],
                      weights: torch.Tensor) -> None:
    """The mixed checkpoint as a ``.svc.safetensors`` model file, through the one exporter."""
    import tempfile

    from modelfile import export_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp_ckpt = Path(tmp) / (out.name[: -len(".svc.safetensors")] + ".pth")
        if config_path is not None:
            ckpt = {k: v for k, v in ckpt.items() if k != "config"}
        atomic_torch_save(ckpt, tmp_ckpt)
        half = any(v.dtype == torch.float16 for v in ckpt["model"].values() if isinstance(v, torch.Tensor))
        export_model(model_path=tmp_ckpt, config_path=config_path, output_path=out, half=half,
                     description="mixed from " + ", ".join(f"{p.name} ({float(w):.4g})" for p, w in zip(paths, weights)))
