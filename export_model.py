"""Make one shareable model file: ``python export_model.py -m G.pth -c config.json -o model.svc.safetensors``.

The file (safetensors, no pickle) holds the synthesizer's inference weights and, optionally, the
k-means model or feature index (``-cm``) and the shallow-diffusion model (``-dm`` + ``-dc``),
with the config, speaker map, speech encoder, vocoder requirement and free-text fields inside.
``--info FILE`` prints what a model file holds. Reads 4.1, 4.0 and so-vits-svc-fork (4.0)
checkpoints.
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    from modules.runtime import add_threads_argument

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--info", type=str, metavar="FILE", default=None, help="print what a model file holds, then exit")
    p.add_argument("--json", action="store_true", help="with --info: print the metadata as JSON")
    p.add_argument("-m", "--model_path", type=str, default=None, help="SoVITS checkpoint (G_*.pth, 4.1 / 4.0 / fork)")
    p.add_argument("-c", "--config_path", type=str, default=None,
                   help="its config.json (may be left out when the checkpoint carries its config)")
    p.add_argument("-o", "--output", type=str, default=None,
                   help="output file (default: <model>.svc.safetensors next to the checkpoint)")
    p.add_argument("-cm", "--cluster_model_path", type=str, default=None,
                   help="k-means model (kmeans_10000.pt) or feature index (feature_and_index.pkl / .json) to include")
    p.add_argument("-dm", "--diffusion_model_path", type=str, default=None, help="diffusion model (model_*.pt) to include")
    p.add_argument("-dc", "--diffusion_config_path", type=str, default=None, help="its diffusion.yaml")
    p.add_argument("--half", action="store_true", help="store the synthesizer weights as float16 (about half the size)")
    p.add_argument("--author", type=str, default="", help="free text: who made the model")
    p.add_argument("--license", type=str, default="", help="free text: the model's licence")
    p.add_argument("--description", type=str, default="", help="free text: what the model is")
    p.add_argument("--f0_stats", type=str, default=None, help="JSON file of per-speaker F0 statistics to include")
    p.add_argument("--encoder_file", type=str, default=None,
                   help="the speech-encoder weight file the model was trained with (its SHA-256 is recorded)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_threads_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from modules.runtime import configure_threads

    configure_threads(args.threads, interactive=False)  # before any torch work
    if args.info is not None:
        from modelfile import describe, metadata_json

        print(metadata_json(args.info) if args.json else describe(args.info))
        return 0
    if not args.model_path:
        parser.error("-m/--model_path is required (or use --info FILE)")
    from modelfile import export_model
    from modelfile.export import read_f0_stats

    f0_stats = read_f0_stats(args.f0_stats) if args.f0_stats else None
    out = export_model(model_path=args.model_path, config_path=args.config_path, output_path=args.output,
                       cluster_path=args.cluster_model_path, diffusion_model_path=args.diffusion_model_path,
                       diffusion_config_path=args.diffusion_config_path, half=args.half, author=args.author,
                       license=args.license, description=args.description, f0_stats=f0_stats,
                       encoder_file=args.encoder_file, overwrite=args.overwrite)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
