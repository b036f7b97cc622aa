"""Step 3: write the training features next to every ``dataset/44k/<speaker>/*.wav``.

Same flags and defaults as so-vits-svc 4.1's ``preprocess_hubert_f0.py`` (``-d``, ``--in_dir``,
``--use_diff``, ``--f0_predictor``, ``--num_processes``); additions: ``-c/--config``,
``--diff_config`` (4.1 hard-coded ``configs/config.json`` / ``configs/diffusion.yaml``) and
``--seed`` for the diffusion augmentation draws, ``--force``. Existing artifacts are kept, so a
re-run resumes, except those made by another encoder / f0 predictor / weight file / setting (recorded
in ``<in_dir>/.svc_provenance.json``), which are recomputed. Exit status 1 when any file failed (each is listed with the reason).
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    from modules.runtime import add_threads_argument

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("-d", "--device", type=str, default=None,
                   help="device, e.g. cpu, cuda, cuda:1 (default: each worker takes GPU k mod n, else CPU)")
    p.add_argument("--in_dir", type=str, default="dataset/44k", help="dataset root: <in_dir>/<speaker>/*.wav")
    p.add_argument("--use_diff", action="store_true",
                   help="also write the shallow-diffusion features (.mel/.vol/.aug_mel/.aug_vol)")
    p.add_argument("--f0_predictor", type=str, default="rmvpe",
                   help="crepe, pm, dio, harvest, rmvpe or fcpe (default rmvpe)")
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
    add_threads_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from modules.runtime import configure_threads

    configure_threads(args.threads, interactive=False)  # before any torch work
    import logging

    from modules.errors import ConfigError
    from modules.F0Predictor import list_f0_predictors
    from modules.hparams import get_hparams_from_file
    from preprocessing.features import ExtractSettings
    from preprocessing.runner import preprocess_dataset

    choices = list(list_f0_predictors())
    if args.f0_predictor not in choices:
        raise ConfigError(f"unknown --f0_predictor '{args.f0_predictor}'; choose one of {', '.join(choices)}")
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
                                            device=args.device, seed=args.seed)
    summary = preprocess_dataset(args.in_dir, settings, num_processes=args.num_processes, force=args.force,
                                 worker_threads=args.threads)
    summary.log(logging.getLogger("preprocess_hubert_f0"))
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(run_main(main))
