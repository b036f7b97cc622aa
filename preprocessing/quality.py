"""Dataset quality report (issue 22): what will make a model bad, found before hours of training.

``check_dataset.py`` and the summary at the start of ``preprocess_flist_config.py`` call
:func:`check_dataset`. Per file (``<in_dir>/<speaker>/<file>``, any format / rate / channels):

* the training-WAV check of :mod:`modules.wavcheck` (unreadable, truncated, wrong format when a
  rate is required, too short, too long) — these are the **errors**;
* level: peak (dBFS), share of clipped samples, DC offset;
* effective bandwidth from the long-term spectrum (:func:`modules.mel_processing.spectrogram_torch`):
  a cliff of ≥ ``cliff_db`` inside the band means the audio was upsampled from a lower rate,
  whose estimate is the next standard rate above twice the cliff frequency;
* 20 ms frame loudness: silence share (frames ``silence_db`` below the loudest) and an SNR
  estimate (median voiced-frame power over the quiet unvoiced frames);
* F0 with a cheap registry predictor (``pm`` at 16 kHz, 20 ms hop: see docs/bench/dataset.md):
  voiced share and the 5–95 % F0 range;
* a content hash of the 16-bit mono samples and a loudness envelope, for duplicates across the set.

Every :class:`Problem` names the file, the measured value, the threshold and what to do.
Nothing in the input folder is written.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from preprocessing.report import DatasetError, FileOutcome

if TYPE_CHECKING:
    from modules.F0Predictor.base import F0Predictor
    from modules.wavcheck import WavRequirements

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.02             # loudness frames (rate independent), also the F0 hop
F0_RATE = 16000                  # Hz: the F0 predictor runs on a 16 kHz copy (measured: 3x faster than 44.1k)
F0_HOP = int(F0_RATE * FRAME_SECONDS)
SPECTRUM_N_FFT = 2048            # long-term spectrum: non-overlapping frames of this many samples
STANDARD_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
F0_BINS = np.geomspace(50.0, 1100.0, 4 * 54 + 1)  # Hz: quarter-semitone bins over the predictors' range
QUIET_FLOOR = 1e-12              # power floor for dB conversions
ANALYSE_AT_MOST_SECONDS = 600.0  # longer files are reported as too long without reading them
MIN_NOISE_FRAMES = 10            # 0.2 s of pauses (and of voice) needed for an SNR estimate


class Issue(str, enum.Enum):
    """Kinds of problem; the wav-check kinds are errors, the rest warnings (see :data:`ERRORS`)."""

    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    WRONG_FORMAT = "wrong_format"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    SILENT = "silent"
    CLIPPED = "clipped"
    DC_OFFSET = "dc_offset"
    UPSAMPLED = "upsampled"
    MOSTLY_SILENCE = "mostly_silence"
    NOISY = "noisy"
    NO_VOICE = "no_voice"
    DUPLICATE = "duplicate"


# Errors make a clip unusable for training (it is left out, or breaks the run).
ERRORS = frozenset({Issue.UNREADABLE, Issue.TRUNCATED, Issue.WRONG_FORMAT, Issue.TOO_SHORT})


@dataclass(frozen=True)
class QualityOptions:
    """Thresholds and what the training set needs. Times in seconds, levels in dB unless named."""

    sampling_rate: int | None = None   # require this rate, mono 16-bit PCM (checking dataset/44k)
    speech_encoder: str | None = None  # only changes the advice for long clips (Whisper's window)
    min_seconds: float = 0.3           # preprocess_flist_config.py leaves shorter clips out (4.1)
    max_seconds: float = 30.0          # longer clips: slow/large feature extraction, Whisper's window
    clip_level: float = 0.999          # |sample| at or above this (full scale 1.0) counts as clipped
    max_clipped_share: float = 1e-3    # more clipped samples than this share of all samples
    max_dc_offset: float = 0.01        # |mean| in full-scale units (-40 dBFS)
    silent_peak_db: float = -60.0      # a clip whose peak stays below this is silent
    silence_db: float = -40.0          # frames this far below the loudest frame are silence
    max_silence_share: float = 0.5
    min_snr_db: float = 15.0
    min_voiced_share: float = 0.2
    cliff_db: float = 25.0             # a spectral drop this steep marks an upsampled recording
    f0_predictor: str = "pm"


@dataclass(frozen=True)
class Problem:
    """One finding: file, kind, measured value, threshold and advice."""

    path: str
    kind: Issue
    value: str
    threshold: str
    advice: str

    @property
    def is_error(self) -> bool:
        return self.kind in ERRORS

    def __str__(self) -> str:
        limit = f" (threshold {self.threshold})" if self.threshold else ""
        return f"{self.path}: {self.kind.value}: {self.value}{limit}; {self.advice}"


@dataclass
class FileStats:
    """Measurements of one file; signal fields stay None when the file could not be analysed."""

    path: str
    speaker: str
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    samplerate: int = 0
    channels: int = 0
    peak_db: float | None = None
    clipped_share: float | None = None
    dc_offset: float | None = None
    bandwidth_hz: float | None = None
    original_rate: int | None = None     # estimated rate the audio was made at (== samplerate if full band)
    silence_share: float | None = None
    snr_db: float | None = None
    voiced_share: float | None = None
    f0_low: float | None = None          # Hz, 5th percentile of voiced frames
    f0_high: float | None = None         # Hz, 95th percentile
    f0_median: float | None = None
    f0_hist: np.ndarray | None = None    # counts per F0_BINS interval
    content_hash: str = ""
    envelope: np.ndarray | None = None   # frame loudness in dB re the loudest frame, [T] at 50 Hz

    @property
    def analysed(self) -> bool:
        return self.peak_db is not None


@dataclass
class SpeakerStats:
    name: str
    files: int = 0
    usable: int = 0
    seconds: float = 0.0                 # total duration of the readable clips
    lengths: list[float] = field(default_factory=list)
    f0_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(F0_BINS) - 1))
    f0_low: float | None = None
    f0_high: float | None = None


@dataclass
class QualityReport:
    """Everything :func:`check_dataset` found; ``left_out`` holds the entries that are not audio."""

    root: str
    options: QualityOptions
    files: list[FileStats] = field(default_factory=list)
    speakers: dict[str, SpeakerStats] = field(default_factory=dict)
    left_out: list[FileOutcome] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return [p for f in self.files for p in f.problems]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error]

    def kinds(self) -> dict[str, set[Issue]]:
        """File path → kinds of problem found (files without problems are absent)."""
        out: dict[str, set[Issue]] = {}
        for p in self.problems:
            out.setdefault(p.path, set()).add(p.kind)
        return out


# --- per file -----------------------------------------------------------------------------------
def _requirements(opts: QualityOptions) -> "WavRequirements":
    from modules.wavcheck import WavRequirements

    strict = opts.sampling_rate is not None  # the resampled set: the trainer's exact format
    return WavRequirements(sampling_rate=opts.sampling_rate, mono=strict,
                           subtype="PCM_16" if strict else None,
                           min_samples=0)


def _wavcheck_problem(path: str, kind, reason: str) -> Problem:
    from modules.wavcheck import WavProblem

    issue = Issue(kind.value) if isinstance(kind, WavProblem) else kind
    advice = {Issue.UNREADABLE: "remove it or export it again",
              Issue.TRUNCATED: "copy or export the file again",
              Issue.WRONG_FORMAT: "run resample.py on the raw recordings"}.get(issue, "")
    value, _, fix = reason.partition("; ")
    return Problem(path, issue, value, "", fix or advice)


def analyse_file(path: str | os.PathLike, speaker: str, opts: QualityOptions = QualityOptions()) -> FileStats:
    """Measure one file; never raises for bad input (it becomes an error :class:`Problem`)."""
    import soundfile as sf

    from modules.wavcheck import check_wav

    path = Path(path)
    st = FileStats(str(path), speaker)
    check = check_wav(path, _requirements(opts))
    st.samplerate, st.channels = check.samplerate, check.channels
    st.seconds = check.seconds
    if not check.ok:
        st.problems.append(_wavcheck_problem(st.path, check.problem, check.reason))
        return st
    if st.seconds > ANALYSE_AT_MOST_SECONDS:  # an unsliced recording: say so instead of loading all of it
        st.problems.append(Problem(st.path, Issue.TOO_LONG, f"{st.seconds / 60:.1f} min (not analysed further)",
                                   f"{opts.max_seconds:g} s", "a whole recording: cut it into 5-15 s clips "
                                   "(slice_audio.py), then check the clips"))
        return st
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [L, channels]
    except Exception as e:  # decoders raise LibsndfileError / RuntimeError / TypeError
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        st.problems.append(Problem(st.path, Issue.UNREADABLE, f"not a readable audio file ({msg})", "",
                                   "remove it or export it again"))
        return st
    if not np.isfinite(data).all():
        st.problems.append(Problem(st.path, Issue.UNREADABLE, "holds NaN or infinite samples", "", "export it again"))
        return st
    st.seconds = len(data) / sr
    if st.seconds < opts.min_seconds:
        st.problems.append(Problem(st.path, Issue.TOO_SHORT, f"{st.seconds:.2f} s", f"{opts.min_seconds:g} s",
                                   "too short to train on (left out of the file lists); join it to a neighbour "
                                   "or remove it"))
        return st
    _measure(st, data, sr, opts)
    return st


def _measure(st: FileStats, data: np.ndarray, sr: int, opts: QualityOptions) -> None:
    peak = float(np.abs(data).max())
    st.peak_db = 20 * np.log10(max(peak, 1e-10))
    st.clipped_share = float(np.mean(np.abs(data) >= opts.clip_level))
    mono = data.mean(axis=1)
    st.dc_offset = float(mono.mean())
    mono = mono - np.float32(st.dc_offset)  # the other measures ignore a DC offset (reported on its own)
    pcm = np.clip(np.round(mono * 32767), -32768, 32767).astype(np.int16)
    st.content_hash = hashlib.sha1(pcm.tobytes() + str(sr).encode()).hexdigest()

    if 20 * np.log10(max(float(np.abs(mono).max()), 1e-10)) < opts.silent_peak_db:
        value = "every sample is zero" if peak == 0 else f"peak {st.peak_db:.1f} dBFS"
        st.problems.append(Problem(st.path, Issue.SILENT, value, f"{opts.silent_peak_db:g} dBFS",
                                   "the clip holds no sound; remove it"))
        return
    frame_db = _frame_db(mono, sr)
    rel = frame_db - frame_db.max()
    st.envelope = np.maximum(rel, -80.0).astype(np.float32)
    st.silence_share = float(np.mean(rel < opts.silence_db))
    st.bandwidth_hz, st.original_rate = _bandwidth(mono, sr, opts.cliff_db)
    voiced = _f0(st, mono, sr, opts)
    st.snr_db = _snr(frame_db, voiced)
    _judge(st, opts)


def _snr(frame_db: np.ndarray, voiced: np.ndarray) -> float | None:
    """Median voiced-frame power over the 10th percentile of unvoiced-frame power, in dB.

    None when fewer than :data:`MIN_NOISE_FRAMES` unvoiced (or voiced) frames exist: a clip of
    one sustained note holds no pause to measure the noise in.
    """
    n = min(len(frame_db), len(voiced))
    frame_db, voiced = frame_db[:n], voiced[:n]
    if voiced.sum() < MIN_NOISE_FRAMES or (~voiced).sum() < MIN_NOISE_FRAMES:
        return None
    return float(np.median(frame_db[voiced]) - np.percentile(frame_db[~voiced], 10))


def _frame_db(mono: np.ndarray, sr: int) -> np.ndarray:
    """Frame power in dB (full scale = 0 dB) over non-overlapping 20 ms frames ``[T]``."""
    n = max(1, int(sr * FRAME_SECONDS))
    t = max(1, len(mono) // n)
    frames = np.resize(mono, t * n).reshape(t, n) if len(mono) < n else mono[: t * n].reshape(t, n)
    return 10 * np.log10(np.maximum(np.mean(frames.astype(np.float64) ** 2, axis=1), QUIET_FLOOR))


def _bandwidth(mono: np.ndarray, sr: int, cliff_db: float) -> tuple[float, int]:
    """``(bandwidth Hz, estimated original rate Hz)`` from the long-term spectrum.

    The spectrum is the mean power of non-overlapping 2048-sample frames. A cliff is the largest
    drop from the median level of the ~850 Hz just below a frequency to the 90th-percentile level
    of everything from 300 Hz above it up to 97 % of Nyquist::

        level ▲ ▁▂▃▅▆▅▃▃▂▂▂▂▁▁▁|
              │                |  ← drop ≥ cliff_db
              │                |______________________  (the resampler's stop band)
              └────────────────┴──────────────────────► Hz
                          bandwidth                 Nyquist

    Candidates run from 2 kHz to 85 % of Nyquist (a transparent resampler's own roll-off sits
    above that). No cliff: the full band, ``(sr / 2, sr)``.
    """
    import torch

    from modules.mel_processing import spectrogram_torch

    nyquist = sr / 2
    if len(mono) < SPECTRUM_N_FFT:
        return nyquist, sr
    with torch.inference_mode():
        mag = spectrogram_torch(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None],
                                SPECTRUM_N_FFT, sr, SPECTRUM_N_FFT, SPECTRUM_N_FFT, center=False)[0]
    level = 10 * np.log10(np.maximum((mag.double() ** 2).mean(dim=1).numpy(), QUIET_FLOOR))  # [F] dB
    hz = sr / SPECTRUM_N_FFT
    top = int(0.97 * nyquist / hz)
    best, best_k = 0.0, None
    for k in range(int(2000 / hz), int(0.85 * nyquist / hz), 2):
        below = np.median(level[max(1, k - int(900 / hz)): k - int(50 / hz)])
        above_start = k + int(300 / hz)
        if above_start >= top:
            break
        drop = below - np.percentile(level[above_start:top], 90)
        if drop > best:
            best, best_k = drop, k
    if best_k is None or best < cliff_db:
        return nyquist, sr
    bandwidth = best_k * hz
    original = next((r for r in STANDARD_RATES if r >= 2 * bandwidth * 0.95), sr)
    return bandwidth, min(original, sr)


def _f0(st: FileStats, mono: np.ndarray, sr: int, opts: QualityOptions) -> np.ndarray:
    """Fill the voicing and F0 fields; returns the voiced flags per 20 ms frame ``[T]``."""
    from modules.audio import resample

    predictor = _predictor(opts.f0_predictor)
    f0, uv = predictor.compute_f0_uv(resample(mono.astype(np.float32), sr, F0_RATE))
    f0 = np.asarray(f0, dtype=np.float64)
    flags = (np.asarray(uv) > 0.5) & (f0 > 0)
    voiced = f0[flags]
    st.voiced_share = float(len(voiced) / max(len(f0), 1))
    st.f0_hist = np.histogram(voiced, bins=F0_BINS)[0].astype(np.float64)
    if len(voiced):
        st.f0_low, st.f0_median, st.f0_high = (float(v) for v in np.percentile(voiced, [5, 50, 95]))
    return flags


@functools.lru_cache(maxsize=2)
def _predictor(name: str) -> "F0Predictor":
    """One predictor per process and name (the registry's predictors are reusable across files)."""
    from modules.F0Predictor import get_f0_predictor

    return get_f0_predictor(name, hop_length=F0_HOP, sampling_rate=F0_RATE, device="cpu")


def _judge(st: FileStats, o: QualityOptions) -> None:
    """Turn the measurements of an analysed file into warnings."""
    add = st.problems.append
    p = st.path
    if st.seconds > o.max_seconds:
        whisper = o.speech_encoder is not None and o.speech_encoder.startswith("whisper")
        why = ("Whisper encodes it as separate 30 s windows without context across the joins" if whisper
               else "feature extraction needs memory for the whole clip and training only crops ~9 s of it")
        add(Problem(p, Issue.TOO_LONG, f"{st.seconds:.1f} s", f"{o.max_seconds:g} s",
                    f"{why}; cut it into 5-15 s clips (slice_audio.py)"))
    if st.clipped_share > o.max_clipped_share:
        add(Problem(p, Issue.CLIPPED, f"{100 * st.clipped_share:.2f} % of samples at full scale",
                    f"{100 * o.max_clipped_share:g} %", "the recording distorts; use a take recorded with "
                    "lower gain or remove it"))
    if abs(st.dc_offset) > o.max_dc_offset:
        add(Problem(p, Issue.DC_OFFSET, f"DC offset {st.dc_offset:+.3f}", f"±{o.max_dc_offset:g}",
                    "remove the offset (high-pass filter in an audio editor) before resampling"))
    if st.original_rate is not None and st.original_rate < st.samplerate:
        add(Problem(p, Issue.UPSAMPLED, f"bandwidth {st.bandwidth_hz / 1000:.1f} kHz, made at about "
                    f"{st.original_rate / 1000:g} kHz", f"drop of {o.cliff_db:g} dB",
                    "upsampled audio teaches a dull top band (hoarse output); use the original "
                    "full-rate recording or remove it"))
    if st.silence_share > o.max_silence_share:
        add(Problem(p, Issue.MOSTLY_SILENCE, f"{100 * st.silence_share:.0f} % silence",
                    f"{100 * o.max_silence_share:g} %", "slice it (slice_audio.py) so clips hold voice"))
    if st.voiced_share is not None and st.voiced_share < o.min_voiced_share:
        add(Problem(p, Issue.NO_VOICE, f"voiced {100 * st.voiced_share:.0f} % of frames",
                    f"{100 * o.min_voiced_share:g} %", "noise, music or breath only? remove it"))
    elif st.snr_db is not None and st.snr_db < o.min_snr_db:
        add(Problem(p, Issue.NOISY, f"SNR about {st.snr_db:.0f} dB", f"{o.min_snr_db:g} dB",
                    "background noise, reverb or accompaniment stays in the model; denoise or remove it"))


# --- duplicates ---------------------------------------------------------------------------------
def find_duplicates(files: list[FileStats]) -> list[Problem]:
    """Exact duplicates (same 16-bit samples) and near ones (same length within 40 ms, loudness
    envelopes correlated ≥ 0.995 and median F0 within 2 %: the same take in another format/rate/level).

    The first file in sorted path order is kept; each later copy gets a problem naming it.
    """
    out: list[Problem] = []
    seen: dict[str, str] = {}
    flagged: set[str] = set()
    for f in sorted((f for f in files if f.content_hash), key=lambda f: f.path):
        if f.content_hash in seen:
            out.append(_dup(f.path, seen[f.content_hash], "identical samples"))
            flagged.add(f.path)
        else:
            seen[f.content_hash] = f.path
    cands = sorted((f for f in files if f.envelope is not None and f.path not in flagged and f.f0_median),
                   key=lambda f: (f.seconds, f.path))
    for i, a in enumerate(cands):
        for b in cands[i + 1:]:
            if b.seconds - a.seconds > 0.04:
                break
            if b.path in flagged or a.path in flagged:
                continue
            n = min(len(a.envelope), len(b.envelope))
            if n < 10 or abs(a.f0_median - b.f0_median) > 0.02 * a.f0_median:
                continue
            ea, eb = a.envelope[:n], b.envelope[:n]
            if ea.std() == 0 or eb.std() == 0 or np.corrcoef(ea, eb)[0, 1] < 0.995:
                continue
            first, second = sorted([a.path, b.path])
            out.append(_dup(second, first, "same loudness envelope and pitch"))
            flagged.add(second)
    return out


def _dup(path: str, original: str, how: str) -> Problem:
    return Problem(path, Issue.DUPLICATE, f"{how} as {original}", "", "a duplicate weighs that take double and "
                   "can land in both training and validation; remove one copy")


# --- the whole set ------------------------------------------------------------------------------
def list_audio(in_dir: str | os.PathLike) -> tuple[list[tuple[str, Path]], list[FileOutcome]]:
    """``[(speaker, file)]`` of ``<in_dir>/<speaker>/<file>`` with an audio extension, plus the entries
    left out with reasons (hidden files, non-audio, nested folders, loose files, preprocessing artifacts)."""
    from preprocessing.features import is_artifact_name
    from preprocessing.resample import scan_speaker_folders

    root = Path(in_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found (expected {root}/<speaker>/<file>.wav; set --in_dir)")
    return scan_speaker_folders(root, skip=is_artifact_name)


def _job(args: tuple[str, str, QualityOptions]) -> FileStats:
    return analyse_file(*args)


def check_dataset(in_dir: str | os.PathLike, opts: QualityOptions = QualityOptions(), *,
                  num_workers: int | None = None, progress: bool = True) -> QualityReport:
    """Analyse every clip of ``<in_dir>/<speaker>/`` (read only) → :class:`QualityReport`.

    ``num_workers`` > 1 uses that many spawned processes (default :func:`default_workers`). Raises :class:`DatasetError` only when
    the folder itself is missing or holds no audio at all.
    """
    from tqdm import tqdm

    files, left_out = list_audio(in_dir)
    report = QualityReport(str(in_dir), opts, left_out=left_out)
    if not files:
        raise DatasetError(f"{in_dir}: no audio files found (expected {in_dir}/<speaker>/<file>.wav|flac|ogg|mp3)")
    jobs = [(str(f), spk, opts) for spk, f in files]
    num_workers = default_workers(len(jobs)) if num_workers is None else num_workers
    bar = tqdm(total=len(jobs), desc="check", unit="file", disable=not progress)
    try:
        if num_workers <= 1:
            for job in jobs:
                report.files.append(_job(job))
                bar.update()
        else:
            import multiprocessing

            # spawn, not fork: the parent may hold torch/OpenMP threads (as resample.py)
            with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for st in pool.map(_job, jobs, chunksize=4):  # keeps the sorted order
                    report.files.append(st)
                    bar.update()
    finally:
        bar.close()
    by_path = {f.path: f for f in report.files}
    for p in find_duplicates(report.files):
        by_path[p.path].problems.append(p)
    report.speakers = _speakers(report.files)
    return report


def _speakers(files: list[FileStats]) -> dict[str, SpeakerStats]:
    out: dict[str, SpeakerStats] = {}
    for f in files:
        s = out.setdefault(f.speaker, SpeakerStats(f.speaker))
        s.files += 1
        if f.seconds:
            s.seconds += f.seconds
            s.lengths.append(f.seconds)
        if not any(p.is_error for p in f.problems):
            s.usable += 1
        if f.f0_hist is not None:
            s.f0_hist += f.f0_hist
    for s in out.values():
        total = s.f0_hist.sum()
        if total:
            cdf = np.cumsum(s.f0_hist) / total
            centres = np.sqrt(F0_BINS[:-1] * F0_BINS[1:])
            s.f0_low = float(centres[np.searchsorted(cdf, 0.05)])
            s.f0_high = float(centres[min(np.searchsorted(cdf, 0.95), len(centres) - 1)])
    return out


def default_workers(n_files: int) -> int:
    """1 for small sets (a spawned worker costs seconds to start), else up to 4 processes."""
    return 1 if n_files < 40 else max(1, min(4, (os.cpu_count() or 1)))


def log_summary(report: QualityReport, logger: logging.Logger, *, max_listed: int = 20,
                errors: bool = True) -> None:
    """One line per speaker, a count per kind of problem, then up to ``max_listed`` problems
    (without the errors when ``errors`` is False: a caller that reports those itself)."""
    for s in report.speakers.values():
        f0 = f", F0 {s.f0_low:.0f}-{s.f0_high:.0f} Hz" if s.f0_low else ""
        logger.info("speaker %s: %d clip(s), %.1f min%s", s.name, s.files, s.seconds / 60, f0)
    counts: dict[Issue, int] = {}
    for p in report.problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    if not counts:
        logger.info("dataset check: %d file(s), no problems found", len(report.files))
        return
    logger.warning("dataset check: %d file(s); %s", len(report.files),
                   ", ".join(f"{n} {k.value}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    listed = sorted((p for p in report.problems if errors or not p.is_error), key=lambda p: (not p.is_error, p.path))
    for p in listed[:max_listed]:
        (logger.error if p.is_error else logger.warning)("  %s", p)
    if len(listed) > max_listed:
        logger.warning("  ... and %d more (python check_dataset.py --html report.html lists all)",
                       len(listed) - max_listed)
