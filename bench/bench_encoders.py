"""Speech-encoder speed on CPU: seconds per 10 s of 16 kHz audio, for every encoder at its real size.

Random weights in the published formats (``vencoder.make_random_checkpoint(size="full")``) are
written to a temporary directory; each encoder runs in its own subprocess (clean peak-memory
figures), with ``torch.set_num_threads(2)``. Reported: checkpoint size, load time, median encode
time of 10 s of audio over ``--repeats`` runs after one warm-up, real-time factor, CPU seconds
(process time over both threads: a steadier figure than wall time on a shared machine), peak RSS of the
process that loads and runs the encoder (the checkpoint is written by another process).

whisper-ppg-large (large-v2, a 3 GB checkpoint and ~2.5 GB of float32 encoder weights) is skipped
unless ``--include-large`` is given.

Usage: .venv/bin/python bench/bench_encoders.py [--names vec768l12 ...] [--repeats 3] [--include-large]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 10.0


def _one(name: str, repeats: int, workdir: Path) -> dict:
    import resource
    import statistics

    import torch

    torch.set_num_threads(2)
    sys.path.insert(0, str(ROOT))
    import vencoder

    path = workdir / vencoder.ENCODERS[name].filename  # written by a separate process (clean peak RSS)
    size = path.stat().st_size
    t = time.perf_counter()
    enc = vencoder.get_speech_encoder(name, device="cpu", path=path)
    t_load = time.perf_counter() - t
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(int(SECONDS * 16000), generator=g)
    units = enc.encoder(wav)  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        enc.encoder(wav)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    med = statistics.median(times)
    path.unlink()
    return {"name": name, "dim": enc.dim, "frames": int(units.shape[-1]), "ckpt_mb": size / 2**20,
            "load_s": t_load, "sec_per_10s": med, "rtf": med / SECONDS,
            "cpu_s_per_10s": statistics.median(cpu),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", nargs="*", help="encoders to run (default: all but whisper-ppg-large)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--include-large", action="store_true", help="also run whisper-ppg-large (needs ~8 GB RAM, 3 GB disk)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--write", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write:
        sys.path.insert(0, str(ROOT))
        import vencoder

        vencoder.make_random_checkpoint(args.write, Path(args.workdir) / vencoder.ENCODERS[args.write].filename,
                                        size="full", seed=0)
        return 0
    if args.one:
        print("RESULT " + json.dumps(_one(args.one, args.repeats, Path(args.workdir))), flush=True)
        return 0

    sys.path.insert(0, str(ROOT))
    import vencoder

    names = args.names or [n for n in vencoder.list_encoders() if args.include_large or n != "whisper-ppg-large"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_enc_") as tmp:
        for name in names:
            env = {**os.environ, "OMP_NUM_THREADS": "2"}
            w = subprocess.run([sys.executable, __file__, "--write", name, "--workdir", tmp], capture_output=True,
                               text=True, cwd=ROOT, env=env)
            if w.returncode != 0:
                print(f"{name}: writing the checkpoint FAILED\n{w.stderr[-1500:]}", file=sys.stderr)
                continue
            cmd = [sys.executable, __file__, "--one", name, "--repeats", str(args.repeats), "--workdir", tmp]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if r.returncode != 0 or line is None:
                print(f"{name}: FAILED\n{r.stderr[-1500:]}", file=sys.stderr)
                continue
            row = json.loads(line[len("RESULT "):])
            rows.append(row)
            print(f"{name:18s} C={row['dim']:4d} N={row['frames']:3d}  ckpt {row['ckpt_mb']:7.1f} MB  "
                  f"load {row['load_s']:5.2f} s  encode 10 s: {row['sec_per_10s']:6.3f} s (RTF {row['rtf']:.3f}, "
                  f"CPU {row['cpu_s_per_10s']:6.2f} s)  "
                  f"peak RSS {row['peak_rss_mb']:6.0f} MB", flush=True)
    if "whisper-ppg-large" not in names:
        print("whisper-ppg-large skipped (3 GB checkpoint); pass --include-large to run it")
    print("\n| encoder | C | checkpoint (MB) | load (s) | s per 10 s audio | RTF | CPU s per 10 s | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['dim']} | {r['ckpt_mb']:.0f} | {r['load_s']:.2f} | {r['sec_per_10s']:.3f} | "
              f"{r['rtf']:.3f} | {r['cpu_s_per_10s']:.2f} | {r['peak_rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
