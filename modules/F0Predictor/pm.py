"""Praat's autocorrelation pitch tracker via parselmouth: ``pm`` (spec §5.2)."""

from __future__ import annotations

import logging

import numpy as np

from modules.F0Predictor.base import F0Predictor

log = logging.getLogger(__name__)


def center_to_length(track: np.ndarray, p_len: int) -> np.ndarray:
    """Zero-pad ``track`` centrally to ``p_len`` frames (left (p_len − n + 1)//2, rest right).

    4.1 did exactly this when the track was shorter. When it was longer, 4.1 returned it
    unchanged (wrong length); here the excess is cut centrally instead.
    """
    n = len(track)
    if n <= p_len:
        left = (p_len - n + 1) // 2
        return np.pad(track, (left, p_len - n - left), mode="constant")
    start = (n - p_len) // 2
    return track[start:start + p_len]


class PMF0Predictor(F0Predictor):
    """``Sound.to_pitch_ac(time_step=hop/sr, voicing_threshold=0.6, pitch_floor, pitch_ceiling)``."""

    name = "pm"
    single_voiced_uses_first = True  # 4.1 quirk (spec §13.25)

    def raw_f0(self, wav: np.ndarray, p_len: int) -> np.ndarray:
        import parselmouth

        # Same float expression as 4.1 (ms and back), so Praat sees the identical time step.
        time_step = self.hop_length / self.sampling_rate * 1000 / 1000
        # Praat needs three periods of the lowest pitch; a shorter clip has no pitch to find.
        if len(wav) / self.sampling_rate <= 3.0 / self.f0_min:
            log.debug("pm: %d samples is shorter than 3 periods of %.1f Hz; all frames unvoiced", len(wav), self.f0_min)
            return np.zeros(p_len)
        sound = parselmouth.Sound(wav.astype(np.float64), self.sampling_rate)
        pitch = sound.to_pitch_ac(time_step=time_step, voicing_threshold=0.6, pitch_floor=self.f0_min,
                                  pitch_ceiling=self.f0_max)
        return center_to_length(pitch.selected_array["frequency"], p_len)
