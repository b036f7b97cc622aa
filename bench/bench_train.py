"""Benchmark one SoVITS training step: median seconds per step and peak memory.

Default: the 4.1 default config (configs/config_template.json), batch 2, segment 10240 samples,
items of 96 and 80 frames (the golden step's batch), random weights and data, CPU with
torch.set_num_threads(2), float32.

    .venv/bin/python bench/bench_train.py [--steps 6] [--warmup 2] [--threads 2] [--frames 96,80]
        [--mode ours|41|both] [--device cpu|cuda] [--precision fp32|fp16|bf16] [--profile]

"ours" is ``training.loop.train_step``. "41" is the same step as 4.1's train.py runs it, on the
same model code: for-loop AdamW, zero_grad keeping gradient tensors, the discriminator's weight
gradients computed (then discarded) in the generator step, the total grad norm summed parameter
by parameter with a ``.item()`` each. Both start from the same weights and seeds, so their losses
must agree step by step (printed).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import training.loop as loop  # noqa: E402
from models.train_step import discriminator_step_loss, generator_forward, generator_step_losses  # noqa: E402
from modules.commons import clip_grad_value_  # noqa: E402
from modules.hparams import get_hparams_from_file  # noqa: E402


def make_batch(hps, frames: list[int], device: torch.device) -> dict:
    g = torch.Generator().manual_seed(1)
    t = max(frames)
    b = len(frames)
    hop = hps.data.hop_length
    lengths = torch.tensor(sorted(frames, reverse=True))
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    f0 = 220.0 * 2 ** (torch.sin(torch.arange(t) / 20.0) / 6)[None].repeat(b, 1) * mask
    batch = {
        "c": torch.randn(b, hps.model.ssl_dim, t, generator=g) * mask[:, None],
        "f0": f0,
        "spec": torch.rand(b, hps.data.filter_length // 2 + 1, t, generator=g) * mask[:, None],
        "y": 0.3 * torch.randn(b, 1, t * hop, generator=g) * mask.repeat_interleave(hop, 1)[:, None],
        "spk": torch.zeros(b, 1, dtype=torch.long),
        "lengths": lengths,
        "uv": mask.clone(),
        "volume": None,
    }
    return {k: (v.to(device) if v is not None else None) for k, v in batch.items()}


def make_state(hps, device: torch.device, precision: loop.Precision, mode: str) -> loop.TrainState:
    torch.manual_seed(0)
    net_g, net_d = loop.build_models(hps, device)
    with torch.no_grad():  # random weights: make the zero-initialised flow outputs do real work
        for name, p in net_g.named_parameters():
            if "post" in name and float(p.abs().max()) == 0.0:
                p.normal_(0, 0.02)
    if mode == "ours":
        optim_g, optim_d = loop.build_optimizer(net_g, hps.train), loop.build_optimizer(net_d, hps.train)
    else:  # 4.1: torch.optim.AdamW(params, lr, betas, eps) with PyTorch's CPU default (for-loop)
        net_d.joint_pass = False  # 4.1 ran every discriminator on y and on ŷ separately
        optim_g, optim_d = (torch.optim.AdamW(n.parameters(), hps.train.learning_rate, betas=hps.train.betas,
                                              eps=hps.train.eps, foreach=False) for n in (net_g, net_d))
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    options = loop.TrainOptions(Path("configs/config_template.json"), "bench")
    return loop.TrainState(hps, options, loop.Runtime(device), precision, net_g, net_d, optim_g, optim_d, scaler)


def step_41(state: loop.TrainState, batch: dict) -> float:
    """4.1 train.py's step, same math (see the module docstring)."""
    scaler, hps = state.scaler, state.hps
    with state.precision.autocast():
        out = generator_forward(state.net_g, batch, hps)
        loss_disc, _, _ = discriminator_step_loss(state.net_d, out)
    state.optim_d.zero_grad(set_to_none=False)
    scaler.scale(loss_disc).backward()
    scaler.unscale_(state.optim_d)
    clip_grad_value_(state.net_d.parameters(), None)
    scaler.step(state.optim_d)
    with state.precision.autocast():
        losses = generator_step_losses(state.net_d, out, hps)
    state.optim_g.zero_grad(set_to_none=False)
    scaler.scale(losses["loss_gen_all"]).backward()
    scaler.unscale_(state.optim_g)
    clip_grad_value_(state.net_g.parameters(), None)
    scaler.step(state.optim_g)
    scaler.update()
    return float(losses["loss_gen_all"])


def run(modes: list[str], hps, batch: dict, args, device: torch.device, precision: loop.Precision):
    """Alternate the modes step by step (so both see the same machine load); wall and CPU seconds."""
    states = {m: make_state(hps, device, precision, m) for m in modes}
    wall = {m: [] for m in modes}
    cpu = {m: [] for m in modes}
    losses = {m: [] for m in modes}
    for i in range(args.warmup + args.steps):
        for m in modes:
            torch.manual_seed(1234 + i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            loss = loop.train_step(states[m], batch).loss_gen_all if m == "ours" else step_41(states[m], batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                wall[m].append(time.perf_counter() - t0)
                cpu[m].append(time.process_time() - c0)
            losses[m].append(loss)
    if args.profile:
        from torch.profiler import profile

        for m in modes:
            with profile() as prof:
                loop.train_step(states[m], batch) if m == "ours" else step_41(states[m], batch)
            print(f"--- {m}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    return wall, cpu, losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs/config_template.json"))
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", default="96,80", help="frames of each batch item (batch size = count)")
    p.add_argument("--mode", choices=["ours", "41", "both"], default="both")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    hps = get_hparams_from_file(args.config)
    hps.train.segment_size = 10240
    frames = [int(x) for x in args.frames.split(",")]
    precision = loop.Precision(device.type)
    if args.precision != "fp32":
        dtype = torch.float16 if args.precision == "fp16" else torch.bfloat16
        precision = loop.Precision(device.type, dtype, use_scaler=dtype == torch.float16)
    batch = make_batch(hps, frames, device)
    print(f"config {Path(args.config).name}, batch {len(frames)} × {frames} frames, segment 10240, "
          f"{args.threads} threads, {device}, {args.precision}")
    modes = ["41", "ours"] if args.mode == "both" else [args.mode]
    wall, cpu, losses = run(modes, hps, batch, args, device, precision)
    for m in modes:
        print(f"{m:>4}: median {statistics.median(wall[m]):.3f} s/step wall, {statistics.median(cpu[m]):.3f} s CPU "
              f"(wall per step: {', '.join(f'{t:.2f}' for t in wall[m])})")
        print(f"      loss_gen_all per step: {', '.join(f'{x:.4f}' for x in losses[m])}")
    if len(modes) == 2:
        print(f"speed-up of ours over the 4.1-style step: {statistics.median(wall['41']) / statistics.median(wall['ours']):.2f}x "
              f"wall, {statistics.median(cpu['41']) / statistics.median(cpu['ours']):.2f}x CPU")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if device.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
