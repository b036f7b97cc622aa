"""Benchmark of clustering and retrieval: inference cost, loading memory, k-means training.

1. k-means at inference: nearest of 10000 centres for T frames (C = 768), ours (torch addmm)
   against 4.1's sklearn ``KMeans.predict`` with injected centres.
2. Retrieval: k = 8 search in an IVF-Flat index of N frames, ours (direct map) against 4.1's
   ``reconstruct_n`` copy + fancy indexing; first call (incl. the copy) and steady state, and the
   memory each keeps per speaker.
3. Gathering a speaker's units for training: peak numpy memory (tracemalloc) of ours (two passes,
   one preallocated matrix) against 4.1's list + concatenate + astype.
4. k-means training on CPU (scaled down: K centres on N frames): sklearn KMeans (4.1 default),
   MiniBatchKMeans (--minibatch), torch (--gpu path on CPU).

    .venv/bin/python bench/bench_cluster.py [--frames 2000] [--index_rows 50000] [--skip_train]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def median_time(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_kmeans_inference(frames: int) -> None:
    import numpy as np
    from sklearn.cluster import KMeans

    from cluster.mixing import KMeansModel

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((10000, 768)).astype(np.float32)
    x = rng.standard_normal((frames, 768)).astype(np.float32)
    ours = KMeansModel(centres)
    km = KMeans(768)
    km.__dict__.update(n_features_in_=768, _n_threads=2, cluster_centers_=centres)
    assert (ours.predict(x) == km.predict(x)).mean() > 0.999
    t_ours = median_time(lambda: ours.centers_for(x))
    t_41 = median_time(lambda: centres[km.predict(x)])
    audio_s = frames * 512 / 44100
    print(f"[kmeans infer] T={frames} frames ({audio_s:.1f} s audio), K=10000, C=768")
    print(f"  ours   {t_ours * 1e3:8.1f} ms  (RTF {t_ours / audio_s:.4f})")
    print(f"  4.1    {t_41 * 1e3:8.1f} ms  (RTF {t_41 / audio_s:.4f})  sklearn predict")


def bench_retrieval(frames: int, rows: int) -> None:
    import numpy as np

    from cluster.mixing import FeatureIndex
    from cluster.training import build_index

    rng = np.random.default_rng(1)
    data = rng.standard_normal((rows, 768)).astype(np.float32)
    t0 = time.perf_counter()
    index = build_index(data, progress=False, name="bench")
    t_build = time.perf_counter() - t0
    x = rng.standard_normal((frames, 768)).astype(np.float32)
    audio_s = frames * 512 / 44100

    def run_41(cache: dict) -> np.ndarray:
        if "big" not in cache:
            cache["big"] = index.reconstruct_n(0, index.ntotal)
        score, ix = index.search(x, k=8)
        w = np.square(1 / score)
        w /= w.sum(axis=1, keepdims=True)
        return np.sum(cache["big"][ix] * np.expand_dims(w, axis=2), axis=1)

    fi = FeatureIndex({0: index})
    t0 = time.perf_counter()
    got = fi.retrieve(x, 0)
    first_ours = time.perf_counter() - t0
    cache: dict = {}
    t0 = time.perf_counter()
    ref = run_41(cache)
    first_41 = time.perf_counter() - t0
    assert np.array_equal(got, ref)
    t_ours = median_time(lambda: fi.retrieve(x, 0))
    t_41 = median_time(lambda: run_41(cache))
    print(f"[retrieval] index IVF{index.nlist},Flat of {rows} x 768 (built in {t_build:.1f} s), T={frames} frames")
    print(f"  ours   first {first_ours * 1e3:7.1f} ms, then {t_ours * 1e3:7.1f} ms (RTF {t_ours / audio_s:.4f}); "
          f"extra memory {rows * 8 / 2**20:.1f} MiB (direct map)")
    print(f"  4.1    first {first_41 * 1e3:7.1f} ms, then {t_41 * 1e3:7.1f} ms (RTF {t_41 / audio_s:.4f}); "
          f"extra memory {cache['big'].nbytes / 2**20:.1f} MiB (reconstruct_n copy)")


def bench_gather(n_files: int, frames_per_file: int) -> None:
    import numpy as np
    import torch

    from cluster.features import gather_units, list_unit_files, scan_units
    from modules.checkpoint import torch_load

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "spk"
        d.mkdir()
        rng = np.random.default_rng(2)
        for i in range(n_files):
            torch.save(torch.from_numpy(rng.standard_normal((1, 768, frames_per_file)).astype(np.float32)), d / f"{i}.wav.soft.pt")
        files = list_unit_files(d)
        data_mb = n_files * frames_per_file * 768 * 4 / 2**20

        tracemalloc.start()
        t0 = time.perf_counter()
        info = scan_units("spk", files, progress=False)
        feats = gather_units(info, progress=False)
        t_ours = time.perf_counter() - t0
        peak_ours = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        del feats

        tracemalloc.start()
        t0 = time.perf_counter()
        parts = [torch_load(f).squeeze(0).numpy().T for f in files]  # 4.1: list, concatenate, astype
        feats = np.concatenate(parts, axis=0).astype(np.float32)
        t_41 = time.perf_counter() - t0
        peak_41 = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        del feats, parts
    print(f"[gather units] {n_files} files x {frames_per_file} frames x 768 = {data_mb:.0f} MiB of features")
    print(f"  ours   {t_ours:6.2f} s, peak numpy memory {peak_ours:7.1f} MiB (two passes, preallocated)")
    print(f"  4.1    {t_41:6.2f} s, peak numpy memory {peak_41:7.1f} MiB (list + concatenate + astype)")


def bench_train(n: int, k: int) -> None:
    import numpy as np

    from cluster.training import fit_kmeans

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((k // 10 + 1, 768))[rng.integers(0, k // 10 + 1, n)] + 0.3 * rng.standard_normal((n, 768))).astype(np.float32)
    print(f"[kmeans train] N={n} frames, K={k}, C=768, CPU")
    for method in ("kmeans", "minibatch", "torch"):
        t0 = time.perf_counter()
        entry = fit_kmeans(x, k, method=method, progress=False, name="bench", device="cpu")
        dt = time.perf_counter() - t0
        c = entry["cluster_centers_"]
        # inertia on the data (lower is better)
        from cluster.mixing import KMeansModel

        near = KMeansModel(c).centers_for(x)
        inertia = float(((x - near) ** 2).sum() / n)
        print(f"  {method:9s} {dt:7.1f} s, mean squared distance to centre {inertia:8.2f}")


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=2000, help="frames per inference query (86.13 frames/s)")
    p.add_argument("--index_rows", type=int, default=50000)
    p.add_argument("--gather_files", type=int, default=40)
    p.add_argument("--train_frames", type=int, default=20000)
    p.add_argument("--train_k", type=int, default=500)
    p.add_argument("--skip_train", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    import faiss

    faiss.omp_set_num_threads(2)
    bench_kmeans_inference(args.frames)
    bench_retrieval(args.frames, args.index_rows)
    bench_gather(args.gather_files, 1000)
    if not args.skip_train:
        bench_train(args.train_frames, args.train_k)


if __name__ == "__main__":
    main()
