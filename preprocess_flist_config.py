"""Step 2: speaker ids, ``filelists/train.txt`` / ``val.txt``, ``configs/config.json`` and ``diffusion.yaml``.

Same flags and defaults as so-vits-svc 4.1's ``preprocess_flist_config.py``; additions:
``--seed`` (reproducible split), ``--val_per_speaker``, ``--config_dir``, and the dataset quality
summary first (``--skip_check`` to skip it, ``--strict`` to stop on unusable clips). Speaker ids follow
the sorted speaker-folder names. Exit status 1 when any clip could not be used (listed).
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main

DEFAULT_TRAIN_LIST = "./filelists/train.txt"
DEFAULT_VAL_LIST = "./filelists/val.txt"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--train_list", type=str, default=DEFAULT_TRAIN_LIST, help="path to train list")
    p.add_argument("--val_list", type=str, default=DEFAULT_VAL_LIST, help="path to val list")
    p.add_argument("--source_dir", type=str, default="./dataset/44k", help="resampled dataset root")
    p.add_argument("--speech_encoder", type=str, default="vec768l12",
                   help="speech encoder (vec768l12, vec256l9, hubertsoft, whisper-ppg, whisper-ppg-large, "
                        "cnhubertlarge, dphubert, wavlmbase+, and the -onnx variants)")
    p.add_argument("--vol_aug", action="store_true", help="volume embedding and volume augmentation")
    p.add_argument("--tiny", action="store_true", help="start from the tiny template (faster, for real-time use)")
    p.add_argument("--tf_flow", action="store_true", help="transformer flow with shared parameters")
    p.add_argument("--seed", type=int, default=1234, help="seed of the train/validation split (default 1234)")
    p.add_argument("--val_per_speaker", type=int, default=2, help="validation clips per speaker (default 2)")
    p.add_argument("--config_dir", type=str, default="configs",
                   help="where config.json and diffusion.yaml are written (default configs)")
    p.add_argument("--skip_check", action="store_true", help="skip the dataset quality summary (check_dataset.py)")
    p.add_argument("--strict", action="store_true",
                   help="stop before writing anything when a clip cannot be trained on (listed)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    from modules.errors import ConfigError
    from preprocessing.flist import make_filelists_and_configs

    if args.val_per_speaker < 1:
        raise ConfigError(f"--val_per_speaker must be at least 1 (training evaluates on it), got {args.val_per_speaker}")
    summary = make_filelists_and_configs(
        source_dir=args.source_dir, train_list=args.train_list, val_list=args.val_list,
        speech_encoder=args.speech_encoder, vol_aug=args.vol_aug, tiny=args.tiny, tf_flow=args.tf_flow,
        seed=args.seed, val_per_speaker=args.val_per_speaker, config_dir=args.config_dir,
        # 4.1 kept the template's list paths in the configs; ours follow non-default --train_list/--val_list.
        write_list_paths_to_config=(args.train_list != DEFAULT_TRAIN_LIST or args.val_list != DEFAULT_VAL_LIST),
        quality_check=not args.skip_check, strict=args.strict,
    )
    summary.log(logging.getLogger("preprocess_flist_config"), rerun_hint="they are left out of the file lists")
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(run_main(main))
