"""Octave repair (modules.f0_repair) and hybrid predictors (modules.F0Predictor.hybrid)."""

from __future__ import annotations

import numpy as np
import pytest

from modules.errors import SvcError
from modules.f0_repair import OctaveRepair, repair_octaves, resolve_repair
from modules.F0Predictor import HYBRID_PRESETS, check_f0_predictor_name, get_f0_predictor, list_f0_predictors
from modules.F0Predictor.hybrid import combine_tracks
from tests.f0_helpers import HOP, SR, cents, harmonic_tone

RATE = SR / HOP  # 86.13 frames per second


def sung_contour(seed: int = 0) -> np.ndarray:
    """A clean raw track: held notes with vibrato, a glide, a real octave leap into a long note, rests."""
    rng = np.random.default_rng(seed)
    parts = []

    def note(hz0, hz1, seconds):
        n = int(seconds * RATE)
        t = np.arange(n) / RATE
        vib = 60 * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 6))
        return hz0 * 2 ** ((np.linspace(0, 1200 * np.log2(hz1 / hz0), n) + vib) / 1200)

    parts += [np.zeros(10), note(220, 220, 0.8), note(440, 440, 0.6), np.zeros(8), note(330, 392, 0.5),
              note(196, 196, 0.4), np.zeros(5), note(247, 247, 0.3), note(494, 494, 0.5), np.zeros(12)]
    return np.concatenate(parts)


def test_clean_contour_is_unchanged():
    for seed in range(4):
        f0 = sung_contour(seed)
        np.testing.assert_array_equal(repair_octaves(f0, frame_rate=RATE), f0)
        conf = np.where(f0 > 0, 0.8, 0.0)
        np.testing.assert_array_equal(repair_octaves(f0, conf, frame_rate=RATE), f0)


@pytest.mark.parametrize("ratio", [2.0, 0.5, 1.5, 2 / 3, 3.0])
@pytest.mark.parametrize("where", ["middle", "note end"])
def test_planted_jump_is_moved_back(ratio, where):
    f0 = sung_contour()
    # inside the first 220 Hz note / the last frames of the 440 Hz note, just before a rest
    start = 30 if where == "middle" else 10 + int(0.8 * RATE) + int(0.6 * RATE) - 12
    bad = f0.copy()
    bad[start:start + 12] *= ratio  # 0.14 s an octave / a fifth off
    fixed = repair_octaves(bad, frame_rate=RATE)
    np.testing.assert_allclose(fixed, f0, rtol=1e-12)
    assert (cents(bad[start:start + 12], f0[start:start + 12]) > 600).all()


def test_fifths_only_when_asked_and_long_segments_kept():
    f0 = sung_contour()
    bad = f0.copy()
    bad[30:42] *= 1.5
    np.testing.assert_array_equal(repair_octaves(bad, frame_rate=RATE, settings=OctaveRepair(fifths=False)), bad)
    long = f0.copy()
    long[20:20 + int(0.4 * RATE)] *= 2  # 0.4 s > max_segment_s: a real note, left alone
    np.testing.assert_array_equal(repair_octaves(long, frame_rate=RATE)[20:20 + int(0.4 * RATE)],
                                  long[20:20 + int(0.4 * RATE)])


def test_confident_segment_is_kept_and_unsure_one_moved():
    f0 = sung_contour()
    bad = f0.copy()
    bad[30:42] *= 2
    conf = np.where(f0 > 0, 0.5, 0.0)
    sure = conf.copy()
    sure[30:42] = 0.95  # the model is surer of the jump than of its context
    np.testing.assert_array_equal(repair_octaves(bad, sure, frame_rate=RATE), bad)
    unsure = conf.copy()
    unsure[30:42] = 0.3
    np.testing.assert_allclose(repair_octaves(bad, unsure, frame_rate=RATE), f0, rtol=1e-12)


def test_voicing_and_edge_cases():
    assert repair_octaves(np.zeros(5), frame_rate=RATE).tolist() == [0] * 5
    assert repair_octaves(np.array([0, 200.0, 0]), frame_rate=RATE).tolist() == [0, 200, 0]
    with pytest.raises(SvcError, match="confidence has 2 frames"):
        repair_octaves(np.ones(3), np.ones(2), frame_rate=RATE)
    with pytest.raises(SvcError, match="too wide"):
        OctaveRepair(tolerance_cents=300)
    assert resolve_repair(False) is None and resolve_repair(True) == OctaveRepair()
    with pytest.raises(SvcError, match="f0_repair"):
        resolve_repair("yes")


