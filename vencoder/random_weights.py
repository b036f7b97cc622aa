"""Deterministic random weights for test / benchmark checkpoints (``make_random_checkpoint``).

Values are drawn from one seeded generator in key order, so a (layout, seed) pair always gives
the same file. Matrices get N(0, 1/fan_in) (activations keep their scale through deep stacks),
1-D ``*weight`` tensors of norm layers 1 + N(0, 0.02²), every other vector N(0, 0.02²).
"""

from __future__ import annotations

import math

import torch


def fill_random(shapes: dict[str, tuple[int, ...]], *, seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``{name: shape}`` → ``{name: tensor}`` (insertion order kept)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        t = torch.empty(shape, dtype=torch.float32)
        if len(shape) >= 2:
            fan_in = math.prod(shape[1:]) if len(shape) > 2 or not name.endswith(("embedding", "embed")) else shape[1]
            t.normal_(0.0, 1.0 / math.sqrt(max(fan_in, 1)), generator=gen)
        elif name.endswith("weight") and ("norm" in name or name.rsplit(".", 2)[-2].isdigit()):
            t.normal_(0.0, 0.02, generator=gen).add_(1.0)
        else:
            t.normal_(0.0, 0.02, generator=gen)
        out[name] = t.to(dtype)
    return out


def weight_norm_g(v: torch.Tensor, dim: int) -> torch.Tensor:
    """The ``weight_g`` that makes a weight-normed layer's weight equal ``v`` (‖v‖ over all dims but ``dim``)."""
    dims = [d for d in range(v.dim()) if d != dim]
    return v.norm(dim=dims, keepdim=True)
