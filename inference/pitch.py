"""The f0 a conversion used, and the key suggestion around it (issue 20).

:meth:`inference.infer_tool.Svc.convert` reports the curve it fed the synthesizer as one
:class:`F0Curve` (``on_f0=``) and takes a given one instead of predicting (``f0_curve=``).
Both live on the **conversion's frame grid**, the one the speaker-mix weights use::

    song      | silent |      voiced piece 1      | silent |   voiced piece 2  ...
    frames    |  n//hop| pad | ..piece.. | pad     |  n//hop| pad | ..piece.. | pad
              ^ frame 0       (len(padded) // hop frames)

A silent piece adds ``n // hop`` unvoiced rows (f0 0); a voiced piece adds the frames of its
*padded* segment, padding included (the synthesizer sees them, so a curve written and read
back must hold them for the same audio). ``time_s`` gives every row's time in the song (pad
rows lie outside their piece, ``in_piece`` is False there): use it to plot or to name song
seconds; the CSV's own time column counts rows (``modules.f0_file``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modules.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["F0Curve", "KeyReport", "key_report", "load_speaker_stats"]


@dataclass(frozen=True)
class F0Curve:
    """One conversion's f0, ``T`` frames of ``hop_length`` samples at ``sampling_rate`` Hz.

    Attributes:
        f0: float64 ``[T]`` Hz fed to the synthesizer (after transposition, range and repair;
            unvoiced frames hold the interpolated value the model sees, silent pieces 0).
        uv: float32 ``[T]`` voiced flags (1 = voiced).
        source_f0: float64 ``[T]`` Hz before transposition (``f0 / 2**(transpose/12)``).
        time_s: float64 ``[T]`` song time of each frame's start (s).
        in_piece: bool ``[T]``: the frame lies inside a voiced piece (not padding, not silence).
        transpose: semitones applied (``-t``, or the suggestion with ``auto_key``; 0 for a given curve).
        hop_length, sampling_rate: the model's frame size (samples) and rate (Hz).
    """

    f0: np.ndarray
    uv: np.ndarray
    source_f0: np.ndarray
    time_s: np.ndarray
    in_piece: np.ndarray
    transpose: float
    hop_length: int
    sampling_rate: int

    def __len__(self) -> int:
        return int(self.f0.shape[0])

    def voiced(self) -> np.ndarray:
        """bool ``[T]``: voiced frames inside pieces (what statistics and plots use)."""
        return self.in_piece & (self.uv > 0.5) & (self.f0 > 0)


@dataclass(frozen=True)
class KeyReport:
    """The key suggestion for one song and speaker."""

    speaker: str
    suggested: int                       # semitones moving the source median onto the speaker's
    source_median_hz: float | None       # None: no voiced frame
    speaker_median_hz: float
    p5_hz: float
    p95_hz: float
    out_of_range: list[tuple[float, float]]   # song seconds where the transposed f0 leaves 5-95 %
    transpose: float                     # the transposition the spans were measured with

    def message(self) -> str:
        src = f"{self.source_median_hz:.0f} Hz" if self.source_median_hz else "no voiced frame"
        return (f"suggested key for speaker {self.speaker}: {self.suggested:+d} semitones (song median {src}, "
                f"speaker median {self.speaker_median_hz:.0f} Hz, range {self.p5_hz:.0f}-{self.p95_hz:.0f} Hz)")


def load_speaker_stats(config_path: str | os.PathLike | None = None, model_file: Any = None) -> dict | None:
    """Per-speaker f0 statistics of a model: the ``.svc.safetensors`` file's ``f0_stats``
    metadata, else ``f0_stats.json`` in the folder of ``config_path`` (a config or any file beside
    it, e.g. the checkpoint); ``None`` when there are none.
    A present but unreadable file is logged and ignored (conversion does not need it)."""
    from modules.f0_stats import F0_STATS_NAME, SpeakerF0Stats, load_f0_stats

    try:
        if model_file is not None and getattr(model_file, "f0_stats", None):
            doc = model_file.f0_stats
            speakers = doc.get("speakers", doc) if isinstance(doc, dict) else {}
            return {spk: SpeakerF0Stats.from_dict(d, f"{model_file.path}: f0_stats '{spk}'")
                    for spk, d in speakers.items()}
        if config_path is not None:
            path = Path(config_path).parent / F0_STATS_NAME
            if path.is_file():
                return load_f0_stats(path)
    except ConfigError as e:
        log.warning("%s; no key suggestion", e)
    return None


def key_report(curve: F0Curve, stats: Any, speaker: str) -> KeyReport:
    """The suggestion and out-of-range spans of ``curve`` for ``speaker``'s statistics.

    The spans are measured on the curve's song times (voiced frames inside pieces only), with
    the transposition the curve used."""
    from modules.f0_stats import out_of_range_seconds, suggest_transpose

    voiced = curve.voiced()
    src = curve.source_f0[voiced]
    suggested = suggest_transpose(src, stats)
    spans: list[tuple[float, float]] = []
    if voiced.any():
        # frames sorted by song time (pieces may overlap by a crossfade); a span is a run of
        # out-of-range frames that are also consecutive in time
        t = curve.time_s[voiced]
        order = np.argsort(t, kind="stable")
        period = curve.hop_length / curve.sampling_rate
        f0 = curve.f0[voiced][order]
        t = t[order]
        # resample onto the song's frame grid so out_of_range_seconds' spacing holds
        grid = np.zeros(int(math.ceil(t[-1] / period)) + 1)
        grid[np.round(t / period).astype(int)] = f0
        spans = out_of_range_seconds(grid, stats, curve.hop_length, curve.sampling_rate)
    s = stats
    return KeyReport(speaker=str(speaker), suggested=suggested,
                     source_median_hz=float(np.median(src)) if src.size else None,
                     speaker_median_hz=float(s.median_hz), p5_hz=float(s.p5_hz), p95_hz=float(s.p95_hz),
                     out_of_range=spans, transpose=curve.transpose)


def model_f0_stats(model_path: str | os.PathLike, config_path: str | os.PathLike | None = None) -> dict | None:
    """:func:`load_speaker_stats` for a model given by its paths, reading only a model file's
    header (the realtime GUI shows the key before any model loads); None when there are none."""
    from modelfile import is_model_file, read_info

    if is_model_file(model_path):
        try:
            meta = read_info(model_path).metadata
        except Exception as e:  # unreadable: the loader names the problem later
            log.info("%s: no f0 statistics read (%s)", model_path, e)
            return None

        class _Header:  # what load_speaker_stats reads of a model file
            path = model_path
            f0_stats = meta.get("f0_stats")

        return load_speaker_stats(None, _Header)
    config = Path(config_path) if config_path else Path(model_path).parent / "config.json"
    return load_speaker_stats(config)


def speaker_key_text(stats: dict | None, speaker: str, source_median_hz: float | None = None) -> str:
    """One line about ``speaker``'s range and, given the singer's median f0, the suggested key."""
    from modules.f0_stats import suggest_transpose

    s = (stats or {}).get(speaker)
    if s is None:
        return f"no f0 statistics for speaker {speaker!r} (preprocess_hubert_f0.py writes them)"
    text = f"{speaker}: median {s.median_hz:.0f} Hz, 5-95 % {s.p5_hz:.0f}-{s.p95_hz:.0f} Hz"
    if source_median_hz:
        key = suggest_transpose(np.array([source_median_hz]), s)
        text += f"; suggested key {key:+d} semitones (your voice: median {source_median_hz:.0f} Hz)"
    return text
