"""End-to-end demo: synthetic two-singer dataset → the numbered scripts → a converted clip.

    python demo.py [--out demo_out] [--steps 300] [--quick] [--skip_cluster] [--verbose]

Runs resample.py, preprocess_flist_config.py --tiny, preprocess_hubert_f0.py --f0_predictor fcpe,
train.py --max_steps, cluster/train_cluster.py, train_index.py and inference_main.py inside
``<out>/work`` (never in this project's dataset/, logs/ or configs/), then writes
``converted.wav``, ``spectrogram.png`` and ``report.md`` / ``report.json`` (time per stage) to
``<out>``. No downloads: without pretrain/checkpoint_best_legacy_500.pt the speech encoder has
random weights, so the result shows the pipeline working, not voice quality.
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=str, default="demo_out",
                   help="output folder (default demo_out; a previous demo run there is replaced)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps (default 150; 2 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="reduced form for CI: 2 × 3 short clips, a few steps, a tiny random encoder")
    p.add_argument("--skip_cluster", action="store_true",
                   help="skip the optional k-means and feature-index stages")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per script (OMP_NUM_THREADS; default: one per core, 1 with --quick). "
                        "1 is often faster on a busy machine")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset and random encoder")
    p.add_argument("--verbose", action="store_true", help="also show every script's output (always in <out>/logs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from tools.demo import DemoSettings, run_demo

    overrides = dict(skip_cluster=args.skip_cluster, seed=args.seed, verbose=args.verbose)
    if args.threads is not None:
        overrides["threads"] = args.threads
    if args.steps is not None:
        overrides["steps"] = args.steps
    make = DemoSettings.quick_form if args.quick else DemoSettings.full_form
    settings = make(Path(args.out), **overrides)
    settings.check()
    from modules.runtime import configure_threads

    # the scripts get the count through their environment; this applies it to the demo's own work (scores)
    configure_threads(settings.threads, interactive=False)
    run_demo(settings)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
