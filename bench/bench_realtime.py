"""Benchmark of realtime conversion: compute time per block versus block length (CPU, 2 threads).

Models at their real size with random weights: vec768l12 (ContentVec base) from
``vencoder.make_random_checkpoint(size="full")``, the default ``config_template.json``
synthesizer, FCPE with the weights bundled in the torchfcpe wheel (the GUI's default predictor).
GUI defaults otherwise: crossfade 0.04 s, 4 history blocks, noise 0.4, threshold -45 dB (the
input is loud enough that no block is skipped).

Two engines stream the same synthetic song block by block (``RealtimeConverter.process``, the
path the sound card and ``gui.py --input`` use):

* ``ours``: f0 and units only for the new frames (+1 s context), the decoder only over the
  output window plus its receptive field;
* ``41``: 4.1's amount of work: f0, units and the whole synthesizer over the whole buffer
  (history + block) every block (``incremental=False`` and a decoder window of the full buffer).

``cpu_ms`` is the process CPU time per block (all threads): on a machine shared with other work
the wall time grows but the CPU time does not, so with ``--threads 1`` it estimates the wall time
on an idle core.

A block size "keeps up" when the median compute time per block is below the block length
(real-time factor < 1); the smallest such block gives the end-to-end algorithmic latency
block + crossfade + 0.01 + 0.02 s (device buffers come on top).

    .venv/bin/python bench/bench_realtime.py [--blocks 0.1 0.2 0.3 0.5 0.7 1.0] [--engines ours 41]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SR = 44100


def song(seconds: float, seed: int = 0):
    """A vibrato voice with harmonics and light noise, float32 (no pauses: every block is converted)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 220 * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * t)) * (1 + 0.15 * np.sin(2 * np.pi * 0.2 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = sum(np.sin(k * phase) * (0.7 ** k) for k in range(1, 12))
    y = 0.3 * y / np.abs(y).max() + 0.002 * rng.standard_normal(n)
    return y.astype(np.float32)


def prepare(work: Path) -> dict:
    """Write (once) the random-weight models into ``work``."""
    import torch

    from modules.checkpoint import save_checkpoint
    from vencoder import get_spec, make_random_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    pretrain = work / "pretrain"
    enc = pretrain / get_spec("vec768l12").filename
    if not enc.is_file():
        print("writing full-size random vec768l12 ...", flush=True)
        make_random_checkpoint("vec768l12", enc, size="full")
    cfg_path, g_path = work / "config.json", work / "G_0.pth"
    if not g_path.is_file():
        from models import SynthesizerTrn
        from modules.hparams import HParams

        cfg = json.loads((ROOT / "configs" / "config_template.json").read_text())
        cfg["model"]["n_speakers"] = 2
        cfg["spk"] = {"a": 0, "b": 1}
        cfg_path.write_text(json.dumps(cfg, indent=2))
        h = HParams(**cfg)
        torch.manual_seed(0)
        net = SynthesizerTrn(h.data.filter_length // 2 + 1, h.train.segment_size // h.data.hop_length, **h.model)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if ".post." in name:
                    p.normal_(0, 0.02)
        save_checkpoint(net, None, 1e-4, 1, g_path)
    return {"pretrain": str(pretrain), "config": str(cfg_path), "g": str(g_path)}


class _Timer:
    """Wraps a method of ``obj`` (instance attribute) and sums its wall time."""

    def __init__(self, obj, name: str) -> None:
        self.total = 0.0
        fn = getattr(obj, name)
        self._undo = (obj, name, obj.__dict__.get(name))

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.total += time.perf_counter() - t0

        setattr(obj, name, timed)

    def restore(self) -> None:
        obj, name, previous = self._undo
        if previous is None:
            obj.__dict__.pop(name, None)
        else:
            setattr(obj, name, previous)


#: Parts of a block in the breakdown: name → (where the method lives, method name). The encoder's
#: 16 kHz resampling and the device-rate bridge count as "resampling"; "volume" is the loudness
#: envelope + gate; what the parts leave of a block is buffer shifting, copies and Python.
def breakdown_timers(svc, conv, f0: str) -> dict[str, list[_Timer]]:
    eng = conv.engine
    net = eng.net if hasattr(eng, "net") else svc.net_g_ms
    # the speech encoder of the engine's precision (Svc keeps one per precision)
    encoder = svc.encoder_for(getattr(eng, "precision", "fp32")) if hasattr(svc, "encoder_for") else svc.hubert_model
    parts: dict[str, list[_Timer]] = {
        "encoder": [_Timer(encoder, "encoder")],
        "f0": [_Timer(svc.f0_predictor(f0, eng.settings.f0_threshold), "compute_f0_uv")],
        "prior+flow": [_Timer(net, "embed_content"), _Timer(net.enc_p, "forward"), _Timer(net.flow, "forward")],
        "decoder": [_Timer(net.dec, "forward")],
        "SOLA": [_Timer(eng, "_sola_crossfade")],
        "resampling": [_Timer(svc, "_to_16k")],
        "volume": [_Timer(svc.volume_extractor, "extract")],
    }
    if not getattr(conv, "_direct", True):
        parts["resampling"] += [_Timer(conv.in_rs, "push"), _Timer(conv.out_rs, "push")]
    return parts


def run_case(svc, engine: str, block: float, n_blocks: int, warmup: int, f0: str, context: float,
             device_rate: int | None = None, precision: str = "fp32") -> dict:
    import numpy as np

    from inference.realtime import RealtimeConverter, RealtimeSettings

    extra = {"precision": precision} if precision != "fp32" else {}
    s = RealtimeSettings(block_time=block, f0_predictor=f0, incremental=(engine == "ours"), feature_context=context,
                         **extra)
    conv = RealtimeConverter(svc, s, sample_rate=device_rate)
    eng = conv.engine
    if engine == "41":
        eng.margin_frames = eng.buffer_frames  # decode the whole buffer every block, as 4.1
    parts = breakdown_timers(svc, conv, f0)
    B = conv.block_size
    rate = conv.sample_rate
    y = song((n_blocks + warmup) * B / rate + 1, seed=1)
    times, cpus = [], []
    per_part: dict[str, list[float]] = {k: [] for k in parts}
    try:
        for i in range(n_blocks + warmup):
            before = {k: sum(t.total for t in ts) for k, ts in parts.items()}
            c0, t0 = time.process_time(), time.perf_counter()
            conv.process(y[i * B:(i + 1) * B])
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if i >= warmup:
                times.append(dt)
                cpus.append(dc)
                for k, ts in parts.items():
                    per_part[k].append(sum(t.total for t in ts) - before[k])
    finally:
        conv.close()
        for ts in parts.values():
            for t in ts:
                t.restore()
    med = float(np.median(times))
    row = {"engine": engine, "precision": precision, "block_s": round(B / rate, 3), "buffer_s": round(eng.buffer_frames * eng.hop / eng.sample_rate, 2),
           "median_ms": round(1000 * med, 1), "p90_ms": round(1000 * float(np.percentile(times, 90)), 1),
           "cpu_ms": round(1000 * float(np.median(cpus)), 1), "rtf": round(med / (B / rate), 3),
           "keeps_up": med < B / rate, "latency_ms": round(1000 * conv.latency_seconds, 1)}
    row["parts_ms"] = {k: round(1000 * float(np.median(v)), 1) for k, v in per_part.items()}
    row["parts_ms"]["other"] = round(row["median_ms"] - sum(row["parts_ms"].values()), 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5, 0.7, 1.0])
    ap.add_argument("--engines", nargs="+", default=["ours", "41"], choices=["ours", "41"])
    ap.add_argument("--n", type=int, default=10, help="timed blocks per case")
    ap.add_argument("--warmup", type=int, default=3, help="untimed blocks first (the buffer fills up)")
    ap.add_argument("--f0", default="fcpe")
    ap.add_argument("--feature-context", type=float, default=1.0, help="s of left context for f0 / units (ours)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precisions", nargs="+", default=["fp32"],
                    help="fp32 bf16 fp16 auto (RealtimeSettings.precision); each block length runs every one")
    ap.add_argument("--device-rate", type=int, default=None,
                    help="sound-card rate (e.g. 48000): adds the streaming resampling bridge (default: the model rate)")
    ap.add_argument("--work", default=os.environ.get("SVC_BENCH_DIR", "/tmp/svc_bench_realtime"))
    args = ap.parse_args()

    from modules.runtime import apply_inference_profile

    # gui.py's process set-up: bounded heap, oneDNN's primitive cache kept (fixed block shapes),
    # passive OpenMP wait unless OMP_WAIT_POLICY is set
    apply_inference_profile(threads=args.threads, interactive=True, reexec=False, fixed_shapes=True)
    import torch

    files = prepare(Path(args.work))
    os.environ["SVC_PRETRAIN_DIR"] = files["pretrain"]
    from inference.infer_tool import Svc

    t0 = time.perf_counter()
    svc = Svc(files["g"], files["config"], device=args.device, cluster_model_path=None)
    print(json.dumps({"load_s": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads(),
                      "device": args.device, "f0": args.f0, "feature_context": args.feature_context,
                      "load_average": os.getloadavg()[0]}), flush=True)
    rows = []
    for engine in args.engines:
        for block in args.blocks:
            for precision in args.precisions:
                row = run_case(svc, engine, block, args.n, args.warmup, args.f0, args.feature_context,
                               args.device_rate, precision)
                rows.append(row)
                print(json.dumps(row), flush=True)
    for engine in args.engines:
        for precision in args.precisions:
            ok = [r for r in rows if r["engine"] == engine and r["precision"] == precision and r["keeps_up"]]
            best = min(ok, key=lambda r: r["block_s"]) if ok else None
            print(json.dumps({"engine": engine, "precision": precision,
                              "smallest_block_keeping_up_s": best and best["block_s"],
                              "algorithmic_latency_ms": best and best["latency_ms"]}), flush=True)
    print(json.dumps({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "load_average": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
