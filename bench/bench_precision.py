"""Reduced precision on CPU/GPU: speed ratio to float32 and audio difference to float32, per path.

For every path (synthesizer, vocoder, diffusion, speech encoder, whole song) and precision the
same inputs run in float32 and in the reduced precision, alternately in one process (so both see
the same machine load); reported per case: median wall and process-CPU time, the ratio to
float32, and the difference of the output to float32's:

* relative L2 ``‖y − y32‖ / ‖y32‖`` and SNR ``20·log10(‖y32‖ / ‖y − y32‖)`` dB;
* mel L1: mean absolute difference of natural-log mel spectrograms (``modules.mel_processing``,
  the synthesizer's 80-band loss front end; audio paths only), over all frames and over the
  frames within 40 dB of the loudest (silence sits at the log floor, where any rounding is a
  large log difference).

Paths ``song`` and ``realtime`` use the shipped option (``ConversionOptions.precision``,
``RealtimeSettings.precision``): encoder and synthesizer in the precision, f0 in float32.

Precisions:

* ``fp32``: the reference (the shipped inference path);
* ``bf16``: weights cast to bfloat16, activations bfloat16, the harmonic source's phase and the
  f0 in float32 (as the decoder already does for half precision);
* ``bf16-autocast``: float32 weights under ``torch.autocast(device, bfloat16)``;
* ``bf16-dec``: only the synthesizer's decoder in bfloat16 (prior and flow float32);
* ``bf16-1d``: as ``bf16`` with the decoder's plain 1-D convolutions instead of the channels-last
  2-D layout (synthesizer only);
* ``fp16``: float16 weights (CUDA; on a CPU without AVX512-FP16 it is very slow);
* ``fp32-reseed`` (synthesizer): float32 with another seed (prior noise and sine phases), i.e.
  another equally valid rendering: the scale against which a precision's difference is small
  or not.

Models: ``--size full`` the real architectures with random weights (the 4.1 default
synthesizer config, the published NSF-HiFiGAN, 4.1's Unit2Mel, ContentVec base); ``--size
golden`` the 4.1 golden tiny synthesizer and its recorded inputs (tests/data/synth). No trained
model is available here (the demo's is not shipped), so every figure is on random weights;
random weights give noisier audio than a trained model, which is why the differences are stated
per path and not as a perceptual verdict.

    .venv/bin/python bench/bench_precision.py [--paths synth vocoder diffusion encoder]
        [--precisions fp32 bf16 bf16-autocast bf16-dec] [--size full|golden] [--seconds 5]
        [--runs 3] [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

SR, HOP = 44100, 512
PRECISIONS = ("fp32", "bf16", "bf16-autocast", "bf16-dec", "bf16-1d", "fp16", "fp32-reseed")
DTYPES = {"bf16": torch.bfloat16, "bf16-autocast": torch.float32, "bf16-dec": torch.float32,
          "bf16-1d": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp32-reseed": torch.float32}


# --- audio difference ---------------------------------------------------------------------------
def log_mel(y: torch.Tensor, sr: int = SR) -> torch.Tensor:
    """``[L]`` or ``[B, L]`` audio → 80-band natural-log mel ``[B, 80, frames]`` (config_template's
    front end: n_fft 2048, hop 512, window 2048, 0–sr/2 Hz)."""
    from modules.mel_processing import mel_spectrogram_torch

    y = y.float().reshape(1, -1)
    return mel_spectrogram_torch(y, 2048, 80, sr, 512, 2048, 0.0, sr / 2)


def difference(y: torch.Tensor, ref: torch.Tensor, *, audio: bool = True, sr: int = SR) -> dict[str, float]:
    """Relative L2, SNR (dB) and (audio) log-mel L1 of ``y`` against ``ref`` (same shape)."""
    y, ref = y.detach().float().flatten(), ref.detach().float().flatten()
    err = float(torch.linalg.vector_norm(y - ref))
    norm = float(torch.linalg.vector_norm(ref))
    rel = err / norm if norm else float("inf")
    snr = 20 * math.log10(norm / err) if err else float("inf")
    out = {"rel_l2": rel, "snr_db": snr}
    if audio:
        my, mr = log_mel(y, sr), log_mel(ref, sr)
        diff = (my - mr).abs()
        out["mel_l1"] = float(diff.mean())
        # Silent frames sit at the log floor, where any rounding is a large log difference: also
        # report the frames within 40 dB of the loudest one (the audible part).
        energy = mr.exp().mean(dim=1)[0]  # [frames]
        loud = energy >= energy.max() * 1e-4
        out["mel_l1_loud"] = float(diff[0][:, loud].mean()) if bool(loud.any()) else float("nan")
    return out


# --- precision contexts -------------------------------------------------------------------------
def autocast_ctx(precision: str, device: str):
    if precision == "bf16-autocast":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _CastingDecoder(torch.nn.Module):
    """Runs a float32 model's decoder in another dtype (bench only: ``bf16-dec``)."""

    def __init__(self, dec: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = dec.to(dtype)
        self.dtype = dtype

    def forward(self, x, f0=None, g=None):
        return self.inner(x.to(self.dtype), f0=f0, g=g.to(self.dtype)).float()


# --- paths ---------------------------------------------------------------------------------------
def synth_case(size: str, seconds: float, device: str):
    """(make_model(precision), inputs, call, audio seconds) for ``SynthesizerTrn.infer``."""
    import numpy as np

    from models import SynthesizerTrn
    from modules.checkpoint import load_checkpoint
    from modules.hparams import get_hparams_from_file

    if size == "golden":
        hps = get_hparams_from_file(ROOT / "tests" / "data" / "synth" / "config.json")
        d = np.load(ROOT / "tests" / "data" / "synth" / "svc_tiny_inputs.npz")
        c, f0, uv = (torch.from_numpy(d[k]).float() for k in ("c", "f0", "uv"))
        sid = torch.from_numpy(d["sid"]).long()
    else:
        hps = get_hparams_from_file(ROOT / "configs" / "config_template.json")
        frames = int(seconds * SR / HOP)
        g = torch.Generator().manual_seed(1)
        c = torch.randn(1, hps.model.ssl_dim, frames, generator=g)
        t = torch.arange(frames) / (SR / HOP)
        f0 = (220.0 * 2 ** (torch.sin(2 * torch.pi * 0.5 * t) / 6))[None]
        uv = torch.ones(1, frames)
        sid = torch.LongTensor([[0]])

    def make(precision: str):
        torch.manual_seed(0)
        net = SynthesizerTrn(hps.data.filter_length // 2 + 1, hps.train.segment_size // hps.data.hop_length,
                             **hps.model)
        if size == "golden":
            load_checkpoint(str(ROOT / "tests" / "data" / "synth" / "G_0.pth"), net, None)
        else:
            with torch.no_grad():
                for name, p in net.named_parameters():
                    if ".post." in name:
                        p.normal_(0, 0.02)
        net.prepare_for_inference(conv2d=precision != "bf16-1d")
        net.to(device)
        if precision in ("bf16", "bf16-1d", "fp16"):
            net.to(DTYPES[precision])
        elif precision == "bf16-dec":
            net.dec = _CastingDecoder(net.dec, torch.bfloat16)
        return net

    inputs = [x.to(device) for x in (c, f0, uv, sid)]

    def call(net, precision):
        cc, ff, uu, ss = inputs
        with autocast_ctx(precision, device):
            seed = 52469 if precision == "fp32-reseed" else 52468
            return net.infer(cc, ff, uu, g=ss, noice_scale=0.4, seed=seed)[0].float()

    return make, call, c.shape[-1] * HOP / SR


PUBLISHED_VOCODER = {
    "resblock": "1", "upsample_rates": [8, 8, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4, 4],
    "upsample_initial_channel": 512, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "num_mels": 128, "n_fft": 2048, "hop_size": HOP,
    "win_size": 2048, "sampling_rate": SR, "fmin": 40, "fmax": 16000,
}


def vocoder_case(size: str, seconds: float, device: str):
    """The standalone NSF-HiFiGAN (published size, random weights) on the mel of a tone."""
    from vdecoder.nsf_hifigan.loader import load_config
    from vdecoder.nsf_hifigan.models import Generator
    from vdecoder.vocoder import Vocoder

    tmp = Path(tempfile.mkdtemp(prefix="bench_precision_voc_"))
    (tmp / "config.json").write_text(json.dumps(PUBLISHED_VOCODER))
    torch.manual_seed(0)
    torch.save({"generator": Generator(load_config(tmp / "model")).state_dict()}, tmp / "model")
    frames = int(seconds * SR) // HOP
    t = torch.arange(frames * HOP) / SR
    audio = (0.3 * torch.sin(2 * torch.pi * 220 * t) * (1 + 0.3 * torch.sin(2 * torch.pi * 3 * t)))[None]
    f0 = torch.full((1, frames, 1), 220.0, device=device)
    mel = None

    def make(precision: str):
        nonlocal mel
        voc = Vocoder("nsf-hifigan", tmp / "model", device=device)
        # The loader shares one model per process (enhancer and vocoder): each precision gets its own.
        voc._model = model = copy.deepcopy(voc.model)
        if mel is None:
            mel = voc.extract(audio.to(device), SR)
        if precision in ("bf16", "fp16", "bf16-dec", "bf16-1d"):
            model.to(torch.bfloat16 if precision != "fp16" else torch.float16)
        return voc

    def call(voc, precision):
        dt = voc.model.conv_pre.weight.dtype if hasattr(voc.model, "conv_pre") else torch.float32
        torch.manual_seed(1)  # the source draws initial phases and noise
        with autocast_ctx(precision, device):
            return voc.infer(mel.to(dt), f0).float()

    return make, call, frames * HOP / SR


def diffusion_case(size: str, seconds: float, device: str):
    """4.1's Unit2Mel (20 × 512, random weights): shallow diffusion, k_step 100, dpm-solver++ ×10."""
    from diffusion.unit2mel import Unit2Mel

    frames = int(seconds * SR) // HOP
    g = torch.Generator().manual_seed(2)
    units = torch.randn(1, frames, 768, generator=g)
    f0 = torch.full((1, frames, 1), 220.0)
    vol = torch.rand(1, frames, 1, generator=g) * 0.2
    gt = torch.randn(1, frames, 128, generator=g) - 5

    def make(precision: str):
        torch.manual_seed(0)
        model = Unit2Mel(768, 1, True, 128, 20, 512, 256, 1000, 0)
        torch.nn.init.normal_(model.decoder.denoise_fn.output_projection.weight, std=0.02)
        model.eval().requires_grad_(False).to(device)
        if precision == "fp16":
            model.to(torch.float16)
        return model

    def call(model, precision):
        dt = next(model.parameters()).dtype
        torch.manual_seed(1)
        kw = dict(gt_spec=gt.to(device, dt), infer=True, infer_speedup=10, method="dpm-solver++", k_step=100,
                  use_tqdm=False)
        # Unit2Mel's step embedding and noise schedule are float32 by construction (cast weights
        # would meet float32 activations), so bf16 here is autocast: matmuls / convolutions in
        # bfloat16, the schedule, embeddings and the sampler's arithmetic in float32.
        with autocast_ctx("bf16-autocast" if precision.startswith("bf16") else precision, device):
            return model(units.to(device, dt), f0.to(device, dt), vol.to(device, dt), **kw).float()

    return make, call, frames * HOP / SR


def encoder_case(size: str, seconds: float, device: str):
    """ContentVec base (vec768l12, full size, random weights) on 16 kHz audio; output = units."""
    from vencoder import get_spec, get_speech_encoder, make_random_checkpoint

    work = Path(os.environ.get("SVC_BENCH_DIR", "/tmp/svc_bench_infer")) / "pretrain"
    path = work / get_spec("vec768l12").filename
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        make_random_checkpoint("vec768l12", path, size="full")
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    wav = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.01 * torch.randn(n, generator=torch.Generator().manual_seed(3))

    def make(precision: str):
        enc = get_speech_encoder("vec768l12", device=device, path=path)
        if precision in ("bf16", "fp16", "bf16-dec"):
            enc = copy.copy(enc)
            enc.model = copy.deepcopy(enc.model).to(torch.bfloat16 if precision != "fp16" else torch.float16)
            enc.dtype = enc.model and next(enc.model.parameters()).dtype
        return enc

    def call(enc, precision):
        with autocast_ctx(precision, device):
            return enc.encoder(wav.to(device)).float()

    return make, call, seconds


def song_case(size: str, seconds: float, device: str):
    """Whole-song conversion (``Svc.convert``, FCPE, defaults otherwise) of bench_infer's
    synthetic song (phrases of 3-8 s with pauses) with the full-size random models."""
    from bench_infer import prepare, song

    from inference.infer_tool import Svc
    from inference.options import ConversionOptions

    files = prepare(Path(os.environ.get("SVC_BENCH_DIR", "/tmp/svc_bench_infer")))
    os.environ["SVC_PRETRAIN_DIR"] = files["pretrain"]
    y = song(seconds, seed=int(seconds))
    has_option = "precision" in ConversionOptions.fields_meta()

    def make(precision: str):
        svc = Svc(files["g"], files["config"], device=device, cluster_model_path=None)
        svc.f0_predictor("fcpe", 0.05)
        if not has_option and precision != "fp32":  # before the option existed: cast from outside
            dt = DTYPES[precision]
            svc.net_g_ms = copy.deepcopy(svc.net_g_ms).to(dt)
            enc = copy.copy(svc.hubert_model)
            enc.model = copy.deepcopy(enc.model).to(dt)
            enc.dtype = dt
            svc.hubert_model = enc
        return svc

    def call(svc, precision):
        extra = {"precision": precision} if has_option else {}
        opts = ConversionOptions(f0_predictor="fcpe", **extra)
        return torch.from_numpy(svc.convert(y, SR, "a", opts, progress=False))

    return make, call, seconds


def realtime_case(size: str, seconds: float, device: str):
    """The realtime engine (``RealtimeConverter``, 0.5 s blocks, FCPE, GUI defaults otherwise)
    streaming a vibrato voice at the model rate; output = the streamed audio."""
    from bench_infer import prepare
    from bench_realtime import song as voice

    from inference.infer_tool import Svc
    from inference.realtime import RealtimeConverter, RealtimeSettings

    files = prepare(Path(os.environ.get("SVC_BENCH_DIR", "/tmp/svc_bench_infer")))
    os.environ["SVC_PRETRAIN_DIR"] = files["pretrain"]
    y = voice(seconds, seed=2)
    svc = Svc(files["g"], files["config"], device=device, cluster_model_path=None)

    def make(precision: str):
        return precision

    def call(precision, _):
        conv = RealtimeConverter(svc, RealtimeSettings(block_time=0.5, f0_predictor="fcpe", precision=precision))
        B = conv.block_size
        out = [conv.process(y[i:i + B]) for i in range(0, len(y) - B + 1, B)]
        return torch.from_numpy(np.concatenate(out))

    import numpy as np

    return make, call, (len(y) // 22050) * 22050 / SR


CASES: dict[str, Callable] = {"synth": synth_case, "vocoder": vocoder_case, "diffusion": diffusion_case,
                              "encoder": encoder_case, "song": song_case, "realtime": realtime_case}
AUDIO_OUT = {"synth": True, "vocoder": True, "diffusion": False, "encoder": False, "song": True, "realtime": True}


def run_path(path: str, precisions: list[str], args) -> list[dict]:
    make, call, audio_s = CASES[path](args.size, args.seconds, args.device)
    models = {p: make(p) for p in precisions}
    outs, wall, cpu = {}, {p: [] for p in precisions}, {p: [] for p in precisions}
    with torch.inference_mode():
        for p in precisions:  # warm-up (oneDNN primitives, allocator) and the reference outputs
            outs[p] = call(models[p], p)
        for _ in range(args.runs):
            for p in precisions:
                w0, c0 = time.perf_counter(), time.process_time()
                call(models[p], p)
                wall[p].append(time.perf_counter() - w0)
                cpu[p].append(time.process_time() - c0)
    rows = []
    ref = outs["fp32"]
    for p in precisions:
        row = {"path": path, "precision": p, "audio_s": audio_s, "wall_s": statistics.median(wall[p]),
               "cpu_s": statistics.median(cpu[p])}
        row["wall_ratio"] = row["wall_s"] / statistics.median(wall["fp32"])
        row["cpu_ratio"] = row["cpu_s"] / statistics.median(cpu["fp32"])
        row.update(difference(outs[p], ref, audio=AUDIO_OUT[path]) if p != "fp32" else {})
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", nargs="+", default=["synth", "vocoder", "diffusion", "encoder", "song", "realtime"],
                    choices=list(CASES))
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "bf16-autocast"], choices=PRECISIONS)
    ap.add_argument("--size", choices=["full", "golden"], default="full")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    precisions = ["fp32"] + [p for p in args.precisions if p != "fp32"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# torch {torch.__version__}, {args.threads} threads, device {args.device}, size {args.size}, "
          f"{args.seconds:g} s, median of {args.runs}, load average {load:.1f} at start", flush=True)
    rows = []
    for path in args.paths:
        if args.size == "golden" and path != "synth":
            continue
        for r in run_path(path, precisions, args):
            rows.append(r)
            diff = ("reference" if r["precision"] == "fp32" else
                    f"rel L2 {r['rel_l2']:.2e}  SNR {r['snr_db']:5.1f} dB" +
                    (f"  mel L1 {r['mel_l1']:.4f} (loud frames {r['mel_l1_loud']:.4f})" if "mel_l1" in r else ""))
            print(f"{path:9s} {r['precision']:14s} wall {r['wall_s']:7.3f} s ({r['wall_ratio']:.2f}x)  "
                  f"CPU {r['cpu_s']:7.3f} s ({r['cpu_ratio']:.2f}x)  {diff}", flush=True)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# load average {load_end:.1f} at end")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
