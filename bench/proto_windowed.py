"""Prototype (phase 1 of issue 25): fixed-shape windowed decoding of the synthesizer's decoder.

The NSF-HiFiGAN decoder is run over windows of a fixed number of frames ``W`` that overlap by
the decoder's receptive radius ``H`` (frames) on each side, into one preallocated output; the
harmonic source is computed once over the whole slice (its phase runs through the windows), so
each kept sample sees exactly the inputs it sees in a whole-slice decode::

    slice frames:  0 ─────────────────────────────────────────────── T
    window 0:      [=========== kept ==========|<H>]
    window 1:                       [<H>|====== kept ======|<H>]
    last window:                                  [<H>|==== kept =====]   (aligned to T)

Windows touching the slice's ends start/stop exactly there, so the convolutions' zero padding at
the ends is the same as in the whole-slice decode. Slices of at most ``W`` frames are decoded
whole. Every window has the same shape, so the convolution primitives and the allocator's blocks
are reused from window to window and slice to slice.

Measures, for a sequence of slices of varied lengths (a song), per mode in a fresh process:
time, CPU time, peak RSS, and the difference to a whole-slice decode.

    .venv/bin/python bench/proto_windowed.py [--window 256] [--halo 16] [--seconds 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def decode_with_source(dec, x, har_source, g):
    """``Generator.forward`` with the harmonic source given (``[B, 1, T·upp]``); scratch copy of
    the prepared (2-D, channels-last) path, for the prototype only."""
    import torch

    har_source = har_source.to(x.dtype)
    if dec.conv2d:
        cl = torch.channels_last
        x = x.unsqueeze(2).contiguous(memory_format=cl)
        har_source = har_source.unsqueeze(2).contiguous(memory_format=cl)
        g = g.unsqueeze(2)
    x = dec.conv_pre(x)
    x = x + dec.cond(g)
    for i in range(dec.num_upsamples):
        x = dec._stage_activation(i, x)
        x = dec.ups[i](x)
        x = x.add_(dec.noise_convs[i](har_source))
        x = dec._mrf(i, x, True)
    x = dec._post_activation(x)
    x = dec.conv_post(x)
    if dec.conv2d:
        x = x.squeeze(2)
    return torch.tanh(x)


def decode_windowed(dec, z, f0, g, *, window: int, halo: int, out=None):
    """Decode ``z [1, C, T]`` with ``f0 [1, T]`` (Hz) and ``g [1, gin, 1 or T]`` window by window.

    Returns ``[1, 1, T·upp]`` (written into ``out`` when given and large enough)."""
    import torch

    T, upp = z.shape[-1], dec.upp
    har = dec.harmonic_source(f0)  # phase over the whole slice, float32
    if T <= window:
        return decode_with_source(dec, z, har, g)
    if out is None or out.numel() < T * upp:
        out = torch.empty(1, 1, T * upp)
    y_out = out.view(-1)[: T * upp].view(1, 1, T * upp)
    per_frame_g = g.shape[-1] > 1
    a = 0
    while a < T:
        s = min(max(a - halo, 0), T - window)
        b = T if s + window >= T else s + window - halo
        gw = g[..., s:s + window] if per_frame_g else g
        y = decode_with_source(dec, z[..., s:s + window], har[..., s * upp:(s + window) * upp], gw)
        y_out[..., a * upp:b * upp] = y[..., (a - s) * upp:(b - s) * upp]
        a = b
    return y_out


def receptive_radius(dec, channels: int, gin: int, frames: int = 96) -> int:
    """Frames each side that change when one frame of ``z`` changes (measured, not derived)."""
    import torch

    gen = torch.Generator().manual_seed(5)
    z = torch.randn(1, channels, frames, generator=gen)
    f0 = torch.full((1, frames), 200.0)
    g = torch.randn(1, gin, 1, generator=gen)
    torch.manual_seed(0)
    har = dec.harmonic_source(f0)
    y0 = decode_with_source(dec, z, har, g)
    z2 = z.clone()
    z2[..., frames // 2] += 1.0
    y1 = decode_with_source(dec, z2, har, g)
    changed = ((y1 - y0).abs() > 0).flatten().nonzero().flatten()
    lo, hi = int(changed.min()) // dec.upp, int(changed.max()) // dec.upp
    return max(frames // 2 - lo, hi - frames // 2)


def build_decoder():
    import torch

    from models import SynthesizerTrn
    from modules.hparams import get_hparams_from_file

    hps = get_hparams_from_file(ROOT / "configs" / "config_template.json")
    torch.manual_seed(0)
    net = SynthesizerTrn(hps.data.filter_length // 2 + 1, hps.train.segment_size // hps.data.hop_length, **hps.model)
    net.prepare_for_inference()
    return net.dec, hps


def slice_lengths(seconds: float, seed: int = 0) -> list[int]:
    """Frame counts of slices of 2-10 s (a song cut at its pauses)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out, total = [], 0
    while total < seconds:
        s = float(rng.uniform(2, 10))
        out.append(int(s * 44100 / 512))
        total += s
    return out


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.bounds:
        from modules.runtime import bound_native_memory, release_free_memory

        bound_native_memory()
    dec, hps = build_decoder()
    from peak_rss import peak_rss_mb, reset_peak

    lengths = slice_lengths(args.seconds)
    gen = torch.Generator().manual_seed(7)
    g = torch.randn(1, hps.model.gin_channels, 1, generator=gen)
    data = [(torch.randn(1, hps.model.inter_channels, n, generator=gen),
             200 + 50 * torch.rand(1, n, generator=gen)) for n in lengths]
    reset_peak()
    outs = []
    c0, t0 = time.process_time(), time.perf_counter()
    with torch.inference_mode():
        for z, f0 in data:
            torch.manual_seed(0)
            if args.mode == "whole":
                y = dec(z, f0, g)
            else:
                y = decode_windowed(dec, z, f0, g, window=args.window, halo=args.halo)
            if args.check:
                outs.append(y.clone())
            if args.bounds:
                release_free_memory()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    res = {"mode": args.mode, "bounds": args.bounds, "wall_s": wall, "cpu_s": cpu, "peak_mb": peak_rss_mb(),
           "audio_s": sum(lengths) * 512 / 44100, "n_slices": len(lengths), "max_slice_frames": max(lengths)}
    if args.check:
        with torch.inference_mode():
            ref = []
            for z, f0 in data:
                torch.manual_seed(0)
                ref.append(dec(z, f0, g))
        num = sum(float(((a - b) ** 2).sum()) for a, b in zip(outs, ref))
        den = sum(float((b ** 2).sum()) for b in ref)
        res["rel_l2_vs_whole"] = (num / den) ** 0.5
        res["max_abs_vs_whole"] = max(float((a - b).abs().max()) for a, b in zip(outs, ref))
    print(json.dumps(res), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=256, help="frames per window (86.13 frames/s)")
    ap.add_argument("--halo", type=int, default=16, help="overlap frames each side (≥ receptive radius)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2, help="alternated rounds of every mode")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="whole")
    ap.add_argument("--bounds", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--radius", action="store_true", help="only measure the decoder's receptive radius")
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.radius:
        import torch

        torch.set_num_threads(args.threads)
        dec, hps = build_decoder()
        with torch.inference_mode():
            print("receptive radius (frames):", receptive_radius(dec, hps.model.inter_channels, hps.model.gin_channels))
        return 0
    cases = [("whole", True), ("whole", False), ("windowed", False), ("windowed", True)]
    print(f"# load {os.getloadavg()[0]:.1f}; window {args.window} halo {args.halo}; {args.seconds:g} s of slices; "
          f"{args.threads} thread(s)", flush=True)
    for r in range(args.rounds):
        for mode, bounds in cases:
            cmd = [sys.executable, __file__, "--child", "--mode", mode, "--window", str(args.window), "--halo",
                   str(args.halo), "--seconds", str(args.seconds), "--threads", str(args.threads)]
            cmd += ["--bounds"] if bounds else []
            cmd += ["--check"] if (r == 0 and mode == "windowed" and not bounds) else []
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            print(line[-1] if line else p.stderr[-2000:], flush=True)
    print(f"# load {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
