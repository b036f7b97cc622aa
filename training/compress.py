"""``compress_model.py``: turn a training checkpoint ``G_<step>.pth`` into a release model (spec §7.4).

The output keeps 4.1's layout, so 4.1's ``Svc`` and ours load it:
``{"model": weights without enc_q (fp16 with --half), "iteration": 0, "optimizer": a fresh
AdamW state over the full model, "learning_rate": 0.0001}``, plus, like the checkpoints the
trainer writes, ``config`` (the ``-c`` config, speaker map included: the release loads without a
side file) and the random-weight marker when the input carries it.

Beyond 4.1: the input is read with ``weights_only`` and must fit the config (checked, with a
clear error, instead of writing a file inference would later reject); tensors the checkpoint
stores once (the shared flow WaveNet) stay stored once with ``--half``; the file is written
atomically.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from modules.errors import CheckpointError

log = logging.getLogger(__name__)

TRAINING_ONLY_PREFIX = "enc_q"  # the posterior encoder is used by training only (spec §6.7)


def default_output_path(input_path: str | os.PathLike, half: bool) -> Path:
    """4.1's default: ``<input without extension>_release[_half]<extension>``."""
    stem, ext = os.path.splitext(str(input_path))
    return Path(stem + "_release" + ("_half" if half else "") + ext)


# Prefixes wrappers add to every key: DDP (``module.``) and ``torch.compile`` (``_orig_mod.``).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints saved from a DDP or ``torch.compile`` wrapper prefix every key (``module.``,
    ``_orig_mod.``); remove such a prefix when every key has it."""
    state = dict(state)
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def to_half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 copies; a tensor stored under several names (shared parameters) is converted once."""
    done: dict[tuple, torch.Tensor] = {}
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.dtype)
        if key not in done:
            done[key] = v.detach().to(torch.float16).contiguous()
        out[k] = done[key]
    return out


def compress_model(*, config_path: str | os.PathLike, input_path: str | os.PathLike,
                   output_path: str | os.PathLike | None = None, half: bool = False) -> Path:
    """Write the release model of ``input_path`` and return its path (see the module docstring)."""
    from models import SynthesizerTrn
    from modules.checkpoint import (CONFIG_KEY, atomic_torch_save, has_random_weights, load_state_dict_checked,
                                    mark_random_weights, torch_load)
    from modules.hparams import get_hparams_from_file

    hps = get_hparams_from_file(config_path)
    input_path = Path(input_path)
    output = Path(output_path) if output_path else default_output_path(input_path, half)
    if output.resolve() == input_path.resolve():
        raise CheckpointError(f"{output}: the output would overwrite the input; choose another -o")
    ckpt = torch_load(input_path, what="so-vits-svc checkpoint")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{input_path}: not a so-vits-svc G checkpoint (expected a dict with 'model')")
    state = strip_module_prefix(ckpt["model"])

    net_g = SynthesizerTrn(int(hps.data.filter_length) // 2 + 1, int(hps.train.segment_size) // int(hps.data.hop_length),
                           **hps.model)
    # The file must fit the config the release will be used with (a D checkpoint or another
    # encoder's model fails here, naming the keys).
    load_state_dict_checked(net_g, state, source=str(input_path), allow_missing=(TRAINING_ONLY_PREFIX,))
    optim_g = torch.optim.AdamW(net_g.parameters(), float(hps.train.learning_rate), betas=tuple(hps.train.betas),
                                eps=float(hps.train.eps))
    kept = {k: v for k, v in state.items() if TRAINING_ONLY_PREFIX not in k}
    if half:
        kept = to_half(kept)
    release = {"model": kept, "iteration": 0, "optimizer": optim_g.state_dict(), "learning_rate": 0.0001,
               CONFIG_KEY: hps.to_dict()}  # self-describing, as the trainer's G_*.pth (issue 19)
    if has_random_weights(ckpt):  # a model trained on a random encoder's features stays marked
        mark_random_weights(release)
    atomic_torch_save(release, output)
    before, after = input_path.stat().st_size, output.stat().st_size
    log.info("Wrote %s: %d of %d tensors kept (%s dropped%s), %.1f MB → %.1f MB", output, len(kept), len(state),
             TRAINING_ONLY_PREFIX, ", float16" if half else "", before / 1e6, after / 1e6)
    return output
