"""Mix several SoVITS models into one (4.1's web-UI "static voice fusion", spec §11.1).

    python model_mix.py -m logs/44k/G_a.pth logs/44k/G_b.pth -r 50 50 --mode convex -o output.pth
    python model_mix.py -m a.svc.safetensors b.svc.safetensors -o mixed.svc.safetensors

Rates are percentages, one per model. ``convex`` is 4.1's mode 0 (a softmax of rate/100: equal
rates average the models); ``linear`` is mode 1 (rate/100 used as given, e.g. 70 30). The models
must come from the same config. Inputs may be ``.svc.safetensors`` model files; an output named
``*.svc.safetensors`` is written as a model file (``-c`` gives its config when no input is one).
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="mix so-vits-svc models (same config) into one checkpoint")
    p.add_argument("-m", "--models", nargs="+", required=True, help="G_*.pth or .svc.safetensors files to mix")
    p.add_argument("-r", "--rates", type=float, nargs="+", default=None,
                   help="rate per model in percent (default: 100 each, i.e. the average in convex mode)")
    p.add_argument("--mode", choices=["convex", "linear"], default="convex",
                   help="convex: softmax of rate/100 (4.1 mode 0); linear: rate/100 as given (4.1 mode 1)")
    p.add_argument("-o", "--output", default="output.pth",
                   help="output checkpoint (default ./output.pth as 4.1); a name ending in .svc.safetensors "
                        "writes a model file")
    p.add_argument("-c", "--config_path", default=None,
                   help="the models' config.json, for a .svc.safetensors output when no input is a model file")
    args = p.parse_args(argv)

    from inference.model_mix import mix_model

    rates = args.rates if args.rates is not None else [100.0] * len(args.models)
    mix_model(args.models, rates, args.mode, args.output, config_path=args.config_path)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
