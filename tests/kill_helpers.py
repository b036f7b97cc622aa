"""A training process to SIGKILL at a known point (tests/test_train_resume.py).

    python -m tests.kill_helpers sovits|diffusion HANG MARKER -- <script arguments>

``HANG`` is ``save:<file name>`` (hang inside the atomic save of that file: the temporary file is
written, the rename has not happened) or ``step:<n>`` (hang inside training step n). When the
process reaches that point it writes ``MARKER`` and sleeps until it is killed. SoVITS runs with
the tiny discriminator of tests/train_helpers.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _hang(marker: Path, what: str) -> None:
    marker.write_text(what)
    time.sleep(600)


def _patch_save(name: str, marker: Path) -> None:
    import torch

    import modules.checkpoint as ckpt
    from modules.io_utils import atomic_path

    real = ckpt.atomic_torch_save

    def save(obj, path):
        if Path(path).name != name:
            return real(obj, path)
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
            _hang(marker, f"saving {name}")

    ckpt.atomic_torch_save = save
    import diffusion.solver

    diffusion.solver.atomic_torch_save = save


def _patch_step(kind: str, step: int, marker: Path) -> None:
    if kind == "sovits":
        import training.loop as mod

        def current(args):
            return args[0].global_step
    else:
        import diffusion.solver as mod

        def current(args):
            return args[0].global_step

    real = mod.train_step

    def train_step(*args, **kwargs):
        if current(args) == step:
            _hang(marker, f"in step {step}")
        return real(*args, **kwargs)

    mod.train_step = train_step


def main(argv: list[str]) -> int:
    from modules.cli import run_main

    kind, hang, marker, rest = argv[0], argv[1], Path(argv[2]), argv[4:]
    if kind == "sovits":
        import train as script
        from tests.train_helpers import use_tiny_discriminator

        use_tiny_discriminator()
    else:
        import train_diff as script
    what, value = hang.split(":", 1)
    if what == "save":
        _patch_save(value, marker)
    else:
        _patch_step(kind, int(value), marker)
    return run_main(script.main, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
