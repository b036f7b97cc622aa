"""Train per-speaker faiss feature indexes for feature retrieval (4.1's ``train_index.py``, spec §1.7, §9.2).

    python train_index.py [--root_dir dataset/44k] [-c ./configs/config.json] [--output_dir logs/44k]

Writes ``<output_dir>/feature_and_index.pkl`` (4.1 format; this project reads it through an
allow-list unpickler). ``--output some/path.json`` writes the safe format instead: a manifest
plus one ``faiss.write_index`` file per speaker, no pickle.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from modules.runtime import add_threads_argument

    p = argparse.ArgumentParser(description="Train per-speaker faiss indexes (feature_and_index.pkl) for feature retrieval.")
    p.add_argument("--root_dir", type=str, default="dataset/44k", help="path of the preprocessed dataset")
    p.add_argument("-c", "--config", type=str, default="./configs/config.json", help="config file (for the 'spk' speaker map)")
    p.add_argument("--output_dir", type=str, default="logs/44k", help="output directory")
    p.add_argument(
        "-o", "--output", type=str, default=None,
        help="output file; the extension picks the format: .pkl = 4.1 pickle, .json = safe manifest + "
        ".index files (default: <output_dir>/feature_and_index.pkl)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for shuffling and k-means (default 0)")
    p.add_argument(
        "--max_frames", type=int, default=0,
        help="use at most this many frames per speaker (a uniform random subset; bounds memory). 0 = all",
    )
    add_threads_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    output = Path(args.output) if args.output else Path(args.output_dir) / "feature_and_index.pkl"
    if output.suffix.lower() not in (".pkl", ".json"):
        parser.error(f"--output must end in .pkl (4.1 format) or .json (safe format), got '{output}'")
    if args.max_frames < 0:
        parser.error(f"--max_frames must be >= 0, got {args.max_frames}")

    from modules.runtime import configure_threads

    configure_threads(args.threads, interactive=False)  # before any torch work

    from cluster.training import train_feature_index
    from modules.errors import ConfigError
    from modules.hparams import get_hparams_from_file

    hps = get_hparams_from_file(args.config, strict=False)
    if "spk" not in hps or not isinstance(hps["spk"], dict) and not hasattr(hps["spk"], "items"):
        raise ConfigError(f"{args.config}: no 'spk' section (speaker name → id); run preprocess_flist_config.py")
    spk = {}
    for name, sid in hps["spk"].items():
        if isinstance(sid, bool) or not isinstance(sid, int) or sid < 0:
            raise ConfigError(f"{args.config}: spk.{name} must be a non-negative integer speaker id, got {sid!r}")
        spk[str(name)] = sid
    train_feature_index(args.root_dir, spk, output, seed=args.seed, max_frames=args.max_frames or None)
    return 0


if __name__ == "__main__":
    from modules.cli import run_main

    sys.exit(run_main(main))
