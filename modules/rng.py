"""Random draws of the synthesis path: PyTorch's global generator (4.1), or a generator bound to
the current context, so that slices converted at the same time on different threads each draw
exactly what they would draw alone.

4.1 seeds the global generator at the start of every slice (``torch.manual_seed(seed)`` in
``SynthesizerTrn.infer``) and then draws the prior noise and the harmonic source's phases and
noise from it. Two threads sharing that generator would interleave their draws. Inside
:func:`own_generator` the same calls go to a private ``torch.Generator`` instead; seeded with the
same number it produces the same values (CPU generators share one algorithm), so a slice's audio
does not depend on which thread converted it. Outside it, everything goes to the global generator
as before: outputs, and the global state left behind for later draws (diffusion), are unchanged.

The binding is a :class:`contextvars.ContextVar`, i.e. per thread (and per asyncio task), never
process-wide.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch

__all__ = ["own_generator", "manual_seed", "randn_like", "rand", "current_generator"]

_current: ContextVar[torch.Generator | None] = ContextVar("svc_generator", default=None)


def current_generator() -> torch.Generator | None:
    """The generator bound by :func:`own_generator` in this context, or None (global generator)."""
    return _current.get()


@contextmanager
def own_generator(device: torch.device | str = "cpu", seed: int | None = None) -> Iterator[torch.Generator]:
    """Bind a fresh generator on ``device`` to this context for the ``with`` block (seeded with
    ``seed`` if given; :func:`manual_seed` reseeds it)."""
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(int(seed))
    token = _current.set(gen)
    try:
        yield gen
    finally:
        _current.reset(token)


def manual_seed(seed: int) -> None:
    """Seed the context's generator, or (none bound) ``torch.manual_seed`` as 4.1 (every device)."""
    gen = _current.get()
    if gen is None:
        torch.manual_seed(seed)
    else:
        gen.manual_seed(int(seed))


def randn_like(t: torch.Tensor) -> torch.Tensor:
    """``torch.randn_like(t)`` from the context's generator (same values as the global one would
    give after the same seed: ``randn_like`` is ``empty_like(t).normal_()``)."""
    gen = _current.get()
    if gen is None:
        return torch.randn_like(t)
    return torch.empty_like(t).normal_(generator=gen)


def rand(*size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``torch.rand(*size, device=device)`` (float32, uniform [0, 1)) from the context's generator."""
    gen = _current.get()
    if gen is None:
        return torch.rand(*size, device=device)
    return torch.rand(*size, device=device, generator=gen)
