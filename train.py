"""Train the SoVITS model: ``python train.py -c configs/config.json -m 44k``.

Same flags as so-vits-svc 4.1 (``-c/--config``, ``-m/--model``; the model directory is
``logs/<model>``). Resumes from the newest ``G_<step>.pth``/``D_<step>.pth`` there, or fine-tunes
from ``G_0.pth``/``D_0.pth``. Runs on the CPU, one GPU, one process per visible GPU, or under
``torchrun`` on several GPUs / machines. Additions: ``--max_steps``, ``--threads``.
Exit status 2 on a user error or a diverged run (NaN/inf), 130 after Ctrl-C (a checkpoint is saved).
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-c", "--config", type=str, default="./configs/config.json", help="JSON file for configuration")
    p.add_argument("-m", "--model", type=str, required=True, help="model name: checkpoints go to logs/<model>")
    p.add_argument("--max_steps", type=int, default=None, metavar="N",
                   help="stop after step N (a checkpoint is saved); a later run resumes from there")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for PyTorch (default: PyTorch's choice, one per core); 1 is often faster on a "
                        "busy machine")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            from modules.errors import ConfigError

            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        import torch

        # process-wide setting: only a script's main() may change it
        torch.set_num_threads(args.threads)
    from pathlib import Path

    from modules.errors import ConfigError
    from training.loop import TrainOptions, train

    if not args.model.strip():
        raise ConfigError("-m/--model must name the model (it becomes logs/<model>)")
    if args.max_steps is not None and args.max_steps < 0:
        raise ConfigError(f"--max_steps must be 0 or more, got {args.max_steps}")
    return train(TrainOptions(config_path=Path(args.config), model_name=args.model, max_steps=args.max_steps))


if __name__ == "__main__":
    sys.exit(run_main(main))
