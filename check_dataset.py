"""Dataset quality report: what would make a bad model, found before training (issue 22).

Reads ``<in_dir>/<speaker>/*`` (raw recordings or the resampled ``dataset/44k``; nothing there is
changed) and reports per file: duration, peak and clipped share, DC offset, effective bandwidth
(upsampled audio), silence share, an SNR estimate, voiced share and F0 range; duplicates across
the set; per speaker: total duration, clip-length and F0 histograms. Each problem names the file,
the measured value, the threshold and what to do. Exit status 1 when a clip cannot be trained on.
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main

REPORT_MARKER = "<h1>Dataset report: "


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--in_dir", type=str, default="./dataset_raw",
                   help="dataset root, one folder per speaker (dataset_raw or dataset/44k)")
    p.add_argument("--html", type=str, default=None, help="also write a self-contained HTML report here")
    p.add_argument("--sr", type=int, default=None,
                   help="require this rate, mono 16-bit PCM (e.g. 44100 for the resampled dataset/44k)")
    p.add_argument("--speech_encoder", type=str, default=None,
                   help="the encoder you will use (changes the advice for clips over 30 s with Whisper)")
    p.add_argument("--f0_predictor", type=str, default="pm", help="F0 predictor for voicing and range (default pm)")
    p.add_argument("--num_workers", type=int, default=None, help="worker processes (default: 1 below 40 files, else up to 4)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging
    from pathlib import Path

    from modules.errors import ConfigError
    from modules.F0Predictor import list_f0_predictors

    if args.f0_predictor not in list_f0_predictors():
        raise ConfigError(f"unknown --f0_predictor '{args.f0_predictor}'; choose one of {', '.join(list_f0_predictors())}")
    if args.num_workers is not None and args.num_workers < 1:
        raise ConfigError(f"--num_workers must be at least 1, got {args.num_workers}")
    if args.html:
        html = Path(args.html).resolve()
        if Path(args.in_dir).resolve() in html.parents:
            raise ConfigError(f"--html {args.html} lies inside --in_dir {args.in_dir}; the input folder is never "
                              "written to, choose another place for the report")
        if html.exists() and (not html.is_file() or REPORT_MARKER not in html.read_text(errors="replace")[:4000]):
            raise ConfigError(f"--html {args.html} exists and is not a dataset report; choose another name")

    from preprocessing.quality import QualityOptions, check_dataset, log_summary

    opts = QualityOptions(sampling_rate=args.sr, speech_encoder=args.speech_encoder, f0_predictor=args.f0_predictor)
    report = check_dataset(args.in_dir, opts, num_workers=args.num_workers)
    logger = logging.getLogger("check_dataset")
    for o in report.left_out:
        logger.info("left out %s: %s", o.path, o.reason)
    log_summary(report, logger, max_listed=10_000)
    if args.html:
        from preprocessing.quality_html import write_html

        write_html(report, args.html)
        logger.info("wrote %s", args.html)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
