"""Training-time validation scores wired into train.py: ``val/*`` scalars and ``best.json`` at
every ``eval_interval`` (tiny synthetic run), switched off by ``train.val_scores``, and a scorer
that fails never stops the run."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

import training.loop as loop
from eval_helpers import needs_speaker_weights
from evaluation.training import SCORE_KEYS
from modules.checkpoint import torch_load
from tests.train_helpers import one_thread, read_scalars, run_train, tiny_run, write_config  # noqa: F401


@needs_speaker_weights
def test_training_writes_val_scalars_and_best_json(tiny_run):
    cfg = write_config(tiny_run, eval_interval=2)
    assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "4") == 0
    model_dir = tiny_run / "logs/44k"
    data = json.loads((model_dir / "best.json").read_text())
    assert set(data) == {"score_formula", "lower_is_better", "best", "history"}
    assert data["lower_is_better"] is True and data["score_formula"].startswith("mel_l1 + 0.01 * f0_rmse_cents")
    assert [h["step"] for h in data["history"]] == [0, 2, 4]           # 4.1 evaluates at step 0 too
    assert [h["checkpoint"] for h in data["history"]] == ["G_0.pth", "G_2.pth", "G_4.pth"]
    for h in data["history"]:
        assert set(h) == {"step", "score", "checkpoint", "mel_l1", "f0_rmse_cents", "vuv_f1", "spk_sim"}
        assert h["mel_l1"] > 0   # a 4-step model does not reconstruct exactly
    assert all(isinstance(h["score"], float) for h in data["history"])   # the tiny synthetic clips are voiced
    lowest = min(data["history"], key=lambda h: h["score"])
    assert data["best"]["step"] == lowest["step"] and data["best"]["checkpoint"] == lowest["checkpoint"]
    assert set(data["best"]) == {"step", "score", "checkpoint", "scores"}
    for key in SCORE_KEYS:
        values = read_scalars(model_dir / "eval", f"val/{key}")
        assert sorted(values) == [0, 2, 4], key
    mel = read_scalars(model_dir / "eval", "val/mel_l1")
    assert all(math.isfinite(v) for v in mel.values())
    assert [mel[s] for s in (0, 2, 4)] == pytest.approx([h["mel_l1"] for h in data["history"]])


def test_val_scores_off_and_a_failing_scorer_never_stop_training(tiny_run, monkeypatch, caplog):
    cfg = write_config(tiny_run, eval_interval=2, val_scores=False)
    assert run_train("-c", str(cfg), "-m", "off", "--max_steps", "2") == 0
    assert not (tiny_run / "logs/off/best.json").exists()
    assert (tiny_run / "logs/off/G_2.pth").exists()

    import evaluation.training as et

    def broken(*a, **k):
        raise RuntimeError("scorer exploded")

    monkeypatch.setattr(et, "score_validation", broken)
    cfg = write_config(tiny_run, "on.json", eval_interval=2)
    caplog.set_level(logging.WARNING)
    assert run_train("-c", str(cfg), "-m", "broken", "--max_steps", "2") == 0
    assert "validation scores at step 0 failed (RuntimeError: scorer exploded); training goes on" in caplog.text
    assert (tiny_run / "logs/broken/G_2.pth").exists() and not (tiny_run / "logs/broken/best.json").exists()


def test_scoring_leaves_the_training_rng_alone(tiny_run, monkeypatch):
    """The scorer's first pass builds models (parameter init draws random numbers): evaluate()
    runs it inside the RNG fork, so a run with scores trains exactly as one without."""
    states = {}
    real = loop.evaluate

    def record(state, eval_loader):
        real(state, eval_loader)
        states.setdefault(state.options.model_dir.name, []).append(torch.random.get_rng_state())

    monkeypatch.setattr(loop, "evaluate", record)

    def build_models_then_score(*a, **k):   # stands in for a scorer whose construction draws numbers
        torch.nn.Linear(64, 64)
        return {"mel_l1": 1.0, "f0_rmse_cents": 0.0, "vuv_f1": 1.0, "spk_sim": 1.0, "score": 1.0}

    import evaluation.training as et

    monkeypatch.setattr(et, "score_validation", build_models_then_score)
    monkeypatch.setattr(et, "ValidationScorer", lambda *a, **k: object())
    for name, on in (("with", True), ("without", False)):
        cfg = write_config(tiny_run, f"{name}.json", eval_interval=2, val_scores=on)
        assert run_train("-c", str(cfg), "-m", name, "--max_steps", "2") == 0
    assert len(states["with"]) == len(states["without"]) == 2
    assert all(torch.equal(a, b) for a, b in zip(states["with"], states["without"]))
    assert (tiny_run / "logs/with/best.json").exists() and not (tiny_run / "logs/without/best.json").exists()
    g_with = torch_load(tiny_run / "logs/with/G_2.pth")["model"]
    g_without = torch_load(tiny_run / "logs/without/G_2.pth")["model"]
    assert all(torch.equal(g_with[k], g_without[k]) for k in g_with)
