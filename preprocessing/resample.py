"""Step 1: raw speaker folders → mono 16-bit PCM WAVs at the model rate (spec §1.1, §3.7).

Per file, as 4.1's ``resample.py``:

1. read at the native rate and down-mix to mono (channel mean);
2. trim leading/trailing silence (``librosa.effects.trim``, top_db 40, frame 2048, hop 512);
3. if the peak exceeds 1.0 (float files), scale so the peak is 0.98;
4. resample to ``sr`` (soxr "HQ", librosa ≥ 0.10's default; 4.1 pinned librosa 0.9.1 whose
   default was resampy ``kaiser_best`` — both are transparent band-limited resamplers);
5. level: peak-normalise to full scale (4.1's default), or, with ``loudnorm_lufs``, normalise the
   integrated loudness (ITU-R BS.1770 via pyloudnorm) to that target with peaks kept below
   full scale, or leave the level alone with ``skip_loudnorm``;
6. write 16-bit PCM: samples × 32767 truncated toward zero, as 4.1, but clipped to
   [−32768, 32767] first (4.1 let out-of-range values wrap around).

Input layout ``<in_dir>/<speaker>/<file>``; the output mirrors it with the same file name
(``.wav`` suffix for flac/ogg/mp3 inputs).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from modules.errors import AudioError, ConfigError, SvcError
from preprocessing.report import FileOutcome, RunSummary

log = logging.getLogger(__name__)

TRIM_TOP_DB = 40          # librosa.effects.trim threshold used by 4.1 (dB below the peak)
PEAK_GUARD = 0.98         # 4.1 rescales float input whose peak exceeds 1.0 to this peak
PCM16_SCALE = 32767       # 4.1 multiplies by np.iinfo(np.int16).max and truncates
LUFS_PEAK_CEILING = 0.99  # loudness normalisation never pushes a peak above this (no clipping)
# pyloudnorm measures in 400 ms gating blocks; shorter clips cannot be measured.
LUFS_MIN_SECONDS = 0.4


@dataclass(frozen=True)
class ResampleOptions:
    """What to do to every file (picklable: it travels to the worker processes)."""

    sr: int = 44100
    skip_loudnorm: bool = False
    loudnorm_lufs: float | None = None

    def __post_init__(self) -> None:
        if self.sr <= 0:
            raise ConfigError(f"--sr2 must be a positive sample rate, got {self.sr}")
        if self.skip_loudnorm and self.loudnorm_lufs is not None:
            raise ConfigError("--skip_loudnorm and --loudnorm_lufs contradict each other; give only one")
        if self.loudnorm_lufs is not None and not -70.0 <= self.loudnorm_lufs < 0.0:
            raise ConfigError(f"--loudnorm_lufs must be between -70 and 0 LUFS (e.g. -23), got {self.loudnorm_lufs}")


def default_num_workers() -> int:
    """4.1's rule: 30 workers above 60 CPUs, CPUs − 2 above 4 CPUs, else 1."""
    cpus = os.cpu_count() or 1
    if cpus > 60:
        return 30
    if cpus > 4:
        return cpus - 2
    return 1


# --- the signal chain ---------------------------------------------------------------------------
def process_audio(y: np.ndarray, sr: int, opts: ResampleOptions) -> np.ndarray:
    """Mono float audio at ``sr`` → trimmed, level-normalised float32 audio at ``opts.sr``.

    Raises :class:`AudioError` for silent input (nothing to normalise).
    """
    import librosa

    from modules.audio import resample

    y = np.asarray(y, dtype=np.float32)
    if y.size == 0 or not np.any(y):
        raise AudioError("silent: every sample is zero")
    y, _ = librosa.effects.trim(y, top_db=TRIM_TOP_DB)
    peak = float(np.abs(y).max())
    if peak > 1.0:
        y = y / peak * PEAK_GUARD
    y = resample(y, sr, opts.sr)
    peak = float(np.abs(y).max()) if y.size else 0.0
    if peak == 0.0:
        raise AudioError("silent after resampling")
    if opts.skip_loudnorm:
        return y.astype(np.float32)
    if opts.loudnorm_lufs is not None and len(y) >= LUFS_MIN_SECONDS * opts.sr:
        return _normalise_loudness(y, opts.sr, opts.loudnorm_lufs)
    if opts.loudnorm_lufs is not None:
        log.debug("clip of %.2f s is shorter than the %.1f s LUFS block; peak-normalising instead",
                  len(y) / opts.sr, LUFS_MIN_SECONDS)
    return (y / peak).astype(np.float32)


