"""Speed of the standalone NSF-HiFiGAN vocoder and of shallow diffusion (mel only), CPU.

Published sizes with random weights: the openvpi vocoder (512 initial channels, 128 mels) and
4.1's Unit2Mel (20 layers × 512 channels, hidden 256, 768-dim units), 10 s of audio at 44.1 kHz
(861 frames), shallow diffusion with k_step 100, dpm-solver++, speedup 10 (10 denoiser calls).

Also times the same work the way 4.1 ran it (vocoder: 1-D convolutions, out-of-place
operations; diffusion: the condition projected again on every denoiser call), to show what the
changes buy.

    .venv/bin/python bench/bench_diffusion.py [--threads 2] [--repeats 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

SR, HOP = 44100, 512
PUBLISHED_VOCODER = {
    "resblock": "1", "upsample_rates": [8, 8, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4, 4],
    "upsample_initial_channel": 512, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "num_mels": 128, "n_fft": 2048, "hop_size": HOP,
    "win_size": 2048, "sampling_rate": SR, "fmin": 40, "fmax": 16000,
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CPU_SECONDS: dict[str, float] = {}  # process CPU time per timed call (all threads), by label


def timed(fn, repeats: int, label: str = "") -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after one warm-up call (oneDNN primitive cache).

    Also records the median process CPU time per call under ``label``: on a shared machine
    wall time depends on the load, CPU time much less.
    """
    fn()
    out, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU_SECONDS[label] = statistics.median(cpu)
    return out


def bench_vocoder(seconds: float, repeats: int) -> dict:
    from vdecoder.nsf_hifigan.loader import load_config
    from vdecoder.nsf_hifigan.models import Generator
    from vdecoder.vocoder import Vocoder

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "config.json").write_text(json.dumps(PUBLISHED_VOCODER))
        torch.manual_seed(0)
        gen = Generator(load_config(d / "model"))
        torch.save({"generator": gen.state_dict()}, d / "model")
        voc = Vocoder("nsf-hifigan", d / "model", device="cpu")
        voc.model  # load outside the timing
        frames = int(seconds * SR) // HOP
        t = torch.arange(frames * HOP) / SR
        audio = (0.3 * torch.sin(2 * torch.pi * 220 * t))[None]
        mel = voc.extract(audio, SR)
        f0 = torch.full((1, frames, 1), 220.0)
        ours = timed(lambda: voc.infer(mel, f0), repeats, "vocoder")
        # 4.1's way: weight norm folded too, but 1-D convolutions and out-of-place operations
        # (grad mode on with frozen weights keeps our in-place shortcuts off; nothing is recorded).
        gen.eval().remove_weight_norm().requires_grad_(False)
        legacy = timed(lambda: gen(mel.transpose(1, 2), f0[:, :, 0]), repeats, "vocoder_4.1_style")
    audio_s = frames * HOP / SR
    return {"audio_s": audio_s, "ours_s": statistics.median(ours), "rtf": statistics.median(ours) / audio_s,
            "legacy_s": statistics.median(legacy), "legacy_rtf": statistics.median(legacy) / audio_s}


def bench_diffusion(seconds: float, repeats: int) -> dict:
    from diffusion.unit2mel import Unit2Mel

    torch.manual_seed(0)
    model = Unit2Mel(768, 1, True, 128, 20, 512, 256, 1000, 0)
    torch.nn.init.normal_(model.decoder.denoise_fn.output_projection.weight, std=0.02)  # zero-init in 4.1
    model.eval().requires_grad_(False)
    frames = int(seconds * SR) // HOP
    units, f0 = torch.randn(1, frames, 768), torch.full((1, frames, 1), 220.0)
    vol, gt = torch.rand(1, frames, 1) * 0.2, torch.randn(1, frames, 128) - 5
    kw = dict(gt_spec=gt, infer=True, infer_speedup=10, method="dpm-solver++", k_step=100, use_tqdm=False)

    def ours():
        torch.manual_seed(1)
        return model(units, f0, vol, **kw)

    den = model.decoder.denoise_fn
    project = den.project_condition

    def per_call_projection():  # 4.1 projected the condition inside every denoiser call
        den.project_condition = lambda cond: None
        try:
            return ours()
        finally:
            den.project_condition = project

    t_ours = timed(ours, repeats, "diffusion")
    t_legacy = timed(per_call_projection, repeats, "diffusion_per_call_projection")
    audio_s = frames * HOP / SR
    return {"frames": frames, "ours_s": statistics.median(t_ours), "rtf": statistics.median(t_ours) / audio_s,
            "per_call_projection_s": statistics.median(t_legacy),
            "per_call_projection_rtf": statistics.median(t_legacy) / audio_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.seconds:g} s of audio, median of {args.repeats}")
    v = bench_vocoder(args.seconds, args.repeats)
    print(f"vocoder (NSF-HiFiGAN 512 ch): {v['ours_s']:.3f} s  RTF {v['rtf']:.3f}   "
          f"(4.1-style 1-D, out of place: {v['legacy_s']:.3f} s, RTF {v['legacy_rtf']:.3f})")
    print(f"  peak RSS after the vocoder runs: {peak_rss_mb():.0f} MB")
    d = bench_diffusion(args.seconds, args.repeats)
    print(f"shallow diffusion k_step 100, dpm-solver++, speedup 10 (mel only, {d['frames']} frames): "
          f"{d['ours_s']:.3f} s  RTF {d['rtf']:.3f}   (condition projected per call: "
          f"{d['per_call_projection_s']:.3f} s, RTF {d['per_call_projection_rtf']:.3f})")
    for label, sec in CPU_SECONDS.items():
        print(f"  CPU time {label}: {sec:.3f} s ({sec / args.seconds:.3f} CPU-s per audio second)")
    print(f"peak RSS (whole run) {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
