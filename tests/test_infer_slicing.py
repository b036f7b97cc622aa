"""Silence slicer and speaker-mix track (no models needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infer_helpers import ROOT, voice
from inference.slicer import Slicer, chunks2audio, cut, slice_audio
from inference.spk_mix import check_spk_mix_map, load_spk_mix_map, mix_weights
from modules.errors import ConfigError

SR = 16000


def _covers(chunks, n):
    assert chunks[0].start == 0 and chunks[-1].end == n
    for a, b in zip(chunks, chunks[1:]):
        assert a.end == b.start and not (a.silent and b.silent)


def test_long_silence_becomes_a_silent_chunk():
    # 5.5 s voice, 6 s digital silence, 1 s voice: the silence is longer than max_sil_kept (5 s),
    # so at most 5 s of it stays on each side and the middle is a silent chunk.
    a, b = voice(5.5, SR, seed=1), voice(1.0, SR, 300, seed=2)
    y = np.concatenate([a, np.zeros(6 * SR, np.float32), b])
    chunks = slice_audio(y, SR, -40)
    _covers(chunks, len(y))
    assert [c.silent for c in chunks] == [False, True, False]
    silent = chunks[1]
    assert len(a) - 1 <= silent.start <= len(a) + 5 * SR and silent.end <= len(a) + 6 * SR + 1
    assert np.abs(y[silent.start:silent.end]).max() == 0
    assert np.abs(y[chunks[0].start:chunks[0].end]).max() > 0.1


def test_short_pause_is_a_cut_point_and_trailing_silence_is_cut():
    # A 0.9 s pause after ≥ 5 s of voice is a cut with no silent samples (4.1 keeps short pauses
    # inside the voiced chunks); 1 s of trailing silence becomes a silent chunk.
    y = np.concatenate([voice(5.4, SR, seed=1), np.zeros(int(0.9 * SR), np.float32), voice(1.0, SR, seed=2),
                        np.zeros(SR, np.float32)])
    chunks = slice_audio(y, SR, -40)
    _covers(chunks, len(y))
    assert [c.silent for c in chunks] == [False, False, True]
    assert 5.4 * SR <= chunks[1].start <= 6.3 * SR
    assert np.abs(y[chunks[2].start:]).max() == 0 and len(chunks[2]) >= 0.9 * SR


def test_no_cut_without_silence_and_all_silent_input():
    y = voice(6.0, SR)
    assert [(c.silent, c.start, c.end) for c in slice_audio(y, SR, -40)] == [(False, 0, len(y))]
    z = np.zeros(7 * SR, np.float32)
    chunks = slice_audio(z, SR, -40)
    assert [c.silent for c in chunks] == [True] and chunks[0].end == len(z)


def test_threshold_decides_what_is_silence():
    quiet = 0.003 * voice(1.0, SR, seed=3) / 0.5  # about -50 dBFS
    y = np.concatenate([voice(5.2, SR), quiet, voice(1.0, SR, seed=4)])
    assert len(slice_audio(y, SR, -40)) == 2           # the quiet second is a pause at -40 dB ...
    assert len(slice_audio(y, SR, -70)) == 1           # ... and voice at -70 dB


def test_41_cut_and_chunks2audio_format(tmp_path):
    import soundfile as sf

    y = np.concatenate([voice(5.2, SR), np.zeros(SR, np.float32)])
    sf.write(tmp_path / "x.wav", np.stack([y, y], 1), SR)  # stereo file: mixed to mono
    chunks = cut(tmp_path / "x.wav", db_thresh=-40)
    assert list(chunks) == ["0", "1"] and chunks["1"]["slice"] is True
    assert chunks["0"]["split_time"].startswith("0,")
    parts, sr = chunks2audio(tmp_path / "x.wav", chunks)
    assert sr == SR and sum(len(p) for _, p in parts) == len(y)
    assert [tag for tag, _ in parts] == [False, True]


def test_slicer_rejects_bad_parameters():
    with pytest.raises(ValueError):
        Slicer(SR, min_length=100, min_interval=300)


# --- speaker mix --------------------------------------------------------------------------------
def test_shipped_spkmix_file_is_valid():
    mix = load_spk_mix_map(ROOT / "spkmix.py")
    assert sorted(mix) == [0, 1, 2]
    check_spk_mix_map(mix, 3)


@pytest.mark.parametrize("text,match", [
    ("spk_mix_map = {0: [[0., 1., 1., 1.]]", "syntax"),
    ("x = 1", "defines no"),
    ("spk_mix_map = {0: [[0., 1., a, 1.]]}", "literal"),
    ("spk_mix_map = {'alice': [[0., 1., 1., 1.]]}", "not a speaker id"),
    ("spk_mix_map = {0: [[0., 0.5, 1., 1.], [0.6, 1., 1., 1.]]}", "previous one ends"),
    ("spk_mix_map = {0: [[0., 0.5, 1., 1.]]}", "must end at 1"),
    ("spk_mix_map = {0: [[0.1, 1., 1., 1.]]}", "start at 0"),
    ("spk_mix_map = {0: [[0., 1., -1., 1.]]}", "≥ 0"),
    ("spk_mix_map = {0: [[0., 1., 1.]]}", "four numbers"),
])
def test_bad_spkmix_files_are_named(tmp_path, text, match):
    p = tmp_path / "spkmix.py"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_spk_mix_map(p)
    assert "spkmix.py" in str(e.value)


def test_spkmix_must_cover_the_model_speakers():
    mix = {0: [[0.0, 1.0, 1.0, 1.0]], 2: [[0.0, 1.0, 0.0, 0.0]]}
    with pytest.raises(ConfigError, match=r"ids \[1\] are missing"):
        check_spk_mix_map(mix, 3)
    with pytest.raises(ConfigError, match=r"ids \[2\] do not exist"):
        check_spk_mix_map(mix, 2)


def test_mix_weights_ramp_and_normalise():
    mix = {0: [[0.0, 0.5, 1.0, 1.0], [0.5, 1.0, 1.0, 0.0]], 1: [[0.0, 1.0, 1.0, 1.0]], 2: [[0.0, 1.0, 0.0, 0.0]]}
    w = mix_weights(mix, 100)
    assert w.shape == (3, 100)
    torch.testing.assert_close(w.sum(0), torch.ones(100))
    torch.testing.assert_close(w[:, :50], torch.tensor([0.5, 0.5, 0.0])[:, None].expand(3, 50))
    # second half: speaker 0 ramps 1 → 0 (arange(1, 0, -1/50)) against a constant 1
    ramp = torch.arange(1.0, 0.0, -1 / 50)
    torch.testing.assert_close(w[0, 50:], ramp / (ramp + 1))
    assert torch.all(w[2] == 0)
    # all-zero frames share equally
    w0 = mix_weights({0: [[0.0, 1.0, 0.0, 0.0]], 1: [[0.0, 1.0, 0.0, 0.0]]}, 10)
    torch.testing.assert_close(w0, torch.full((2, 10), 0.5))
