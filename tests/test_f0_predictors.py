"""F0 predictor registry and the signal-processing predictors (dio, harvest, pm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.errors import AudioError, SvcError
from modules.F0Predictor import F0_PREDICTORS, get_f0_predictor, list_f0_predictors, make_random_checkpoint
from modules.F0Predictor.pm import center_to_length
from modules.F0Predictor.world import resize_f0
from tests.f0_helpers import DATA, HOP, SR, cents, harmonic_tone, rel_err

WORLD_PM = ["dio", "harvest", "pm"]


# --- registry ------------------------------------------------------------------------------------
def test_registry_lists_the_six_41_names_sorted():
    assert list_f0_predictors() == ["crepe", "dio", "fcpe", "harvest", "pm", "rmvpe"]
    assert set(F0_PREDICTORS) == set(list_f0_predictors())
    assert {n for n, s in F0_PREDICTORS.items() if s.neural} == {"crepe", "fcpe", "rmvpe"}
    assert F0_PREDICTORS["rmvpe"].weight_key == "rmvpe" and F0_PREDICTORS["fcpe"].weight_key == "fcpe"
    assert all(s.default_threshold == 0.05 for s in F0_PREDICTORS.values() if s.neural)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(SvcError, match="unknown f0 predictor 'yin'.*crepe, dio, fcpe, harvest, pm, rmvpe"):
        get_f0_predictor("yin")


def test_unknown_option_and_bad_arguments_are_clear_errors():
    with pytest.raises(SvcError, match="dio.*f0_maximum"):
        get_f0_predictor("dio", f0_maximum=900)
    with pytest.raises(SvcError, match="hop_length"):
        get_f0_predictor("pm", hop_length=0)
    with pytest.raises(SvcError, match="f0_min < f0_max"):
        get_f0_predictor("pm", f0_min=500, f0_max=100)
    with pytest.raises(SvcError, match="no checkpoint format.*fcpe, rmvpe"):
        make_random_checkpoint("dio", "unused.pt")


@pytest.mark.parametrize("name", WORLD_PM)
def test_attributes(name):
    p = get_f0_predictor(name, hop_length=320, sampling_rate=32000)
    assert (p.name, p.hop_length, p.sampling_rate, p.f0_min, p.f0_max) == (name, 320, 32000, 50.0, 1100.0)


# --- golden: the original's outputs -----------------------------------------------------------------
@pytest.mark.parametrize("name", WORLD_PM)
def test_matches_41_golden(name):
    gold = np.load(DATA / "world_pm_44k.npz")
    f0, uv = get_f0_predictor(name, HOP, SR).compute_f0_uv(np.load(DATA / "sing44k.npy"))
    assert f0.dtype == np.float64 and uv.dtype == np.float32 and f0.shape == (172,)
    np.testing.assert_array_equal(uv, gold[f"{name}_uv"])
    # 4.1 interpolates on a float32 time grid (numpy 2), we on frame indices: ≤ 1e-6 apart.
    assert rel_err(f0, gold[f"{name}_f0"]) < 1e-5


# --- behaviour on tones and silence -----------------------------------------------------------------
@pytest.mark.parametrize("name", WORLD_PM)
@pytest.mark.parametrize("pitch", [98.0, 261.6, 587.3])
def test_harmonic_tone_pitch_and_voicing(name, pitch):
    wav = harmonic_tone(pitch, 0.6, lead=0.25, tail=0.25)
    f0, uv = get_f0_predictor(name, HOP, SR).compute_f0_uv(wav)
    assert f0.shape == uv.shape == (len(wav) // HOP,)
    frame_t = np.arange(len(f0)) * HOP / SR
    inside = (frame_t > 0.33) & (frame_t < 0.77)
    silent = (frame_t < 0.15) | (frame_t > 0.95)
    assert uv[inside].all() and not uv[silent].any()
    assert np.median(cents(f0[inside], pitch)) < 10
    assert cents(f0[inside], pitch).max() < 50
    # unvoiced frames are filled: the first / last voiced value is held at the edges
    voiced = np.nonzero(uv)[0]
    assert (f0[: voiced[0]] == f0[voiced[0]]).all() and (f0[voiced[-1]:] == f0[voiced[-1]]).all()


@pytest.mark.parametrize("name", WORLD_PM)
def test_f0_range_is_configurable(name):
    wav = harmonic_tone(261.6, 0.5)
    f0_in, uv_in = get_f0_predictor(name, HOP, SR, f0_min=100, f0_max=400).compute_f0_uv(wav)
    assert uv_in.mean() > 0.7
    assert np.median(cents(f0_in[uv_in > 0], 261.6)) < 10
    # with 261.6 Hz outside the range the tracker must not report it
    f0_out, uv_out = get_f0_predictor(name, HOP, SR, f0_min=400, f0_max=1100).compute_f0_uv(wav)
    assert (cents(f0_out[uv_out > 0], 261.6) > 100).all()


@pytest.mark.parametrize("name", WORLD_PM)
@pytest.mark.parametrize("length", [0, 1, 511, 512, 513, 2047, 3000, 10000, 22050, 44100 + 300])
def test_silence_and_length_for_many_lengths(name, length):
    p = get_f0_predictor(name, HOP, SR)
    f0, uv = p.compute_f0_uv(np.zeros(length, dtype=np.float32))
    assert f0.shape == uv.shape == (length // HOP,)
    assert not uv.any() and not f0.any()


@pytest.mark.parametrize("name", WORLD_PM)
@pytest.mark.parametrize("p_len", [40, 43, 44, 45, 47, 60])
def test_explicit_p_len(name, p_len):
    wav = harmonic_tone(220.0, 0.5)  # 43 frames by default
    f0, uv = get_f0_predictor(name, HOP, SR).compute_f0_uv(wav, p_len=p_len)
    assert f0.shape == uv.shape == (p_len,)
    assert np.median(cents(f0[uv > 0], 220.0)) < 10
    assert get_f0_predictor(name, HOP, SR).compute_f0(wav, p_len=p_len).shape == (p_len,)


def test_harvest_compute_f0_works():  # broken in 4.1 (wrong fs, undefined attribute)
    wav = harmonic_tone(220.0, 0.5)
    p = get_f0_predictor("harvest", HOP, SR)
    np.testing.assert_array_equal(p.compute_f0(wav), p.compute_f0_uv(wav)[0])


@pytest.mark.parametrize("name", WORLD_PM)
def test_bad_audio_is_refused(name):
    p = get_f0_predictor(name, HOP, SR)
    wav = harmonic_tone(220.0, 0.3)
    wav[100] = np.nan
    with pytest.raises(AudioError, match="NaN or infinite"):
        p.compute_f0_uv(wav)
    wav[100] = np.inf
    with pytest.raises(AudioError, match="NaN or infinite"):
        p.compute_f0_uv(wav)
    with pytest.raises(AudioError, match="mono"):
        p.compute_f0_uv(np.zeros((2, 4096), dtype=np.float32))
    with pytest.raises(SvcError, match="p_len"):
        p.compute_f0_uv(np.zeros(4096, dtype=np.float32), p_len=-1)


def test_accepts_torch_and_float64_input():
    wav = harmonic_tone(220.0, 0.4)
    p = get_f0_predictor("pm", HOP, SR)
    ref = p.compute_f0_uv(wav)
    for other in (torch.from_numpy(wav), wav.astype(np.float64), wav[None]):
        np.testing.assert_array_equal(p.compute_f0_uv(other)[0], ref[0])


# --- 4.1 length matching details ----------------------------------------------------------------------
def test_resize_f0_treats_unvoiced_as_nan():
    track = np.array([100.0, 0.0, 200.0, 200.0])
    # positions 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5 → any interpolation touching the 0 becomes 0
    out = resize_f0(track, 8)
    np.testing.assert_allclose(out, [100, 0, 0, 0, 200, 200, 200, 200])


def test_center_padding_and_crop():
    np.testing.assert_array_equal(center_to_length(np.array([1.0, 2.0]), 5), [0, 0, 1, 2, 0])
    np.testing.assert_array_equal(center_to_length(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 3), [2, 3, 4])


def test_single_voiced_frame_quirk_is_kept_for_world_and_pm(monkeypatch):
    from modules.F0Predictor.pm import PMF0Predictor

    monkeypatch.setattr(PMF0Predictor, "raw_f0", lambda self, wav, n: np.array([0, 0, 150.0, 0])[:n])
    f0, uv = get_f0_predictor("pm", HOP, SR).compute_f0_uv(np.zeros(4 * HOP, dtype=np.float32))
    np.testing.assert_array_equal(uv, [0, 0, 1, 0])
    np.testing.assert_array_equal(f0, [0, 0, 0, 0])  # 4.1 fills with f0[0] (spec §13.25)


@pytest.mark.parametrize("name", WORLD_PM)
def test_empty_audio_with_requested_frames_is_unvoiced(name):
    f0, uv = get_f0_predictor(name, HOP, SR).compute_f0_uv(np.zeros(0, dtype=np.float32), p_len=3)
    np.testing.assert_array_equal(f0, [0, 0, 0])
    np.testing.assert_array_equal(uv, [0, 0, 0])
