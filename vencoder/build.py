"""Building a network whose every weight comes from a file, without initialising it first.

Models are constructed on the ``meta`` device (no memory, no random init: a full HuBERT's init
alone costs seconds on CPU), checked key by key against the file with
:func:`modules.checkpoint.load_state_dict_checked`, then given the file's tensors
(``load_state_dict(assign=True)``).
"""

from __future__ import annotations

import warnings
from itertools import chain
from typing import Callable, Iterable, TypeVar

import torch
from torch import nn

from modules.checkpoint import load_state_dict_checked

M = TypeVar("M", bound=nn.Module)


def empty(factory: Callable[[], M]) -> M:
    """``factory()`` built on the meta device (shapes only)."""
    with torch.device("meta"):
        return factory()


def assign_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str,
                   zero_if_missing: Iterable[str] = ()) -> nn.Module:
    """Give an :func:`empty` model the tensors of ``state_dict`` (float32, CPU).

    Keys in ``zero_if_missing`` (training-only parameters such as the mask embedding) are
    zero-filled when the file lacks them; any other missing, unexpected or mis-shaped key raises
    :class:`~modules.errors.CheckpointError` naming it.
    """
    own = model.state_dict()
    sd = dict(state_dict)
    for k in zero_if_missing:
        if k in own and k not in sd:
            sd[k] = torch.zeros(own[k].shape, dtype=own[k].dtype)
    with warnings.catch_warnings():  # the report only: copying into meta tensors is a (warned) no-op
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        load_state_dict_checked(model, sd, source=source)
    sd = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    left = [n for n, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if left:  # a buffer the file does not hold: a bug in the key mapping, not a user error
        raise RuntimeError(f"{source}: tensors left uninitialised after loading: {left[:5]}")
    return model.eval()
