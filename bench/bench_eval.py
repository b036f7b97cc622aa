"""Speed of the evaluation metrics: seconds per minute of audio, and the training-time overhead.

    .venv/bin/python bench/bench_eval.py [--seconds 60] [--threads 1] [--f0p fcpe] [--train-step]
        [--val-items 2] [--val-seconds 10] [--eval-interval 800]

Part 1, ``evaluate.py``'s full metric set: a synthetic sung source of ``--seconds`` at 44.1 kHz, a
converted file (the same clip 2 semitones up), three 10 s target references; models loaded and
warmed up first, then ``evaluation.runner.evaluate`` timed (reading, resampling, F0 of both files,
loudness, three speaker embeddings, metrics). Reported per minute of converted audio, plus
where the time goes (one file's F0, one file's embedding).

Part 2, the training-time scores: ``score_validation`` on ``--val-items`` (real, generated)
pairs of ``--val-seconds`` at 44.1 kHz (the real clips' analyses cached after the first pass, as
in a run), per validation pass. With ``--train-step`` the 4.1 default training step
(``training.loop.train_step``, bench/bench_train.py's batch) is timed in the same process, and the
overhead of scoring once every ``--eval-interval`` steps is printed as a share of training time.

Part 3, ``--webui``: the web UI's result panel against the conversion it follows. A full-size
random-weight model (bench/bench_infer.py's: vec768l12 at real size, 4.1 default synthesizer)
converts bench_infer's 60 s synthetic song with the web UI's defaults (``webui.callbacks.convert_file``);
then ``webui.scores.result_panel`` is timed on that result with the score models already loaded:
spectrogram only (score off), and spectrogram + scores with three 10 s target references, for
each ``--panel-f0p`` predictor: for a new input (input analysis and reference embedding not
cached; the references are still embedded, as on a page's first conversion for a speaker) and
for the same input converted again (both cached).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench", ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from eval_helpers import sung  # noqa: E402
from evaluation.analysis import ANALYSIS_SR, Analyzer, load_for_analysis  # noqa: E402
from evaluation.runner import EvalOptions, EvalPair, evaluate  # noqa: E402
from evaluation.speaker import embed_utterance  # noqa: E402
from evaluation.training import ValidationHook, ValidationScorer, score_validation  # noqa: E402
from modules.audio import resample, save_audio  # noqa: E402

SR = 44100
DATA = {"sampling_rate": SR, "filter_length": 2048, "hop_length": 512, "win_length": 2048, "n_mel_channels": 80,
        "mel_fmin": 0.0, "mel_fmax": 22050}


def timed(fn, repeat: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of ``fn()`` over ``repeat`` calls."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def clip44k(seconds: float, **kw) -> np.ndarray:
    return resample(sung(seconds, **kw), 32000, SR)


def bench_cli(args, tmp: Path) -> None:
    src, conv = tmp / "src.wav", tmp / "conv.wav"
    save_audio(src, clip44k(args.seconds, seed=1), SR)
    save_audio(conv, clip44k(args.seconds, seed=1, semitones=2), SR)
    refs = []
    for i in range(3):
        refs.append(tmp / f"ref{i}.wav")
        save_audio(refs[-1], clip44k(10.0, voice="baritone", seed=20 + i), SR)
    options = EvalOptions(pairs=(EvalPair(src, conv, 2.0),), target_refs=tuple(refs), f0_predictor=args.f0p,
                          device="cpu")
    evaluate(options)  # loads and warms up the models
    wall, cpu = timed(lambda: evaluate(options), args.repeat)
    minutes = args.seconds / 60
    print(f"evaluate(): {args.seconds:.0f} s pair + 3 × 10 s refs, {args.f0p}: {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"→ {wall / minutes:.2f} s wall / {cpu / minutes:.2f} s CPU per minute of converted audio")
    analyzer = Analyzer(f0_predictor=args.f0p, device="cpu")
    wav = load_for_analysis(conv)
    w_load, _ = timed(lambda: load_for_analysis(conv), args.repeat)
    w_f0, c_f0 = timed(lambda: analyzer.f0.compute_f0_uv(wav), args.repeat)
    w_spk, c_spk = timed(lambda: embed_utterance(analyzer.encoder, wav), args.repeat)
    print(f"  per file and minute: read + resample to {ANALYSIS_SR} Hz {w_load / minutes:.2f} s, F0 {w_f0 / minutes:.2f} s "
          f"wall ({c_f0 / minutes:.2f} CPU), speaker embedding {w_spk / minutes:.2f} s wall ({c_spk / minutes:.2f} CPU)")


def bench_training(args) -> None:
    items = []
    for i in range(args.val_items):
        real = torch.from_numpy(clip44k(args.val_seconds, seed=40 + i))
        gen = torch.from_numpy(clip44k(args.val_seconds, seed=40 + i, semitones=0.3))
        items.append((real[None, None], gen[None, None], i % 2))
    scorer = ValidationScorer(DATA, f0_predictor=args.f0p, device="cpu")
    score_validation(items, DATA, scorer=scorer)  # first pass: models warm, real clips analysed and cached
    wall, cpu = timed(lambda: score_validation(items, DATA, scorer=scorer), args.repeat)
    print(f"score_validation(): {args.val_items} items × {args.val_seconds:.0f} s: {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"per validation pass ({wall / args.val_items:.2f} s wall per item)")
    # what train.py runs per pass: the hook (scores + val/* scalars + best.json)
    with tempfile.TemporaryDirectory() as tmp:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(tmp)
        hook = ValidationHook(DATA, tmp, device="cpu")
        hook.scorer = scorer
        steps = iter(range(0, 10**9, args.eval_interval))
        wall, cpu = timed(lambda: hook(items, next(steps), writer=writer), args.repeat)
        writer.close()
    print(f"ValidationHook (train.py's call: scores, val/* scalars, best.json): {wall:.2f} s wall, {cpu:.2f} s CPU "
          "per validation pass")
    if not args.train_step:
        return
    import bench_train
    import training.loop as loop
    from modules.hparams import get_hparams_from_file

    hps = get_hparams_from_file(str(ROOT / "configs/config_template.json"))
    hps.train.segment_size = 10240
    device = torch.device("cpu")
    state = bench_train.make_state(hps, device, loop.Precision("cpu"), "ours")
    batch = bench_train.make_batch(hps, [96, 80], device)
    loop.train_step(state, batch)  # warm-up
    s_wall, s_cpu = timed(lambda: loop.train_step(state, batch), args.steps)
    # interleave one more scoring pass after the steps, so both saw similar load
    e_wall, e_cpu = timed(lambda: score_validation(items, DATA, scorer=scorer), 1)
    e_wall, e_cpu = min(e_wall, wall), min(e_cpu, cpu)
    span_wall, span_cpu = args.eval_interval * s_wall, args.eval_interval * s_cpu
    print(f"train_step (4.1 default config, batch 2, CPU): {s_wall:.2f} s wall, {s_cpu:.2f} s CPU per step")
    print(f"overhead of scoring every {args.eval_interval} steps: {100 * e_wall / span_wall:.3f} % wall, "
          f"{100 * e_cpu / span_cpu:.3f} % CPU of the training time")


def bench_webui(args, tmp: Path) -> None:
    import os

    import bench_infer
    from webui import callbacks as cb
    from webui.scores import ConversionScorer, result_panel

    files = bench_infer.prepare(Path(os.environ.get("SVC_BENCH_DIR", "/tmp/svc_bench_infer")))
    os.environ["SVC_PRETRAIN_DIR"] = files["pretrain"]
    svc, _ = cb.load_model(model_path=files["g"], config_path=files["config"], device="cpu")
    song = files["songs"][60]
    options = cb.web_defaults()
    short = tmp / "short.wav"
    save_audio(short, clip44k(3.0, seed=5), SR)
    cb.convert_file(svc, short, "a", options, results_dir=tmp)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    result = cb.convert_file(svc, song, "a", options, results_dir=tmp)
    conv_wall, conv_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"web UI conversion of the 60 s song (defaults: f0 {options.f0_predictor}, full-size random model, CPU): "
          f"{conv_wall:.1f} s wall, {conv_cpu:.1f} s CPU")
    refs = tmp / "refs"
    refs.mkdir()
    for i in range(3):
        save_audio(refs / f"{i}.wav", clip44k(10.0, voice="baritone", seed=20 + i), SR)
    wall, cpu = timed(lambda: result_panel(song, result.path, speaker="a", score=False), args.repeat)
    print(f"  spectrogram only: {wall:.2f} s wall, {cpu:.2f} s CPU = {100 * cpu / conv_cpu:.1f} % of the "
          "conversion's CPU")
    for f0p in args.panel_f0p:
        scorer = ConversionScorer(f0_predictor=f0p)
        run = lambda: result_panel(song, result.path, speaker="a", score=True, scorer=scorer,  # noqa: E731
                                   uploads=[refs], device="cpu")
        run()  # loads the score models and embeds the references once, as the page's first scored conversion
        wall, cpu = timed(lambda: (scorer.clear_cache(), run()), args.repeat)
        print(f"  spectrogram + scores (f0 {f0p}), new input: {wall:.2f} s wall, {cpu:.2f} s CPU = "
              f"{100 * cpu / conv_cpu:.1f} % of the conversion's CPU ({100 * wall / conv_wall:.1f} % wall)")
        run()  # references embedded again after the clear
        wall, cpu = timed(run, args.repeat)
        print(f"  spectrogram + scores (f0 {f0p}), same input converted again: {wall:.2f} s wall, {cpu:.2f} s CPU = "
              f"{100 * cpu / conv_cpu:.1f} % of the conversion's CPU ({100 * wall / conv_wall:.1f} % wall)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the evaluated pair (s)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--f0p", default="fcpe")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--val-items", type=int, default=2, help="validation clips (4.1: 2 per speaker)")
    p.add_argument("--val-seconds", type=float, default=10.0)
    p.add_argument("--eval-interval", type=int, default=800, help="4.1's default eval_interval")
    p.add_argument("--train-step", action="store_true", help="also time a training step (≈3 GB RAM)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps")
    p.add_argument("--train-only", action="store_true", help="skip part 1 (evaluate.py's metric set)")
    p.add_argument("--webui", action="store_true", help="only part 3: the web UI's result panel vs its conversion")
    p.add_argument("--panel-f0p", nargs="+", default=["fcpe", "pm"], help="part 3: pitch trackers to time")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.webui:
        with tempfile.TemporaryDirectory() as tmp:
            bench_webui(args, Path(tmp))
        return 0
    print(f"{args.threads} thread(s), CPU, F0 predictor {args.f0p}")
    if not args.train_only:
        with tempfile.TemporaryDirectory() as tmp:
            bench_cli(args, Path(tmp))
    bench_training(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
