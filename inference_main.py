"""Convert songs with a trained so-vits-svc 4.1 model (4.1's ``inference_main.py``, same flags).

    python inference_main.py -m logs/44k/G_30400.pth -c logs/44k/config.json -n song.wav -t 0 -s speaker

Inputs are names inside ``raw/`` or any path (wav, flac, ogg, mp3, ... at any rate, mono or
stereo); each is converted for every speaker given and written to ``results/`` (see
``inference/batch.py`` for the naming). Unlike 4.1 there is no default input file or speaker.
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="so-vits-svc 4.1 inference: convert audio files to a target voice")
    # Required in practice (4.1 had one author's file and speaker as defaults).
    p.add_argument("-m", "--model_path", type=str, default="logs/44k/G_37600.pth", help="generator checkpoint G_*.pth")
    p.add_argument("-c", "--config_path", type=str, default="logs/44k/config.json", help="the model's config.json")
    p.add_argument("-cl", "--clip", type=float, default=0,
                   help="force-split voiced audio into pieces of this many seconds (0 = off)")
    p.add_argument("-n", "--clean_names", type=str, nargs="+", default=None,
                   help="input files: names inside raw/ or paths (required)")
    p.add_argument("-t", "--trans", type=int, nargs="+", default=[0],
                   help="pitch shift in semitones, one per input (padded with the first value)")
    p.add_argument("-s", "--spk_list", type=str, nargs="+", default=None,
                   help="target speaker name(s); each input is converted for every speaker (required unless -usm)")
    # Optional
    p.add_argument("-a", "--auto_predict_f0", action="store_true", default=False,
                   help="predict f0 with the model (speech only; makes singing go out of tune, ignores -t)")
    p.add_argument("-cm", "--cluster_model_path", type=str, default="",
                   help="k-means model or (with -fr) feature index; default logs/44k/kmeans_10000.pt or "
                        "logs/44k/feature_and_index.pkl when -cr is not 0")
    p.add_argument("-cr", "--cluster_infer_ratio", type=float, default=0,
                   help="mixing ratio of clustering / feature retrieval, 0..1 (0 = off)")
    p.add_argument("-lg", "--linear_gradient", type=float, default=0,
                   help="crossfade length in seconds between forced clips (-cl)")
    p.add_argument("-f0p", "--f0_predictor", type=str, default="pm",
                   help="f0 predictor: crepe, pm, dio, harvest, rmvpe, fcpe")
    p.add_argument("-eh", "--enhance", action="store_true", default=False,
                   help="NSF-HiFiGAN enhancer (needs pretrain/nsf_hifigan/)")
    p.add_argument("-shd", "--shallow_diffusion", action="store_true", default=False,
                   help="shallow diffusion (switches the enhancer off)")
    p.add_argument("-usm", "--use_spk_mix", action="store_true", default=False,
                   help="dynamic speaker mix from spkmix.py")
    p.add_argument("-lea", "--loudness_envelope_adjustment", type=float, default=1,
                   help="1 keeps the output's loudness envelope, 0 imposes the input's")
    p.add_argument("-fr", "--feature_retrieval", action="store_true", default=False,
                   help="use feature retrieval (index) instead of k-means; -cm/-cr then apply to the index")
    # Shallow diffusion
    p.add_argument("-dm", "--diffusion_model_path", type=str, default="logs/44k/diffusion/model_0.pt",
                   help="diffusion model")
    p.add_argument("-dc", "--diffusion_config_path", type=str, default="logs/44k/diffusion/config.yaml",
                   help="diffusion config")
    p.add_argument("-ks", "--k_step", type=int, default=100, help="shallow-diffusion depth (steps)")
    p.add_argument("-se", "--second_encoding", action="store_true", default=False,
                   help="re-encode the SoVITS output before shallow diffusion")
    p.add_argument("-od", "--only_diffusion", action="store_true", default=False,
                   help="diffusion only (no SoVITS model)")
    # Rarely changed
    p.add_argument("-sd", "--slice_db", type=int, default=-40,
                   help="silence threshold in dB for slicing (-30 noisy, -50 dry vocals with breaths)")
    p.add_argument("-d", "--device", type=str, default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("-ns", "--noice_scale", type=float, default=0.4, help="prior noise scale")
    p.add_argument("-p", "--pad_seconds", type=float, default=0.5, help="silence added around each slice (s)")
    p.add_argument("-wf", "--wav_format", type=str, default="flac", help="output format (a soundfile format name)")
    p.add_argument("-lgr", "--linear_gradient_retain", type=float, default=0.75,
                   help="part of the crossfade (-lg) that is blended, 0..1")
    p.add_argument("-eak", "--enhancer_adaptive_key", type=int, default=0,
                   help="shift the enhancer's range by this many semitones")
    p.add_argument("-ft", "--f0_filter_threshold", type=float, default=0.05,
                   help="voicing threshold of crepe / rmvpe / fcpe, 0..1")
    # Additions of this implementation
    p.add_argument("--half", action="store_true", default=False, help="float16 synthesis (CUDA only)")
    p.add_argument("--spk_mix_file", type=str, default="spkmix.py", help="speaker-mix track for -usm")
    p.add_argument("--max_chunk_seconds", type=float, default=60.0,
                   help="split voiced stretches longer than this at their quietest point (0 = never)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from inference.memory import bound_native_memory

    bound_native_memory()  # before torch runs anything (see inference/memory.py)

    from modules.errors import SvcError

    if not args.clean_names:
        raise SvcError("no input given: pass -n FILE [FILE ...] (names inside raw/ or paths)")

    from pathlib import Path

    from inference.batch import Job, check_wav_format, convert_files, resolve_input

    check_wav_format(args.wav_format)
    from inference.components import f0_predictor_names

    if args.f0_predictor not in f0_predictor_names():
        raise SvcError(f"unknown f0 predictor {args.f0_predictor!r}; choose one of: {', '.join(f0_predictor_names())}")
    for name in args.clean_names:
        resolve_input(name)
    if args.cluster_infer_ratio != 0:
        if args.cluster_model_path == "":
            args.cluster_model_path = ("logs/44k/feature_and_index.pkl" if args.feature_retrieval
                                       else "logs/44k/kmeans_10000.pt")
        if not Path(args.cluster_model_path).is_file():
            raise SvcError(f"{args.cluster_model_path}: {'feature index' if args.feature_retrieval else 'k-means model'} "
                           "not found; pass it with -cm, or set -cr 0")
    else:
        args.cluster_model_path = ""

    use_spk_mix = args.use_spk_mix
    speakers = args.spk_list
    if use_spk_mix:
        from inference.spk_mix import load_spk_mix_map

        mix_file = Path(args.spk_mix_file)
        if not mix_file.is_file() and not mix_file.is_absolute():
            mix_file = Path(__file__).resolve().parent / args.spk_mix_file
        spk_mix_map = load_spk_mix_map(mix_file)
        if len(spk_mix_map) <= 1:
            use_spk_mix = False  # 4.1: a one-entry map means no mixing
            if not speakers:
                raise SvcError(f"{mix_file} has only one speaker, so -usm does nothing; give the speaker with -s")
        else:
            speakers = [spk_mix_map]
    if not use_spk_mix and not speakers:
        hint = ""
        if not args.only_diffusion and Path(args.config_path).is_file():
            from modules.hparams import get_hparams_from_file

            spk = get_hparams_from_file(args.config_path, infer_mode=True).get("spk") or {}
            hint = f"; this model's speakers: {', '.join(spk) or '(none)'}"
        raise SvcError("no speaker given: pass -s NAME [NAME ...]" + hint)

    from inference.infer_tool import Svc

    svc = Svc(args.model_path, args.config_path, device=args.device, cluster_model_path=args.cluster_model_path,
              nsf_hifigan_enhance=args.enhance, diffusion_model_path=args.diffusion_model_path,
              diffusion_config_path=args.diffusion_config_path, shallow_diffusion=args.shallow_diffusion,
              only_diffusion=args.only_diffusion, spk_mix_enable=use_spk_mix,
              feature_retrieval=args.feature_retrieval, half=args.half)
    if not use_spk_mix:
        for spk in speakers:
            svc.speaker_id(spk)
    options = dict(slice_db=args.slice_db, cluster_infer_ratio=args.cluster_infer_ratio,
                   auto_predict_f0=args.auto_predict_f0, noice_scale=args.noice_scale, pad_seconds=args.pad_seconds,
                   clip_seconds=args.clip, lg_num=args.linear_gradient, lgr_num=args.linear_gradient_retain,
                   f0_predictor=args.f0_predictor, enhancer_adaptive_key=args.enhancer_adaptive_key,
                   cr_threshold=args.f0_filter_threshold, k_step=args.k_step, second_encoding=args.second_encoding,
                   loudness_envelope_adjustment=args.loudness_envelope_adjustment,
                   max_chunk_seconds=args.max_chunk_seconds)
    job = Job(inputs=args.clean_names, trans=args.trans, speakers=speakers, options=options,
              wav_format=args.wav_format, use_spk_mix=use_spk_mix)
    convert_files(svc, job)
    return 0


if __name__ == "__main__":
    from inference.memory import exec_with_huge_pages

    exec_with_huge_pages()  # once, before any work: faster bounded memory (see inference/memory.py)
    sys.exit(run_main(main))
