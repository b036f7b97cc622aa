"""Training survives SIGKILL: during a checkpoint save and during a step, for SoVITS and diffusion.

Each test starts a real training process (tests/kill_helpers.py), waits until it is inside the
save or the step, kills it with SIGKILL, then resumes in this process and checks that the newest
complete checkpoint loads and training continues from its step.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modules.checkpoint import config_from_checkpoint, load_checkpoint, torch_load
from tests.train_helpers import REPO, make_dataset, one_thread, run_train, write_config  # noqa: F401

WAIT_S = 300  # generous: the machine may be busy; the test waits for a marker, never for a time


def _start_and_kill(kind: str, hang: str, cwd: Path, args: list[str]) -> str:
    marker = cwd / "hang.marker"
    marker.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tests.kill_helpers", kind, hang, str(marker), "--", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"training ended (status {proc.returncode}) before reaching {hang}: {proc.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"training did not reach {hang} within {WAIT_S} s")
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return marker.read_text()


@pytest.fixture
def sovits_dir(tmp_path, monkeypatch, one_thread):
    import training.loop
    from tests.train_helpers import TinyMultiPeriodDiscriminator

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training.loop, "MultiPeriodDiscriminator", TinyMultiPeriodDiscriminator)
    make_dataset(tmp_path, clips_per_speaker=2)
    return tmp_path


@pytest.mark.parametrize("hang", ["save:G_4.pth", "step:5"])
def test_sovits_resumes_after_sigkill(sovits_dir, hang, caplog):
    cfg = write_config(sovits_dir, eval_interval=2)
    what = _start_and_kill("sovits", hang, sovits_dir, ["-c", str(cfg), "-m", "44k", "--max_steps", "8"])
    model_dir = sovits_dir / "logs/44k"
    names = sorted(p.name for p in model_dir.glob("[GD]_*.pth"))
    if hang.startswith("save"):
        assert what == "saving G_4.pth"
        assert names == ["D_0.pth", "D_2.pth", "G_0.pth", "G_2.pth"]  # the interrupted G_4 is not there
        assert list(model_dir.glob(".G_4.pth*")), "the killed save left its temporary file"
        resumed = 2
    else:
        assert what == "in step 5"
        assert names == ["D_0.pth", "D_2.pth", "D_4.pth", "G_0.pth", "G_2.pth", "G_4.pth"]
        resumed = 4
    g = torch_load(model_dir / f"G_{resumed}.pth")  # the newest checkpoint is complete and loads
    assert g["step"] == resumed

    caplog.set_level(logging.INFO)
    assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "6") == 0
    assert f"resuming from step {resumed}" in caplog.text
    g6 = torch_load(model_dir / "G_6.pth")
    assert g6["step"] == 6 and g6["train_state"]["step"] == 6
    # AdamW moments continued: steps 0..6 are 7 updates in all (none lost beyond the last save)
    assert {float(s["step"]) for s in g6["optimizer"]["state"].values()} == {7.0}
    assert not list(model_dir.glob(".*tmp*")), "the killed save's temporary file was removed on resume"


def test_sovits_checkpoint_loads_in_a_41_loader_and_without_a_side_config(sovits_dir):
    """The G file written by us, read the way 4.1's ``utils.load_checkpoint`` reads it."""
    cfg = write_config(sovits_dir, eval_interval=100)
    assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "1") == 0
    path = sovits_dir / "logs/44k/G_1.pth"

    # 4.1: checkpoint_dict = torch.load(path, map_location="cpu"); iteration, learning_rate,
    # optimizer, model = saved_state_dict; then model.load_state_dict(new_state_dict) key by key
    checkpoint_dict = torch.load(path, map_location="cpu", weights_only=True)
    iteration = checkpoint_dict["iteration"]
    learning_rate = checkpoint_dict["learning_rate"]
    optimizer_state = checkpoint_dict["optimizer"]
    saved_state_dict = checkpoint_dict["model"]
    assert isinstance(iteration, int) and isinstance(learning_rate, float)
    assert set(optimizer_state) == {"state", "param_groups"}
    from models import SynthesizerTrn
    from modules.hparams import get_hparams_from_file

    hps = get_hparams_from_file(cfg)
    model = SynthesizerTrn(hps.data.filter_length // 2 + 1, hps.train.segment_size // hps.data.hop_length, **hps.model)
    own = model.state_dict()
    legacy = {k.replace(".parametrizations.weight.original0", ".weight_g")
              .replace(".parametrizations.weight.original1", ".weight_v"): k for k in own}
    assert set(saved_state_dict) == set(legacy)  # 4.1's key names (weight_g / weight_v)
    for k41, v in saved_state_dict.items():
        assert own[legacy[k41]].shape == v.shape, k41

    # ours, without config.json: the config (and speaker map) come from the file itself
    (sovits_dir / "logs/44k/config.json").unlink()
    stored = config_from_checkpoint(path)
    assert stored["spk"] == {"spk0": 0, "spk1": 1} and stored["model"] == hps.model.to_dict()
    from modules.config_types import SovitsConfig

    typed = SovitsConfig.from_hparams(stored)
    rebuilt = SynthesizerTrn(typed.spec_channels, typed.segment_frames, **typed.model_kwargs)
    load_checkpoint(path, rebuilt)
    assert torch.equal(rebuilt.emb_g.weight, checkpoint_dict["model"]["emb_g.weight"])
    # a 4.1 file has no config: None, and callers fall back to the side config
    torch.save({k: v for k, v in checkpoint_dict.items() if k in ("model", "iteration", "optimizer", "learning_rate")},
               sovits_dir / "G_41.pth")
    assert config_from_checkpoint(sovits_dir / "G_41.pth") is None


@pytest.fixture
def diffusion_cfg(tmp_path):
    from diffusion_helpers import write_config as write_diff_config
    from diffusion_helpers import write_dataset, write_tiny_vocoder

    vocoder = write_tiny_vocoder(tmp_path / "nsf_hifigan")
    train_list, val_list = write_dataset(tmp_path / "dataset" / "44k", vocoder)
    return write_diff_config(tmp_path / "diffusion.yaml", train_list=train_list, val_list=val_list,
                             vocoder_path=vocoder, expdir=tmp_path / "exp", train__epochs=100,
                             train__interval_val=3, train__save_opt=True)


@pytest.mark.parametrize("hang", ["save:model_6.pt", "step:5"])
def test_diffusion_resumes_after_sigkill(tmp_path, diffusion_cfg, hang, one_thread, caplog):
    import train_diff
    from modules.cli import run_main

    what = _start_and_kill("diffusion", hang, tmp_path, ["-c", str(diffusion_cfg), "--max_steps", "8"])
    exp = tmp_path / "exp"
    assert sorted(p.name for p in exp.glob("model_*.pt")) == ["model_3.pt"]  # model_6 never appeared
    assert what in ("saving model_6.pt", "in step 5")
    assert bool(list(exp.glob(".model_6.pt.*"))) == what.startswith("saving")
    ckpt = torch_load(exp / "model_3.pt")
    assert ckpt["global_step"] == 3 and ckpt["config"]["env"]["expdir"] == str(exp)
    moments_before = {float(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert moments_before == {3.0}

    caplog.set_level(logging.INFO)
    assert run_main(train_diff.main, ["-c", str(diffusion_cfg), "--max_steps", "3"]) == 0
    assert "resuming from" in caplog.text and "model_3.pt (step 3)" in caplog.text
    assert "diffusion training: device cpu" in caplog.text and "resuming from step 3" in caplog.text
    last = torch_load(exp / "model_6.pt")
    assert last["global_step"] == 6 and last["train_state"]["step"] == 6
    assert {float(s["step"]) for s in last["optimizer"]["state"].values()} == {6.0}
    assert not list(exp.glob(".model_*"))