def _normalise_loudness(y: np.ndarray, sr: int, target_lufs: float) -> np.ndarray:
    import pyloudnorm

    loudness = pyloudnorm.Meter(sr).integrated_loudness(y.astype(np.float64))
    if not np.isfinite(loudness):
        raise AudioError("silent: integrated loudness is -inf LUFS")
    y = y * np.float32(10.0 ** ((target_lufs - loudness) / 20.0))
    peak = float(np.abs(y).max())
    if peak > LUFS_PEAK_CEILING:
        # Reaching the target would clip: lower the whole clip instead (it ends up quieter).
        y = y * np.float32(LUFS_PEAK_CEILING / peak)
    return y.astype(np.float32)


def to_pcm16(y: np.ndarray) -> np.ndarray:
    """Float samples → int16 as 4.1 (× 32767, truncated toward zero), clipped instead of wrapped."""
    return (np.clip(np.asarray(y, dtype=np.float32), -1.0, 1.0) * PCM16_SCALE).astype(np.int16)


# --- one file -----------------------------------------------------------------------------------
def resample_file(src: str | os.PathLike, dst: str | os.PathLike, opts: ResampleOptions) -> FileOutcome:
    """Process one file; never raises for bad input, returns its outcome instead."""
    import soundfile as sf

    from modules.audio import load_audio
    from modules.io_utils import atomic_path
    from preprocessing.wavinfo import wav_truncation

    src, dst = Path(src), Path(dst)
    try:
        problem = wav_truncation(src)
        if problem:
            raise AudioError(problem)
        y, sr = load_audio(src)
        out = to_pcm16(process_audio(y, sr, opts))
        with atomic_path(dst) as tmp:
            sf.write(str(tmp), out, opts.sr, format="WAV", subtype="PCM_16")
    except SvcError as e:
        return FileOutcome(str(src), "failed", _strip_path(str(e), src))
    except (ValueError, RuntimeError, MemoryError) as e:  # decoder / resampler trouble on odd input
        return FileOutcome(str(src), "failed", f"{type(e).__name__}: {e}")
    return FileOutcome(str(src), "done")


def _strip_path(msg: str, path: Path) -> str:
    prefix = f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def _job(args: tuple[str, str, ResampleOptions]) -> FileOutcome:
    return resample_file(*args)


# --- the whole dataset --------------------------------------------------------------------------
def scan_speaker_folders(root: Path, *, skip: Callable[[str], bool] = lambda name: False,
                         ) -> tuple[list[tuple[str, Path]], list[FileOutcome]]:
    """``[(speaker, file)]`` for every audio file ``<root>/<speaker>/<file>`` (sorted), and what was
    left out with the reason: hidden entries, loose files, nested folders, non-audio files. Names
    for which ``skip`` is true are passed over silently (e.g. preprocessing artifacts)."""
    from modules.audio import AUDIO_EXTENSIONS

    files: list[tuple[str, Path]] = []
    left_out: list[FileOutcome] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or not entry.is_dir():
            left_out.append(FileOutcome(str(entry), "skipped", "hidden file or folder" if entry.name.startswith(".")
                                        else "not inside a speaker folder"))
            continue
        for f in sorted(entry.iterdir(), key=lambda p: p.name):
            if skip(f.name):
                continue
            if f.name.startswith("."):
                left_out.append(FileOutcome(str(f), "skipped", "hidden file or folder"))
            elif f.is_dir():
                left_out.append(FileOutcome(str(f), "skipped", "nested folder (only <speaker>/<file> is read)"))
            elif f.suffix.lower() not in AUDIO_EXTENSIONS:
                left_out.append(FileOutcome(str(f), "skipped", f"not an audio file ({f.suffix or 'no extension'})"))
            else:
                files.append((entry.name, f))
    return files, left_out


