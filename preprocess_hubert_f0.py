"""Step 3: write the training features next to every ``dataset/44k/<speaker>/*.wav``.

Same flags and defaults as so-vits-svc 4.1's ``preprocess_hubert_f0.py`` (``-d``, ``--in_dir``,
``--use_diff``, ``--f0_predictor``, ``--num_processes``); additions: ``-c/--config``,
``--diff_config`` (4.1 hard-coded ``configs/config.json`` / ``configs/diffusion.yaml``) and
``--seed`` for the diffusion augmentation draws, ``--force``, ``--f0_min`` / ``--f0_max`` /
``--f0_repair`` (pitch range and octave repair; defaults keep 4.1's f0), and per-speaker f0
statistics written to ``f0_stats.json`` next to the config (``--f0_stats``; for inference's key
suggestion). Existing artifacts are kept, so a re-run resumes, except those made by another
encoder / f0 predictor / weight file / setting (recorded in ``<in_dir>/.svc_provenance.json``),
which are recomputed. Exit status 1 when any file failed (each is listed with the reason).
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("-d", "--device", type=str, default=None,
                   help="device, e.g. cpu, cuda, cuda:1 (default: each worker takes GPU k mod n, else CPU)")
    p.add_argument("--in_dir", type=str, default="dataset/44k", help="dataset root: <in_dir>/<speaker>/*.wav")
    p.add_argument("--use_diff", action="store_true",
                   help="also write the shallow-diffusion features (.mel/.vol/.aug_mel/.aug_vol)")
    p.add_argument("--f0_predictor", type=str, default="rmvpe",
                   help="crepe, pm, dio, harvest, rmvpe, fcpe, or hybrid:<a>+<b>[+...] such as "
                        "hybrid:rmvpe+fcpe+crepe (frame-wise median) (default rmvpe)")
    p.add_argument("--f0_min", type=float, default=None,
                   help="lowest f0 searched, Hz (default: 4.1's, 50 Hz; rmvpe/fcpe unrestricted)")
    p.add_argument("--f0_max", type=float, default=None,
                   help="highest f0 searched, Hz (default: 4.1's, 1100 Hz; rmvpe/fcpe unrestricted)")
    p.add_argument("--f0_repair", action="store_true",
                   help="repair short octave / fifth jumps of the f0 curve (off by default, as 4.1)")
    p.add_argument("--f0_stats", type=str, default=None,
                   help="where to write per-speaker f0 statistics (default: f0_stats.json next to -c)")
    p.add_argument("--no_f0_stats", action="store_true", help="do not write the f0 statistics")
    p.add_argument("--num_processes", type=int, default=1,
                   help="worker processes; 0 = one per CPU (default 1)")
    p.add_argument("-c", "--config", type=str, default="configs/config.json", help="SoVITS config")
    p.add_argument("--diff_config", type=str, default="configs/diffusion.yaml",
                   help="diffusion config (read with --use_diff for the vocoder's mel settings)")
    p.add_argument("--seed", type=int, default=1234,
                   help="seed of the per-file volume/key-shift augmentation draws (--use_diff)")
    p.add_argument("--force", action="store_true",
                   help="recompute every artifact, also those with no provenance record (made by 4.1 or an "
                        "older version); without it only missing ones and those made by other models are")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    from modules.errors import ConfigError
    from modules.F0Predictor import (F0_MAX_DEFAULT, F0_MIN_DEFAULT, HYBRID_PREFIX, check_f0_predictor_name,
                                     check_f0_range, list_f0_predictors)
    from modules.hparams import get_hparams_from_file
    from preprocessing.f0_stats import default_stats_path
    from preprocessing.features import ExtractSettings
    from preprocessing.runner import preprocess_dataset

    choices = list_f0_predictors()
    if not args.f0_predictor.startswith(HYBRID_PREFIX) and args.f0_predictor not in choices:
        raise ConfigError(f"unknown --f0_predictor '{args.f0_predictor}'; choose one of {', '.join(choices)} "
                          f"or {HYBRID_PREFIX}<name>+<name>[+...]")
    check_f0_predictor_name(args.f0_predictor)  # a bad hybrid: SvcError naming its bad member
    if args.f0_min is not None or args.f0_max is not None:
        check_f0_range(F0_MIN_DEFAULT if args.f0_min is None else args.f0_min,
                       F0_MAX_DEFAULT if args.f0_max is None else args.f0_max, what="--f0_min/--f0_max")
    f0_options = {k: v for k, v in (("f0_min", args.f0_min), ("f0_max", args.f0_max)) if v is not None}
    if args.f0_repair:
        f0_options["f0_repair"] = True
    if args.num_processes < 0:
        raise ConfigError(f"--num_processes must be 0 (one per CPU) or more, got {args.num_processes}")
    if args.device and args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: CUDA is not available here; use -d cpu or leave -d out")
    hps = get_hparams_from_file(args.config)
    import vencoder

    encoder = hps.model.get("speech_encoder", "vec768l12")
    if encoder not in vencoder.list_encoders():
        raise ConfigError(f"{args.config}: unknown model.speech_encoder '{encoder}'; known: "
                          f"{', '.join(vencoder.list_encoders())}")
    diff_hps = get_hparams_from_file(args.diff_config) if args.use_diff else None
    settings = ExtractSettings.from_configs(hps, diff_hps, f0_predictor=args.f0_predictor, use_diff=args.use_diff,
                                            device=args.device, seed=args.seed, f0_options=f0_options)
    stats_path = None if args.no_f0_stats else (args.f0_stats or default_stats_path(args.config))
    summary = preprocess_dataset(args.in_dir, settings, num_processes=args.num_processes, force=args.force,
                                 f0_stats_path=stats_path)
    summary.log(logging.getLogger("preprocess_hubert_f0"))
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(run_main(main))
