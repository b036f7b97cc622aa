"""Per-speaker F0 statistics from the ``X.wav.f0.npy`` artifacts (after ``preprocess_hubert_f0.py``).

The result, ``f0_stats.json`` next to the config, is what inference's key suggestion and the
range warning read (:mod:`modules.f0_stats`). Computed from the artifacts on disk, so a
resumed run (or one that only re-wrote some files) still covers every file.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

from modules.f0_stats import F0_STATS_NAME, SpeakerF0Stats, compute_speaker_stats, save_f0_stats
from preprocessing.features import f0_path, load_f0
from preprocessing.report import DatasetError

log = logging.getLogger(__name__)


def default_stats_path(config_path: str | os.PathLike) -> Path:
    """``configs/config.json`` → ``configs/f0_stats.json``."""
    return Path(config_path).parent / F0_STATS_NAME


def write_f0_stats(wavs: list[Path], out_path: str | os.PathLike, *, hop_length: int, sampling_rate: int,
                   f0_predictor: str | None = None) -> dict[str, SpeakerF0Stats]:
    """Collect the f0 artifacts of ``wavs`` (``<in_dir>/<speaker>/X.wav``) per speaker folder and
    write their statistics to ``out_path`` atomically. Files without a readable artifact are
    skipped (logged). Returns ``{speaker: stats}`` (speakers with no voiced frame are left out)."""
    tracks: dict[str, list] = defaultdict(list)
    for wav in wavs:
        path = f0_path(wav)
        if not path.is_file():
            continue
        try:
            tracks[wav.parent.name].append(load_f0(path))
        except DatasetError as e:
            log.warning("f0 statistics: skipping %s", e)
    stats = {}
    for spk in sorted(tracks):
        s = compute_speaker_stats(tracks[spk], hop_length, sampling_rate)
        if s is None:
            log.warning("f0 statistics: speaker '%s' has no voiced frame; left out", spk)
            continue
        stats[spk] = s
        log.info("f0 of '%s': median %.1f Hz, 5-95 %% %.1f-%.1f Hz over %.1f s voiced", spk, s.median_hz, s.p5_hz,
                 s.p95_hz, s.voiced_seconds)
    meta = {"f0_predictor": f0_predictor} if f0_predictor else {}
    save_f0_stats(out_path, stats, hop_length=hop_length, sampling_rate=sampling_rate, **meta)
    log.info("wrote per-speaker f0 statistics to %s", out_path)
    return stats
