"""Make a release model from a training checkpoint: ``python compress_model.py -i logs/44k/G_800.pth``.

Same flags as so-vits-svc 4.1: drops the training-only posterior encoder (``enc_q``) and the
optimiser moments, optionally stores the weights as float16 (``-hf``). The output loads in 4.1
and here; default name ``<input>_release[_half].pth``.
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    from modules.runtime import add_threads_argument

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-c", "--config", type=str, default="configs/config.json", help="config of the model")
    p.add_argument("-i", "--input", type=str, required=True, help="input G checkpoint (e.g. logs/44k/G_800.pth)")
    p.add_argument("-o", "--output", type=str, default=None,
                   help="output path (default: <input>_release[_half].pth next to the input)")
    p.add_argument("-hf", "--half", action="store_true", help="store the weights as float16")
    add_threads_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from modules.runtime import configure_threads

    configure_threads(args.threads, interactive=False)  # before any torch work
    from training.compress import compress_model

    compress_model(config_path=args.config, input_path=args.input, output_path=args.output, half=args.half)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
