"""Step 0 (optional): slice long recordings into 5-15 s training clips at silences.

``dataset_raw/<speaker>/<song>.wav`` → ``dataset_raw_sliced/<speaker>/<song>_<k>.wav`` (speaker
folders kept, source rate and channels kept; the input folder is only read). Then run
``resample.py --in_dir dataset_raw_sliced``. Exit status 1 when any file failed (listed).
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--in_dir", type=str, default="./dataset_raw", help="source root: one folder per speaker")
    p.add_argument("--out_dir", type=str, default="./dataset_raw_sliced", help="destination root")
    p.add_argument("--db_thresh", type=float, default=-40.0, help="frames quieter than this (dBFS RMS) are silence")
    p.add_argument("--min_length", type=int, default=5000, help="ms: shortest clip before a cut is made")
    p.add_argument("--min_interval", type=int, default=300, help="ms: shortest pause that is cut at")
    p.add_argument("--hop_size", type=int, default=10, help="ms: loudness frame hop")
    p.add_argument("--max_sil_kept", type=int, default=500, help="ms: most silence kept around a clip")
    p.add_argument("--max_length", type=int, default=15000,
                   help="ms: longer clips are split at their quietest point (0: no limit)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    from preprocessing.slicing import SliceOptions, slice_dataset

    opts = SliceOptions(threshold_db=args.db_thresh, min_length_ms=args.min_length, min_interval_ms=args.min_interval,
                        hop_ms=args.hop_size, max_sil_kept_ms=args.max_sil_kept, max_length_ms=args.max_length or None)
    summary = slice_dataset(args.in_dir, args.out_dir, opts)
    summary.log(logging.getLogger("slice_audio"), rerun_hint="files already sliced are skipped on the next run")
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(run_main(main))
