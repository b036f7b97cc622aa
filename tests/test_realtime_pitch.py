"""Pitch in the realtime path (issue 20): shared range / repair settings, the input's median and key text."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inference.pitch import model_f0_stats, speaker_key_text
from inference.realtime import RealtimeEngine, RealtimeSettings, load_settings, save_settings
from inference.realtime.settings import SHARED_OPTIONS
from modules.errors import ConfigError
from modules.f0_stats import SpeakerF0Stats, save_f0_stats
from webui_helpers import build_tiny_models

SR = 44100


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    models = build_tiny_models(tmp_path_factory.mktemp("rt_pitch"))
    alto = SpeakerF0Stats(frames=100, voiced_seconds=1.2, median_hz=110.0, p5_hz=95.0, p95_hz=130.0)
    save_f0_stats(models.config.parent / "f0_stats.json", {"alto": alto})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SVC_PRETRAIN_DIR", str(models.pretrain))
        yield models
    torch.set_num_threads(threads)


def tone(seconds: float, f0: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.05)
    return (0.4 * y * env / np.abs(y).max()).astype(np.float32)


def test_range_and_repair_are_shared_validated_and_saved(tmp_path):
    assert {"f0_min", "f0_max", "f0_repair"} <= set(SHARED_OPTIONS) & set(RealtimeSettings.LIVE)
    s = RealtimeSettings(f0_min=80, f0_max=900.0, f0_repair=True).validate()
    assert s.f0_min == 80.0 and isinstance(s.f0_min, float)
    assert s.conversion_options().f0_max == 900.0 and s.conversion_options().f0_repair
    save_settings(s, tmp_path / "s.json")
    assert load_settings(tmp_path / "s.json") == s
    assert json.loads((tmp_path / "s.json").read_text())["f0_min"] == 80.0
    assert RealtimeSettings().f0_min is None  # 4.1's range
    with pytest.raises(ConfigError, match="f0_min = 900 Hz, f0_max = 80 Hz"):
        RealtimeSettings(f0_min=900, f0_max=80).validate()
    with pytest.raises(ConfigError, match="f0_max"):
        RealtimeSettings(f0_max="high")


def test_engine_honours_range_and_measures_the_input(tiny):
    from inference.realtime import load_svc

    s = RealtimeSettings(model_path=str(tiny.g), cluster_model_path="", block_time=0.2, f0_predictor="pm",
                         threshold=-60.0, device="cpu")
    svc = load_svc(s)
    eng = RealtimeEngine(svc, s)
    try:
        assert eng.input_median_hz() is None
        y = tone(1.2)
        B = eng.block_size
        out = np.concatenate([eng.process(y[i:i + B]) for i in range(0, 5 * B, B)])
        assert abs(eng.input_median_hz() - 220.0) < 220.0 * 0.03
        eng.apply_live_settings(f0_min=300.0, f0_max=1000.0, f0_repair=True)
        pred = eng._f0_predictor(eng.settings)
        assert (pred.f0_min, pred.f0_max) == (300.0, 1000.0) and pred.repair is not None
        ranged = np.concatenate([eng.process(y[i:i + B]) for i in range(0, 5 * B, B)])
        assert not np.array_equal(out, ranged)
    finally:
        eng.close()


def test_key_text_from_the_model_statistics(tiny):
    stats = model_f0_stats(tiny.g)  # config.json beside the model
    assert speaker_key_text(stats, "alto") == "alto: median 110 Hz, 5-95 % 95-130 Hz"
    assert "suggested key -12 semitones (your voice: median 220 Hz)" in speaker_key_text(stats, "alto", 220.0)
    assert "no f0 statistics for speaker 'tenor'" in speaker_key_text(stats, "tenor")
    assert model_f0_stats(tiny.g2) is None  # no statistics beside that model