def plan(in_dir: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[list[tuple[Path, Path]], list[FileOutcome]]:
    """List ``(source, destination)`` pairs and the entries that are left out, with reasons.

    Only ``<in_dir>/<speaker>/<file>`` with an audio extension is processed; everything else
    (hidden files such as ``.DS_Store``, text files, nested folders, loose files) is reported.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise ConfigError(f"{in_dir}: input folder not found (expected {in_dir}/<speaker>/<file>.wav; "
                          "set it with --in_dir)")
    if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
        raise ConfigError(f"--out_dir2 {out_dir} is the input folder; writing there would overwrite the raw "
                          "recordings. Choose another output folder")
    files, left_out = scan_speaker_folders(in_dir)
    jobs: list[tuple[Path, Path]] = []
    claimed: dict[Path, Path] = {}
    for speaker, f in files:
        name = f.name if f.suffix.lower() == ".wav" else f.stem + ".wav"
        dst = out_dir / speaker / name
        if dst in claimed:
            left_out.append(FileOutcome(str(f), "failed", f"its output {dst} would overwrite the output of "
                                                           f"{claimed[dst]}; rename one of them"))
            continue
        claimed[dst] = f
        jobs.append((f, dst))
    with_audio = {speaker for speaker, _ in files}
    left_out += [FileOutcome(str(entry), "skipped", "speaker folder holds no audio files")
                 for entry in sorted(in_dir.iterdir()) if entry.is_dir() and not entry.name.startswith(".")
                 and entry.name not in with_audio]
    return jobs, left_out


def resample_dataset(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    opts: ResampleOptions,
    *,
    num_workers: int | None = None,
    skip_existing: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Process every speaker folder of ``in_dir`` into ``out_dir``; returns the run summary.

    ``num_workers`` processes (default: 4.1's rule, :func:`default_num_workers`); 1 runs in this
    process. ``skip_existing`` keeps outputs that already exist (4.1 always rewrote them).
    """
    from tqdm import tqdm

    summary = RunSummary("resample")
    jobs, left_out = plan(in_dir, out_dir)
    summary.extend(left_out)
    if not jobs:
        raise AudioError(f"{in_dir}: no audio files found (expected {in_dir}/<speaker>/<file>.wav|flac|ogg|mp3)")
    if skip_existing:
        todo = []
        for src, dst in jobs:
            if dst.is_file() and dst.stat().st_size > 0:
                summary.add(FileOutcome(str(src), "skipped", "output exists (--skip_existing)"))
            else:
                todo.append((src, dst))
        jobs = todo
    workers = max(1, min(num_workers or default_num_workers(), len(jobs) or 1))
    log.info("resampling %d file(s) to %d Hz with %d worker(s): %s → %s", len(jobs), opts.sr, workers, in_dir, out_dir)
    bar = tqdm(total=len(jobs), desc="resample", unit="file", disable=not progress)
    try:
        if workers == 1:
            for src, dst in jobs:
                summary.add(resample_file(src, dst, opts))
                bar.update()
        else:
            import multiprocessing

            # spawn, not fork: the parent may hold torch/OpenMP threads, which fork does not survive.
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(_job, (str(src), str(dst), opts)) for src, dst in jobs]
                for fut in as_completed(futures):
                    summary.add(fut.result())
                    bar.update()
    finally:
        bar.close()
    return summary
