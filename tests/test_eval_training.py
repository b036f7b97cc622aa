"""Training-time scores: score_validation on synthetic validation items, best.json bookkeeping."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from eval_helpers import needs_speaker_weights, sung, write
from evaluation.training import (SCORE_FORMULA, SCORE_KEYS, ValidationHook, ValidationScorer, score_validation,
                                 update_best, validation_score)
from modules.audio import resample
from modules.errors import SvcError

DATA = {"sampling_rate": 44100, "filter_length": 2048, "hop_length": 512, "win_length": 2048,
        "n_mel_channels": 80, "mel_fmin": 0.0, "mel_fmax": 22050}


def clip(voice, seed, seconds=2.0):
    return torch.from_numpy(resample(sung(seconds, voice=voice, seed=seed), 32000, 44100))


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SVC_PRETRAIN_DIR", str(tmp_path_factory.mktemp("no_pretrain")))
        yield ValidationScorer(DATA, device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clips():
    return {"a1": clip("alto", 1), "a2": clip("alto", 2), "b1": clip("baritone", 3), "b2": clip("baritone", 4)}


@needs_speaker_weights
def test_perfect_reconstruction(scorer, clips):
    items = [(clips[k][None, None], clips[k][None, None], k[0]) for k in ("a1", "a2", "b1", "b2")]
    s = score_validation(items, DATA, scorer=scorer)
    assert set(s) == {"mel_l1", "f0_rmse_cents", "vuv_f1", "spk_sim", "score"}
    assert s["mel_l1"] == 0.0 and s["f0_rmse_cents"] == 0.0 and s["vuv_f1"] == 1.0
    assert 0.5 < s["spk_sim"] < 1.0          # leave-one-out: another clip of the same singer
    assert s["score"] == pytest.approx(2 * (1 - s["spk_sim"]))


@needs_speaker_weights
def test_worse_reconstruction_scores_worse(scorer, clips):
    good = [(clips["a1"], clips["a1"], 0), (clips["a2"], clips["a2"], 0)]
    shifted = torch.from_numpy(resample(sung(2.0, voice="alto", seed=1, semitones=1), 32000, 44100))
    wrong_singer = clips["b1"][: len(clips["a2"])]
    bad = [(clips["a1"], shifted, 0), (clips["a2"], wrong_singer, 0)]
    g, b = score_validation(good, DATA, scorer=scorer), score_validation(bad, DATA, scorer=scorer)
    assert b["mel_l1"] > g["mel_l1"] + 0.1 and b["f0_rmse_cents"] > 40 and b["spk_sim"] < g["spk_sim"]
    assert b["score"] > g["score"]


@needs_speaker_weights
def test_silent_generation_does_not_stop_training(scorer, clips, caplog):
    with caplog.at_level(logging.WARNING):
        s = score_validation([(clips["a1"], torch.zeros_like(clips["a1"]), 0)], DATA, scorer=scorer)
    assert math.isfinite(s["mel_l1"]) and math.isnan(s["f0_rmse_cents"]) and math.isnan(s["spk_sim"])
    assert math.isnan(s["score"]) and "generated audio of validation item 0" in caplog.text


@needs_speaker_weights
def test_speaker_refs_and_caching(scorer, clips, tmp_path, monkeypatch):
    ref = write(tmp_path / "alto_ref.wav", sung(2.0, voice="alto", seed=9))
    items = [(clips["a1"], clips["a1"], "alto")]
    own = score_validation(items, DATA, scorer=scorer)["spk_sim"]   # single clip: its own real clip
    assert own == pytest.approx(1.0, abs=1e-5)
    calls = []
    real_analyze = scorer.analyzer.analyze
    monkeypatch.setattr(scorer.analyzer, "analyze", lambda *a, **k: calls.append(1) or real_analyze(*a, **k))
    s = score_validation(items, DATA, scorer=scorer, speaker_refs={"alto": [ref]})
    assert 0.5 < s["spk_sim"] < 0.999
    assert len(calls) == 1                   # the real clip's analysis came from the cache


@needs_speaker_weights
def test_bad_items(scorer, clips):
    with pytest.raises(SvcError, match="one mono clip"):
        score_validation([(torch.zeros(2, 1000), torch.zeros(2, 1000), 0)], DATA, scorer=scorer)
    with pytest.raises(SvcError, match="no validation items"):
        score_validation([], DATA, scorer=scorer)
    with pytest.raises(SvcError, match="no 'mel_fmax'"):
        ValidationScorer({k: v for k, v in DATA.items() if k != "mel_fmax"})


def test_score_formula():
    assert validation_score({"mel_l1": 0.5, "f0_rmse_cents": 50.0, "spk_sim": 0.75}) == pytest.approx(1.5)
    assert math.isnan(validation_score({"mel_l1": 0.5, "f0_rmse_cents": math.nan, "spk_sim": 0.75}))
    assert math.isnan(validation_score({"mel_l1": 0.5}))


def _scores(score_target):
    return {"mel_l1": score_target, "f0_rmse_cents": 0.0, "vuv_f1": 1.0, "spk_sim": 1.0}


def test_update_best(tmp_path, caplog):
    path = tmp_path / "logs" / "best.json"
    assert update_best(path, 800, _scores(1.0), checkpoint="G_800.pth") is True
    assert update_best(path, 1600, _scores(0.6), checkpoint="G_1600.pth") is True
    assert update_best(path, 2400, _scores(0.8)) is False            # over-training: worse than 1600
    assert update_best(path, 3200, {**_scores(0.1), "f0_rmse_cents": math.nan}) is False   # NaN never best
    data = json.loads(path.read_text())
    assert data["score_formula"] == SCORE_FORMULA and data["lower_is_better"] is True
    assert data["best"] == {"step": 1600, "score": 0.6, "checkpoint": "G_1600.pth",
                            "scores": {"mel_l1": 0.6, "f0_rmse_cents": 0.0, "vuv_f1": 1.0, "spk_sim": 1.0}}
    assert [h["step"] for h in data["history"]] == [800, 1600, 2400, 3200]
    assert data["history"][3]["score"] is None and data["history"][3]["f0_rmse_cents"] is None
    # a resumed run scores step 2400 again: replaced, and now it is the best
    assert update_best(path, 2400, _scores(0.5)) is True
    data = json.loads(path.read_text())
    assert [h["step"] for h in data["history"]] == [800, 1600, 2400, 3200] and data["best"]["step"] == 2400
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.json"]    # no temporary files left
    path.write_text("{ truncated")
    with caplog.at_level(logging.WARNING):
        assert update_best(path, 4000, _scores(0.9)) is True
    assert "unreadable" in caplog.text and len(json.loads(path.read_text())["history"]) == 1


class _Writer:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))


@needs_speaker_weights
def test_validation_hook_logs_scalars_and_keeps_best_json(scorer, clips, tmp_path, caplog):
    hook = ValidationHook(DATA, tmp_path, device="cpu")
    hook.scorer = scorer   # the module's (already loaded); a run's hook builds its own on the first pass
    writer = _Writer()
    items = [(clips["a1"][None, None], clips["a1"][None, None], 0), (clips["a2"][None, None], clips["a2"][None, None], 0)]
    with caplog.at_level(logging.INFO):
        s = hook(items, 800, writer=writer, checkpoint="G_800.pth")
    assert set(s) == set(SCORE_KEYS) and "validation scores at step 800" in caplog.text
    assert [(t, st) for t, _, st in writer.scalars] == [(f"val/{k}", 800) for k in s]
    worse = [(clips["a1"], clips["b1"][: len(clips["a1"])], 0), (clips["a2"], clips["a2"], 0)]
    hook(worse, 1600, writer=writer, checkpoint="G_1600.pth")
    data = json.loads((tmp_path / "best.json").read_text())
    assert set(data) == {"score_formula", "lower_is_better", "best", "history"}
    assert data["best"]["step"] == 800 and data["best"]["checkpoint"] == "G_800.pth"
    assert set(data["best"]["scores"]) == {"mel_l1", "f0_rmse_cents", "vuv_f1", "spk_sim"}
    assert [h["step"] for h in data["history"]] == [800, 1600]


def test_validation_hook_never_stops_training(tmp_path, caplog, monkeypatch):
    from modules.errors import MissingPretrainedError
    import evaluation.training as et

    # A pass that fails (here: no items) is skipped with a warning.
    hook = ValidationHook(DATA, tmp_path, device="cpu")
    hook.scorer = object.__new__(ValidationScorer)   # never reached: the items are checked first
    with caplog.at_level(logging.WARNING):
        assert hook([], 800, writer=_Writer()) is None
    assert "validation scores at step 800 failed (SvcError: score_validation: no validation items)" in caplog.text
    assert not (tmp_path / "best.json").exists() and not hook.disabled

    # A scorer that cannot load turns the hook off for the run, with one warning.
    built = []

    def no_encoder(*a, **k):
        built.append(1)
        raise MissingPretrainedError("speaker similarity needs Resemblyzer's released encoder weights")

    monkeypatch.setattr(et, "ValidationScorer", no_encoder)
    hook = ValidationHook(DATA, tmp_path, device="cpu")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert hook([(torch.zeros(100), torch.zeros(100), 0)], 800) is None
        assert hook([(torch.zeros(100), torch.zeros(100), 0)], 1600) is None
    assert built == [1] and "Resemblyzer" in hook.disabled
    assert caplog.text.count("validation scores are off for this run") == 1
