"""Train per-speaker k-means models (4.1's ``cluster/train_cluster.py``, spec §1.6, §9.1).

Run from the project root::

    python cluster/train_cluster.py [--dataset ./dataset/44k] [--output logs/44k] [--gpu]

Reads every ``<dataset>/<speaker>/*.soft.pt`` and writes ``<output>/kmeans_10000.pt`` in the 4.1
layout. ``--gpu`` uses the PyTorch mini-batch k-means (CUDA when available, else CPU);
``--minibatch`` uses scikit-learn's MiniBatchKMeans for large datasets; the default is
scikit-learn's KMeans, as in 4.1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def _use_project_imports() -> None:
    """Let ``import cluster`` / ``import modules`` work when run as ``python cluster/train_cluster.py``.

    Python then puts ``cluster/`` itself first on ``sys.path``, where its modules would shadow
    top-level ones; the project root takes its place.
    """
    here = os.path.normcase(str(Path(__file__).resolve().parent))
    sys.path[:] = [p for p in sys.path if os.path.normcase(os.path.abspath(p or ".")) != here]
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))


def build_parser() -> argparse.ArgumentParser:
    from modules.runtime import add_threads_argument

    p = argparse.ArgumentParser(description="Train per-speaker k-means models (kmeans_10000.pt) for cluster-based timbre control.")
    p.add_argument("--dataset", type=Path, default=Path("./dataset/44k"), help="path of training data directory")
    p.add_argument("--output", type=Path, default=Path("logs/44k"), help="path of model output directory")
    p.add_argument("--gpu", action="store_true", default=False, help="use the PyTorch k-means (on CUDA when available, else CPU)")
    p.add_argument(
        "--minibatch", action="store_true", default=False,
        help="use scikit-learn MiniBatchKMeans (batch 4096, 80 iterations): much faster for large datasets",
    )
    p.add_argument("--n_clusters", type=int, default=10000, help="centres per speaker (default 10000; the file is kmeans_<n>.pt)")
    p.add_argument("--device", default=None, help="torch device for --gpu (default: cuda if available, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--max_frames", type=int, default=0,
        help="cluster at most this many frames per speaker (a uniform random subset; bounds memory). 0 = all",
    )
    add_threads_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.gpu and args.minibatch:
        parser.error("--gpu and --minibatch are alternatives; choose one")
    if args.n_clusters < 1:
        parser.error(f"--n_clusters must be at least 1, got {args.n_clusters}")
    if args.max_frames < 0:
        parser.error(f"--max_frames must be >= 0, got {args.max_frames}")
    if args.device is not None and not args.gpu:
        parser.error("--device applies to --gpu only")
    from modules.runtime import configure_threads

    configure_threads(args.threads, interactive=False)  # before any torch work
    _use_project_imports()
    from cluster.training import train_cluster_model

    method = "torch" if args.gpu else "minibatch" if args.minibatch else "kmeans"
    train_cluster_model(
        args.dataset,
        args.output,
        n_clusters=args.n_clusters,
        method=method,
        seed=args.seed,
        device=args.device,
        max_frames=args.max_frames or None,
    )
    return 0


if __name__ == "__main__":
    _use_project_imports()
    from modules.cli import run_main

    sys.exit(run_main(main))
