"""Benchmark the ONNX export: export time, file size, and onnxruntime vs PyTorch inference.

Default: the 4.1 default config (configs/config_template.json: vec768l12, 44.1 kHz, hop 512)
with two speakers (speaker-mix graph), random weights, 10 s of audio, 2 threads, CPU, float32.

    .venv/bin/python bench/bench_onnx.py [--seconds 10] [--runs 3] [--threads 2]

Rows: ``onnxruntime`` (the exported file, CPU provider), ``torch graph`` (the same graph module
in PyTorch), ``torch infer`` (``SynthesizerTrn.prepare_for_inference().infer``, the offline
path). Real-time factor = wall time / audio duration.
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

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models import SynthesizerTrn  # noqa: E402
from modules.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from onnxexport import export as ex  # noqa: E402


def write_model(folder: Path) -> None:
    config = json.loads((ROOT / "configs" / "config_template.json").read_text())
    config["spk"] = {"a": 0, "b": 1}
    config["model"]["n_speakers"] = 2
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(0)
    m = config["model"]
    net = SynthesizerTrn(config["data"]["filter_length"] // 2 + 1,
                         config["train"]["segment_size"] // config["data"]["hop_length"], **m)
    with torch.no_grad():  # zero-initialised flow outputs would make the flow the identity
        for name, p in net.named_parameters():
            if "post" in name and float(p.abs().max()) == 0.0:
                p.normal_(0, 0.02)
    save_checkpoint(net, None, 1e-4, 1, folder / "model.pth")


def median_time(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench"
        folder.mkdir()
        write_model(folder)
        paths = ex.resolve_paths("bench", root=tmp)
        t = time.perf_counter()
        ex.export_sovits(paths, check=False)
        export_s = time.perf_counter() - t
        t = time.perf_counter()
        net, hps = ex.load_synthesizer(paths.model, paths.config)
        graph = ex.build_graph(net, hps)
        diff = ex.check_export(paths.onnx, graph, threads=args.threads)
        check_s = time.perf_counter() - t
        size_mb = paths.onnx.stat().st_size / 1e6

        frames = int(args.seconds * hps.data.sampling_rate / hps.data.hop_length)
        duration = frames * hps.data.hop_length / hps.data.sampling_rate
        units = frames * 50 * hps.data.hop_length // hps.data.sampling_rate  # 50 Hz encoder frames
        inputs = ex.dummy_inputs(graph, frames=frames, units=units)
        feeds = {k: v.numpy() for k, v in inputs.items()}
        session = ex.ort_session(paths.onnx, threads=args.threads)
        names = ex.input_names(graph)

        def torch_graph():
            with torch.inference_mode():
                graph(*(inputs[n] for n in names))

        ref = SynthesizerTrn(hps.data.filter_length // 2 + 1, hps.train.segment_size // hps.data.hop_length,
                             **hps.model)
        load_checkpoint(paths.model, ref)
        ref = ref.for_inference()
        padded = torch.cat([torch.zeros_like(inputs["c"][:, :1]), inputs["c"]], dim=1)
        c = padded[0, inputs["mel2ph"][0]].T[None]

        def torch_infer():
            ref.infer(c, inputs["f0"], inputs["uv"], g=torch.LongTensor([[0]]), noice_scale=0.4)

        rows = [
            ("onnxruntime", median_time(lambda: session.run(["audio"], feeds), args.runs)),
            ("torch graph", median_time(torch_graph, args.runs)),
            ("torch infer", median_time(torch_infer, args.runs)),
        ]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"config_template.json (2 speakers, mix graph), {duration:.2f} s audio, {args.threads} threads, CPU")
    print(f"export: {export_s:.1f} s, file {size_mb:.1f} MB; load + onnxruntime check {check_s:.1f} s "
          f"(max rel diff {diff:.1e})")
    for name, sec in rows:
        print(f"{name:12s} median {sec:7.3f} s   RTF {sec / duration:.3f}")
    print(f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
