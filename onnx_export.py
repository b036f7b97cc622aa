"""Export a SoVITS model to ONNX (MoeVoiceStudio / onnxruntime): ``python onnx_export.py -n <name>``.

Same interface as so-vits-svc 4.1: reads ``checkpoints/<name>/model.pth`` and ``config.json``,
writes ``checkpoints/<name>/<name>_SoVits.onnx`` and the MoeVS descriptor ``checkpoints/<name>.json``.
Multi-speaker models get the speaker-mix graph (``sid`` = per-frame weights ``[T, n_speakers]``),
single-speaker models the speaker-id graph (``sid`` = int64 ``[1]``). Explicit paths may replace
the folder layout. After writing, the graph is run once in onnxruntime and compared with PyTorch.
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", "--model_name", type=str, default=None,
                   help="model folder under checkpoints/ holding model.pth and config.json; also the name in the "
                        "descriptor (default: TransformerFlow, or taken from --output <name>_SoVits.onnx)")
    p.add_argument("--model_path", type=str, default=None,
                   help="model file: G_*.pth or a .svc.safetensors model file (default: checkpoints/<name>/model.pth, "
                        "else checkpoints/<name>/model.svc.safetensors)")
    p.add_argument("--config_path", type=str, default=None,
                   help="config file (default: checkpoints/<name>/config.json; not used with a .svc.safetensors model)")
    p.add_argument("--output", type=str, default=None,
                   help="ONNX file to write (default: checkpoints/<name>/<name>_SoVits.onnx)")
    p.add_argument("--descriptor", type=str, default=None,
                   help="MoeVS descriptor to write (default: checkpoints/<name>.json, or <name>.json next to --output)")
    p.add_argument("--no_mix", action="store_true",
                   help="export the speaker-id graph (sid int64 [1]) even for a multi-speaker model")
    p.add_argument("--no_check", action="store_true", help="skip the onnxruntime-vs-PyTorch check after export")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from onnxexport.export import export_sovits, resolve_paths

    paths = resolve_paths(args.model_name, model_path=args.model_path, config_path=args.config_path,
                          output=args.output, descriptor=args.descriptor)
    export_sovits(paths, speaker_mix=False if args.no_mix else None, check=not args.no_check)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
