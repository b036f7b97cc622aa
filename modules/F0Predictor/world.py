"""WORLD vocoder pitch trackers via pyworld: ``dio`` and ``harvest`` (spec §5.2).

Both run at the model rate with frame period 1000·hop/sr ms, refine with ``stonemask`` and
map the native track onto ``p_len`` frames with 4.1's ``resize_f0``: linear interpolation at
positions i·n/p_len in which unvoiced values (< 0.001) count as NaN, so a frame whose
interpolation touches an unvoiced neighbour becomes unvoiced too.
"""

from __future__ import annotations

import numpy as np

from modules.F0Predictor.base import F0Predictor


def resize_f0(track: np.ndarray, target_len: int) -> np.ndarray:
    """Native WORLD track ``[n]`` → ``[target_len]`` (4.1's ``resize_f0``, NaN-aware linear)."""
    source = np.array(track, dtype=np.float64)
    source[source < 0.001] = np.nan
    n = len(source)
    positions = np.arange(0, n * target_len, n) / target_len
    return np.nan_to_num(np.interp(positions, np.arange(0, n), source))


class _WorldF0Predictor(F0Predictor):
    single_voiced_uses_first = True  # 4.1 quirk (spec §13.25), kept: training data depends on it

    def _frame_period_ms(self) -> float:
        return 1000 * self.hop_length / self.sampling_rate

    def _track(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def raw_f0(self, wav: np.ndarray, p_len: int) -> np.ndarray:
        import pyworld

        x = wav.astype(np.double)
        f0, t = self._track(x)
        f0 = pyworld.stonemask(x, f0, t, self.sampling_rate)
        return resize_f0(self._finish(f0), p_len)

    def _finish(self, f0: np.ndarray) -> np.ndarray:
        return f0


class DioF0Predictor(_WorldF0Predictor):
    """pyworld DIO + StoneMask, each value rounded to 0.1 Hz as 4.1 did."""

    name = "dio"

    def _track(self, x: np.ndarray):
        import pyworld

        return pyworld.dio(x, fs=self.sampling_rate, f0_floor=self.f0_min, f0_ceil=self.f0_max,
                           frame_period=self._frame_period_ms())

    def _finish(self, f0: np.ndarray) -> np.ndarray:
        # 4.1 called Python's round(value, 1) per element; numpy's round is the same operation.
        return np.round(f0, 1)


class HarvestF0Predictor(_WorldF0Predictor):
    """pyworld Harvest + StoneMask (more robust than DIO, several times slower)."""

    name = "harvest"

    def _track(self, x: np.ndarray):
        import pyworld

        return pyworld.harvest(x, fs=self.sampling_rate, f0_floor=self.f0_min, f0_ceil=self.f0_max,
                               frame_period=self._frame_period_ms())