def test_predictor_applies_repair_to_the_raw_track(monkeypatch):
    from modules.F0Predictor.pm import PMF0Predictor

    clean = sung_contour()
    planted = clean.copy()
    planted[30:42] *= 2
    monkeypatch.setattr(PMF0Predictor, "raw_f0", lambda self, wav, n: planted[:n])
    wav = np.zeros(len(clean) * HOP, dtype=np.float32)
    f0_plain, uv_plain = get_f0_predictor("pm", HOP, SR).compute_f0_uv(wav)
    f0_fixed, uv_fixed = get_f0_predictor("pm", HOP, SR, f0_repair=True).compute_f0_uv(wav)
    np.testing.assert_array_equal(uv_plain, uv_fixed)  # voicing never changes
    assert cents(f0_plain[30:42], clean[30:42]).min() > 1100
    np.testing.assert_allclose(f0_fixed[clean > 0], clean[clean > 0], rtol=1e-12)


def test_repair_leaves_real_tones_alone():
    wav = np.concatenate([harmonic_tone(220.0, 0.6), harmonic_tone(440.0, 0.6)])
    for name in ("dio", "pm"):
        a = get_f0_predictor(name, HOP, SR).compute_f0_uv(wav)
        b = get_f0_predictor(name, HOP, SR, f0_repair=OctaveRepair()).compute_f0_uv(wav)
        np.testing.assert_array_equal(a[0], b[0])


# --- hybrid ----------------------------------------------------------------------------------------
def test_combine_is_a_median_in_cents_with_majority_voicing():
    a = np.array([200.0, 200.0, 0.0, 0.0, 300.0, 100.0])
    b = np.array([210.0, 0.0, 0.0, 250.0, 600.0, 100.0])
    c = np.array([400.0, 220.0, 230.0, 0.0, 305.0, 100.0])
    f0, conf = combine_tracks([a, b, c])
    assert f0[0] == 210.0                                     # median of 200, 210, 400
    assert f0[1] == 200.0                                     # two voiced, 165 cents apart: the first member
    assert f0[2] == 0.0 and f0[3] == 0.0                      # 1 of 3 voiced: unvoiced
    assert f0[4] == pytest.approx(305.0) and f0[5] == pytest.approx(100.0)
    np.testing.assert_allclose(conf, [1 / 3, 1 / 3, 0, 0, 2 / 3, 1])  # members within 50 cents of the result


def test_combine_even_count():
    near, _ = combine_tracks([np.array([200.0]), np.array([205.0])])
    assert near[0] == pytest.approx(np.sqrt(200.0 * 205.0))  # agreeing pair: midpoint in cents
    far, _ = combine_tracks([np.array([400.0]), np.array([200.0])])
    assert far[0] == 400.0  # an octave apart: the first-listed member, not the meaningless midpoint
    assert combine_tracks([np.array([0.0]), np.array([200.0])])[0][0] == 200.0  # 1 of 2 voiced: voiced


def test_hybrid_registry_names():
    assert list_f0_predictors() == ["crepe", "dio", "fcpe", "harvest", "pm", "rmvpe"]
    assert list_f0_predictors(hybrids=True)[-len(HYBRID_PRESETS):] == list(HYBRID_PRESETS)
    assert "hybrid:rmvpe+fcpe+crepe" in HYBRID_PRESETS
    assert check_f0_predictor_name("hybrid:pm+dio") == "hybrid:pm+dio"
    for bad, msg in [("hybrid:pm", "two or more"), ("hybrid:pm+pm", "two or more"), ("hybrid:pm+yin", "'yin'"),
                     ("hybrid:", "unknown member ''")]:
        with pytest.raises(SvcError, match=msg):
            check_f0_predictor_name(bad)
    with pytest.raises(SvcError, match="not a member"):
        get_f0_predictor("hybrid:pm+dio", member_options={"crepe": {"model": "tiny"}})


def test_hybrid_predictor_equals_the_combination_of_its_members():
    wav = np.concatenate([harmonic_tone(180.0, 0.5, lead=0.1), harmonic_tone(300.0, 0.4, tail=0.1)])
    h = get_f0_predictor("hybrid:dio+harvest+pm", HOP, SR, f0_min=60, f0_max=900)
    assert h.name == "hybrid:dio+harvest+pm" and [m.name for m in h.members] == ["dio", "harvest", "pm"]
    assert all((m.f0_min, m.f0_max) == (60, 900) for m in h.members)
    n = len(wav) // HOP
    raw, conf = combine_tracks([m.raw_f0(wav, n) for m in h.members])
    from modules.f0 import interpolate_f0

    f0, uv = h.compute_f0_uv(wav)
    ref = interpolate_f0(raw)
    np.testing.assert_array_equal(f0, ref[0])
    np.testing.assert_array_equal(uv, ref[1])
    t = np.arange(n) * HOP / SR
    assert np.median(cents(f0[(t > 0.2) & (t < 0.5)], 180.0)) < 10
    assert np.median(cents(f0[(t > 0.7) & (t < 0.9)], 300.0)) < 10
