"""Benchmark of preprocess_hubert_f0: files per minute with dio and fcpe, 1 and 2 processes.

Synthetic dataset (voice-like clips, 44.1 kHz 16-bit), random-weight ContentVec in the real
file format (``--encoder_size full`` is the real 95 M-parameter architecture), no diffusion
features unless ``--use_diff``. Also measures what 4.1's per-file predictor re-creation costs
(4.1 called ``get_f0_predictor`` inside ``process_one``; FCPE/RMVPE reloaded their weights).

    .venv/bin/python bench/bench_preprocess.py [--files 16] [--seconds 3] [--encoder_size full]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_dataset(root: Path, n_files: int, seconds: float) -> None:
    import numpy as np
    import soundfile as sf

    sr = 44100
    for i in range(n_files):
        rng = np.random.default_rng(i)
        t = np.arange(int(seconds * sr)) / sr
        f0 = (140 + 20 * (i % 7)) * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
        ph = 2 * np.pi * np.cumsum(f0) / sr
        y = sum(np.sin(k * ph) / k for k in range(1, 10)) * (0.5 + 0.5 * np.sin(np.pi * t / seconds))
        y = 0.5 * y / np.abs(y).max() + 0.005 * rng.standard_normal(len(t))
        spk = root / f"spk{i % 2}"
        spk.mkdir(parents=True, exist_ok=True)
        sf.write(str(spk / f"clip{i:03d}.wav"), y.astype(np.float32), sr, subtype="PCM_16")


def clear_artifacts(root: Path) -> None:
    from preprocessing.features import is_artifact_name

    for p in root.glob("*/*"):
        if is_artifact_name(p.name):
            p.unlink()


def settings_for(f0: str, use_diff: bool):
    from modules.hparams import HParams
    from preprocessing.features import ExtractSettings
    from preprocessing.flist import build_configs

    cfg, diff = build_configs({"spk0": 0, "spk1": 1}, "vec768l12")
    diff["vocoder"]["ckpt"] = "/nonexistent/model"  # openvpi mel defaults
    return ExtractSettings.from_configs(HParams(**cfg), HParams(**diff), f0_predictor=f0, use_diff=use_diff,
                                        device="cpu")


def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--encoder_size", choices=["tiny", "full"], default="full")
    ap.add_argument("--predictors", default="dio,fcpe")
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--use_diff", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    import vencoder
    from modules.F0Predictor import get_f0_predictor
    from preprocessing.runner import preprocess_dataset

    work = Path(tempfile.mkdtemp(prefix="bench_pre_"))
    try:
        pre = work / "pretrain"
        vencoder.make_random_checkpoint("vec768l12", pre / "checkpoint_best_legacy_500.pt", size=args.encoder_size)
        os.environ["SVC_PRETRAIN_DIR"] = str(pre)
        data = work / "44k"
        make_dataset(data, args.files, args.seconds)
        audio_s = args.files * args.seconds
        print(f"dataset: {args.files} files x {args.seconds:.1f} s (44.1 kHz), encoder vec768l12 "
              f"({args.encoder_size} random weights), use_diff={args.use_diff}, cpus={os.cpu_count()}, "
              f"torch threads 2 (1 per worker with 2 workers)")
        print(f"{'f0':6s} {'procs':>5s} {'wall s':>8s} {'files/min':>10s} {'RTF':>7s}  stage seconds (1 process)")
        for f0 in args.predictors.split(","):
            settings = settings_for(f0, args.use_diff)
            for n in (int(x) for x in args.processes.split(",")):
                clear_artifacts(data)
                timings: dict[str, float] = {}
                t0 = time.perf_counter()
                summary = preprocess_dataset(data, settings, num_processes=n, progress=False, timings=timings)
                wall = time.perf_counter() - t0
                assert not summary.failed, summary.failed
                stages = ", ".join(f"{k} {v:.2f}" for k, v in sorted(timings.items())) if n == 1 else "-"
                print(f"{f0:6s} {n:5d} {wall:8.2f} {args.files / wall * 60:10.1f} {wall / audio_s:7.3f}  {stages}")
            # What 4.1 paid per file: a fresh predictor (and, for FCPE/RMVPE, a fresh weight load).
            from modules.F0Predictor import base as f0_base

            reps = 5
            t0 = time.perf_counter()
            for _ in range(reps):
                f0_base.clear_model_cache()
                get_f0_predictor(f0, hop_length=512, sampling_rate=44100, device="cpu", threshold=0.05)
            per_file = (time.perf_counter() - t0) / reps
            print(f"{f0:6s} predictor creation as 4.1 did per file: {per_file * 1000:.1f} ms/file "
                  f"(ours: once per worker)")
        print(f"peak RSS: main {peak_rss_mb(resource.RUSAGE_SELF):.0f} MB, "
              f"largest worker {peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
