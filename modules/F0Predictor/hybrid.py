"""Hybrid F0: several predictors combined frame by frame (registry name ``hybrid:a+b+c``).

Per frame, with the members' raw tracks matched to the same ``p_len`` frames:

* voiced when at least half of the members call it voiced (2 of 3, 1 of 2, 2 of 4);
* f0 = the median, in cents, of the voiced members' values. With an even number of voiced
  members the two middle values are averaged in cents when they lie within
  ``AGREE_CENTS`` of each other; otherwise (one of them is an octave error, and their
  midpoint would be wrong for both) the value of the member listed first wins;
* confidence (for the octave repair) = share of members within ``AGREE_CENTS`` of the result.

Range, threshold and device go to every member; ``member_options={"rmvpe": {...}}`` passes
member-specific keyword arguments (``model_path``, ``model``, ``dtype``...).
"""

from __future__ import annotations

import numpy as np

from modules.errors import SvcError
from modules.F0Predictor.base import F0Predictor

AGREE_CENTS = 50.0  # members this close count as agreeing (the usual RPA tolerance)


def combine_tracks(tracks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Members' raw tracks ``[M][T]`` (Hz, 0 = unvoiced; priority = list order) →
    ``(raw f0 [T] Hz with 0 = unvoiced, confidence [T] in [0, 1])``."""
    hz = np.stack([np.asarray(t, dtype=np.float64).reshape(-1) for t in tracks])  # [M, T]
    m, n = hz.shape
    voiced = np.isfinite(hz) & (hz > 0)
    cents = np.where(voiced, 1200 * np.log2(np.where(voiced, hz, 1.0)), np.nan)
    count = voiced.sum(axis=0)
    out = np.zeros(n)
    for t in np.nonzero(2 * count >= m)[0]:
        members = np.nonzero(voiced[:, t])[0]  # in member order
        order = members[np.argsort(cents[members, t], kind="stable")]
        k = len(order)
        if k % 2:
            out[t] = hz[order[k // 2], t]  # a member's own value, exactly
            continue
        lo, hi = order[k // 2 - 1], order[k // 2]
        if cents[hi, t] - cents[lo, t] <= AGREE_CENTS:
            out[t] = np.sqrt(hz[lo, t] * hz[hi, t])  # the midpoint in cents
        else:
            out[t] = hz[min(lo, hi), t]
    with np.errstate(invalid="ignore", divide="ignore"):
        res = np.where(out > 0, 1200 * np.log2(np.where(out > 0, out, 1.0)), np.nan)
        agree = (np.abs(cents - res[None]) <= AGREE_CENTS) & voiced
    return out, agree.sum(axis=0) / m


class HybridF0Predictor(F0Predictor):
    """Frame-wise median of several registry predictors; built by ``get_f0_predictor("hybrid:...")``."""

    def __init__(self, members: list[str], hop_length: int = 512, sampling_rate: int = 44100, *,
                 member_options: dict[str, dict] | None = None, f0_min: float | None = None,
                 f0_max: float | None = None, threshold: float = 0.05, device=None, f0_repair=False) -> None:
        from modules.F0Predictor import get_f0_predictor  # the registry imports this module lazily

        self.name = "hybrid:" + "+".join(members)
        super().__init__(hop_length, sampling_rate, f0_min=f0_min, f0_max=f0_max, threshold=threshold,
                         device=device, f0_repair=f0_repair)
        options = dict(member_options or {})
        unknown = set(options) - set(members)
        if unknown:
            raise SvcError(f"f0 predictor '{self.name}': member_options for {', '.join(sorted(unknown))}, "
                           f"which {'is' if len(unknown) == 1 else 'are'} not a member")
        self.members = [get_f0_predictor(m, hop_length, sampling_rate, device=device, threshold=threshold,
                                         f0_min=f0_min, f0_max=f0_max, **options.get(m, {})) for m in members]

    def raw_f0(self, wav: np.ndarray, p_len: int) -> np.ndarray:
        return self.raw_f0_confidence(wav, p_len)[0]

    def raw_f0_confidence(self, wav: np.ndarray, p_len: int) -> tuple[np.ndarray, np.ndarray]:
        return combine_tracks([p.raw_f0(wav, p_len) for p in self.members])
