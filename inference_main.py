"""Convert songs with a trained so-vits-svc 4.1 model (4.1's ``inference_main.py``, same flags).

    python inference_main.py -m logs/44k/G_30400.pth -c logs/44k/config.json -n song.wav -t 0 -s speaker
    python inference_main.py -m voice.svc.safetensors -n song.wav -t 0 -s speaker

A ``.svc.safetensors`` model file (``export_model.py``) carries its config, speakers and optional
cluster / index and diffusion parts, so ``-c`` is not given with it; ``-cm`` / ``-dm`` + ``-dc``
still override its parts.

Inputs are names inside ``raw/`` or any path (wav, flac, ogg, mp3, ... at any rate, mono or
stereo); each is converted for every speaker given and written to ``results/`` (see
``inference/batch.py`` for the naming). Unlike 4.1 there is no default input file or speaker.
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main

# 4.1's defaults of -c and -dm, used when the model is a G_*.pth checkpoint (with a model file,
# -c is not used and -dm defaults to the file's own diffusion part).
DEFAULT_CONFIG = "logs/44k/config.json"
DEFAULT_DIFFUSION_MODEL = "logs/44k/diffusion/model_0.pt"


# 4.1 flags that are not conversion options (model, files, device); the conversion options' flags
# (-t, -sd, -cr, -a, -ns, -p, -cl, -lg, -lgr, -f0p, -eak, -ft, -ks, -usm, -se, -lea, ...) are
# generated from inference.options.ConversionOptions, with 4.1's names and defaults.
def build_parser() -> argparse.ArgumentParser:
    from inference.options import add_arguments
    from modules.runtime import add_threads_argument

    p = argparse.ArgumentParser(description="so-vits-svc 4.1 inference: convert audio files to a target voice")
    g = p.add_argument_group("model and files")
    # Required in practice (4.1 had one author's file and speaker as defaults).
    g.add_argument("-m", "--model_path", type=str, default="logs/44k/G_37600.pth",
                   help="generator checkpoint G_*.pth, or a .svc.safetensors model file (then no -c)")
    g.add_argument("-c", "--config_path", type=str, default=None,
                   help=f"the checkpoint's config.json (default {DEFAULT_CONFIG}, else the config a checkpoint written by "
                        "this project's train.py carries; not used with a model file)")
    g.add_argument("-n", "--clean_names", type=str, nargs="+", default=None,
                   help="input files: names inside raw/ or paths (required)")
    g.add_argument("-s", "--spk_list", type=str, nargs="+", default=None,
                   help="target speaker name(s); each input is converted for every speaker (required unless -usm)")
    g.add_argument("-cm", "--cluster_model_path", type=str, default="",
                   help="k-means model or (with -fr) feature index; default logs/44k/kmeans_10000.pt or "
                        "logs/44k/feature_and_index.pkl when -cr is not 0")
    g.add_argument("-eh", "--enhance", action="store_true", default=False,
                   help="NSF-HiFiGAN enhancer (needs pretrain/nsf_hifigan/)")
    g.add_argument("-shd", "--shallow_diffusion", action="store_true", default=False,
                   help="shallow diffusion (switches the enhancer off)")
    g.add_argument("-fr", "--feature_retrieval", action="store_true", default=False,
                   help="use feature retrieval (index) instead of k-means; -cm/-cr then apply to the index")
    g.add_argument("-dm", "--diffusion_model_path", type=str, default=None,
                   help=f"diffusion model (default: the model file's, else {DEFAULT_DIFFUSION_MODEL})")
    g.add_argument("-dc", "--diffusion_config_path", type=str, default="logs/44k/diffusion/config.yaml",
                   help="diffusion config")
    g.add_argument("-od", "--only_diffusion", action="store_true", default=False,
                   help="diffusion only (no SoVITS model)")
    g.add_argument("-d", "--device", type=str, default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    g.add_argument("-wf", "--wav_format", type=str, default="flac", help="output format (a soundfile format name)")
    # Additions of this implementation
    g.add_argument("--half", action="store_true", default=False, help="float16 synthesis (CUDA only)")
    g.add_argument("--spk_mix_file", type=str, default="spkmix.py", help="speaker-mix track for -usm")
    g.add_argument("--f0_out", action="store_true", default=False,
                   help="also write the f0 curve each result used (after transposition, range and repair) as "
                        "<result>.f0.csv (time_s,f0_hz,voiced; one row per frame of the conversion)")
    g.add_argument("--f0_file", type=str, nargs="+", default=None, metavar="CSV",
                   help="use these f0 curves (one per input, e.g. an edited --f0_out file) instead of predicting; "
                        "they are not transposed again (-t and --auto_key are ignored)")
    add_threads_argument(g)
    g.add_argument("--slice_workers", type=int, default=None, metavar="N",
                   help="convert N slices at once, sharing the threads (default: one per thread, i.e. --threads or "
                        "the number of cores, at most 4; 1: one slice at a time on all threads). Same audio either "
                        "way; on a CPU, several single-threaded slices are faster (docs/bench/speed.md). Not used "
                        "with diffusion, the enhancer or speaker mixing")
    add_arguments(p.add_argument_group("conversion options (inference.options.ConversionOptions)"))
    return p


def _carries_config(model_path: str) -> bool:
    """Whether ``model_path`` is a G checkpoint that stores its own config (written by our trainer)."""
    from pathlib import Path

    if not Path(model_path).is_file():
        return False  # reported by the checks below, with the path
    from modules.checkpoint import config_from_checkpoint
    from modules.errors import SvcError

    try:
        return config_from_checkpoint(model_path) is not None
    except SvcError:
        return False  # not a readable checkpoint: the model check below says why


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from modules.runtime import apply_inference_profile

    # Before torch runs anything. The huge-page re-exec repeats this process's command line, so
    # only when main() runs it (argv None), not when called with other arguments.
    profile = apply_inference_profile(threads=args.threads, interactive=False, reexec=argv is None,
                                      slice_workers=args.slice_workers)

    from pathlib import Path

    from inference.batch import (Job, model_file_metadata, preflight, read_diffusion_speakers,
                                 read_model_file_speakers, read_model_speakers)
    from inference.options import from_namespace
    from modules.errors import SvcError

    if not args.clean_names:
        raise SvcError("no input given: pass -n FILE [FILE ...] (names inside raw/ or paths)")
    options = from_namespace(args)  # every option checked here, once
    if args.half and options.precision not in ("fp32", "fp16"):
        raise SvcError(f"--half and --precision {options.precision} contradict each other: --half is float16 on "
                       "CUDA; drop one of them")
    # A .svc.safetensors model file: its header is checked now (a disguised pickle is refused
    # here, unread), and says which optional parts it holds.
    file_meta = model_file_metadata(args.model_path, args.config_path, diffusion_model_path=args.diffusion_model_path,
                                    diffusion=args.shallow_diffusion or args.only_diffusion,
                                    only_diffusion=args.only_diffusion)
    if file_meta is None and args.config_path is None:
        # 4.1's default config.json when it exists; else the config a checkpoint of ours carries
        if args.only_diffusion or Path(DEFAULT_CONFIG).is_file() or not _carries_config(args.model_path):
            args.config_path = DEFAULT_CONFIG
            if not args.only_diffusion and not Path(DEFAULT_CONFIG).is_file() and Path(args.model_path).is_file():
                raise SvcError(f"no -c given, {DEFAULT_CONFIG} does not exist and {args.model_path} carries no "
                               "config of its own (a 4.1 checkpoint): pass the model's config.json with -c")
    if args.diffusion_model_path is None and file_meta is None:
        args.diffusion_model_path = DEFAULT_DIFFUSION_MODEL
    if options.cluster_infer_ratio != 0 and not (file_meta and file_meta.get("cluster")
                                                 and args.cluster_model_path == ""):
        if args.cluster_model_path == "":
            args.cluster_model_path = ("logs/44k/feature_and_index.pkl" if args.feature_retrieval
                                       else "logs/44k/kmeans_10000.pt")
        if not Path(args.cluster_model_path).is_file():
            raise SvcError(f"{args.cluster_model_path}: {'feature index' if args.feature_retrieval else 'k-means model'} "
                           "not found; pass it with -cm, or set -cr 0")
    elif options.cluster_infer_ratio == 0:
        args.cluster_model_path = ""

    speakers = args.spk_list
    if options.use_spk_mix:
        from inference.spk_mix import load_spk_mix_map

        mix_file = Path(args.spk_mix_file)
        if not mix_file.is_file() and not mix_file.is_absolute():
            mix_file = Path(__file__).resolve().parent / args.spk_mix_file
        spk_mix_map = load_spk_mix_map(mix_file)
        if len(spk_mix_map) <= 1:
            options = options.replace(use_spk_mix=False)  # 4.1: a one-entry map means no mixing
            if not speakers:
                raise SvcError(f"{mix_file} has only one speaker, so -usm does nothing; give the speaker with -s")
        else:
            speakers = [spk_mix_map]
    # The model's speaker table from its config and checkpoint shapes only (no model is built).
    if file_meta is not None:
        table = read_model_file_speakers(args.model_path, diffusion=args.only_diffusion)
    elif args.only_diffusion:
        table = read_diffusion_speakers(args.diffusion_config_path)
    else:
        table = read_model_speakers(args.model_path, args.config_path)
    if not options.use_spk_mix and not speakers:
        raise SvcError("no speaker given: pass -s NAME [NAME ...]; this model's speakers: "
                       + (", ".join(table.spk2id) or "(none)"))
    job = Job(inputs=args.clean_names, trans=args.transpose, speakers=speakers, options=options,
              wav_format=args.wav_format, f0_out=args.f0_out, f0_files=args.f0_file)
    preflight(job, table)
    if options.auto_key and not options.use_spk_mix and not args.only_diffusion:
        from inference.pitch import model_f0_stats

        stats = model_f0_stats(args.model_path, args.config_path) or {}
        missing = [str(s) for s in speakers if str(s) not in stats]
        if missing:
            raise SvcError(f"--auto_key needs f0 statistics of speaker(s) {', '.join(missing)}; this model has them for "
                           f"{', '.join(stats) or 'none'} (preprocess_hubert_f0.py writes configs/f0_stats.json next to "
                           "the config; export_model.py stores them in a model file)")

    from inference.batch import convert_files
    from inference.infer_tool import Svc

    svc = Svc(args.model_path, None if file_meta is not None else args.config_path, device=args.device,
              cluster_model_path=args.cluster_model_path,
              nsf_hifigan_enhance=args.enhance, diffusion_model_path=args.diffusion_model_path,
              diffusion_config_path=args.diffusion_config_path, shallow_diffusion=args.shallow_diffusion,
              only_diffusion=args.only_diffusion, spk_mix_enable=options.use_spk_mix,
              feature_retrieval=args.feature_retrieval, half=args.half, mrf_chunk=profile.decoder_mrf_chunk())
    if not options.use_spk_mix:
        for spk in speakers:
            svc.speaker_id(spk)
    convert_files(svc, job, on_slice_done=profile.on_slice_done, workers=profile.slice_workers,
                  set_threads=profile.set_threads, slice_threads=profile.slice_threads)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
