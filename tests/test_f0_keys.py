"""Per-speaker f0 statistics (preprocessing) and the key suggestion / range warning built on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modules.errors import ConfigError
from modules.f0 import interpolate_f0, shift_f0
from modules.f0_stats import (SpeakerF0Stats, compute_speaker_stats, format_out_of_range, load_f0_stats,
                              out_of_range_seconds, save_f0_stats, suggest_transpose)
from preprocessing.f0_stats import default_stats_path, write_f0_stats
from preprocessing.features import save_f0

HOP, SR = 512, 44100


def sung(median_hz: float, seconds: float = 4.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A melody around ``median_hz`` (±7 semitones, vibrato, rests) as (interpolated f0, uv)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR / HOP)
    notes = np.repeat(np.tile(rng.permutation(np.arange(-7, 8)), n // 300 + 1), 20)[:n]  # median note: 0
    t = np.arange(n) * HOP / SR
    raw = median_hz * 2 ** ((notes * 100 + 40 * np.sin(2 * np.pi * 5 * t)) / 1200)
    raw[rng.random(n) < 0.2] = 0.0
    return interpolate_f0(raw)


def test_speaker_an_octave_below_gives_minus_12(tmp_path):
    speaker = compute_speaker_stats([sung(110.0, seed=s) for s in range(3)], HOP, SR)
    assert speaker.median_hz == pytest.approx(110.0, rel=0.06)
    song_f0, song_uv = sung(220.0, seed=9)
    assert suggest_transpose(song_f0, speaker, song_uv) == -12
    assert suggest_transpose(song_f0 * 2 ** (3 / 12), speaker, song_uv) == -15
    assert suggest_transpose(np.zeros(10), speaker) == 0  # nothing voiced: no suggestion
    # the same through the json file, as inference reads it
    path = save_f0_stats(tmp_path / "f0_stats.json", {"low": speaker})
    assert suggest_transpose(song_f0, load_f0_stats(path)["low"], song_uv) == -12


def test_stats_fields_and_histogram():
    f0 = np.array([0.0, 100.0, 200.0, 400.0, 0.0])
    s = compute_speaker_stats([(f0, (f0 > 0).astype(np.float32))], HOP, SR)
    assert (s.frames, s.median_hz) == (3, 200.0)
    assert s.p5_hz == pytest.approx(110.0) and s.p95_hz == pytest.approx(380.0)
    assert s.voiced_seconds == pytest.approx(3 * HOP / SR, abs=1e-3)
    counts = s.histogram["counts"]
    first = s.histogram["first_midi"]
    assert sum(counts) == 3 and counts[43 - first] == counts[55 - first] == counts[67 - first] == 1  # ~G2, G3, G4
    assert compute_speaker_stats([(np.zeros(4), np.zeros(4))], HOP, SR) is None


def test_out_of_range_seconds_names_the_spans():
    stats = SpeakerF0Stats(frames=1000, voiced_seconds=10.0, median_hz=200.0, p5_hz=150.0, p95_hz=300.0)
    n = int(10 * SR / HOP)
    f0 = np.full(n, 200.0)
    uv = np.ones(n, dtype=np.float32)
    t = np.arange(n) * HOP / SR
    f0[(t >= 2.0) & (t < 3.0)] = 400.0   # a high phrase
    f0[(t >= 6.0) & (t < 6.05)] = 100.0  # a blip shorter than min_duration_s
    f0[(t >= 8.0) & (t < 8.5)] = 120.0
    uv[(t >= 8.2) & (t < 8.3)] = 0.0     # unvoiced frames never count, and short gaps are merged
    spans = out_of_range_seconds(f0, stats, HOP, SR, uv)
    assert [(round(b, 1), round(e, 1)) for b, e in spans] == [(2.0, 3.0), (8.0, 8.5)]
    msg = format_out_of_range(spans, stats, "alice")
    assert "1.5 s" in msg and "alice's 5-95 % range (150-300 Hz)" in msg and "2.0-3.0 s" in msg
    assert format_out_of_range([], stats) is None
    # after the suggested transposition an octave-up song fits again
    song = shift_f0(np.full(200, 400.0), -12)
    assert out_of_range_seconds(song, stats, HOP, SR) == []


def test_preprocessing_writes_stats_next_to_the_config(tmp_path):
    root = tmp_path / "dataset" / "44k"
    wavs = []
    for spk, hz in (("low", 110.0), ("high", 330.0)):
        for i in range(2):
            wav = root / spk / f"{spk}{i}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            wav.write_bytes(b"")  # only the artifact is read
            save_f0(f"{wav}.f0.npy", *sung(hz, 2.0, seed=i))
            wavs.append(wav)
    (root / "low" / "broken.wav").write_bytes(b"")
    (root / "low" / "broken.wav.f0.npy").write_bytes(b"not numpy")
    wavs.append(root / "low" / "broken.wav")
    out = default_stats_path(tmp_path / "configs" / "config.json")
    assert out == tmp_path / "configs" / "f0_stats.json"
    stats = write_f0_stats(wavs, out, hop_length=HOP, sampling_rate=SR, f0_predictor="dio")
    doc = json.loads(out.read_text())
    assert doc["format"] == "so-vits-svc f0 stats" and doc["f0_predictor"] == "dio" and doc["hop_length"] == HOP
    loaded = load_f0_stats(out)
    assert set(loaded) == {"low", "high"} and loaded == stats
    assert suggest_transpose(np.full(50, 330.0), loaded["low"]) == -19  # 330 → ~110 Hz
    assert not list(out.parent.glob(".*tmp*"))  # written atomically


def test_bad_stats_files(tmp_path):
    p = tmp_path / "f0_stats.json"
    with pytest.raises(ConfigError, match="not found; run preprocess_hubert_f0.py"):
        load_f0_stats(p)
    p.write_text("{}")
    with pytest.raises(ConfigError, match="not an f0 statistics file"):
        load_f0_stats(p)
    p.write_text(json.dumps({"format": "so-vits-svc f0 stats", "version": 1, "speakers": {"a": {"frames": 1}}}))
    with pytest.raises(ConfigError, match="speaker 'a'"):
        load_f0_stats(p)
