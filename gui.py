"""Realtime voice conversion: ``python gui.py`` opens the desktop window (4.1's ``gui.py``).

File mode streams a file through exactly the realtime path, block by block, without a sound
card or a window (for tests, benchmarks and listening to the block joins)::

    python gui.py -m logs/44k/G_30000.pth --input in.wav --output out.wav [-s speaker] [-t 0]

Settings are read from ``--settings`` (JSON, written by the window's "Save settings"; 4.1 used
a pickle) when it exists; flags given on the command line override them.
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main

DEFAULT_SETTINGS = "gui_settings.json"

# flag dest → RealtimeSettings field (flags share inference_main.py's names where it has them)
_OVERRIDES = {
    "model_path": "model_path", "config_path": "config_path", "spk": "speaker", "trans": "transpose",
    "f0_predictor": "f0_predictor", "cluster_model_path": "cluster_model_path",
    "cluster_infer_ratio": "cluster_ratio", "noice_scale": "noise_scale", "block": "block_time",
    "crossfade": "crossfade_time", "history": "history_blocks", "threshold": "threshold", "device": "device",
    "diffusion_model_path": "diffusion_model_path", "diffusion_config_path": "diffusion_config_path",
    "k_step": "k_step", "enhancer_adaptive_key": "enhancer_adaptive_key", "f0_filter_threshold": "f0_threshold",
    "feature_context": "feature_context", "f0_min": "f0_min", "f0_max": "f0_max",
}
_SWITCHES = {"enhance": "enhancer", "shallow_diffusion": "use_diffusion", "feature_retrieval": "feature_retrieval",
             "auto_predict_f0": "auto_f0", "second_encoding": "second_encoding", "skip_safe_zone": "skip_safe_zone",
             "f0_repair": "f0_repair"}


def build_parser() -> argparse.ArgumentParser:
    from modules.runtime import add_threads_argument

    p = argparse.ArgumentParser(description="so-vits-svc 4.1 realtime conversion (window, or --input/--output "
                                            "file mode through the same block-by-block path)")
    p.add_argument("--settings", default=DEFAULT_SETTINGS,
                   help=f"settings JSON (default {DEFAULT_SETTINGS}; read if it exists, the window saves it)")
    p.add_argument("--input", help="file mode: audio file to stream through the realtime path")
    p.add_argument("--output", help="file mode: where to write the converted audio (same rate and length)")
    p.add_argument("--no-align", dest="align", action="store_false", default=True,
                   help="file mode: keep the stream's latency in the output instead of removing it")
    p.add_argument("--list-devices", action="store_true", help="print the sound devices and exit")
    add_threads_argument(p)
    g = p.add_argument_group("settings (override the settings file)")
    g.add_argument("-m", "--model_path", help="G_*.pth, or a .svc.safetensors model file (then no config)")
    g.add_argument("-c", "--config_path", help="default: config.json beside the model; not used with a model file")
    g.add_argument("-s", "--spk", help="speaker name (default: the model's first)")
    g.add_argument("-t", "--trans", type=float, help="transpose, semitones")
    g.add_argument("-f0p", "--f0_predictor", help="pm, dio, harvest, crepe, rmvpe, fcpe (GUI default fcpe)")
    g.add_argument("-cm", "--cluster_model_path")
    g.add_argument("-cr", "--cluster_infer_ratio", type=float)
    g.add_argument("-fr", "--feature_retrieval", action="store_true", default=None)
    g.add_argument("-ns", "--noice_scale", type=float, help="noise scale (default 0.4)")
    g.add_argument("--block", type=float, help="block length, s (default 0.5)")
    g.add_argument("--crossfade", type=float, help="crossfade length, s (default 0.04)")
    g.add_argument("--history", type=int, help="blocks of history context (default 4)")
    g.add_argument("--threshold", type=float, help="response threshold, dB (default -45)")
    g.add_argument("--feature_context", type=float, help="s of left context for f0/units of new frames (default 1)")
    g.add_argument("-a", "--auto_predict_f0", action="store_true", default=None)
    g.add_argument("--skip_safe_zone", action="store_true", default=None,
                   help="synthesise only the tail of the buffer (4.1 'diff_silence')")
    g.add_argument("-eh", "--enhance", action="store_true", default=None)
    g.add_argument("-eak", "--enhancer_adaptive_key", type=float)
    g.add_argument("-ft", "--f0_filter_threshold", type=float)
    g.add_argument("-shd", "--shallow_diffusion", action="store_true", default=None)
    g.add_argument("-dm", "--diffusion_model_path")
    g.add_argument("-dc", "--diffusion_config_path")
    g.add_argument("-ks", "--k_step", type=int)
    g.add_argument("-se", "--second_encoding", action="store_true", default=None)
    g.add_argument("--f0_min", type=float, help="lowest f0 the predictor searches, Hz (default: 4.1's)")
    g.add_argument("--f0_max", type=float, help="highest f0 the predictor searches, Hz (default: 4.1's)")
    g.add_argument("--f0_repair", action="store_true", default=None, help="octave repair of the f0 (per block)")
    g.add_argument("-d", "--device", help="auto, cpu, cuda, cuda:N")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from modules.errors import SvcError

    if args.list_devices:
        from inference.audio_io import list_devices

        inputs, outputs = list_devices()
        for kind, devs in (("input", inputs), ("output", outputs)):
            print(f"{kind} devices:" if devs else f"{kind} devices: none")
            for d in devs:
                print(f"  {d.label}  ({d.default_samplerate:.0f} Hz)")
        return 0
    if (args.input is None) != (args.output is None):
        raise SvcError("file mode needs both --input and --output")
    from modules.runtime import apply_inference_profile

    # Interactive: a passive OpenMP wait policy keeps blocks on time when other programs run.
    # Fixed block shapes: oneDNN's primitive cache stays on (one set of primitives, reused every block).
    apply_inference_profile(threads=args.threads, interactive=True, reexec=False, fixed_shapes=True)

    from inference.realtime import RealtimeSettings, load_settings

    settings = load_settings(args.settings) if Path(args.settings).is_file() else RealtimeSettings()
    changes = {field: getattr(args, dest) for dest, field in {**_OVERRIDES, **_SWITCHES}.items()
               if getattr(args, dest) is not None}
    settings = settings.replace(**changes).validate()

    if args.input is None:
        from realtime_gui.app import run_gui

        if changes:
            raise SvcError("settings flags apply to file mode; the window reads and saves --settings")
        run_gui(args.settings)
        return 0

    from inference.realtime import convert_file

    stats = convert_file(settings, args.input, args.output, align=args.align)
    print(f"{args.output}: {stats['blocks']} blocks of {stats['block_ms']:.0f} ms, algorithmic latency "
          f"{stats['latency_ms']:.0f} ms, compute per block median {stats['median_compute_ms']:.0f} ms "
          f"(max {stats['max_compute_ms']:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
