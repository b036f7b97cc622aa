"""Objective metrics of a conversion, as pure functions of frame tracks and embeddings.

Every metric compares a *converted* signal with its *source* (or, for speaker similarity, with
reference clips), frame by frame: a conversion keeps the source's timing, so frame i of both
describes the same moment; tracks of different length are compared over the shorter one.
A metric that is undefined for the input (no frame voiced in both, a constant track) is ``None``.

| key | unit | meaning | best |
|---|---|---|---|
| ``f0_rmse_cents`` | cents | RMS pitch error on frames voiced in both, after transposing the source | 0 |
| ``f0_corr`` | — | Pearson correlation of the two pitch curves (in cents) on those frames | 1 |
| ``vuv_f1`` | — | F1 of the converted voicing, the source voicing taken as the truth | 1 |
| ``loudness_corr`` | — | Pearson correlation of the frame loudness envelopes (dB) | 1 |
| ``spk_sim_target`` | — | cosine similarity, converted vs the target speaker's reference clips | 1 |
| ``spk_sim_source`` | — | cosine similarity, converted vs the source (high = timbre leakage) | low |
| ``duration_ratio`` | — | converted duration / source duration | 1 |
"""

from __future__ import annotations

import numpy as np

METRIC_KEYS = ("f0_rmse_cents", "f0_corr", "vuv_f1", "loudness_corr", "spk_sim_target", "spk_sim_source",
               "duration_ratio")
LOUDNESS_FLOOR_DB = -80.0   # frames quieter than this count as this (silence is silence, whatever its level)


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation, or None when fewer than 2 values or either side is constant."""
    if len(a) < 2:
        return None
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    if den <= 1e-12 * max(len(a), 1):
        return None
    return float(np.dot(a, b) / den)


def f0_metrics(f0_source: np.ndarray, voiced_source: np.ndarray, f0_converted: np.ndarray,
               voiced_converted: np.ndarray, transpose: float = 0.0) -> dict[str, float | None]:
    """Pitch accuracy of a conversion.

    Args:
        f0_source, f0_converted: ``[T]`` f0 in Hz per frame (same frame rate; lengths may differ).
        voiced_source, voiced_converted: ``[T]`` voicing flags (nonzero = voiced).
        transpose: semitones the conversion was asked to shift the pitch by (``-t``/``--trans``).
    Returns:
        ``f0_rmse_cents``: RMS of 1200·log2(f0_conv / (f0_src · 2^(transpose/12))) over frames voiced
        in both; ``f0_corr``: Pearson correlation of the two tracks in cents on those frames;
        ``vuv_f1``: 2·TP / (2·TP + FP + FN) of the converted voicing against the source's.
        ``None`` where undefined (no frame voiced in both; no voiced frame in either for F1).
    """
    n = min(len(f0_source), len(f0_converted))
    fs, fc = np.asarray(f0_source[:n], np.float64), np.asarray(f0_converted[:n], np.float64)
    vs = np.asarray(voiced_source[:n]) > 0
    vc = np.asarray(voiced_converted[:n]) > 0
    both = vs & vc & (fs > 0) & (fc > 0)
    out: dict[str, float | None] = {"f0_rmse_cents": None, "f0_corr": None}
    if both.any():
        cs = 1200.0 * np.log2(fs[both]) + 100.0 * transpose
        cc = 1200.0 * np.log2(fc[both])
        out["f0_rmse_cents"] = float(np.sqrt(np.mean((cc - cs) ** 2)))
        out["f0_corr"] = _pearson(cs, cc)
    tp = int(np.sum(vs & vc))
    fp = int(np.sum(~vs & vc))
    fn = int(np.sum(vs & ~vc))
    out["vuv_f1"] = None if tp + fp + fn == 0 else 2.0 * tp / (2.0 * tp + fp + fn)
    return out


def loudness_db(rms: np.ndarray) -> np.ndarray:
    """Frame RMS (linear, full scale 1.0) → dB, floored at ``LOUDNESS_FLOOR_DB``."""
    return np.maximum(20.0 * np.log10(np.maximum(np.asarray(rms, np.float64), 1e-12)), LOUDNESS_FLOOR_DB)


def loudness_corr(rms_source: np.ndarray, rms_converted: np.ndarray) -> float | None:
    """Pearson correlation of two loudness envelopes (frame RMS → dB), over the shorter length."""
    n = min(len(rms_source), len(rms_converted))
    return _pearson(loudness_db(rms_source[:n]), loudness_db(rms_converted[:n]))


def duration_ratio(seconds_source: float, seconds_converted: float) -> float:
    """Converted duration / source duration (1.0: same length)."""
    return float(seconds_converted) / float(seconds_source)


def mean_metrics(rows: list[dict]) -> dict[str, float | None]:
    """Mean of each metric over ``rows``, ignoring ``None``; ``None`` when no row has a value."""
    out: dict[str, float | None] = {}
    for k in METRIC_KEYS:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    return out
