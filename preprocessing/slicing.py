"""Step 0 (optional): cut long recordings into training clips at silences (issue 22).

``slice_audio.py --in_dir dataset_raw --out_dir dataset_raw_sliced`` runs the project's one
slicer (:class:`inference.slicer.Slicer`, the openvpi audio-slicer algorithm) with the dataset
defaults of that tool (threshold −40 dB, clips ≥ 5 s, pauses ≥ 300 ms, 10 ms hop, ≤ 500 ms of
silence kept) plus a hard maximum length (15 s) split at the quietest point. Only the voiced
chunks are written: ``<out_dir>/<speaker>/<stem>_<k>.wav`` (k = 0, 1, ...), at the source's rate
and channel count, each to a temporary name first. Pieces shorter than 0.3 s (what the file
lists leave out) are dropped. The input folder is only read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from modules.errors import ConfigError
from preprocessing.report import FileOutcome, RunSummary

log = logging.getLogger(__name__)

MIN_CLIP_SECONDS = 0.3  # = preprocessing.flist.MIN_SECONDS: shorter clips never reach training


@dataclass(frozen=True)
class SliceOptions:
    """Slicer parameters; times in milliseconds, ``threshold_db`` in dBFS (frame RMS)."""

    threshold_db: float = -40.0
    min_length_ms: int = 5000
    min_interval_ms: int = 300
    hop_ms: int = 10
    max_sil_kept_ms: int = 500
    max_length_ms: int | None = 15000

    def __post_init__(self) -> None:
        try:
            self.slicer(44100)
        except ValueError as e:
            raise ConfigError(f"slicing parameters: {e} (got --min_length {self.min_length_ms}, --min_interval "
                              f"{self.min_interval_ms}, --hop_size {self.hop_ms}, --max_sil_kept "
                              f"{self.max_sil_kept_ms}, --max_length {self.max_length_ms})") from None
        if self.hop_ms <= 0:
            raise ConfigError(f"--hop_size must be positive, got {self.hop_ms}")

    def slicer(self, sr: int):
        from inference.slicer import Slicer

        return Slicer(sr, threshold=self.threshold_db, min_length=self.min_length_ms,
                      min_interval=self.min_interval_ms, hop_size=self.hop_ms, max_sil_kept=self.max_sil_kept_ms,
                      max_length=self.max_length_ms)


def _subtype(source_subtype: str) -> str:
    """Keep the source's WAV sample format where WAV can hold it (PCM_24 stays 24-bit), else float."""
    import soundfile as sf

    return source_subtype if sf.check_format("WAV", source_subtype) else "FLOAT"


def slice_file(src: str | os.PathLike, dst_dir: str | os.PathLike, opts: SliceOptions) -> FileOutcome:
    """Slice one recording into ``dst_dir/<stem>_<k>.wav``; never raises for bad input."""
    import soundfile as sf

    from modules.audio import load_audio
    from modules.errors import SvcError
    from modules.io_utils import atomic_path
    from modules.wavcheck import WavRequirements, check_wav

    src, dst_dir = Path(src), Path(dst_dir)
    first = dst_dir / f"{src.stem}_0.wav"
    if first.exists():
        return FileOutcome(str(src), "skipped", f"{first} exists (delete {dst_dir / (src.stem + '_*.wav')} "
                                                "to slice it again)")
    check = check_wav(src, WavRequirements(mono=False, subtype=None))
    if not check.ok:
        return FileOutcome(str(src), "failed", check.reason)
    try:
        y, sr = load_audio(src, mono=False)  # [channels, L]
    except SvcError as e:
        return FileOutcome(str(src), "failed", str(e).removeprefix(f"{src}: "))
    chunks = [c for c in opts.slicer(sr).slice(y) if not c.silent]
    keep = [c for c in chunks if len(c) >= MIN_CLIP_SECONDS * sr]
    subtype = _subtype(check.subtype)
    for k, c in enumerate(keep):
        with atomic_path(dst_dir / f"{src.stem}_{k}.wav") as tmp:
            sf.write(str(tmp), y[:, c.start:c.end].T, sr, format="WAV", subtype=subtype)
    dropped = len(chunks) - len(keep)
    if not keep:
        return FileOutcome(str(src), "failed", "no voiced clip of at least 0.3 s found (silent? lower "
                                               "--db_thresh)")
    return FileOutcome(str(src), "done", f"{len(keep)} clip(s)" + (f", {dropped} under {MIN_CLIP_SECONDS} s dropped"
                                                                   if dropped else ""))


def slice_dataset(in_dir: str | os.PathLike, out_dir: str | os.PathLike, opts: SliceOptions = SliceOptions(), *,
                  progress: bool = True) -> RunSummary:
    """Slice every ``<in_dir>/<speaker>/<file>`` into ``<out_dir>/<speaker>/``; returns the summary.

    The listing (what counts as audio, hidden files, name clashes) is resample.py's.
    """
    from tqdm import tqdm

    from preprocessing.resample import plan

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if in_dir.is_dir() and (out_dir.resolve() == in_dir.resolve() or in_dir.resolve() in out_dir.resolve().parents):
        raise ConfigError(f"--out_dir {out_dir} is inside the input folder {in_dir}, which is never written to; "
                          "choose another output folder (e.g. dataset_raw_sliced)")
    jobs, left_out = plan(in_dir, out_dir)
    summary = RunSummary("slice_audio")
    summary.extend(left_out)
    log.info("slicing %d file(s): %s → %s", len(jobs), in_dir, out_dir)
    for src, dst in tqdm(jobs, desc="slice", unit="file", disable=not progress):
        summary.add(slice_file(src, dst.parent, opts))
    return summary
