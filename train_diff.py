"""Train the shallow-diffusion model (Unit2Mel) on the ``preprocess_hubert_f0.py --use_diff`` artifacts.

Same flag as so-vits-svc 4.1 (``-c/--config``, normally ``configs/diffusion.yaml``); checkpoints
``model_<step>.pt``, ``config.yaml``, ``log_info.txt`` and TensorBoard logs go to ``env.expdir``,
and training resumes from the newest checkpoint there. Additions: ``--device`` overrides the
config's ``device`` (e.g. ``cpu`` on a machine without CUDA); ``--max_steps`` stops after that many
steps of this run; ``--threads`` sets PyTorch's CPU threads. Exit status 2 on bad input or when
NaN/inf losses persist after the rollbacks, 130 after Ctrl-C (a checkpoint is saved).
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-c", "--config", type=str, required=True, help="path to the config file (configs/diffusion.yaml)")
    p.add_argument("--device", type=str, default=None, help="override the config's device: cpu, cuda or cuda:N")
    p.add_argument("--max_steps", type=int, default=None, help="stop after this many optimisation steps in this run")
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
    import logging

    from diffusion.solver import train
    from modules.errors import ConfigError
    from modules.hparams import get_hparams_from_file

    if args.max_steps is not None and args.max_steps < 1:
        raise ConfigError(f"--max_steps must be at least 1, got {args.max_steps}")
    hps = get_hparams_from_file(args.config)
    log = logging.getLogger("train_diff")
    log.info("config: %s  exp: %s", args.config, hps.env.expdir)
    result = train(hps, device=args.device, max_steps=args.max_steps)
    log.info("finished at step %d; last checkpoint %s", result.global_step,
             result.checkpoints[-1] if result.checkpoints else "(none this run)")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(run_main(main))
