"""Per-speaker F0 statistics and the key suggestion built on them.

Preprocessing writes ``f0_stats.json`` next to the config (``preprocessing.f0_stats``)::

    {"format": "so-vits-svc f0 stats", "version": 1,
     "speakers": {"alice": {"frames": 81234, "voiced_seconds": 943.1,
                            "median_hz": 246.9, "p5_hz": 174.6, "p95_hz": 392.0,
                            "histogram": {"first_midi": 24, "counts": [...]}}}}

The histogram counts voiced frames per semitone (bin k holds MIDI notes
``first_midi + k - 0.5 ... + 0.5``; MIDI 69 = 440 Hz). Inference then calls
:func:`suggest_transpose` (semitones moving the source's voiced median onto the speaker's) and
:func:`out_of_range_seconds` (where the transposed song leaves the speaker's 5–95 % range).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from modules.errors import ConfigError, SvcError
from modules.io_utils import atomic_write_text

__all__ = ["F0_STATS_NAME", "SpeakerF0Stats", "compute_speaker_stats", "format_out_of_range", "load_f0_stats",
           "out_of_range_seconds", "save_f0_stats", "suggest_transpose"]

F0_STATS_NAME = "f0_stats.json"
FORMAT = "so-vits-svc f0 stats"
VERSION = 1
HIST_FIRST_MIDI = 24   # C1, 32.7 Hz
HIST_LAST_MIDI = 108   # C8, 4186 Hz


def hz_to_midi(hz: np.ndarray) -> np.ndarray:
    return 69.0 + 12.0 * np.log2(np.asarray(hz, dtype=np.float64) / 440.0)


@dataclass(frozen=True)
class SpeakerF0Stats:
    """Voiced-frame statistics of one speaker (Hz; histogram in voiced frames per semitone)."""

    frames: int
    voiced_seconds: float
    median_hz: float
    p5_hz: float
    p95_hz: float
    histogram: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict, where: str = "f0 stats") -> "SpeakerF0Stats":
        try:
            s = cls(frames=int(d["frames"]), voiced_seconds=float(d["voiced_seconds"]),
                    median_hz=float(d["median_hz"]), p5_hz=float(d["p5_hz"]), p95_hz=float(d["p95_hz"]),
                    histogram=dict(d.get("histogram", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: not a speaker f0 statistics entry ({type(e).__name__}: {e})") from None
        if not (0 < s.p5_hz <= s.median_hz <= s.p95_hz):
            raise ConfigError(f"{where}: need 0 < p5_hz <= median_hz <= p95_hz, got {s.p5_hz}, {s.median_hz}, "
                              f"{s.p95_hz}")
        return s


def compute_speaker_stats(f0_tracks, hop_length: int, sampling_rate: int) -> SpeakerF0Stats | None:
    """Statistics over the voiced frames of several ``(f0 [T] Hz, uv [T])`` tracks; ``None`` if none is voiced."""
    voiced = [np.asarray(f0, dtype=np.float64)[(np.asarray(uv) > 0.5) & (np.asarray(f0) > 0)] for f0, uv in f0_tracks]
    hz = np.concatenate(voiced) if voiced else np.zeros(0)
    if hz.size == 0:
        return None
    p5, median, p95 = np.percentile(hz, [5, 50, 95])
    midi = np.clip(np.round(hz_to_midi(hz)).astype(int), HIST_FIRST_MIDI, HIST_LAST_MIDI) - HIST_FIRST_MIDI
    counts = np.bincount(midi, minlength=HIST_LAST_MIDI - HIST_FIRST_MIDI + 1)
    return SpeakerF0Stats(frames=int(hz.size), voiced_seconds=round(hz.size * hop_length / sampling_rate, 3),
                          median_hz=float(median), p5_hz=float(p5), p95_hz=float(p95),
                          histogram={"first_midi": HIST_FIRST_MIDI, "counts": counts.tolist()})


def save_f0_stats(path: str | os.PathLike, stats: dict[str, SpeakerF0Stats], **meta) -> Path:
    """Write ``{speaker: stats}`` (plus ``meta`` such as the f0 predictor) atomically as JSON."""
    doc = {"format": FORMAT, "version": VERSION, **meta,
           "speakers": {spk: asdict(s) for spk, s in sorted(stats.items())}}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return Path(path)


def load_f0_stats(path: str | os.PathLike) -> dict[str, SpeakerF0Stats]:
    """Read a ``f0_stats.json`` → ``{speaker: SpeakerF0Stats}``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: f0 statistics not found; run preprocess_hubert_f0.py to write them") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not readable f0 statistics ({e}); run preprocess_hubert_f0.py again") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("speakers"), dict):
        raise ConfigError(f"{path}: not an f0 statistics file (expected \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise ConfigError(f"{path}: f0 statistics version {doc.get('version')!r}; this program reads {VERSION}")
    return {spk: SpeakerF0Stats.from_dict(d, f"{path}: speaker '{spk}'") for spk, d in doc["speakers"].items()}


def _as_stats(stats: SpeakerF0Stats | dict) -> SpeakerF0Stats:
    return stats if isinstance(stats, SpeakerF0Stats) else SpeakerF0Stats.from_dict(stats)


def _voiced(f0: np.ndarray, uv: np.ndarray | None) -> np.ndarray:
    f0 = np.asarray(f0, dtype=np.float64).reshape(-1)
    mask = f0 > 0
    if uv is not None:
        uv = np.asarray(uv).reshape(-1)
        if uv.shape != f0.shape:
            raise SvcError(f"f0 has {f0.size} frames but uv has {uv.size}")
        mask &= uv > 0.5
    return mask


def suggest_transpose(source_f0: np.ndarray, speaker_stats: SpeakerF0Stats | dict, uv: np.ndarray | None = None) -> int:
    """Semitones (rounded) that move the source's voiced median f0 onto the speaker's median.

    Args:
        source_f0: f0 of the song ``[T]`` in Hz (before transposition; 0 = unvoiced).
        speaker_stats: the target speaker's :class:`SpeakerF0Stats` (or its dict).
        uv: voiced flags ``[T]`` (1 = voiced); when given, only those frames count (needed for
            interpolated curves, where unvoiced frames hold nonzero values).

    Returns:
        int semitones for ``-t`` / ``tran``; 0 when the song has no voiced frame.
        Example: a song at 220 Hz and a speaker whose median is 110 Hz → -12.
    """
    stats = _as_stats(speaker_stats)
    f0 = np.asarray(source_f0, dtype=np.float64).reshape(-1)
    voiced = f0[_voiced(f0, uv)]
    if voiced.size == 0:
        return 0
    return int(round(12 * math.log2(stats.median_hz / float(np.median(voiced)))))


def out_of_range_seconds(f0_transposed: np.ndarray, stats: SpeakerF0Stats | dict, hop: int, sr: int,
                         uv: np.ndarray | None = None, *, min_duration_s: float = 0.1,
                         merge_gap_s: float = 0.25) -> list[tuple[float, float]]:
    """Time spans (start s, end s) where the transposed song's voiced f0 leaves the speaker's 5–95 % range.

    Args:
        f0_transposed: f0 ``[T]`` in Hz after transposition, frames of ``hop`` samples at ``sr``.
        stats: the target speaker's statistics.
        uv: voiced flags ``[T]`` (recommended for interpolated curves).
        min_duration_s: spans shorter than this (after merging) are dropped.
        merge_gap_s: spans closer than this are merged into one.
    """
    s = _as_stats(stats)
    f0 = np.asarray(f0_transposed, dtype=np.float64).reshape(-1)
    out = _voiced(f0, uv) & ((f0 < s.p5_hz) | (f0 > s.p95_hz))
    period = hop / sr
    spans: list[list[float]] = []
    for start, end in _runs(out):
        b, e = start * period, end * period
        if spans and b - spans[-1][1] < merge_gap_s:
            spans[-1][1] = e
        else:
            spans.append([b, e])
    return [(round(b, 3), round(e, 3)) for b, e in spans if e - b >= min_duration_s]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(padded)
    return list(zip(np.nonzero(d == 1)[0].tolist(), np.nonzero(d == -1)[0].tolist()))


def format_out_of_range(spans: list[tuple[float, float]], stats: SpeakerF0Stats | dict, speaker: str = "the speaker",
                        max_listed: int = 8) -> str | None:
    """One warning line naming the spans (``None`` when there are none)."""
    if not spans:
        return None
    s = _as_stats(stats)
    total = sum(e - b for b, e in spans)
    listed = ", ".join(f"{b:.1f}-{e:.1f} s" for b, e in spans[:max_listed])
    if len(spans) > max_listed:
        listed += f" and {len(spans) - max_listed} more"
    return (f"{total:.1f} s of the transposed song lie outside {speaker}'s 5-95 % range "
            f"({s.p5_hz:.0f}-{s.p95_hz:.0f} Hz): {listed}; expect strained or mute notes there "
            f"(try another key)")
