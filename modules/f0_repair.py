"""Octave repair: move short F0 segments that sit an octave (or a fifth) off their context back.

Every pitch tracker sometimes locks onto a harmonic (reports 2·f0 or 3/2·f0) or a
sub-harmonic (f0/2) for a few frames, most often on breathy notes and notes whose fundamental
is weak. This post-processor runs on the *raw* track (Hz per frame, 0 = unvoiced) before the
unvoiced frames are interpolated, so it is shared by every predictor
(``F0Predictor(f0_repair=True)``). It never changes voicing.

The algorithm (frames at ``frame_rate`` Hz; all pitch comparisons in cents)::

    cents  ^           ┌─┐  <- segment B: 0.1 s, +1200 cents off its context
           |           │ │
           |  ┌───A────┘ └───C─────┐      ┌─D─┐
           |  │ (anchor)     (anchor)│ rest │   │   (D: short, but across a rest it is another
           |                                          note: step A leaves it; B touches A and C)
           +---------------------------------------------> frames

    1. Split the voiced frames into segments: a new segment starts after an unvoiced frame or
       where two consecutive frames differ by more than ``split_cents`` (400: larger than any
       vibrato or portamento step per frame, smaller than a fifth).
    2. Weight each segment by length × mean confidence (confidence 1 when the predictor has
       none) and visit them heaviest first. Segments longer than ``max_segment_s`` are
       anchors: never moved (a held note an octave away is a real leap, not an error);
       segments of 1-2 frames (transitions between notes) and segments touching the first or
       last frame (a note the edge of the audio may have cut) are never moved either.
    3. For a short segment S, take the nearest already visited (so heavier) segment at least
       as long as S on each side whose gap to S is at most ``context_s``; its reference level
       is the median of its ≤ 3 frames nearest to S. No such neighbour: S is kept.
    4. If S's median is within ``tolerance_cents`` of a reference, S is kept. Otherwise try
       the error ratios r ∈ {2, 1/2} (and {3/2, 2/3, 3, 1/3} with ``fifths``): if S / r lands
       within ``tolerance_cents`` of a reference, S is divided by r (a neighbour S touches
       beats one across a rest, an octave beats a fifth, then the smallest residual wins), unless S's mean confidence exceeds that
       neighbour's by more than ``confidence_margin`` (the model was surer about S than about
       its context).
    5. Repeat from 1 (a repaired segment may now join its neighbours) until nothing moves,
       at most ``passes`` times.
    6. Whole notes (``notes``): a segment of 5 frames up to ``max_note_s`` that is *unsure*
       (smoothness confidence < ``unsure_below``, from the contour's roughness, see
       :func:`smoothness_confidence`) is divided or multiplied by 2 when that octave shift
       brings it within 500 cents of the nearest sure neighbouring note (smoothness ≥ its own
       + ``note_margin`` and, where the predictor has a confidence, a mean confidence at least
       the note's; gap ≤ ``note_context_s``, unvoiced gaps allowed) and at least 600 cents
       closer than before. A smooth note is never moved by this step, so real leaps
       between cleanly sung notes stay::

        cents ^        ╭╮╭─╮╭╮╮    <- unsure: jittery contour an octave above both neighbours
              |        ╰╯  ╰╯╰╯
              |  ──────          ───────     (sure neighbours across short rests)
              |                 ╭╮╭─╮╭╮╮    <- after the move: within a fourth of them
              +------------------------------------------> frames

Because only short segments move, and only onto the level of a longer neighbour, a clean
contour (held notes, vibrato, glides, real octave leaps into notes longer than
``max_segment_s``) comes out unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modules.errors import SvcError

__all__ = ["OctaveRepair", "repair_octaves", "resolve_repair"]

_EDGE_FRAMES = 3  # frames of a neighbour next to the segment that give its reference level
# Shorter segments are mostly the one or two frames a tracker spends between two notes: they
# match no level and moving them by a fifth would only trade one wrong value for another.
_MIN_SEGMENT = 3
_OCTAVE_RATIOS = (2.0, 0.5)
_FIFTH_RATIOS = (1.5, 2.0 / 3.0, 3.0, 1.0 / 3.0)


@dataclass(frozen=True)
class OctaveRepair:
    """Settings of the octave repair (see the module docstring for the algorithm).

    Attributes:
        max_segment_s: longest segment (seconds) that may be moved.
        context_s: largest unvoiced gap (seconds) to a neighbour that counts; 0 (default): only
            neighbours S touches, i.e. flips inside one voiced stretch (across a rest, a note an
            octave away is as likely real; step 6 handles those only when the note is unsure).
        tolerance_cents: how close a segment must land to its neighbour's level.
        split_cents: frame-to-frame jump that starts a new segment.
        fifths: also repair errors by 3/2, 2/3, 3 and 1/3 (a fifth / an octave and a fifth).
        confidence_margin: a segment whose mean confidence exceeds its neighbour's by more is kept.
        passes: most repetitions of steps 1-5.
        notes: run the whole-note pass (step 6).
        max_note_s: longest unsure note (seconds) the note pass may move.
        note_context_s: largest gap (seconds) to a sure neighbouring note.
        rough_cents: median |second difference| (cents per frame²) at which the smoothness
            confidence starts to fall from 1 / reaches 0.
        unsure_below: a note whose confidence is below this is "unsure".
        note_margin: how much surer its neighbours must be.
    """

    max_segment_s: float = 0.15
    context_s: float = 0.0
    tolerance_cents: float = 150.0
    split_cents: float = 400.0
    fifths: bool = True
    confidence_margin: float = 0.1
    passes: int = 3
    notes: bool = True
    max_note_s: float = 1.5
    note_context_s: float = 1.0
    rough_cents: tuple[float, float] = (15.0, 45.0)
    unsure_below: float = 0.75
    note_margin: float = 0.25

    def __post_init__(self) -> None:
        for name in ("max_segment_s", "context_s", "tolerance_cents", "split_cents", "max_note_s", "note_context_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and (value > 0 or (value == 0 and name == "context_s"))):
                raise SvcError(f"octave repair: {name} must be a positive number, got {value!r}")
        if self.tolerance_cents * 2 >= 1200 * np.log2(4 / 3):
            raise SvcError(f"octave repair: tolerance_cents {self.tolerance_cents} is too wide (candidate shifts "
                           f"would overlap); use less than {600 * np.log2(4 / 3):.0f}")
        if int(self.passes) != self.passes or self.passes < 1:
            raise SvcError(f"octave repair: passes must be a positive integer, got {self.passes!r}")

    @property
    def ratios(self) -> tuple[float, ...]:
        return _OCTAVE_RATIOS + (_FIFTH_RATIOS if self.fifths else ())

    def __call__(self, f0: np.ndarray, confidence: np.ndarray | None, frame_rate: float) -> np.ndarray:
        return repair_octaves(f0, confidence, frame_rate=frame_rate, settings=self)


def resolve_repair(option: bool | OctaveRepair | None) -> OctaveRepair | None:
    """``f0_repair`` option → settings or ``None`` (off): ``True`` gives the defaults."""
    if option is None or option is False:
        return None
    if option is True:
        return OctaveRepair()
    if isinstance(option, OctaveRepair):
        return option
    raise SvcError(f"f0_repair must be True, False or an OctaveRepair, got {option!r}")


def _segments(cents: np.ndarray, voiced: np.ndarray, split_cents: float) -> list[tuple[int, int]]:
    """Half-open ``(start, end)`` runs of voiced frames without a jump over ``split_cents``."""
    out: list[tuple[int, int]] = []
    start = None
    for t in range(len(cents)):
        if not voiced[t]:
            if start is not None:
                out.append((start, t))
                start = None
            continue
        if start is None:
            start = t
        elif abs(cents[t] - cents[t - 1]) > split_cents:
            out.append((start, t))
            start = t
    if start is not None:
        out.append((start, len(cents)))
    return out


def repair_octaves(f0: np.ndarray, confidence: np.ndarray | None = None, *, frame_rate: float,
                   settings: OctaveRepair | None = None) -> np.ndarray:
    """Repair octave / fifth errors in a raw f0 track.

    Args:
        f0: raw track ``[T]`` in Hz, 0 (or less) = unvoiced.
        confidence: per-frame confidence ``[T]`` in [0, 1] (crepe periodicity, peak salience of
            rmvpe / fcpe, member agreement of a hybrid) or ``None`` (all frames equally sure).
        frame_rate: frames per second (sampling_rate / hop_length).
        settings: :class:`OctaveRepair` (default settings when ``None``).

    Returns:
        float64 ``[T]`` Hz: moved segments divided by their error ratio, everything else (and
        every unvoiced frame) unchanged.
    """
    s = settings or OctaveRepair()
    out = np.array(f0, dtype=np.float64).reshape(-1)
    if not (np.isfinite(frame_rate) and frame_rate > 0):
        raise SvcError(f"octave repair: frame_rate must be positive, got {frame_rate!r}")
    n = len(out)
    if confidence is None:
        conf = np.ones(n)
    else:
        conf = np.clip(np.nan_to_num(np.asarray(confidence, dtype=np.float64).reshape(-1)), 0.0, 1.0)
        if conf.shape != (n,):
            raise SvcError(f"octave repair: confidence has {conf.shape[0]} frames, f0 has {n}")
    voiced = np.isfinite(out) & (out > 0)
    if voiced.sum() < 2:
        return out
    max_len = max(1, int(round(s.max_segment_s * frame_rate)))
    context = max(0, int(round(s.context_s * frame_rate)))
    shifts = [(r, 1200 * np.log2(r)) for r in s.ratios]
    for _ in range(int(s.passes)):
        cents = np.where(voiced, 1200 * np.log2(np.where(voiced, out, 1.0)), 0.0)
        segs = _segments(cents, voiced, s.split_cents)
        if len(segs) < 2:
            break
        weight = [(e - b) * (conf[b:e].mean() + 1e-6) for b, e in segs]
        order = sorted(range(len(segs)), key=lambda i: (-weight[i], segs[i][0]))
        visited: list[int] = []
        moved = False
        for i in order:
            b, e = segs[i]
            # a segment touching the start or end of the track may be a note cut by the edge
            if _MIN_SEGMENT <= e - b <= max_len and b > 0 and e < n:
                refs = _neighbour_levels(segs, visited, i, cents, conf, context)
                if refs and _repair_segment(out, cents, conf, b, e, refs, shifts, s):
                    moved = True
            visited.append(i)
        if not moved:
            break
    if s.notes:
        _repair_notes(out, conf if confidence is not None else None, frame_rate, s)
    return out


def smoothness_confidence(cents: np.ndarray, rough_cents: tuple[float, float]) -> float:
    """Confidence in [0, 1] of one segment's contour ``[n]`` (cents) from its roughness.

    A voice's f0 is smooth: vibrato of ±100 cents at 7 Hz bends it by at most ~26 cents per
    frame² at 86 frames/s (median ~17). A tracker hopping between harmonic candidates on a weak
    fundamental jitters far more. The median |second difference| r maps to 1 below
    ``rough_cents[0]`` and falls linearly to 0 at ``rough_cents[1]``.
    """
    if len(cents) < 5:
        return 1.0  # too short to judge: never "unsure" by roughness
    r = float(np.median(np.abs(np.diff(cents, 2))))
    lo, hi = rough_cents
    return float(np.clip((hi - r) / (hi - lo), 0.0, 1.0))


def _repair_notes(out: np.ndarray, conf: np.ndarray | None, frame_rate: float, s: OctaveRepair) -> None:
    """Step 6: whole notes an octave off sure neighbouring notes, when the note itself is unsure."""
    voiced = np.isfinite(out) & (out > 0)
    cents = np.where(voiced, 1200 * np.log2(np.where(voiced, out, 1.0)), 0.0)
    segs = [(b, e) for b, e in _segments(cents, voiced, s.split_cents) if e - b >= 5]
    if len(segs) < 2:
        return
    sure = [smoothness_confidence(cents[b:e], s.rough_cents) for b, e in segs]
    model = [float(conf[b:e].mean()) if conf is not None else 1.0 for b, e in segs]
    level = [float(np.median(cents[b:e])) for b, e in segs]
    max_len = int(round(s.max_note_s * frame_rate))
    context = int(round(s.note_context_s * frame_rate))
    for i in sorted(range(len(segs)), key=lambda k: -sure[k]):
        b, e = segs[i]
        if sure[i] >= s.unsure_below or e - b > max_len:
            continue
        refs = []
        for side in (range(i - 1, -1, -1), range(i + 1, len(segs))):
            for j in side:
                gap = b - segs[j][1] if j < i else segs[j][0] - e
                if gap > context:
                    break
                # smoother by the margin, and (where the predictor has a confidence) not less sure
                if sure[j] >= sure[i] + s.note_margin and model[j] >= model[i]:
                    refs.append(level[j])
                    break
        if not refs:
            continue
        before = min(abs(level[i] - r) for r in refs)
        for ratio in _OCTAVE_RATIOS:
            shift = 1200 * np.log2(ratio)
            after = min(abs(level[i] - shift - r) for r in refs)
            # the octave brings it within a fourth of a sure neighbour, and much closer than before
            if after < 500 and before - after >= 600:
                out[b:e] = out[b:e] / ratio
                level[i] -= shift
                break


def _neighbour_levels(segs: list[tuple[int, int]], visited: list[int], i: int, cents: np.ndarray,
                      conf: np.ndarray, context: int) -> list[tuple[float, float, int]]:
    """``[(level cents, mean confidence, gap frames)]`` of the nearest visited segment on each side of ``segs[i]``."""
    b, e = segs[i]
    longer = [j for j in visited if segs[j][1] - segs[j][0] >= e - b]
    left = [j for j in longer if segs[j][1] <= b and b - segs[j][1] <= context]
    right = [j for j in longer if segs[j][0] >= e and segs[j][0] - e <= context]
    refs = []
    if left:
        lb, le = segs[max(left, key=lambda j: segs[j][1])]
        lo = max(lb, le - _EDGE_FRAMES)
        refs.append((float(np.median(cents[lo:le])), float(conf[lb:le].mean()), b - le))
    if right:
        rb, re = segs[min(right, key=lambda j: segs[j][0])]
        hi = min(re, rb + _EDGE_FRAMES)
        refs.append((float(np.median(cents[rb:hi])), float(conf[rb:re].mean()), rb - e))
    return refs


def _repair_segment(out: np.ndarray, cents: np.ndarray, conf: np.ndarray, b: int, e: int,
                    refs: list[tuple[float, float, int]], shifts: list[tuple[float, float]], s: OctaveRepair) -> bool:
    level = float(np.median(cents[b:e]))
    if any(abs(level - ref) <= s.tolerance_cents for ref, _, _ in refs):
        return False  # already on a neighbour's level
    best = None
    for rank, (ratio, shift) in enumerate(shifts):
        for ref, ref_conf, gap in refs:
            residual = abs(level - shift - ref)
            # a neighbour S touches (no unvoiced gap) is the better witness; and octave errors
            # are far more common than fifths, so an octave that fits wins over a fifth
            key = (gap > 0, rank >= len(_OCTAVE_RATIOS), residual)
            if residual <= s.tolerance_cents and (best is None or key < best[0]):
                best = (key, ratio, shift, ref_conf)
    if best is None:
        return False
    _, ratio, shift, ref_conf = best
    if conf[b:e].mean() > ref_conf + s.confidence_margin:
        return False  # the predictor was surer about this segment than about its context
    out[b:e] = out[b:e] / ratio
    cents[b:e] -= shift
    return True
