"""OpenMP wait policy under load: a training step and a realtime block, ACTIVE vs PASSIVE (issue 24).

Runs ``bench/bench_train.py --mode ours`` and ``bench/bench_realtime.py --engines ours`` each in
its own process with ``OMP_WAIT_POLICY=ACTIVE`` (threads spin between parallel regions) and
``PASSIVE`` (they sleep), alternated round by round so both policies see the same machine load,
all with the same thread count. The policy is read when OpenMP starts, hence one process per run.

    .venv/bin/python bench/bench_threads.py [--rounds 2] [--threads 2] [--block 0.5]

Prints one JSON line per run and a Markdown table of medians (seconds per training step,
milliseconds per realtime block, wall and CPU) with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("ACTIVE", "PASSIVE")


def run_train(policy: str, threads: int, steps: int) -> dict:
    out = _run(policy, ["bench/bench_train.py", "--mode", "ours", "--threads", str(threads), "--steps", str(steps),
                        "--warmup", "1"])
    m = re.search(r"ours: median ([\d.]+) s/step wall, ([\d.]+) s CPU", out)
    if not m:
        raise RuntimeError(f"bench_train.py printed no median:\n{out}")
    return {"job": "train step", "policy": policy, "wall_s": float(m.group(1)), "cpu_s": float(m.group(2))}


def run_realtime(policy: str, threads: int, block: float, n: int) -> dict:
    out = _run(policy, ["bench/bench_realtime.py", "--engines", "ours", "--blocks", str(block), "--n", str(n),
                        "--threads", str(threads)])
    row = next(json.loads(line) for line in out.splitlines() if line.startswith('{"engine"') and "median_ms" in line)
    return {"job": f"realtime block {row['block_s']} s", "policy": policy, "wall_s": row["median_ms"] / 1000,
            "cpu_s": row["cpu_ms"] / 1000}


def _run(policy: str, argv: list[str]) -> str:
    env = dict(os.environ, OMP_WAIT_POLICY=policy)
    env.pop("OMP_NUM_THREADS", None)  # the benchmark's --threads decides
    out = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="alternations of ACTIVE and PASSIVE per job")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per run (after 1 warm-up)")
    ap.add_argument("--block", type=float, default=0.5, help="realtime block length in seconds")
    ap.add_argument("--n", type=int, default=6, help="timed realtime blocks per run")
    ap.add_argument("--jobs", nargs="+", default=["train", "realtime"], choices=["train", "realtime"])
    args = ap.parse_args()
    load_before = os.getloadavg()
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
                      "load_average": load_before, "threads": args.threads}), flush=True)
    rows = []
    for r in range(args.rounds):
        order = POLICIES if r % 2 == 0 else POLICIES[::-1]  # neither policy always runs first
        for job in args.jobs:
            for policy in order:
                row = (run_train(policy, args.threads, args.steps) if job == "train"
                       else run_realtime(policy, args.threads, args.block, args.n))
                row["round"], row["load_1min"] = r, round(os.getloadavg()[0], 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(json.dumps({"load_average_after": os.getloadavg()}), flush=True)
    print("\n| job | policy | runs | median wall | median CPU | wall ACTIVE / PASSIVE |")
    print("|---|---|---|---|---|---|")
    for job in dict.fromkeys(r["job"] for r in rows):
        med = {p: statistics.median(r["wall_s"] for r in rows if r["job"] == job and r["policy"] == p)
               for p in POLICIES}
        for p in POLICIES:
            mine = [r for r in rows if r["job"] == job and r["policy"] == p]
            cpu = statistics.median(r["cpu_s"] for r in mine)
            ratio = f"{med['ACTIVE'] / med['PASSIVE']:.2f}x" if p == "PASSIVE" else ""
            print(f"| {job} | {p} | {len(mine)} | {med[p]:.3f} s | {cpu:.3f} s | {ratio} |")


if __name__ == "__main__":
    main()
