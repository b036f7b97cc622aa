"""Objective quality of a conversion: pitch accuracy, loudness, speaker similarity, duration.

    python evaluate.py --source SRC --converted OUT [--transpose N] [--target_refs DIR_OR_FILES ...]
                       [--json FILE] [-f0p fcpe]
    python evaluate.py --list pairs.txt [--target_refs ...] [--json FILE]

Prints a Markdown table on stdout; ``--json`` also writes the report with stable keys
(``f0_rmse_cents``, ``f0_corr``, ``vuv_f1``, ``loudness_corr``, ``spk_sim_target``,
``spk_sim_source``, ``duration_ratio``). Metrics and units: ``evaluation/metrics.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Score converted audio against its source (pitch, loudness, speaker "
                                            "similarity, duration). Prints a Markdown table.")
    p.add_argument("--source", type=str, help="the original (input) audio file")
    p.add_argument("--converted", type=str, help="the converted (output) audio file")
    p.add_argument("--list", type=str, help="list file of pairs, one 'source|converted[|transpose]' per line "
                                            "(paths relative to the list file); instead of --source/--converted")
    p.add_argument("-t", "--transpose", type=float, default=0.0,
                   help="semitones the conversion shifted the pitch by (its -t/--trans); default 0")
    p.add_argument("--target_refs", type=str, nargs="+", default=[],
                   help="clips of the target speaker (files or folders) for spk_sim_target")
    p.add_argument("--json", type=str, help="also write the report as JSON to this file")
    p.add_argument("-f0p", "--f0_predictor", type=str, default="fcpe",
                   help="F0 predictor used for both sides: crepe, dio, fcpe, harvest, pm, rmvpe (default fcpe)")
    p.add_argument("-d", "--device", type=str, default=None, help="torch device (default: CUDA when available)")
    p.add_argument("--speaker_encoder", type=str, default=None,
                   help="Resemblyzer pretrained.pt (default: the one in the installed resemblyzer wheel)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list and (args.source or args.converted):
        parser.error("give either --list or --source/--converted, not both")
    if not args.list and not (args.source and args.converted):
        parser.error("give --source and --converted (or --list FILE)")

    from evaluation.runner import EvalOptions, EvalPair, evaluate, expand_refs, markdown_table, read_pair_list

    pairs = (read_pair_list(args.list, args.transpose) if args.list
             else [EvalPair(Path(args.source), Path(args.converted), args.transpose)])
    options = EvalOptions(pairs=tuple(pairs), target_refs=tuple(expand_refs(args.target_refs)),
                          f0_predictor=args.f0_predictor, device=args.device,
                          speaker_weights=Path(args.speaker_encoder) if args.speaker_encoder else None,
                          json_path=Path(args.json) if args.json else None)
    report = evaluate(options)
    print(markdown_table(report))
    return 0


if __name__ == "__main__":
    from modules.cli import run_main

    sys.exit(run_main(main))
