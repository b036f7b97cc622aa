"""Silence slicer for offline inference (spec §10.4; the openvpi audio-slicer algorithm).

A song is cut at silences so that each voiced chunk is converted on its own and silent chunks
are output as zeros. The cut points are exactly those of 4.1's ``inference/slicer.py``:

* loudness = ``librosa.feature.rms`` (centred; ``modules.audio.frame_rms`` computes the same
  values) with a hop of 20 ms and a window of
  min(300 ms, 4 hops);
* a run of frames below ``threshold`` dB becomes a cut when it is leading silence longer than
  ``max_sil_kept``, or when it lasts ≥ ``min_interval`` and the clip before it is ≥ ``min_length``;
* inside a run, cuts sit at RMS minima; runs longer than ``max_sil_kept`` keep at most
  ``max_sil_kept`` of silence on each side of the cut::

      voiced ......  silent run (rms < thr) ....................  voiced
                    |<- ≤ max_sil_kept ->|      |<- ≤ max_sil_kept ->|
                    pos_l (min)                             pos_r (min)
                    └───── becomes a "silent" chunk ─────┘

The result alternates voiced and silent chunks and covers every sample of the input.

Dataset slicing (``slice_audio.py``, off for inference) adds ``max_length``: a voiced chunk
longer than that is split at its quietest RMS frame, searched where both pieces keep at least
``min_length`` (at most half the chunk) and the first piece stays within ``max_length``::

    |<------------------------- chunk > max_length ------------------------->|
    |<- min_length ->|<== search: quietest frame ==>|                        |
                                      max_length ->|
    cut at the minimum, repeat on the rest until every piece ≤ max_length
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Chunk:
    """One slice of the input, ``[start, end)`` in samples at the slicing rate."""

    silent: bool
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


class Slicer:
    """The 4.1 slicer. Times are in milliseconds, ``threshold`` in dB (full scale)."""

    def __init__(self, sr: int, threshold: float = -40.0, min_length: int = 5000, min_interval: int = 300,
                 hop_size: int = 20, max_sil_kept: int = 5000, max_length: int | None = None) -> None:
        if not min_length >= min_interval >= hop_size:
            raise ValueError("slicer needs min_length >= min_interval >= hop_size")
        if not max_sil_kept >= hop_size:
            raise ValueError("slicer needs max_sil_kept >= hop_size")
        if max_length is not None and max_length < min_length:
            raise ValueError("slicer needs max_length >= min_length")
        interval_samples = sr * min_interval / 1000
        self.threshold = 10 ** (threshold / 20.0)                          # linear RMS
        self.hop_size = round(sr * hop_size / 1000)                        # samples per RMS frame
        self.win_size = min(round(interval_samples), 4 * self.hop_size)    # samples
        self.min_length = round(sr * min_length / 1000 / self.hop_size)    # frames
        self.min_interval = round(interval_samples / self.hop_size)        # frames
        self.max_sil_kept = round(sr * max_sil_kept / 1000 / self.hop_size)  # frames
        self.max_length = None if max_length is None else max(1, int(sr * max_length / 1000 / self.hop_size))  # frames

    def _silences(self, rms: np.ndarray) -> list[tuple[int, int]]:
        """Frame ranges ``(begin, end)`` to mark as silent, in order."""
        tags: list[tuple[int, int]] = []
        keep = self.max_sil_kept
        silence_start = None
        clip_start = 0
        for i, value in enumerate(rms):
            if value < self.threshold:
                if silence_start is None:
                    silence_start = i
                continue
            if silence_start is None:
                continue
            leading = silence_start == 0 and i > keep
            middle = i - silence_start >= self.min_interval and i - clip_start >= self.min_length
            if not leading and not middle:
                silence_start = None
                continue
            run = i - silence_start
            if run <= keep:
                pos = int(rms[silence_start: i + 1].argmin()) + silence_start
                tags.append((0, pos) if silence_start == 0 else (pos, pos))
                clip_start = pos
            else:
                pos_l = int(rms[silence_start: silence_start + keep + 1].argmin()) + silence_start
                pos_r = int(rms[i - keep: i + 1].argmin()) + i - keep
                if run <= 2 * keep:
                    pos = int(rms[i - keep: silence_start + keep + 1].argmin()) + i - keep
                    if silence_start == 0:
                        tags.append((0, pos_r))
                        clip_start = pos_r
                    else:
                        tags.append((min(pos_l, pos), max(pos_r, pos)))
                        clip_start = max(pos_r, pos)
                else:
                    tags.append((0, pos_r) if silence_start == 0 else (pos_l, pos_r))
                    clip_start = pos_r
            silence_start = None
        total = len(rms)
        if silence_start is not None and total - silence_start >= self.min_interval:
            end = min(total, silence_start + keep)
            pos = int(rms[silence_start: end + 1].argmin()) + silence_start
            tags.append((pos, total + 1))
        return tags

    def slice(self, waveform: np.ndarray) -> list[Chunk]:
        """Chunks covering ``waveform`` (``[L]`` or ``[channels, L]``), alternating voiced/silent."""
        from modules.audio import frame_rms

        samples = waveform.mean(axis=0) if waveform.ndim > 1 else waveform
        n = samples.shape[-1]
        # 4.1 compares the sample count with min_length in frames here (always false in practice).
        if n <= self.min_length:
            return [Chunk(False, 0, n)]
        rms = frame_rms(samples, self.win_size, self.hop_size)[0]  # librosa.feature.rms's values
        tags = self._silences(rms)
        if not tags:
            return self._split_long([Chunk(False, 0, n)], rms, n)
        hop = self.hop_size
        out: list[Chunk] = []
        if tags[0][0]:
            out.append(Chunk(False, 0, min(n, tags[0][0] * hop)))
        for i, (begin, end) in enumerate(tags):
            if i:
                out.append(Chunk(False, tags[i - 1][1] * hop, min(n, begin * hop)))
            out.append(Chunk(True, begin * hop, min(n, end * hop)))
        if tags[-1][1] * hop < n:
            out.append(Chunk(False, tags[-1][1] * hop, n))
        return self._split_long(out, rms, n)

    def _split_long(self, chunks: list[Chunk], rms: np.ndarray, n: int) -> list[Chunk]:
        """Split voiced chunks longer than ``max_length`` at their quietest frames (see the module doc)."""
        if self.max_length is None:
            return chunks
        hop, limit = self.hop_size, self.max_length
        out: list[Chunk] = []
        for c in chunks:
            start = c.start
            while not c.silent and c.end - start > limit * hop:
                frames = (c.end - start) // hop
                keep = min(self.min_length, frames // 2)  # shortest piece on either side of the cut
                # within 2 × max_length the rest must fit too; beyond it only the first piece must
                first = start // hop
                lo = first + (max(keep, frames - limit) if frames <= 2 * limit else keep)
                hi = min(first + min(limit, frames - keep), len(rms) - 1)
                cut = (int(rms[lo: hi + 1].argmin()) + lo) * hop if hi >= lo else start + limit * hop
                cut = min(max(cut, start + hop), start + limit * hop)
                out.append(Chunk(False, start, cut))
                start = cut
            out.append(Chunk(c.silent, start, c.end))
        return out


def slice_audio(y: np.ndarray, sr: int, db_thresh: float = -40, min_len: int = 5000) -> list[Chunk]:
    """Non-empty chunks of ``y`` (mono ``[L]``), as 4.1's ``cut`` + ``chunks2audio`` keep them."""
    chunks = Slicer(sr=sr, threshold=db_thresh, min_length=min_len).slice(np.asarray(y, dtype=np.float32))
    return [c for c in chunks if c.end > c.start]


# --- 4.1 function names -------------------------------------------------------------------------
def cut(audio_path: str | os.PathLike, db_thresh: float = -30, min_len: int = 5000) -> dict[str, dict]:
    """4.1's ``slicer.cut``: ``{"0": {"slice": silent?, "split_time": "start,end"}, ...}``."""
    from modules.audio import load_audio

    y, sr = load_audio(audio_path)
    chunks = Slicer(sr=sr, threshold=db_thresh, min_length=min_len).slice(y)
    return {str(i): {"slice": c.silent, "split_time": f"{c.start},{c.end}"} for i, c in enumerate(chunks)}


def chunks2audio(audio_path: str | os.PathLike, chunks: dict[str, dict]) -> tuple[list[tuple[bool, np.ndarray]], int]:
    """4.1's ``slicer.chunks2audio``: ``([(silent, samples), ...], sample_rate)``, empty chunks dropped."""
    from modules.audio import load_audio

    y, sr = load_audio(audio_path)
    result = []
    for v in dict(chunks).values():
        start, end = (int(t) for t in v["split_time"].split(","))
        if start != end:
            result.append((v["slice"], y[start:end]))
    return result, sr
