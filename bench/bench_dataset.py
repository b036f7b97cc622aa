"""Benchmark of dataset preparation: the quality check against resampling, files per minute.

Synthetic raw dataset of 5-10 s speech-like clips (48 kHz stereo 16-bit, two speakers). Times,
each with the same number of worker processes (default 2, spawned, start-up included):
``resample.py``'s :func:`resample_dataset` (raw → 44.1 kHz), :func:`check_dataset` on the raw
set and on the resampled set, and :func:`slice_dataset` on the raw set. Then the per-file cost
of the cheap F0 predictors the check can use (pm, dio) at its 16 kHz / 20 ms setting.

    .venv/bin/python bench/bench_dataset.py [--files 24] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def make_raw(root: Path, n_files: int) -> float:
    """Write the clips; returns their total duration in seconds."""
    import numpy as np

    from data_helpers import speech
    from preprocess_helpers import write

    total = 0.0
    for i in range(n_files):
        seconds = 5.0 + 5.0 * (i % 6) / 5  # 5 ... 10 s
        y = speech(seconds, 48000, f0=140 + 15 * (i % 7), seed=i)
        write(root / f"spk{i % 2}" / f"clip {i:03d}.wav", np.stack([y, 0.9 * y], 1), 48000, "PCM_16")
        total += seconds
    return total


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # bench script: one thread per worker process

    from preprocessing.quality import F0_HOP, F0_RATE, QualityOptions, check_dataset
    from preprocessing.resample import ResampleOptions, resample_dataset
    from preprocessing.slicing import slice_dataset

    work = Path(tempfile.mkdtemp(prefix="bench_dataset_"))
    try:
        raw, out = work / "raw", work / "44k"
        audio_s = make_raw(raw, args.files)
        n, w = args.files, args.workers
        rows = []
        t_res, summary = timed(lambda: resample_dataset(raw, out, ResampleOptions(), num_workers=w, progress=False))
        assert not summary.failed, summary.failed
        rows.append(("resample (raw 48k stereo → 44.1k)", t_res))
        t_raw, rep = timed(lambda: check_dataset(raw, num_workers=w, progress=False))
        rows.append(("check_dataset on raw", t_raw))
        t_44k, rep44 = timed(lambda: check_dataset(out, QualityOptions(sampling_rate=44100), num_workers=w,
                                                   progress=False))
        rows.append(("check_dataset on 44k (as preprocess_flist_config)", t_44k))
        t_slice, _ = timed(lambda: slice_dataset(raw, work / "sliced", progress=False))
        rows.append(("slice_audio on raw (1 process)", t_slice))
        print(f"{n} files, {audio_s / n:.1f} s average, {w} worker process(es)")
        print("| step | seconds | files/min | × resample |")
        print("|---|---|---|---|")
        for name, t in rows:
            print(f"| {name} | {t:.2f} | {60 * n / t:.0f} | {t / t_res:.2f} |")
        print(f"problems found: raw {len(rep.problems)}, 44k {len(rep44.problems)} (expected 0 on clean clips)")

        # per-file cost of the F0 predictors the check could use, in this process
        import numpy as np
        import soundfile as sf

        from modules.audio import resample
        from modules.F0Predictor import get_f0_predictor

        clips = sorted(out.rglob("*.wav"))[:6]
        ys = [resample(sf.read(str(c), dtype="float32")[0], 44100, F0_RATE) for c in clips]
        for name in ("pm", "dio"):
            p = get_f0_predictor(name, hop_length=F0_HOP, sampling_rate=F0_RATE, device="cpu")
            p.compute_f0_uv(ys[0])
            t, _ = timed(lambda: [p.compute_f0_uv(y) for y in ys])
            print(f"F0 {name} at {F0_RATE} Hz / {F0_HOP}-sample hop: {1000 * t / len(ys):.0f} ms per clip "
                  f"({np.mean([len(y) for y in ys]) / F0_RATE:.1f} s average)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
