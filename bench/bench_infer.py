"""Benchmark of whole-song inference: time, real-time factor and peak memory (CPU, 2 threads).

Models at their real size with random weights: vec768l12 (ContentVec base) from
``vencoder.make_random_checkpoint(size="full")``, the default ``config_template.json`` synthesizer,
RMVPE (random checkpoint in the 4.1 format) or FCPE (the weights bundled with torchfcpe). The song
is synthetic: sung phrases of 3-8 s separated by 0.4-1.5 s pauses, 44.1 kHz mono.

Two pipelines convert the same song with the same models:

* ``ours``: ``Svc.slice_inference`` with inference_main.py's runtime profile (input resampled
  once, slices as arrays, synthesizer with weight norm folded, output preallocated, models loaded
  once, two slices at once on one thread each); ``ours-seq``: the same with ``--slice_workers 1``
  (one slice at a time on both threads); ``ours-bf16``: ``--precision bf16``; ``ours-bf16-seq``:
  both;
* ``41``: the 4.1 procedure emulated on the same components (the original cannot run here: it
  needs fairseq and torchaudio): the file re-read per slice list, every padded slice written to
  an in-memory 16-bit WAV and read back, resampled per slice, RMVPE in float16 on the CPU (as
  4.1-Latest), weight norm recomputed on every call, the output gathered in a Python list.

Each case runs in a fresh subprocess so its peak RSS is its own.

``--isa avx2`` runs the children as on a desktop CPU without AVX-512: oneDNN and ATen are capped
at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=avx2``). That matters for 4.1's
float16 RMVPE: CPUs with AVX512-FP16 (Sapphire Rapids Xeons) run float16 convolutions at about
float32 speed, every other CPU falls back to slow reference kernels.

    .venv/bin/python bench/bench_infer.py [--seconds 60 300] [--f0 rmvpe fcpe] [--pipelines ours 41]
        [--isa native|avx2] [--tiled]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SR = 44100


def song(seconds: float, seed: int = 0):
    """Phrases of a vibrato voice (3-8 s) with pauses (0.4-1.5 s) and light noise, float32."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.zeros(n, np.float32)
    pos = int(0.5 * SR)
    while pos < n:
        length = min(int(rng.uniform(3, 8) * SR), n - pos)
        t = np.arange(length) / SR
        f0 = rng.uniform(150, 400) * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * t)) * (1 + 0.1 * np.sin(2 * np.pi * 0.3 * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        y = sum(np.sin(k * phase) * (0.7 ** k) for k in range(1, 12))
        env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.08)
        out[pos:pos + length] = (0.3 * y * env).astype(np.float32)
        pos += length + int(rng.uniform(0.4, 1.5) * SR)
    out += (0.002 * rng.standard_normal(n)).astype(np.float32)
    return out


def prepare(work: Path) -> dict:
    """Write (once) the random-weight models and the test songs into ``work``."""
    import json as _json

    import numpy as np
    import soundfile as sf
    import torch

    from modules.F0Predictor import make_random_checkpoint as f0_ckpt
    from modules.checkpoint import save_checkpoint
    from vencoder import get_spec, make_random_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    pretrain = work / "pretrain"
    enc = pretrain / get_spec("vec768l12").filename
    if not enc.is_file():
        print("writing full-size random vec768l12 ...", flush=True)
        make_random_checkpoint("vec768l12", enc, size="full")
    rmvpe = pretrain / "rmvpe.pt"
    if not rmvpe.is_file():
        print("writing random rmvpe ...", flush=True)
        f0_ckpt("rmvpe", rmvpe)
    cfg_path, g_path = work / "config.json", work / "G_0.pth"
    if not g_path.is_file():
        from models import SynthesizerTrn
        from modules.hparams import HParams

        cfg = _json.loads((ROOT / "configs" / "config_template.json").read_text())
        cfg["model"]["n_speakers"] = 2
        cfg["spk"] = {"a": 0, "b": 1}
        cfg_path.write_text(_json.dumps(cfg, indent=2))
        h = HParams(**cfg)
        torch.manual_seed(0)
        net = SynthesizerTrn(h.data.filter_length // 2 + 1, h.train.segment_size // h.data.hop_length, **h.model)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if ".post." in name:
                    p.normal_(0, 0.02)
        save_checkpoint(net, None, 1e-4, 1, g_path)
    songs = {}
    for s in (20, 60, 300):
        p = work / f"song_{s}s.wav"
        if not p.is_file():
            sf.write(p, song(s, seed=s), SR, subtype="PCM_16")
        songs[s] = str(p)
    # The 60 s song five times: the same slices as the 60 s run, so any growth of the peak is
    # due to the song's length alone (the random 300 s song has a longer longest slice).
    tiled = work / "song_300s_tiled.wav"
    if not tiled.is_file():
        one, _ = sf.read(songs[60], dtype="int16")
        sf.write(tiled, np.tile(one, 5), SR, subtype="PCM_16")
    songs["300tiled"] = str(tiled)
    return {"pretrain": str(pretrain), "config": str(cfg_path), "g": str(g_path), "songs": songs}


# --- the emulated 4.1 procedure --------------------------------------------------------------------
def legacy_slice_inference(svc, path: str, spk: str, f0p: str):
    """4.1's slice_inference orchestration on our components (see module docstring)."""
    import numpy as np
    import soundfile as sf

    from inference.infer_tool import pad_array
    from inference.slicer import chunks2audio, cut

    chunks = cut(path, db_thresh=-40)
    audio_data, audio_sr = chunks2audio(path, chunks)
    audio = []
    pad_seconds = 0.5
    for slice_tag, data in audio_data:
        length = int(np.ceil(len(data) / audio_sr * svc.target_sample))
        if slice_tag:
            audio.extend(list(np.zeros(length)))
            continue
        pad_len = int(audio_sr * pad_seconds)
        dat = np.concatenate([np.zeros([pad_len]), data, np.zeros([pad_len])])
        raw_path = io.BytesIO()
        sf.write(raw_path, dat, audio_sr, format="wav")
        raw_path.seek(0)
        out_audio, _, _ = svc.infer(spk, 0, raw_path, f0_predictor=f0p)
        _audio = out_audio.cpu().numpy()
        pad_len = int(svc.target_sample * pad_seconds)
        _audio = pad_array(_audio[pad_len:-pad_len], length)
        audio.extend(list(_audio))
    return np.array(audio)


def make_legacy(svc, f0p: str):
    """Turn a loaded Svc into 4.1's configuration: unfolded weight norm, RMVPE float16 on CPU."""
    import torch

    from models import SynthesizerTrn
    from modules.checkpoint import load_state_dict_checked, torch_load

    hps = svc.hps_ms
    net = SynthesizerTrn(hps.data.filter_length // 2 + 1, hps.train.segment_size // hps.data.hop_length, **hps.model)
    load_state_dict_checked(net, torch_load(svc.net_g_path)["model"], source=svc.net_g_path)
    net.eval()
    del net.enc_q
    svc.net_g_ms = net
    if f0p == "rmvpe":
        pred = svc.f0_predictor("rmvpe", 0.05)
        pred.model = pred.model.half()
        pred.dtype = torch.float16


def mrf_chunk(flag: str | None, profile):
    """``Svc(mrf_chunk=)`` for a child: the ``--mrf-chunk`` flag (``auto`` or a sample count), else
    the runtime profile's choice (ours), else None (4.1: ``Svc`` decides)."""
    if profile is None:
        return None
    if flag is None:
        return profile.decoder_mrf_chunk()
    return flag if flag == "auto" else int(flag)


def child(args) -> None:
    ours = args.pipeline.startswith("ours")
    profile = None
    if ours:
        from modules.runtime import apply_inference_profile

        # inference_main.py's profile: huge-page re-exec, 2 threads, memory bounds, and two slices at
        # once on one thread each ("ours-seq": --slice_workers 1, one slice at a time on both threads)
        # (--sections: parallel slices time their parts with per-thread CPU clocks)
        profile = apply_inference_profile(threads=2, slice_workers=1 if args.pipeline.endswith("-seq") else None)
    import numpy as np  # noqa: F401
    import torch

    torch.set_num_threads(2)  # 4.1: PyTorch's default on this 2-core machine (ours: already set)
    files = json.loads(args.files)
    os.environ["SVC_PRETRAIN_DIR"] = files["pretrain"]
    from inference.infer_tool import Svc
    from modules.audio import save_audio

    t0 = time.perf_counter()
    svc = Svc(files["g"], files["config"], device="cpu", cluster_model_path=None,
              mrf_chunk=mrf_chunk(args.mrf_chunk, profile))
    svc.f0_predictor(args.f0, 0.05)
    if profile is not None:  # as inference_main.py (convert_files) does before the first file
        from inference.options import ConversionOptions

        svc.prepare(ConversionOptions(f0_predictor=args.f0, precision="bf16" if "bf16" in args.pipeline else "fp32"))
    if args.pipeline == "41":  # 4.1 had no memory bounds (glibc/oneDNN defaults)
        make_legacy(svc, args.f0)
    load_s = time.perf_counter() - t0
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from peak_rss import peak_rss_mb, reset_peak

    reset_peak()
    sections = None
    if args.sections:
        sections = time_sections(svc, args.f0, precision="bf16" if "bf16" in args.pipeline else "fp32",
                                 per_thread=profile is not None and profile.slice_workers > 1 and profile.slice_threads == 1)
    tiled = args.tiled and args.seconds == 300
    path = files["songs"][str(args.seconds) + ("tiled" if tiled else "")]
    c0, t1 = time.process_time(), time.perf_counter()
    if profile is not None:
        extra = {"precision": "bf16"} if "bf16" in args.pipeline else {}
        out = svc.slice_inference(path, "a", 0, f0_predictor=args.f0, progress=False,
                                  on_slice_done=profile.on_slice_done, workers=profile.slice_workers,
                                  set_threads=profile.set_threads, slice_threads=profile.slice_threads, **extra)
    else:
        out = legacy_slice_inference(svc, path, "a", args.f0)
    wall, cpu = time.perf_counter() - t1, time.process_time() - c0
    save_audio(Path(args.out), out, svc.target_sample)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conv_peak = peak_rss_mb()
    print(json.dumps({"pipeline": args.pipeline, "f0": args.f0, "seconds": args.seconds, "tiled": tiled, "load_s": round(load_s, 1),
                      "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "rtf": round(wall / args.seconds, 3),
                      "rss_after_load_mb": round(rss_loaded), "peak_rss_mb": round(peak),
                      "conversion_peak_rss_mb": None if conv_peak is None else round(conv_peak),
                      "out_len": len(out),
                      **({"sections_cpu_s": {k: round(v, 2) for k, v in sections.items()}} if sections else {})}),
          flush=True)


def time_sections(svc, f0: str, *, precision: str = "fp32", per_thread: bool = False) -> dict[str, float]:
    """Sum the CPU time of the pipeline's parts during the conversion (method wrappers).

    Parts: ``resample`` (model rate → 16 kHz for the encoder), ``encoder`` (speech encoder),
    ``f0`` (the predictor), ``prior`` (content + pitch embedding and the prior encoder ``enc_p``),
    ``flow`` (inverse flow), ``sine source`` and ``decoder`` (NSF-HiFiGAN, sine source excluded).
    What remains of the total is slicing, volume, padding and copying. ``per_thread``: each part's
    own thread's CPU time (right when slices run in parallel on one intra-op thread each, where
    process time would count the other slice too); otherwise process CPU time (one slice at a
    time, several intra-op threads). ``precision``: time the models of that precision."""
    import threading

    import inference.infer_tool as it

    acc: dict[str, float] = {}
    lock = threading.Lock()
    clock = time.thread_time if per_thread else time.process_time

    def wrap(obj, attr, name):
        fn = getattr(obj, attr)

        def timed(*a, **k):
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                with lock:
                    acc[name] = acc.get(name, 0.0) + clock() - t0

        setattr(obj, attr, timed)

    net = svc.model_for(precision)
    wrap(it, "sinc_resample", "resample")
    wrap(svc.encoder_for(precision), "encoder", "encoder")
    wrap(svc.f0_predictor(f0, 0.05), "compute_f0_uv", "f0")
    wrap(net.enc_p, "forward", "prior")
    wrap(net, "embed_content", "prior")
    wrap(net.flow, "forward", "flow")
    wrap(net.dec, "harmonic_source", "sine source")
    wrap(net.dec, "forward", "decoder+sine")
    return acc


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), or the platform's processor string."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, nargs="+", default=[60, 300], choices=[20, 60, 300],
                    help="song length (20 s: a quick profile)")
    ap.add_argument("--f0", nargs="+", default=["rmvpe", "fcpe"])
    ap.add_argument("--pipelines", nargs="+", default=["ours", "41"], choices=["ours", "ours-seq", "ours-bf16", "ours-bf16-seq", "41"],
                    help="ours-bf16: ours with --precision bf16; ours-seq: ours with --slice_workers 1")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native",
                    help="avx2: cap oneDNN/ATen at AVX2, as on a desktop CPU (see the module docstring)")
    ap.add_argument("--mrf-chunk", default=None,
                    help="ours: the decoder's residual-block chunking (0 or auto) instead of the profile's choice")
    ap.add_argument("--tiled", action="store_true",
                    help="for 300 s use the 60 s song five times (same slices; isolates growth with length)")
    ap.add_argument("--sections", action="store_true",
                    help="report the CPU time of each part of the pipeline (per-thread CPU time where slices run in "
                         "parallel on one thread each, else process CPU time)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the pipelines this many times, alternately; the summary gives medians and the "
                         "median of the per-round ratios (each round's cases see about the same machine load)")
    ap.add_argument("--work", default=os.environ.get("SVC_BENCH_DIR", "/tmp/svc_bench_infer"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pipeline", help=argparse.SUPPRESS)
    ap.add_argument("--files", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.f0, args.seconds = args.f0[0], args.seconds[0]
        child(args)
        return
    work = Path(args.work)
    files = prepare(work)
    env = dict(os.environ)
    if args.isa == "avx2":
        env.update(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs visible, torch threads 2, ISA {args.isa}; work dir {work}",
          flush=True)
    results = []
    # the pipelines alternate round by round, so each round's cases see about the same machine load
    for seconds, f0, rnd, pipeline in ((s, f, k, p) for s in args.seconds for f in args.f0
                                       for k in range(args.rounds) for p in args.pipelines):
        cmd = [sys.executable, __file__, "--child", "--pipeline", pipeline, "--f0", f0, "--seconds",
               str(seconds), "--files", json.dumps(files), *(["--tiled"] if args.tiled else []),
               *(["--mrf-chunk", args.mrf_chunk] if args.mrf_chunk is not None else []),
               *(["--sections"] if args.sections else []), "--out",
               str(work / f"out_{pipeline}_{f0}_{seconds}{'_tiled' if args.tiled else ''}.wav")]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not line:
            print(f"{pipeline} {f0} {seconds}s failed:\n{proc.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(line[-1])
        r["round"] = rnd
        results.append(r)
        song_name = f"{seconds}s" + (" tiled" if r["tiled"] else "")
        if "sections_cpu_s" in r:
            print(f"     CPU s per part: {r['sections_cpu_s']} (conversion CPU {r['cpu_s']} s)", flush=True)
        print(f"{pipeline:>4} {f0:>5} {song_name} {args.isa}: wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s  "
              f"RTF {r['rtf']:.3f}  load {r['load_s']:5.1f} s  peak RSS {r['peak_rss_mb']} MB "
              f"(loading {r['rss_after_load_mb']} MB, converting {r['conversion_peak_rss_mb']} MB)", flush=True)
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["pipeline"], r["f0"], r["seconds"]), []).append(r)
    for (p, f0, s), rs in groups.items():
        if not p.startswith("ours") or ("41", f0, s) not in groups:
            continue
        base = {r["round"]: r for r in groups[("41", f0, s)]}
        pairs = [(r, base[r["round"]]) for r in rs if r["round"] in base]
        wall = statistics.median(r["wall_s"] / o["wall_s"] for r, o in pairs)
        cpu = statistics.median(r["cpu_s"] / o["cpu_s"] for r, o in pairs)
        print(f"{p} / 4.1, {f0} {s}s ({len(pairs)} rounds): time ratio wall {wall:.2f} (median of rounds), cpu {cpu:.2f}; "
              f"median wall {statistics.median(r['wall_s'] for r, _ in pairs):.1f} s vs "
              f"{statistics.median(o['wall_s'] for _, o in pairs):.1f} s; peak RSS max "
              f"{max(r['peak_rss_mb'] for r, _ in pairs)} vs {max(o['peak_rss_mb'] for _, o in pairs)} MB", flush=True)


if __name__ == "__main__":
    main()
