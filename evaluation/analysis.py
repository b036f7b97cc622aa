"""Per-signal analysis shared by ``evaluate.py`` and the training-time scores.

Everything is analysed at 16 kHz (the speaker encoder's rate; FCPE and RMVPE work at 16 kHz
internally too), so files of different sample rates are compared on one time grid::

    file (any rate) ─► mono ─► 16 kHz ─► f0 / voicing   every 10 ms   (the chosen F0 predictor)
                                     ├─► loudness       every 20 ms   (frame RMS, modules.volume)
                                     └─► speaker embedding [256]      (evaluation.speaker)

Models (F0 predictor, speaker encoder) are loaded once per :class:`Analyzer`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evaluation import speaker
from evaluation.metrics import duration_ratio, f0_metrics, loudness_corr
from modules.audio import load_audio, resample
from modules.errors import AudioError

log = logging.getLogger(__name__)

ANALYSIS_SR = 16000                      # Hz
F0_HOP = ANALYSIS_SR // 100              # 160 samples = 10 ms pitch frames
LOUDNESS_HOP = ANALYSIS_SR // 50         # 320 samples = 20 ms loudness frames
SILENCE_DBFS = -60.0                     # a signal whose loudest 20 ms frame is below this is "silent"
DEFAULT_F0_PREDICTOR = "fcpe"


@dataclass
class Analysis:
    """What the metrics need from one signal (frame rates: f0 100 Hz, loudness 50 Hz)."""

    seconds: float             # duration
    f0: np.ndarray             # [T] Hz (interpolated through unvoiced frames)
    voiced: np.ndarray         # [T] bool
    rms: np.ndarray            # [T'] linear frame RMS
    embedding: np.ndarray | None = None  # [256] unit-norm speaker embedding


def load_for_analysis(path: str | os.PathLike) -> np.ndarray:
    """Read an audio file as 16 kHz mono float32 ``[L]``; other rates are resampled (logged)."""
    y, sr = load_audio(path)
    if sr != ANALYSIS_SR:
        log.debug("%s: %d Hz, resampled to %d Hz for analysis", path, sr, ANALYSIS_SR)
        y = resample(y, sr, ANALYSIS_SR)
    return y


def frame_rms(wav: np.ndarray) -> np.ndarray:
    """``[L]`` 16 kHz audio → ``[L // 320]`` RMS of consecutive 20 ms frames."""
    from modules.volume import VolumeExtractor

    return VolumeExtractor(LOUDNESS_HOP).extract(torch.from_numpy(np.ascontiguousarray(wav, np.float32))).numpy()


def check_audible(wav: np.ndarray, what: str = "audio") -> np.ndarray:
    """Frame RMS of 16 kHz ``wav`` (see :func:`frame_rms`); :class:`AudioError` naming ``what`` when the
    loudest 20 ms frame is below ``SILENCE_DBFS`` or the audio is shorter than one frame."""
    rms = frame_rms(wav)
    peak_db = 20 * np.log10(max(float(rms.max()) if rms.size else 0.0, 1e-12))
    if rms.size == 0 or peak_db < SILENCE_DBFS:
        if rms.size == 0:
            level = f"only {len(wav) / ANALYSIS_SR * 1000:.0f} ms long"
        elif peak_db < -200:
            level = "every sample is zero"
        else:
            level = f"loudest 20 ms frame at {peak_db:.1f} dBFS"
        raise AudioError(f"{what}: silent or too short to evaluate ({level}; needs a 20 ms frame at "
                         f"{SILENCE_DBFS:.0f} dBFS or louder); check that the file holds the right audio")
    return rms


class Analyzer:
    """Loads the F0 predictor and the speaker encoder once; :meth:`analyze` one signal at a time.

    Args:
        f0_predictor: a name from ``modules.F0Predictor`` (``fcpe`` default, ``rmvpe``, ``crepe``, ...).
        device: torch device for the neural models (``None``: CUDA when available).
        speaker_weights: Resemblyzer ``pretrained.pt``; ``None`` uses the installed wheel's.
        with_speaker: ``False`` skips the speaker encoder entirely (no embeddings).
    """

    def __init__(self, *, f0_predictor: str = DEFAULT_F0_PREDICTOR, device: str | torch.device | None = None,
                 speaker_weights: str | Path | None = None, with_speaker: bool = True) -> None:
        from modules.F0Predictor import get_f0_predictor

        self.f0_predictor_name = f0_predictor
        self.f0 = get_f0_predictor(f0_predictor, hop_length=F0_HOP, sampling_rate=ANALYSIS_SR, device=device)
        self.encoder = speaker.load_speaker_encoder(speaker_weights, device=device) if with_speaker else None

    def analyze(self, wav: np.ndarray, *, what: str = "audio", embed: bool = True) -> Analysis:
        """16 kHz ``[L]`` → :class:`Analysis`. Raises :class:`AudioError` naming ``what`` when silent."""
        wav = np.asarray(wav, dtype=np.float32)
        rms = check_audible(wav, what)
        f0, uv = self.f0.compute_f0_uv(wav)
        emb = None
        if embed and self.encoder is not None:
            emb = speaker.embed_utterance(self.encoder, wav)
        return Analysis(seconds=len(wav) / ANALYSIS_SR, f0=f0, voiced=uv > 0, rms=rms, embedding=emb)

    def embed_many(self, wavs: list[np.ndarray]) -> np.ndarray:
        """Speaker embedding ``[256]`` of several clips of one speaker."""
        if self.encoder is None:
            raise AudioError("speaker similarity was switched off for this analyzer")
        return speaker.embed_speaker(self.encoder, wavs)


def compare(source: Analysis, converted: Analysis, *, transpose: float = 0.0,
            target_embedding: np.ndarray | None = None) -> dict[str, float | None]:
    """All metrics of ``converted`` against ``source`` (keys: ``evaluation.metrics.METRIC_KEYS``).

    ``spk_sim_target`` is ``None`` without a target embedding; the similarities are ``None`` when
    either analysis has no embedding.
    """
    out: dict[str, float | None] = dict(f0_metrics(source.f0, source.voiced, converted.f0, converted.voiced,
                                                   transpose))
    out["loudness_corr"] = loudness_corr(source.rms, converted.rms)
    emb = converted.embedding
    out["spk_sim_target"] = (speaker.cosine(emb, target_embedding)
                             if emb is not None and target_embedding is not None else None)
    out["spk_sim_source"] = (speaker.cosine(emb, source.embedding)
                             if emb is not None and source.embedding is not None else None)
    out["duration_ratio"] = duration_ratio(source.seconds, converted.seconds)
    return out
