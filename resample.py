"""Step 1: resample ``dataset_raw/<speaker>/*`` to mono 16-bit PCM at 44.1 kHz in ``dataset/44k``.

Same flags and defaults as so-vits-svc 4.1's ``resample.py``; additions: ``--loudnorm_lufs``
(loudness normalisation instead of peak normalisation), ``--num_workers`` and ``--skip_existing``.
Exit status 1 when any file failed (each is listed with the reason).
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    from modules.runtime import add_threads_argument

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--sr2", type=int, default=44100, help="output sample rate (default 44100)")
    p.add_argument("--in_dir", type=str, default="./dataset_raw", help="source root: one folder per speaker")
    p.add_argument("--out_dir2", type=str, default="./dataset/44k", help="destination root")
    p.add_argument("--skip_loudnorm", action="store_true", help="keep the level (no normalisation at all)")
    p.add_argument("--loudnorm_lufs", type=float, default=None, metavar="LUFS",
                   help="normalise integrated loudness to this target (e.g. -23) instead of 4.1's peak "
                        "normalisation to 0 dBFS; peaks stay below full scale")
    p.add_argument("--num_workers", type=int, default=None,
                   help="worker processes (default: 4.1's rule, CPUs-2 above 4 CPUs, else 1)")
    p.add_argument("--skip_existing", action="store_true",
                   help="keep output files that already exist (4.1 always rewrote them)")
    add_threads_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from modules.runtime import configure_threads

    configure_threads(args.threads, interactive=False)  # before any torch work
    import logging

    from modules.errors import ConfigError
    from preprocessing.resample import ResampleOptions, resample_dataset

    if args.num_workers is not None and args.num_workers < 1:
        raise ConfigError(f"--num_workers must be at least 1, got {args.num_workers}")
    opts = ResampleOptions(sr=args.sr2, skip_loudnorm=args.skip_loudnorm, loudnorm_lufs=args.loudnorm_lufs)
    summary = resample_dataset(args.in_dir, args.out_dir2, opts, num_workers=args.num_workers,
                               skip_existing=args.skip_existing)
    summary.log(logging.getLogger("resample"),
                rerun_hint="use --skip_existing to keep the files already written")
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(run_main(main))
