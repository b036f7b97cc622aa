"""Whole-song float32 conversion with and without decoding the slices' padding (issue 25).

``Svc`` decodes only each slice's kept frames plus the decoder's receptive radius
(``SynthesizerTrn.decode_range``); the old behaviour (the whole padded slice decoded) is restored
by patching ``decode_range`` to a whole decode. Both run alternately in one process on
bench_infer's synthetic song with the full-size random models; reported: median wall and CPU
time per conversion, the ratio, and the audio difference (target rel L2 ≤ 1e-6).

    .venv/bin/python bench/bench_decode_range.py [--seconds 20] [--f0 fcpe] [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--f0", default="fcpe")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    from bench_infer import SR, prepare, song
    from inference.infer_tool import Svc
    from inference.options import ConversionOptions
    from models import SynthesizerTrn

    torch.set_num_threads(args.threads)
    files = prepare(Path(os.environ.get("SVC_BENCH_DIR", "/tmp/svc_bench_infer")))
    os.environ["SVC_PRETRAIN_DIR"] = files["pretrain"]
    svc = Svc(files["g"], files["config"], device="cpu", cluster_model_path=None)
    y = song(args.seconds, seed=int(args.seconds))
    opts = ConversionOptions(f0_predictor=args.f0)
    skip = SynthesizerTrn.decode_range

    def whole(self, z, f0, g, start, stop):
        return self.decode(z, f0, g)

    def run(mode: str):
        SynthesizerTrn.decode_range = skip if mode == "skip padding" else whole
        c0, t0 = time.process_time(), time.perf_counter()
        out = svc.convert(y, SR, "a", opts, progress=False)
        return out, time.perf_counter() - t0, time.process_time() - c0

    print(f"# {args.seconds:g} s song, {args.f0}, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}", flush=True)
    modes = ("whole slices", "skip padding")
    outs, wall, cpu = {}, {m: [] for m in modes}, {m: [] for m in modes}
    with torch.inference_mode():
        for m in modes:  # warm-up and the outputs compared
            outs[m] = run(m)[0]
        for _ in range(args.rounds):
            for m in modes:
                _, w, c = run(m)
                wall[m].append(w)
                cpu[m].append(c)
    SynthesizerTrn.decode_range = skip
    ref, new = outs["whole slices"].astype(np.float64), outs["skip padding"].astype(np.float64)
    rel = float(np.linalg.norm(new - ref) / np.linalg.norm(ref))
    for m in modes:
        print(f"{m:13s} wall {statistics.median(wall[m]):7.2f} s  CPU {statistics.median(cpu[m]):7.2f} s "
              f"(runs {', '.join(f'{x:.1f}' for x in cpu[m])})")
    print(f"skip/whole: CPU {statistics.median(cpu['skip padding']) / statistics.median(cpu['whole slices']):.3f}x, "
          f"wall {statistics.median(wall['skip padding']) / statistics.median(wall['whole slices']):.3f}x; "
          f"audio rel L2 {rel:.2e}, max |diff| {float(np.abs(new - ref).max()):.2e}; load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
