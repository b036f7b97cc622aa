"""Benchmark SynthesizerTrn.infer: median wall and CPU time, real-time factor, peak memory.

Default: the 4.1 default config (configs/config_template.json: vec768l12, 44.1 kHz, hop 512,
filter 768, decoder 512 channels), random weights, 10 s of audio, torch.set_num_threads(2),
float32 on CPU, noise scale 0.4.

    .venv/bin/python bench/bench_synth.py [--seconds 10] [--runs 5] [--threads 2]
        [--modes plain,prepared] [--device cpu|cuda] [--dtype float32|float16|bfloat16]
        [--mrf-chunk N] [--profile] [--sections]

Modes, run alternately (so both see the same machine load):
  plain     the model as 4.1's Svc runs it: eval(), enc_q deleted, weight norm recomputed in
            every call, 1-D convolutions (this is the original's arithmetic);
  prepared  SynthesizerTrn.for_inference(): weight norm folded once, channels-last
            2-D decoder convolutions, in-place activations, chunked residual blocks (auto rule,
            see vdecoder/hifigan/models.py: chunking_pays; --mrf-chunk overrides).
RTF = median wall time / audio duration. CPU = process CPU time (all threads), steadier than
wall time on a shared machine. Peak = the process's peak RSS during that mode's calls (Linux), or
peak GPU memory allocated with --device cuda.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models import SynthesizerTrn  # noqa: E402
from peak_rss import peak_rss_mb, reset_peak  # noqa: E402
from modules.hparams import get_hparams_from_file  # noqa: E402
from vdecoder.hifigan.models import chunking_pays  # noqa: E402


def build(hps, device: str) -> SynthesizerTrn:
    torch.manual_seed(0)
    net = SynthesizerTrn(hps.data.filter_length // 2 + 1, hps.train.segment_size // hps.data.hop_length, **hps.model)
    # Random weights: perturb the zero-initialised flow outputs so every layer does real work.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "post" in name and float(p.abs().max()) == 0.0:
                p.normal_(0, 0.02)
    return net.to(device)


def make_inputs(hps, seconds: float, device: str):
    sr, hop = hps.data.sampling_rate, hps.data.hop_length
    frames = int(seconds * sr / hop)
    g = torch.Generator().manual_seed(1)
    c = torch.randn(1, hps.model.ssl_dim, frames, generator=g)
    t = torch.arange(frames) / (sr / hop)
    f0 = (220.0 * 2 ** (torch.sin(2 * torch.pi * 0.5 * t) / 6))[None]  # a gliding note, Hz
    uv = torch.ones(1, frames)
    sid = torch.LongTensor([[0]])
    return [x.to(device) for x in (c, f0, uv, sid)], frames * hop / sr


def time_sections(net, run) -> dict[str, float]:
    """Process CPU time spent in the synthesizer's parts during ``run()`` (forward wrappers)."""
    acc: dict[str, float] = {}
    patched = []

    def wrap(obj, attr, name):
        fn = getattr(obj, attr)

        def timed(*a, **k):
            t0 = time.process_time()
            out = fn(*a, **k)
            acc[name] = acc.get(name, 0.0) + time.process_time() - t0
            return out

        setattr(obj, attr, timed)
        patched.append((obj, attr))

    dec = net.dec
    wrap(net.enc_p, "forward", "enc_p")
    wrap(net.flow, "forward", "flow")
    wrap(dec, "harmonic_source", "sine source")
    for i in range(dec.num_upsamples):
        wrap(dec.ups[i], "forward", "upsampling convs")
        wrap(dec.noise_convs[i], "forward", "source convs")
    mrf = dec._mrf

    def timed_mrf(i, x, inplace):
        t0 = time.process_time()
        out = mrf(i, x, inplace)
        key = f"resblocks stage {i} ({x.shape[1]} ch)"
        acc[key] = acc.get(key, 0.0) + time.process_time() - t0
        return out

    dec._mrf = timed_mrf
    patched.append((dec, "_mrf"))
    wrap(net, "infer", "total")
    try:
        run()
    finally:
        for obj, attr in patched:
            del obj.__dict__[attr]
    return acc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "config_template.json"))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default="plain,prepared")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                    help="prepared mode's dtype (half types are GPU options)")
    ap.add_argument("--mrf-chunk", type=int, default=None, help="decoder mrf_chunk samples (0: off; default: the auto rule)")
    ap.add_argument("--profile", action="store_true", help="print the top operators of one call per mode")
    ap.add_argument("--sections", action="store_true", help="print the CPU time of each part for one call per mode")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    hps = get_hparams_from_file(args.config)
    (c, f0, uv, sid), audio_s = make_inputs(hps, args.seconds, args.device)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    print(f"config {Path(args.config).name}, {audio_s:.2f} s audio, {args.threads} threads, device {args.device}, "
          f"torch {torch.__version__}")

    nets = {}
    for mode in modes:
        net = build(hps, args.device)
        if mode == "plain":
            net.eval()
            del net.enc_q
        elif mode == "prepared":
            chunk = args.mrf_chunk
            if chunk is None:  # the rule Svc applies (see vdecoder.hifigan.models.chunking_pays)
                chunk = "auto" if chunking_pays(args.threads, os.environ.get("OMP_WAIT_POLICY")) else 0
            net = net.for_inference(dtype=getattr(torch, args.dtype), mrf_chunk=chunk)
        else:
            raise SystemExit(f"unknown mode {mode!r}; valid: plain, prepared")
        nets[mode] = net

    def call(net):
        if args.device == "cuda":
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        net.infer(c, f0, uv, g=sid, noice_scale=0.4)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - w0, time.process_time() - c0

    wall = {m: [] for m in modes}
    cpu = {m: [] for m in modes}
    peak = {m: 0.0 for m in modes}
    with torch.inference_mode():
        for mode in modes:  # warm-up: allocator, oneDNN primitive caches
            call(nets[mode])
        for _ in range(args.runs):
            for mode in modes:
                if args.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                else:
                    reset_peak()
                w, t = call(nets[mode])
                wall[mode].append(w)
                cpu[mode].append(t)
                peak[mode] = max(peak[mode], torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda"
                                 else peak_rss_mb())
    for mode in modes:
        med = statistics.median(wall[mode])
        print(f"{mode:9s} wall median {med:.3f} s (runs {', '.join(f'{x:.2f}' for x in wall[mode])})  "
              f"RTF {med / audio_s:.3f}  CPU median {statistics.median(cpu[mode]):.2f} s  "
              f"peak {'GPU alloc' if args.device == 'cuda' else 'RSS'} {peak[mode]:.0f} MiB")
    if "plain" in modes and "prepared" in modes:
        print(f"prepared vs plain: wall {statistics.median(wall['plain']) / statistics.median(wall['prepared']):.2f}x, "
              f"CPU {statistics.median(cpu['plain']) / statistics.median(cpu['prepared']):.2f}x")
    if args.sections:
        with torch.inference_mode():
            for mode in modes:
                parts = time_sections(nets[mode], lambda n=nets[mode]: n.infer(c, f0, uv, g=sid, noice_scale=0.4))
                print(f"--- {mode}: CPU s per part of one call")
                print("  " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for mode in modes:
            with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
                nets[mode].infer(c, f0, uv, g=sid, noice_scale=0.4)
            print(f"--- {mode}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
