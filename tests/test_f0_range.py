"""f0_min / f0_max change every predictor's search (issue 20): a 90 Hz tone is found with
f0_min=50 and not with f0_min=120; an empty range is refused before any model loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import preprocess_hubert_f0
from modules.cli import run_main
from modules.errors import SvcError
from modules.F0Predictor import get_f0_predictor
from modules.F0Predictor import rmvpe as R
from tests.f0_helpers import HOP, SR, cents, harmonic_tone

TONE_HZ = 90.0


@pytest.fixture(scope="module")
def tone():
    return harmonic_tone(TONE_HZ, 0.8)


def _found(f0: np.ndarray, uv: np.ndarray) -> float:
    """Share of frames voiced within 50 cents of the tone."""
    return float(((uv > 0) & (cents(f0, TONE_HZ) < 50)).mean())


def _fake_rmvpe(monkeypatch):
    """RMVPE without its 180 MB weights: a salience peaked at 90 Hz, as a trained model gives."""
    monkeypatch.setattr(R, "load_rmvpe", lambda *a, **k: None)
    centre = (1200 * np.log2(TONE_HZ / 10) - R.CENTS_OFFSET) / 20

    def salience(self, wav):
        n = 1 + round(len(wav) * 16000 / self.sampling_rate) // 160
        bins = torch.arange(R.N_CLASS, dtype=torch.float32)
        return torch.exp(-0.5 * ((bins - centre) / 1.5) ** 2).expand(n, -1).clone() * 0.9

    monkeypatch.setattr(R.RMVPEF0Predictor, "salience", salience)


@pytest.mark.parametrize("name", ["dio", "harvest", "pm", "crepe", "fcpe", "rmvpe", "hybrid:dio+harvest+pm"])
def test_range_changes_the_search(name, tone, monkeypatch, tmp_path):
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path))  # fcpe: the wheel's model, rmvpe: faked
    if name == "rmvpe":
        _fake_rmvpe(monkeypatch)
    kw = {"model": "tiny"} if name == "crepe" else {}

    def run(**rng):
        return get_f0_predictor(name, HOP, SR, device="cpu", **kw, **rng).compute_f0_uv(tone)

    assert _found(*run(f0_min=50)) > 0.8
    assert _found(*run(f0_min=120)) == 0.0
    if name in ("rmvpe", "fcpe"):  # 4.1 ran these unrestricted; an explicit range restricts them
        assert _found(*run(f0_min=50, f0_max=80)) == 0.0


@pytest.mark.parametrize("name", ["dio", "pm", "fcpe"])
def test_default_range_is_41s(name, tone, monkeypatch, tmp_path):
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path))
    default = get_f0_predictor(name, HOP, SR, device="cpu")
    assert (default.f0_min, default.f0_max, default.f0_range_given, default.repair) == (50.0, 1100.0, False, None)
    explicit = get_f0_predictor(name, HOP, SR, device="cpu", f0_min=None, f0_max=None, f0_repair=False)
    for a, b in zip(default.compute_f0_uv(tone), explicit.compute_f0_uv(tone)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("f0_min,f0_max", [(500, 400), (300, 300), (-5, 400), (1200, None), (float("nan"), 500)])
def test_empty_range_is_refused_before_loading(f0_min, f0_max, tmp_path, monkeypatch):
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path))  # no rmvpe.pt: the range error must come first
    with pytest.raises(SvcError, match="need 0 < f0_min < f0_max.*f0_min="):
        get_f0_predictor("rmvpe", f0_min=f0_min, f0_max=f0_max)
    with pytest.raises(SvcError, match="f0_min < f0_max"):
        get_f0_predictor("hybrid:rmvpe+fcpe", f0_min=f0_min, f0_max=f0_max)


def test_preprocess_refuses_an_empty_range(capsys, tmp_path):
    code = run_main(preprocess_hubert_f0.main, ["--f0_min", "600", "--f0_max", "500", "--in_dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "--f0_min/--f0_max" in err and "f0_min=600 Hz, f0_max=500 Hz" in err
    code = run_main(preprocess_hubert_f0.main, ["--f0_predictor", "hybrid:pm+yin", "--in_dir", str(tmp_path)])
    assert code == 2 and "unknown member 'yin'" in capsys.readouterr().err


def test_preprocess_settings_carry_range_and_repair_to_the_predictor():
    from modules.hparams import HParams
    from preprocessing.features import ExtractSettings, FeatureExtractor
    from preprocessing.flist import build_configs

    sovits, _ = build_configs({"a": 0}, "vec768l12")
    settings = ExtractSettings.from_configs(HParams(**sovits), None, f0_predictor="pm", use_diff=False,
                                            f0_options={"f0_min": 70.0, "f0_max": 800.0, "f0_repair": True})
    p = FeatureExtractor(settings, device="cpu").f0_predictor()
    assert (p.name, p.f0_min, p.f0_max, p.repair is not None) == ("pm", 70.0, 800.0, True)
    plain = ExtractSettings.from_configs(HParams(**sovits), None, f0_predictor="pm", use_diff=False)
    assert plain.f0_options == {} and FeatureExtractor(plain, device="cpu").f0_predictor().repair is None
