"""The end-to-end demo behind ``demo.py`` / ``make demo``: the real numbered scripts on synthetic singing.

Everything happens inside ``--out`` (default ``demo_out/``), laid out as 4.1 expects a project to be,
so the scripts run with their default relative paths and the user's own ``dataset/``, ``logs/``,
``configs/`` are never touched::

    demo_out/
      .svc-demo                 marks the folder as the demo's (a re-run may clear it)
      pretrain/                 random-weight encoder, kept between runs (only without the real file)
      work/                     the project-like folder the scripts run in (cwd)
        dataset_raw/<singer>/   generated clips (32 kHz)     → resample.py
        dataset/44k/<singer>/   44.1 kHz wavs + features     → preprocess_flist_config.py, preprocess_hubert_f0.py
        filelists/ configs/     lists, config.json           → train.py
        logs/44k/               G_/D_ checkpoints, k-means, index
        raw/heldout.wav         the clip to convert (never trained on) → inference_main.py
        results/                converted files
      logs/<nn>_<stage>.log     output of each script
      input.wav converted.wav   the held-out clip and its conversion (model rate)
      spectrogram.png           log-mel of input vs output
      report.md report.json     times per stage (wall and CPU), paths, settings

Each script runs as its own process (``python <script> ...`` with cwd = ``work/``), as a user
would run it. Without ``pretrain/checkpoint_best_legacy_500.pt`` the speech encoder is a randomly
initialised ContentVec of the real architecture: the run then shows that the pipeline works, not
what a trained voice sounds like, and the log and report say so.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from modules.errors import SvcError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent   # the project (where the numbered scripts live)
MARKER = ".svc-demo"
MODEL_NAME = "44k"                               # train.py -m: checkpoints in logs/44k (4.1's default)
SPEECH_ENCODER = "vec768l12"
F0_PREDICTOR = "fcpe"                            # works without downloads (weights in the torchfcpe wheel)
SOURCE_VOICE, TARGET_VOICE = "alto", "baritone"  # the held-out clip is sung by the first, converted to the second
HELDOUT_NAME = "heldout.wav"


class DemoError(SvcError):
    """A demo stage failed; the message names the stage and its log file."""


# --- settings ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoSettings:
    """What one demo run does. ``full_form()`` and ``quick_form()`` give the two standard forms."""

    out: Path
    steps: int                  # training steps (train.py --max_steps)
    clips_per_speaker: int
    clip_seconds: float
    heldout_seconds: float
    batch_size: int
    encoder_size: str           # size of the random encoder when the real one is missing: "full" or "tiny"
    n_clusters: int             # k-means centres per speaker (4.1's 10000 needs far more frames)
    segment_size: int = 5120    # training crop in samples (the tiny template's 10240 doubles the step cost)
    skip_cluster: bool = False
    quick: bool = False
    threads: int | None = None  # OMP_NUM_THREADS for the scripts (None: PyTorch's default, one per core)
    seed: int = 0
    verbose: bool = False       # also stream every script's output to the console
    log_interval: int = 10      # train.py log line (and progress-bar update) every this many steps
    # Output weights of the random encoder's attention / feed-forward branches are scaled by this:
    # a deep random transformer otherwise gives nearly the same vector for every frame (see
    # vencoder.hubert.fairseq_hubert_state_dict), and clustering / retrieval would have nothing to act on.
    residual_scale: float = 0.2

    @property
    def score_f0_predictor(self) -> str:
        """F0 predictor of the scores (evaluate.py's): the conversion's own, pm in the quick form (cheap)."""
        return "pm" if self.quick else F0_PREDICTOR

    @property
    def extra_conversions(self) -> bool:
        """Also convert with k-means and with feature retrieval (not in the quick form)."""
        return not self.skip_cluster and not self.quick

    @classmethod
    def full_form(cls, out: Path, **overrides: Any) -> "DemoSettings":
        """``make demo``: 2 × 20 clips of about 2.5 s (100 s of singing), 120 steps of batch 2.

        Short clips keep a step cheap (the text/posterior encoders and the flow run over whole
        clips): a step costs about 2.5 CPU-seconds, so the whole run takes about 400 CPU-seconds,
        under 8 minutes on an idle 2-core machine (docs/bench/demo.md).
        """
        return replace(cls(out=Path(out), steps=120, clips_per_speaker=20, clip_seconds=2.5, heldout_seconds=10.0,
                           batch_size=2, encoder_size="full", n_clusters=64), **overrides)

    @classmethod
    def quick_form(cls, out: Path, **overrides: Any) -> "DemoSettings":
        """The CI form: 2 × 3 short clips, a few steps, a tiny random encoder, one thread per script
        (tiny models gain nothing from more, and a busy machine makes them much slower)."""
        return replace(cls(out=Path(out), steps=2, clips_per_speaker=3, clip_seconds=2.5, heldout_seconds=3.0,
                           batch_size=2, encoder_size="tiny", n_clusters=8, quick=True, threads=1), **overrides)

    def check(self) -> None:
        if self.steps < 1:
            raise SvcError(f"--steps must be at least 1, got {self.steps}")
        if self.clips_per_speaker < 3:
            # preprocess_flist_config.py keeps 2 clips per speaker for validation
            raise SvcError(f"need at least 3 clips per speaker (2 go to validation), got {self.clips_per_speaker}")
        if self.threads is not None and self.threads < 1:
            raise SvcError(f"--threads must be at least 1, got {self.threads}")
        if self.segment_size < 512 or self.segment_size % 512:
            raise SvcError(f"segment size must be a positive multiple of the hop 512, got {self.segment_size}")
        if self.encoder_size not in ("full", "tiny"):
            raise SvcError(f"encoder size must be 'full' or 'tiny', got {self.encoder_size!r}")


# --- running stages ---------------------------------------------------------------------------------
@dataclass
class Stage:
    """One timed step of the demo: a script run or in-process work."""

    name: str
    wall_s: float
    cpu_s: float | None         # CPU seconds (user + system) of the script and its children (None: unknown)
    command: list[str] | None = None
    log: str | None = None


def _children_cpu() -> float | None:
    """CPU seconds of the finished child processes (None where the OS does not say: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


@dataclass
class Runner:
    """Runs scripts in ``work`` (cwd) with ``env``, one log file per stage, and times every stage."""

    work: Path
    log_dir: Path
    env: dict[str, str]
    verbose: bool = False
    stages: list[Stage] = field(default_factory=list)

    def script(self, name: str, script: str, *args: str, on_line: Callable[[str], None] | None = None,
               banner: str | None = None) -> Stage:
        """``python <ROOT>/<script> args...`` in ``work``; raises DemoError on a non-zero exit.

        ``on_line`` sees every output line as it arrives (progress bars); ``banner`` is written into
        the stage's log file before the script's own output.
        """
        cmd = [sys.executable, str(ROOT / script), *map(str, args)]
        shown = ["python", script, *map(str, args)]
        log_path = self.log_dir / f"{len(self.stages) + 1:02d}_{name}.log"
        log.info("[%s] %s", name, " ".join(shown))
        t0, c0 = time.perf_counter(), _children_cpu()
        pending = b""
        with open(log_path, "wb") as fh:
            fh.write(("$ cd " + str(self.work) + "\n$ " + " ".join(shown) + "\n").encode())
            if banner:
                fh.write((banner + "\n").encode())
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=self.work, env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.read1(4096), b""):
                fh.write(chunk)
                fh.flush()  # the log file shows progress while a long stage runs
                if self.verbose:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()
                if on_line is not None:
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        on_line(line.decode(errors="replace"))
            code = proc.wait()
        cpu = _minus(_children_cpu(), c0)
        stage = Stage(name, round(time.perf_counter() - t0, 2), None if cpu is None else round(cpu, 2), shown,
                      str(log_path))
        self.stages.append(stage)
        if code != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
            raise DemoError(f"stage '{name}' failed: `{' '.join(shown)}` exited with status {code} (run in "
                            f"{self.work}; full output in {log_path}). Last lines:\n  " + "\n  ".join(tail))
        log.info("[%s] done in %.1f s%s", name, stage.wall_s,
                 "" if stage.cpu_s is None else f" (CPU {stage.cpu_s:.1f} s)")
        return stage

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` in this process as a timed stage; returns its result."""
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        stage = Stage(name, round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2))
        self.stages.append(stage)
        log.info("[%s] done in %.1f s", name, stage.wall_s)
        return result


class TrainProgress:
    """A progress bar (step, losses, ETA) fed by train.py's "step N: loss_disc …" log lines.

    train.py logs every ``log_interval`` steps (the demo sets 10), so the bar moves in such steps;
    its rate and ETA come from them. Call :meth:`close` when the script ends.
    """

    LINE = re.compile(r"\bstep (\d+): loss_disc ([-\d.naif]+), loss_gen ([-\d.naif]+), loss_fm [-\d.naif]+, "
                      r"loss_mel ([-\d.naif]+)")

    def __init__(self, steps: int, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None              # made on the first output line, below the stage's log line
        self.last: dict[str, float] = {}
        self.total = steps + 1            # steps 0 … steps run (train.py stops after step --max_steps)
        self.done = 0                     # steps finished as far as the log says

    def _bar(self) -> Any:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc="train", unit="step", disable=not self.enabled,
                            dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}]{postfix}")
        return self.bar

    def __call__(self, line: str) -> None:
        bar = self._bar()
        m = self.LINE.search(line)
        if not m:
            return
        step = int(m.group(1))
        self.last = {"step": step, "loss_disc": float(m.group(2)), "loss_gen": float(m.group(3)),
                     "loss_mel": float(m.group(4))}
        done = min(step + 1, self.total)
        bar.update(done - self.done)
        self.done = done
        bar.set_postfix_str(f"mel {self.last['loss_mel']:.2f}, gen {self.last['loss_gen']:.2f}, "
                                 f"disc {self.last['loss_disc']:.2f}")

    def close(self, *, complete: bool = False) -> None:
        """End the bar; ``complete``: the script succeeded, so every step ran (the last ones may
        not have been logged). Safe to call twice."""
        if complete:
            self._bar().update(self.total - self.done)
            self.done = self.total
        if self.bar is not None:
            self.bar.close()


# --- the output folder ------------------------------------------------------------------------------
def prepare_out(out: Path) -> None:
    """Create ``out`` or clear a previous demo run there (never a folder the demo did not make).

    The random encoder in ``out/pretrain`` is kept: writing the full-size one takes a while.
    """
    if out.exists() and not out.is_dir():
        raise SvcError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SvcError(f"--out {out} is not empty and was not made by the demo (no {MARKER} file in it); "
                       "choose another folder or empty it")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by demo.py; a new demo run clears this folder (except pretrain/)\n")
    for child in out.iterdir():
        if child.name in (MARKER, "pretrain"):
            continue
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def real_encoder_path() -> Path:
    """Where the user's real ContentVec file would be: ``$SVC_PRETRAIN_DIR`` or the project's pretrain/."""
    from modules.pretrained import PRETRAINED

    base = Path(os.environ.get("SVC_PRETRAIN_DIR", "pretrain"))
    if not base.is_absolute():
        base = ROOT / base
    return base / PRETRAINED[SPEECH_ENCODER].filename


def prepare_encoder(settings: DemoSettings) -> tuple[Path, bool]:
    """→ (pretrain folder to use, whether the encoder is random). Writes the random one if needed.

    The random file carries the random-weight marker inside (``modules.checkpoint.RANDOM_WEIGHTS_KEY``),
    so every stage that loads it warns, wherever it is copied. ``random_encoder.json`` beside it only
    records how it was made, so a later run with the same settings reuses it (writing the full-size
    one takes a while).
    """
    real = real_encoder_path()
    if real.is_file():
        log.info("Using the real speech encoder %s", real)
        return real.parent, False
    import vencoder

    folder = (settings.out / "pretrain").resolve()
    path = folder / real.name
    recipe_path = folder / "random_encoder.json"
    recipe = {"encoder": SPEECH_ENCODER, "size": settings.encoder_size, "seed": settings.seed,
              "residual_scale": settings.residual_scale}
    log.warning("%s not found: the demo uses a RANDOMLY INITIALISED %s encoder (%s size). The result shows that "
                "the pipeline works, NOT voice quality. For a meaningful conversion put the real file there "
                "(python download_pretrain.py %s).", real, SPEECH_ENCODER, settings.encoder_size, SPEECH_ENCODER)
    try:
        same = path.is_file() and json.loads(recipe_path.read_text(encoding="utf-8")) == recipe
    except (OSError, ValueError):
        same = False
    if not same:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"{real.name}.*-random"):   # the sidecar markers of earlier versions
            old.unlink()
        vencoder.make_random_checkpoint(SPEECH_ENCODER, path, size=settings.encoder_size, seed=settings.seed,
                                        residual_scale=settings.residual_scale)
        recipe_path.write_text(json.dumps(recipe) + "\n", encoding="utf-8")
    return folder, True


def edit_config(path: Path, settings: DemoSettings, unit_dim: int) -> dict[str, Any]:
    """Adjust the generated config.json for a short CPU run, as a user would; returns the edits."""
    from modules.hparams import save_config

    cfg = json.loads(path.read_text(encoding="utf-8"))
    edits = {
        "train.batch_size": settings.batch_size,
        "train.segment_size": settings.segment_size,
        "train.log_interval": settings.log_interval,  # the progress bar moves with train.py's log lines
        "train.eval_interval": settings.steps,   # evaluate and save once, at the end
        "train.all_in_mem": True,                # small dataset: no DataLoader worker processes
        "train.keep_ckpts": 2,
    }
    if cfg["model"]["ssl_dim"] != unit_dim:      # the tiny random encoder is narrower than ContentVec
        edits["model.ssl_dim"] = unit_dim
    for key, value in edits.items():
        section, name = key.split(".")
        cfg[section][name] = value
    save_config(cfg, path)
    return edits


def encoder_dim(pretrain: Path, random_encoder: bool) -> int:
    """Output width of the speech encoder: the registry's (768) for real weights; for a random file
    the width it was written with (the tiny one is narrower)."""
    import vencoder

    if not random_encoder:
        return int(vencoder.get_spec(SPEECH_ENCODER).dim)
    from vencoder.files import load_encoder_file, plain

    ckpt = load_encoder_file(pretrain / real_encoder_path().name, what="ContentVec checkpoint", mmap=True)
    return int(plain(ckpt["cfg"])["model"]["encoder_embed_dim"])


# --- the run ------------------------------------------------------------------------------------------
def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """Run every stage; returns the report (also written to ``out/report.json`` and ``report.md``)."""
    from modules.checkpoint import latest_checkpoint_path
    from tools import synth_voice

    settings.check()
    out = settings.out.resolve()
    settings = replace(settings, out=out)
    t_start, cpu_start, children_start = time.perf_counter(), time.process_time(), _children_cpu()
    prepare_out(out)
    work, log_dir = out / "work", out / "logs"
    work.mkdir()
    log_dir.mkdir()
    source, target = synth_voice.get_voice(SOURCE_VOICE), synth_voice.get_voice(TARGET_VOICE)
    runner = Runner(work, log_dir, dict(os.environ), verbose=settings.verbose)

    def make_data() -> dict[str, Any]:
        clips = synth_voice.write_dataset(work / "dataset_raw", clips_per_speaker=settings.clips_per_speaker,
                                          clip_seconds=settings.clip_seconds, seed=settings.seed)
        held = synth_voice.write_heldout(work / "raw" / HELDOUT_NAME, source, settings.heldout_seconds,
                                         seed=settings.seed)
        import soundfile as sf

        seconds = sum(sf.info(str(p)).duration for ps in clips.values() for p in ps)
        return {"speakers": sorted(clips), "clips": sum(map(len, clips.values())), "seconds": round(seconds, 1),
                "raw_rate": synth_voice.RAW_SR, "heldout": str(held), "heldout_voice": source.name}

    dataset = runner.step("dataset", make_data)
    log.info("Synthetic dataset: %d clips, %.1f s of singing by %s", dataset["clips"], dataset["seconds"],
             " and ".join(dataset["speakers"]))
    pretrain, random_encoder = runner.step("encoder", lambda: prepare_encoder(settings))
    runner.env["SVC_PRETRAIN_DIR"] = str(pretrain)
    if settings.threads is not None:
        runner.env["OMP_NUM_THREADS"] = runner.env["MKL_NUM_THREADS"] = str(settings.threads)
    # Idle OpenMP threads sleep instead of spinning: with spinning, any other load on the machine
    # makes multi-threaded steps many times slower (docs/bench/demo.md). A user's setting wins.
    runner.env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    runner.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

    runner.script("resample", "resample.py")
    runner.script("flist_config", "preprocess_flist_config.py", "--tiny", "--speech_encoder", SPEECH_ENCODER)
    edits = edit_config(work / "configs" / "config.json", settings, encoder_dim(pretrain, random_encoder))
    runner.script("hubert_f0", "preprocess_hubert_f0.py", "--f0_predictor", F0_PREDICTOR)
    if random_encoder:  # train.py appends to its train.log: the warning stays at its top
        (work / "logs" / MODEL_NAME).mkdir(parents=True, exist_ok=True)
        with open(work / "logs" / MODEL_NAME / "train.log", "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} WARNING demo.py: {NOTE_RANDOM}\n")
    progress = TrainProgress(settings.steps, enabled=not settings.verbose)
    try:
        runner.script("train", "train.py", "-c", "configs/config.json", "-m", MODEL_NAME,
                      "--max_steps", str(settings.steps), on_line=progress,
                      banner=f"WARNING (demo.py): {NOTE_RANDOM}" if random_encoder else None)
        progress.close(complete=True)
    finally:
        progress.close()
    model_dir = work / "logs" / MODEL_NAME
    g_path = latest_checkpoint_path(model_dir, "G_*.pth")
    if g_path is None:
        raise DemoError(f"train.py finished but wrote no G_*.pth in {model_dir}; see {runner.stages[-1].log}")
    g_rel = os.path.relpath(g_path, work)
    kmeans = index = None
    if not settings.skip_cluster:
        runner.script("cluster", "cluster/train_cluster.py", "--dataset", "dataset/44k",
                      "--output", f"logs/{MODEL_NAME}", "--n_clusters", str(settings.n_clusters))
        kmeans = f"logs/{MODEL_NAME}/kmeans_{settings.n_clusters}.pt"
        runner.script("index", "train_index.py", "--root_dir", "dataset/44k", "-c", "configs/config.json",
                      "--output_dir", f"logs/{MODEL_NAME}")
        index = f"logs/{MODEL_NAME}/feature_and_index.pkl"

    trans = synth_voice.transpose_semitones(source, target)
    infer = ["-m", g_rel, "-c", f"logs/{MODEL_NAME}/config.json", "-n", HELDOUT_NAME, "-t", str(trans),
             "-s", target.name, "-f0p", F0_PREDICTOR, "-wf", "wav"]
    runner.script("infer", "inference_main.py", *infer)
    from inference.batch import output_name

    def result(ratio: float, feature_retrieval: bool = False) -> Path:
        return work / "results" / output_name(HELDOUT_NAME, tran=trans, spk=target.name, cluster_infer_ratio=ratio,
                                              auto_predict_f0=False, shallow_diffusion=False, only_diffusion=False,
                                              f0_predictor=F0_PREDICTOR, wav_format="wav",
                                              feature_retrieval=feature_retrieval)

    shutil.copyfile(result(0), out / "converted.wav")
    converted = {"sovits": out / "converted.wav"}
    if settings.extra_conversions:
        runner.script("infer_kmeans", "inference_main.py", *infer, "-cm", kmeans, "-cr", "0.5")
        converted["kmeans_0.5"] = out / "converted_kmeans.wav"
        shutil.copyfile(result(0.5), converted["kmeans_0.5"])
        runner.script("infer_index", "inference_main.py", *infer, "-fr", "-cm", index, "-cr", "0.5")
        converted["index_0.5"] = out / "converted_index.wav"
        shutil.copyfile(result(0.5, feature_retrieval=True), converted["index_0.5"])
    plot = runner.step("plot", lambda: write_plot(out, work, settings, random_encoder))
    curve = write_loss_curve(out, work / "logs" / MODEL_NAME, random_encoder)
    analysis = analyse_outputs(out / "input.wav", converted, work / "raw" / HELDOUT_NAME)
    scores = runner.step("scores", lambda: score_conversions(
        out / "input.wav", converted, trans, sorted((work / "dataset" / "44k" / target.name).glob("*.wav")),
        settings.score_f0_predictor))
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "encoder": {"name": SPEECH_ENCODER, "random": random_encoder,
                    "path": str(pretrain / real_encoder_path().name),
                    "size": settings.encoder_size if random_encoder else "full"},
        "note": (NOTE_RANDOM if random_encoder else NOTE_REAL),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "dataset": dataset,
        "config_edits": edits,
        "training": {"steps": settings.steps, "checkpoint": g_path, "last_logged": progress.last,
                     "loss_curve": curve},
        "analysis": analysis,
        "scores": scores,
        "conversion": {"input_voice": source.name, "target_speaker": target.name, "transpose": trans,
                       "f0_predictor": F0_PREDICTOR, **plot["lengths"]},
        "outputs": {"input": str(out / "input.wav"), **{f"converted_{k}": str(v) for k, v in converted.items()},
                    "spectrogram": str(out / "spectrogram.png"),
                    **({"loss_curve": str(out / "loss_curve.png")} if curve else {}),
                    "report_md": str(out / "report.md"),
                    "work": str(work), "logs": str(log_dir)},
        "stages": [asdict(s) for s in runner.stages],
        "total": {"wall_s": round(time.perf_counter() - t_start, 1), "cpu_s": _total_cpu(cpu_start, children_start)},
    }
    write_report(out, report)
    log.info("Demo finished in %.0f s (CPU %s s). Converted: %s; plot: %s; report: %s", report["total"]["wall_s"],
             _fmt(report["total"]["cpu_s"]), out / "converted.wav", out / "spectrogram.png", out / "report.md")
    if random_encoder:
        log.warning(NOTE_RANDOM)
    return report


def _total_cpu(own_start: float, children_start: float | None) -> float | None:
    children = _minus(_children_cpu(), children_start)
    return None if children is None else round(time.process_time() - own_start + children, 1)


def _fmt(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds:.1f}"


NOTE_RANDOM = ("The speech encoder had random weights (pretrain/checkpoint_best_legacy_500.pt is missing), so this "
               "run demonstrates the pipeline, not voice quality.")
NOTE_REAL = "The real ContentVec encoder was used."


# --- plot and report ------------------------------------------------------------------------------------
def write_plot(out: Path, work: Path, settings: DemoSettings, random_encoder: bool) -> dict[str, Any]:
    """Save ``input.wav`` (the held-out clip at the model rate) and ``spectrogram.png`` (log-mel of the
    input and the conversion, same scale) → lengths in samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from modules.audio import load_audio, save_audio
    from modules.hparams import get_hparams_from_file
    from modules.mel_processing import mel_spectrogram_torch

    data = get_hparams_from_file(work / "logs" / MODEL_NAME / "config.json").data
    sr = int(data.sampling_rate)
    x, _ = load_audio(work / "raw" / HELDOUT_NAME, sr=sr)
    y, y_sr = load_audio(out / "converted.wav")
    if y_sr != sr:
        raise DemoError(f"{out / 'converted.wav'} is at {y_sr} Hz, the model rate is {sr} Hz")
    save_audio(out / "input.wav", x, sr, subtype="PCM_16")

    def logmel(a):
        m = mel_spectrogram_torch(torch.from_numpy(a)[None], data.filter_length, data.n_mel_channels, sr,
                                  data.hop_length, data.win_length, data.mel_fmin, data.mel_fmax)
        return m[0].numpy()

    mx, my = logmel(x), logmel(y)
    lo, hi = min(mx.min(), my.min()), max(mx.max(), my.max())
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for ax, m, title in ((axes[0], mx, f"input: held-out '{SOURCE_VOICE}' clip"),
                         (axes[1], my, f"output: converted to '{TARGET_VOICE}' after {settings.steps} steps")):
        t_end = m.shape[1] * data.hop_length / sr
        im = ax.imshow(m, origin="lower", aspect="auto", vmin=lo, vmax=hi, extent=(0, t_end, 0, m.shape[0]),
                       interpolation="nearest")
        ax.set_title(title)
        ax.set_ylabel("mel bin")
    axes[1].set_xlabel("time (s)")
    fig.colorbar(im, ax=axes, label="log mel magnitude")
    if random_encoder:
        fig.suptitle("random speech encoder: pipeline demo, not voice quality", color="darkred")
    fig.savefig(out / "spectrogram.png", dpi=100)
    plt.close(fig)
    return {"lengths": {"sample_rate": sr, "input_samples": int(len(x)), "output_samples": int(len(y))}}


LOSS_TAGS = {"loss/g/mel": "mel (L1 × c_mel)", "loss/g/kl": "KL", "loss/g/total": "generator total",
             "loss/d/total": "discriminator"}


def read_loss_scalars(model_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The training scalars of :data:`LOSS_TAGS` from the TensorBoard event files in ``model_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(model_dir), size_guidance={"scalars": 0, "images": 1, "audio": 1, "histograms": 1})
    acc.Reload()
    have = set(acc.Tags().get("scalars", []))
    return {tag: [(int(e.step), float(e.value)) for e in acc.Scalars(tag)] for tag in LOSS_TAGS if tag in have}


def write_loss_curve(out: Path, model_dir: Path, random_encoder: bool) -> dict[str, Any] | None:
    """``loss_curve.png`` from train.py's TensorBoard scalars → first/last value per loss (None: no data)."""
    try:
        series = read_loss_scalars(model_dir)
    except Exception as e:  # a damaged or missing event file must not fail the demo at the end
        log.warning("no loss curve: could not read the TensorBoard events in %s (%s)", model_dir, e)
        return None
    if not series:
        log.warning("no loss curve: train.py wrote no loss scalars in %s", model_dir)
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, tags in ((axes[0], ("loss/g/mel", "loss/g/kl")), (axes[1], ("loss/g/total", "loss/d/total"))):
        for tag in tags:
            if tag in series:
                steps, values = zip(*series[tag])
                ax.plot(steps, values, marker=".", label=LOSS_TAGS[tag])
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        ax.grid(alpha=0.3)
    title = "training losses (train.py's TensorBoard scalars)"
    if random_encoder:
        title += " — random speech encoder"
    fig.suptitle(title, color="darkred" if random_encoder else "black")
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png", dpi=100)
    plt.close(fig)
    return {tag: {"first": vals[0][1], "last": vals[-1][1], "first_step": vals[0][0], "last_step": vals[-1][0],
                  "points": len(vals)} for tag, vals in series.items()}


def analyse_outputs(input_wav: Path, converted: dict[str, Path], heldout: Path) -> dict[str, Any]:
    """Measure what the report states about the conversions (all at the model rate).

    * ``dc``: mean sample value of each file (a DC offset shows here);
    * ``difference_vs_plain``: RMS(y − y_plain) / RMS(y_plain − its mean) of the k-means / index conversions;
    * ``silence``: the chunks 4.1's slicer (-sd -40 dB, min 5 s) marks silent in the input, and the
      largest |sample| each output has inside them (inference writes zeros there).
    """
    import numpy as np

    from inference.slicer import slice_audio
    from modules.audio import load_audio

    x, sr = load_audio(input_wav)
    outs = {name: load_audio(path)[0] for name, path in converted.items()}
    raw, raw_sr = load_audio(heldout)
    chunks = [c for c in slice_audio(raw, raw_sr, -40, 5000) if c.silent]
    spans = [(-(-c.start * sr // raw_sr), min(len(x), -(-c.end * sr // raw_sr))) for c in chunks]

    def rms(a: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))

    # input frames (20 ms) quieter than the slicer's -40 dB that lie inside voiced slices: breaths, pauses
    hop = sr // 50
    n_frames = len(x) // hop
    quiet = np.sqrt(np.mean(np.square(x[:n_frames * hop].reshape(n_frames, hop)), axis=1)) < 10 ** (-40 / 20)
    for a, b in spans:
        quiet[a // hop:-(-b // hop)] = False

    def quiet_rms(y: np.ndarray) -> float | None:
        frames = y[:n_frames * hop].reshape(n_frames, hop)[quiet]
        return round(rms(frames), 5) if frames.size else None

    result: dict[str, Any] = {"dc": {"input": round(float(np.mean(x)), 5)},
                              "rms": {"input": round(rms(x), 5)}, "difference_vs_plain": {},
                              "silence": {"silent_chunks_s": [[round(a / sr, 3), round(b / sr, 3)] for a, b in spans],
                                          "max_abs_in_silent_chunks": {},
                                          "quiet_frames_in_slices_s": round(float(quiet.sum()) * hop / sr, 2),
                                          "rms_in_quiet_frames": {"input": quiet_rms(x)}}}
    plain = outs.get("sovits")
    for name, y in outs.items():
        result["dc"][name] = round(float(np.mean(y)), 5)
        result["rms"][name] = round(rms(y), 5)
        if plain is not None and name != "sovits" and len(y) == len(plain):
            # relative to the plain output's AC part: a DC offset must not make a difference look small
            result["difference_vs_plain"][name] = float(f"{rms(y - plain) / max(rms(plain - plain.mean()), 1e-12):.3g}")
        peak = max((float(np.max(np.abs(y[a:b]))) for a, b in spans if b > a), default=None)
        result["silence"]["max_abs_in_silent_chunks"][name] = peak
        result["silence"]["rms_in_quiet_frames"][name] = quiet_rms(y)
    return result


MAX_SCORE_REFS = 5  # target clips used as speaker references (more add time, hardly precision)


def score_conversions(source: Path, converted: dict[str, Path], transpose: int, target_clips: list[Path],
                      f0_predictor: str) -> dict[str, Any]:
    """evaluate.py's scores of each conversion against the held-out input ``source`` (model rate),
    with up to :data:`MAX_SCORE_REFS` of the target singer's clips as speaker references.

    Returns ``{"f0_predictor", "transpose", "target_refs": [paths], "pairs": {name: {metric: value}}}``
    (metric keys: ``evaluation.metrics.METRIC_KEYS``), or ``{"error": message}`` when scoring is not
    possible here (e.g. no speaker-encoder weights): the demo's other results stand without it.
    """
    from evaluation.runner import EvalOptions, EvalPair, evaluate

    refs = tuple(target_clips[:MAX_SCORE_REFS])
    names = list(converted)
    options = EvalOptions(pairs=tuple(EvalPair(source, converted[n], float(transpose)) for n in names),
                          target_refs=refs, f0_predictor=f0_predictor, device="cpu")
    try:
        report = evaluate(options)
    except SvcError as e:
        log.warning("the conversions were not scored: %s", e)
        return {"error": str(e)}
    from evaluation.metrics import METRIC_KEYS

    return {"f0_predictor": f0_predictor, "transpose": transpose, "target_refs": [str(p) for p in refs],
            "pairs": {n: {k: row[k] for k in METRIC_KEYS} for n, row in zip(names, report["pairs"])}}


SCORE_COLUMNS = {"f0_rmse_cents": "F0 RMSE (cents)", "f0_corr": "F0 corr", "vuv_f1": "V/UV F1",
                 "loudness_corr": "loudness corr", "spk_sim_target": "sim → target", "spk_sim_source": "sim → source",
                 "duration_ratio": "duration ratio"}


def _score_lines(scores: dict[str, Any], random_encoder: bool, steps: int) -> list[str]:
    """The report's "Scores" section."""
    lines = ["## Scores (evaluate.py)", ""]
    if "error" in scores:
        return lines + [f"Not computed: {scores['error']}", ""]
    lines += ["| file | " + " | ".join(SCORE_COLUMNS.values()) + " |", "|---|" + "---:|" * len(SCORE_COLUMNS)]
    for name, row in scores["pairs"].items():
        lines.append(f"| {name} | " + " | ".join("–" if row.get(k) is None else f"{row[k]:.1f}" if k == "f0_rmse_cents"
                                                  else f"{row[k]:.3f}" for k in SCORE_COLUMNS) + " |")
    lines += ["", f"Each conversion against the held-out input (`input.wav`, transposition {scores['transpose']:+d}), "
              f"f0 by {scores['f0_predictor']} on both sides; speaker similarity (Resemblyzer's encoder) against "
              f"{len(scores['target_refs'])} of the target singer's dataset clips (*sim → target*) and against the "
              "input (*sim → source*). Units and meaning: evaluation/metrics.py; the same numbers come from "
              "`python evaluate.py --source input.wav --converted <file> -t <transposition> --target_refs <clips>`.", ""]
    if random_encoder:
        lines += [f"**These scores say nothing about voice quality.** The speech encoder had random weights, so "
                  f"the units carry no phonetic content, and the model trained only {steps} steps on them. The "
                  "pitch and loudness columns mostly show that the f0 and loudness handed to the decoder survive "
                  "the pipeline (the model receives the transposed f0 directly); the similarities compare the "
                  "timbre of a barely trained model's output with the singers'. They are here to show that the scoring runs and what it "
                  "reports; with the real encoder and a trained model the same table measures the conversion.", ""]
    return lines


def write_report(out: Path, report: dict[str, Any]) -> None:
    from modules.io_utils import atomic_write_text

    atomic_write_text(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False))
    random_encoder = report["encoder"]["random"]
    lines = ["# so-vits-svc demo run", ""]
    if random_encoder:
        lines += [f"> **WARNING: RANDOM SPEECH ENCODER.** {report['note']} The file "
                  f"`{report['encoder']['path']}` is marked as random weights inside "
                  "(`svc_random_weights`); every stage that loaded it logged a warning.", ""]
    lines += [f"{report['date']} · {report['machine']['platform']} · "
              f"{report['machine']['cpus']} CPUs · Python {report['machine']['python']}", "",
              f"**{report['note']}**", "",
              f"Dataset: {report['dataset']['clips']} synthetic clips, {report['dataset']['seconds']} s "
              f"({', '.join(report['dataset']['speakers'])}). Training: {report['training']['steps']} steps "
              f"(tiny config). Conversion: held-out '{report['conversion']['input_voice']}' clip → "
              f"'{report['conversion']['target_speaker']}', {report['conversion']['transpose']:+d} semitones, "
              f"f0 by {report['conversion']['f0_predictor']}. Threads per script: "
              f"{report['settings']['threads'] or 'PyTorch default (one per core)'}.", ""]
    curve = report["training"].get("loss_curve")
    if curve:
        lines += ["## Training", "", "![loss curve](loss_curve.png)", "",
                  "| loss | first | last | points |", "|---|---:|---:|---:|"]
        lines += [f"| {LOSS_TAGS.get(tag, tag)} | {v['first']:.3f} | {v['last']:.3f} | {v['points']} |"
                  for tag, v in curve.items()]
        lines.append("")
    a = report.get("analysis")
    if a:
        lines += ["## The conversions", "", "| file | DC (mean) | RMS | difference from plain | max \\|x\\| in silent chunks |",
                  "|---|---:|---:|---:|---:|"]
        for name in a["dc"]:
            diff = a["difference_vs_plain"].get(name)
            peak = a["silence"]["max_abs_in_silent_chunks"].get(name)
            lines.append(f"| {name} | {a['dc'][name]:+.4f} | {a['rms'][name]:.4f} | "
                         f"{'–' if diff is None else f'{diff:.2g}'} | {'–' if peak is None else f'{peak:.4f}'} |")
        silent = a["silence"]["silent_chunks_s"]
        lines.append("")
        if a["difference_vs_plain"]:
            same = max(a["difference_vs_plain"].values()) < 0.01
            lines += ["*Difference from plain*: RMS of (conversion − plain conversion) / RMS of the plain one "
                      "without its DC."
                      + (" The random encoder's units follow the input's spectrum over time (its attention and "
                         "feed-forward branches are scaled down, so a deep random transformer does not map every "
                         "frame to the same vector), so k-means and retrieval do change the units; they still carry "
                         "no phonetic knowledge." if random_encoder else "")
                      + (" The conversions are nevertheless practically the same, because of the model: after so "
                         "few steps its decoder's output is dominated by the harmonic (f0) source (replacing its whole "
                         "latent by zeros changes the output by a few percent) and the prior path that reads the units "
                         "has made the latent depend on them even less than at initialisation, so the output hardly "
                         "depends on the units at all (docs/demo.md has the measurements). Training harder does not help "
                         "with random units (they say nothing the pitch does not); k-means and retrieval need the real "
                         "encoder's units to act on." if same else ""), ""]
        lines += ["*DC*: the mean sample value. The input has none; a model trained for a few hundred steps "
                  "can put one in its output: the untrained generator already has one, and the training losses "
                  "hardly see 0 Hz (every mel filter has zero weight in the 0 Hz bin), so nothing pulls it to zero yet. 4.1 does not filter it "
                  "either. See docs/demo.md.",
                  "", "*Silent chunks*: " + (
                      ", ".join(f"{b0:.2f}–{b1:.2f} s" for b0, b1 in silent) + " of the input are silent chunks "
                      "for 4.1's slicer (-sd -40 dB); inference writes zeros there (last column)."
                      if silent else "4.1's slicer (-sd -40 dB) found no silent chunk in the input.")
                  + f" The slicer cuts only silences at the ends or longer than 5 s, so the input's other quiet "
                  f"frames ({a['silence']['quiet_frames_in_slices_s']} s: breaths and the pause between the two "
                  "phrase groups) are converted with the rest, in 4.1 as here. Output RMS in those frames: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in a["silence"]["rms_in_quiet_frames"].items() if v is not None)
                  + " — what the model learned for near-silence in so few steps.", ""]
    if report.get("scores"):
        lines += _score_lines(report["scores"], random_encoder, report["training"]["steps"])
    lines += ["## Stages", "", "| stage | command | wall (s) | CPU (s) |", "|---|---|---:|---:|"]
    for st in report["stages"]:
        cmd = f"`{' '.join(st['command'])}`" if st["command"] else "(in the demo process)"
        lines.append(f"| {st['name']} | {cmd} | {st['wall_s']:.1f} | {_fmt(st['cpu_s'])} |")
    lines += [f"| **total** | | **{report['total']['wall_s']:.1f}** | **{_fmt(report['total']['cpu_s'])}** |", "",
              "Config edits after `preprocess_flist_config.py`: "
              + ", ".join(f"`{k}` = {json.dumps(v)}" for k, v in report["config_edits"].items()) + ".", "",
              "Outputs:", ""]
    lines += [f"- {k}: `{v}`" for k, v in report["outputs"].items()]
    lines.append("")
    atomic_write_text(out / "report.md", "\n".join(lines))
