"""The one answer to "is this a usable training WAV?" (issue 19), with a typed problem.

Preprocessing (``preprocess_flist_config.py``, ``preprocess_hubert_f0.py``), the training data
loader and the dataset quality report (``check_dataset.py``) all ask :func:`check_wav`; each
passes its own :class:`WavRequirements` (rate of the config, shortest clip it can use ...) and
decides what a problem means to it (the file lists *skip* a clip under 0.3 s as 4.1 did, the
feature extractor *fails* it). The checks run cheapest first and stop at the first problem::

    0 bytes / cannot open ─► UNREADABLE
    data chunk cut short  ─► TRUNCATED     (preprocessing.wavinfo.wav_truncation)
    libsndfile refuses    ─► UNREADABLE
    rate / channels / not 16-bit PCM ─► WRONG_FORMAT
    fewer samples than min_samples   ─► TOO_SHORT
    more samples than max_samples    ─► TOO_LONG  (e.g. Whisper's 30 s window)
    every sample zero (only with reject_silent: reads the samples) ─► SILENT
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

from modules.errors import AudioError

FIX_FORMAT = "run resample.py on the raw recordings"


class WavProblem(str, enum.Enum):
    """Why a WAV cannot be used for training (``str`` values are stable, for reports)."""

    UNREADABLE = "unreadable"      # empty, not audio, cannot be opened
    TRUNCATED = "truncated"        # the data chunk is shorter than its header says
    WRONG_FORMAT = "wrong_format"  # rate, channel count or sample format differ from training's
    TOO_SHORT = "too_short"        # fewer samples than the caller can use
    TOO_LONG = "too_long"          # more samples than the caller can use (an encoder window)
    SILENT = "silent"              # every sample is zero


@dataclass(frozen=True)
class WavRequirements:
    """What a caller needs of a training WAV; ``None`` / 0 means "any".

    ``min_samples`` / ``max_samples`` are in samples at the file's rate. ``reject_silent`` reads
    the samples (the other checks read only the header).
    """

    sampling_rate: int | None = None
    mono: bool = True
    subtype: str | None = "PCM_16"
    min_samples: int = 0
    max_samples: int | None = None
    reject_silent: bool = False
    fix: str = FIX_FORMAT          # what to do about a WRONG_FORMAT file


@dataclass(frozen=True)
class WavCheck:
    """The verdict on one file; ``problem`` is None for a usable file.

    ``frames`` (samples per channel), ``samplerate`` (Hz), ``channels`` and ``subtype`` are
    filled whenever the header could be read.
    """

    path: str
    problem: WavProblem | None = None
    reason: str = ""
    frames: int = 0
    samplerate: int = 0
    channels: int = 0
    subtype: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def seconds(self) -> float:
        return self.frames / self.samplerate if self.samplerate else 0.0

    def raise_if_bad(self) -> None:
        """Raise :class:`AudioError` with the reason (without the path) for an unusable file."""
        if self.problem is not None:
            raise AudioError(self.reason)


def _first_line(e: BaseException) -> str:
    """The first line of a decoder's message (libsndfile's run over several lines)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_wav(path: str | os.PathLike, req: WavRequirements = WavRequirements()) -> WavCheck:
    """Check ``path`` against ``req``; never raises for a bad file (see :class:`WavCheck`)."""
    import soundfile as sf

    from preprocessing.wavinfo import wav_truncation

    path = Path(path)
    name = str(path)
    try:
        if path.stat().st_size == 0:
            return WavCheck(name, WavProblem.UNREADABLE, "empty file (0 bytes)")
    except OSError as e:
        return WavCheck(name, WavProblem.UNREADABLE, f"cannot read file ({e.strerror or e})")
    truncated = wav_truncation(path)
    if truncated:
        kind = WavProblem.TRUNCATED if truncated.startswith("truncated") else WavProblem.UNREADABLE
        return WavCheck(name, kind, truncated)
    try:
        info = sf.info(name)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        what = "WAV" if path.suffix.lower() == ".wav" else "audio"
        return WavCheck(name, WavProblem.UNREADABLE, f"not a readable {what} file ({_first_line(e)})")
    head = dict(path=name, frames=int(info.frames), samplerate=int(info.samplerate), channels=int(info.channels),
                subtype=str(info.subtype))
    if req.sampling_rate is not None and info.samplerate != req.sampling_rate:
        return WavCheck(problem=WavProblem.WRONG_FORMAT, reason=f"sample rate {info.samplerate} Hz, the config "
                        f"expects {req.sampling_rate} Hz; {req.fix}", **head)
    if req.mono and info.channels != 1:
        return WavCheck(problem=WavProblem.WRONG_FORMAT,
                        reason=f"{info.channels} channels, training reads mono; {req.fix}", **head)
    if req.subtype is not None and info.subtype != req.subtype:
        return WavCheck(problem=WavProblem.WRONG_FORMAT, reason=f"sample format {info.subtype}, training reads "
                        f"{_SUBTYPE_NAMES.get(req.subtype, req.subtype)}; {req.fix}", **head)
    sr = info.samplerate
    if info.frames < req.min_samples:
        return WavCheck(problem=WavProblem.TOO_SHORT, reason=f"too short: {info.frames} samples "
                        f"({info.frames / sr:.3g} s); at least {req.min_samples} samples "
                        f"({req.min_samples / sr:.3g} s) are needed", **head)
    if req.max_samples is not None and info.frames > req.max_samples:
        return WavCheck(problem=WavProblem.TOO_LONG, reason=f"too long: {info.frames / sr:.1f} s; at most "
                        f"{req.max_samples / sr:.3g} s fit; cut it into shorter clips (slice_audio.py)", **head)
    if req.reject_silent:
        try:
            data, _ = sf.read(name, dtype="int16" if info.subtype == "PCM_16" else "float32")
        except Exception as e:
            return WavCheck(problem=WavProblem.UNREADABLE, reason=f"not a readable WAV file ({_first_line(e)})",
                            **head)
        if not data.any():
            return WavCheck(problem=WavProblem.SILENT, reason="silent: every sample is zero; remove the file",
                            **head)
    return WavCheck(**head)


_SUBTYPE_NAMES = {"PCM_16": "16-bit PCM"}
