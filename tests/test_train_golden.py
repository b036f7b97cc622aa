"""One optimisation step of the real training code against the original's (golden train/, detrng).

The synthesizer tests check the losses of this step; here the whole step of ``training.loop``
runs: G_0/D_0 loaded as a base model from a model directory, D and G updated by AdamW in 4.1's
order, grad norms, and the change of every parameter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import training.loop as loop
from modules.hparams import get_hparams_from_file
from tests.synth_helpers import detrng
from tests.train_helpers import one_thread  # noqa: F401

SYNTH = Path(__file__).parent / "data" / "synth"   # golden svc_tiny G_0/D_0, config and batch (shared)
DATA = Path(__file__).parent / "data" / "train"    # golden train/step_detrng*.json


def _name_41(name: str) -> str:
    """Parametrized weight norm → 4.1's legacy names (as the state dicts are written)."""
    return name.replace(".parametrizations.weight.original0", ".weight_g").replace(
        ".parametrizations.weight.original1", ".weight_v")


def test_one_step_matches_the_original(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    model_dir = tmp_path / "logs/golden"
    model_dir.mkdir(parents=True)
    for name in ("G_0.pth", "D_0.pth"):
        shutil.copy(SYNTH / name, model_dir / name)
    options = loop.TrainOptions(SYNTH / "config.json", "golden")
    hps = get_hparams_from_file(options.config_path)
    state = loop.create_state(hps, options, loop.Runtime(torch.device("cpu")), loop.Precision("cpu"))
    assert (state.global_step, state.epoch) == (1, 1)  # base model: step 1, epoch = max(iteration, 1)
    for mod in [*state.net_g.modules(), *state.net_d.modules()]:
        if isinstance(mod, torch.nn.Dropout):  # golden detrng: dropout off, every draw = its mean
            mod.p = 0.0
    b = np.load(SYNTH / "batch.npz")
    batch = {k: torch.from_numpy(b[k]) for k in b.files} | {"volume": None}
    before = {net: {n: p.detach().clone() for n, p in getattr(state, net).named_parameters()}
              for net in ("net_g", "net_d")}
    with detrng():
        result = loop.train_step(state, batch)

    ref = json.loads((DATA / "step_detrng.json").read_text())
    assert not result.skipped
    assert result.outputs.ids_slice.tolist() == ref["ids_slice"]
    for key in ("loss_disc", "loss_gen", "loss_fm", "loss_mel", "loss_kl", "loss_lf0", "loss_gen_all"):
        assert getattr(result, key) == pytest.approx(ref[key], rel=1e-5), key
    # README: grad_norm_g moves by ~7.5e-4 abs between thread counts, grad_norm_d by ~3e-8
    assert result.grad_norm_d == pytest.approx(ref["grad_norm_d"], rel=1e-6)
    assert result.grad_norm_g == pytest.approx(ref["grad_norm_g"], rel=1e-5)
    assert state.optim_g.param_groups[0]["lr"] == ref["lr"]

    deltas = json.loads((DATA / "step_detrng_param_delta_l2.json").read_text())
    for net, key in (("net_g", "G"), ("net_d", "D")):
        ours = {_name_41(n): float((p.detach() - before[net][n]).norm())
                for n, p in getattr(state, net).named_parameters()}
        # same parameters in the same order as 4.1 (optimizer states index parameters by position)
        assert list(ours) == list(deltas[key])
        names = sorted(ours)
        a = np.array([ours[n] for n in names])
        g = np.array([deltas[key][n] for n in names])
        # README: the per-tensor norms move by ~4e-4 (relative L2 over all tensors) with the thread
        # count alone, because a first AdamW step is ≈ lr·sign(grad)
        assert np.linalg.norm(a - g) / np.linalg.norm(g) < 2e-3, key  # measured: G 3.6e-4, D 2.3e-5
