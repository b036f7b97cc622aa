"""train.py end to end on a tiny synthetic dataset: learning, checkpoints, resume, fine-tuning, NaN."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import training.loop as loop
from models import SynthesizerTrn
from modules.checkpoint import load_checkpoint, save_checkpoint, torch_load
from modules.hparams import get_hparams_from_file
from tests.train_helpers import (TinyMultiPeriodDiscriminator, one_thread, read_scalars, run_train,  # noqa: F401
                                 tiny_run, write_config)


def _g(hps):
    return SynthesizerTrn(hps.data.filter_length // 2 + 1, hps.train.segment_size // hps.data.hop_length, **hps.model)


def test_training_lowers_mel_loss_and_writes_41_checkpoints(tiny_run, caplog):
    cfg = write_config(tiny_run, log_interval=8, eval_interval=8, keep_ckpts=1)
    caplog.set_level(logging.INFO)
    assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "16") == 0
    model_dir = tiny_run / "logs/44k"

    # the reconstruction loss of a short over-fitting run drops clearly (seeded: train.seed)
    mel = read_scalars(model_dir, "loss/g/mel")
    assert sorted(mel) == [0, 8, 16]
    assert mel[16] < 0.75 * mel[0], mel
    # 4 training clips, batch 4: one step per epoch, and the rate decays once per epoch
    lr = read_scalars(model_dir, "learning_rate")
    assert lr[0] == pytest.approx(2e-3) and lr[16] == pytest.approx(2e-3 * 0.999875**16)
    tags = EventAccumulator(str(model_dir)).Reload().Tags()
    assert {"loss/d/total", "grad_norm_d", "grad_norm_g", "loss/g/kl", "loss/g/lf0"} <= set(tags["scalars"])
    assert {"slice/mel_org", "slice/mel_gen", "all/mel", "all/lf0"} <= set(tags["images"])
    eval_tags = EventAccumulator(str(model_dir / "eval")).Reload().Tags()
    assert {"gen/audio_0", "gt/audio_0", "gen/audio_1"} <= set(eval_tags["audio"])

    # saved at steps 0, 8, 16; keep_ckpts 1 keeps the newest one and the *_0 files
    names = sorted(p.name for p in model_dir.glob("[GD]_*.pth"))
    assert names == ["D_0.pth", "D_16.pth", "G_0.pth", "G_16.pth"]
    assert (model_dir / "config.json").read_bytes() == cfg.read_bytes()  # copied verbatim
    assert "step 16" in (model_dir / "train.log").read_text()

    ckpt = torch_load(model_dir / "G_16.pth")
    # 4.1's four keys, plus ours: step, config (with the speaker map) and the runner's train_state
    assert set(ckpt) == {"model", "iteration", "optimizer", "learning_rate", "step", "config", "train_state"}
    assert ckpt["config"]["spk"] == {"spk0": 0, "spk1": 1} and ckpt["config"]["model"]["n_speakers"] == 2
    assert ckpt["train_state"]["step"] == 16 and ckpt["train_state"]["lr_scale"] == 1.0
    assert ckpt["step"] == 16 and ckpt["iteration"] == 17  # iteration holds the epoch (4.1)
    assert ckpt["learning_rate"] == pytest.approx(2e-3)  # 4.1 stores the configured base rate
    assert not any(k.startswith("module.") for k in ckpt["model"])
    steps = {float(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert steps == {17.0}  # steps 0..16 all updated G
    group = ckpt["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 0.01 and group["betas"] == (0.8, 0.99)
    assert group["fused"] is None and group["foreach"] is None  # 4.1 picks its own kernel on resume
    hps = get_hparams_from_file(cfg)
    net = _g(hps)
    load_checkpoint(model_dir / "G_16.pth", net)  # loads strictly into a fresh model
    assert torch.equal(net.emb_g.weight, ckpt["model"]["emb_g.weight"])


def test_kill_and_resume_continues_from_the_saved_step(tiny_run, caplog):
    cfg = write_config(tiny_run, eval_interval=100)
    assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "3") == 0
    model_dir = tiny_run / "logs/44k"
    assert sorted(p.name for p in model_dir.glob("G_*.pth")) == ["G_0.pth", "G_3.pth"]
    # a kill between the G and the D save (G_9 without D_9) and a left-over temporary file
    shutil.copy(model_dir / "G_3.pth", model_dir / "G_9.pth")
    (model_dir / ".D_9.pth.abc123.tmp.pth").write_bytes(b"partial")

    caplog.clear()
    caplog.set_level(logging.INFO)
    assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "6") == 0
    text = caplog.text
    assert "resuming from step 3" in text
    assert "no G/D partner" in text
    g6 = torch_load(model_dir / "G_6.pth")
    assert g6["step"] == 6
    # optimizer moments were restored: AdamW has now taken 7 steps (0..6), not 3 from a fresh start
    assert {float(s["step"]) for s in g6["optimizer"]["state"].values()} == {7.0}
    # G_3 was saved in epoch 4; like 4.1 the resumed run starts that epoch again (step 4), then 5, 6
    assert g6["iteration"] == 6
    assert not (model_dir / "G_4.pth").exists()


def test_finetuning_a_base_model_with_another_speaker_count(tiny_run, caplog):
    cfg = write_config(tiny_run, eval_interval=100, learning_rate=1e-4)
    hps = get_hparams_from_file(cfg)
    base_hps = get_hparams_from_file(cfg)
    base_hps.model.n_speakers = 5
    torch.manual_seed(5)
    base_g, base_d = _g(base_hps), TinyMultiPeriodDiscriminator()
    optim = loop.build_optimizer(base_g, hps.train)
    for p in base_g.parameters():  # give the base model optimizer moments, as real base models have
        p.grad = torch.ones_like(p)
    optim.step()
    model_dir = tiny_run / "logs/44k"
    save_checkpoint(base_g, optim, 1e-4, 1, model_dir / "G_0.pth")
    save_checkpoint(base_d, loop.build_optimizer(base_d, hps.train), 1e-4, 1, model_dir / "D_0.pth")

    caplog.set_level(logging.INFO)
    assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "2") == 0
    assert "Fine-tuning from the base model G_0.pth and D_0.pth" in caplog.text
    assert "'emb_g.weight' has shape (5, 16) but the model needs (2, 16); it is re-initialised" in caplog.text
    assert "optimizer moments of emb_g.weight do not fit" in caplog.text
    tuned = torch_load(model_dir / "G_2.pth")
    assert tuned["model"]["emb_g.weight"].shape == (2, 16)
    # every other tensor started from the base weights: 3 AdamW steps of lr 1e-4 move them by < 1e-3
    for k, v in base_g.state_dict().items():
        if k != "emb_g.weight":
            assert (tuned["model"][k] - v).abs().max() < 1e-3, k
    assert _g(hps).pre.weight.sub(base_g.pre.weight).abs().max() > 1e-2  # a fresh init would differ


def test_nan_steps_are_skipped_and_counted(tiny_run, monkeypatch, caplog):
    cfg = write_config(tiny_run, log_interval=2, eval_interval=100)
    real = loop.generator_step_losses
    calls = {"n": 0}

    def sometimes_nan(net_d, out, hps):
        losses = real(net_d, out, hps)
        calls["n"] += 1
        if calls["n"] in (2, 3):  # steps 1 and 2
            losses["loss_gen_all"] = losses["loss_gen_all"] * float("nan")
        return losses

    monkeypatch.setattr(loop, "generator_step_losses", sometimes_nan)
    caplog.set_level(logging.INFO)
    assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "4") == 0
    assert "step 1: non-finite generator" in caplog.text and "update skipped (2 skipped so far)" in caplog.text
    skipped = read_scalars(tiny_run / "logs/44k", "misc/skipped_steps")
    assert skipped[0] == 0 and skipped[4] == 2
    g4 = torch_load(tiny_run / "logs/44k/G_4.pth")
    assert all(torch.isfinite(v).all() for v in g4["model"].values())
    # G took 3 updates (0, 3, 4), D all 5
    assert {float(s["step"]) for s in g4["optimizer"]["state"].values()} == {3.0}
    d4 = torch_load(tiny_run / "logs/44k/D_4.pth")
    assert {float(s["step"]) for s in d4["optimizer"]["state"].values()} == {5.0}


def test_nan_run_rolls_back_with_a_lower_lr_and_goes_on(tiny_run, monkeypatch, caplog):
    cfg = write_config(tiny_run, log_interval=1, eval_interval=2)
    real = loop.generator_step_losses
    calls = {"n": 0}

    def nan_at_steps_3_and_4(net_d, out, hps):
        losses = real(net_d, out, hps)
        calls["n"] += 1
        if calls["n"] in (4, 5):
            losses["loss_gen_all"] = losses["loss_gen_all"] * float("nan")
        return losses

    monkeypatch.setattr(loop, "generator_step_losses", nan_at_steps_3_and_4)
    monkeypatch.setattr(loop, "GUARD", loop.GuardPolicy(max_consecutive_bad=2, max_rollbacks=2, lr_factor=0.5))
    caplog.set_level(logging.INFO)
    assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "6") == 0
    assert "steps 3–4 had NaN/inf losses or gradients: rollback 1 of 2, going back to step 2's checkpoint" in caplog.text
    assert "learning rate × 0.5" in caplog.text
    g6 = torch_load(tiny_run / "logs/44k/G_6.pth")
    assert g6["train_state"]["lr_scale"] == 0.5 and g6["train_state"]["rollbacks"] == 1
    # after the rollback steps 3..6 ran again from G_2's weights and optimizer, at half the rate
    lr = read_scalars(tiny_run / "logs/44k", "learning_rate")
    assert lr[2] == pytest.approx(2e-3 * 0.999875**2) and lr[6] == pytest.approx(0.5 * 2e-3 * 0.999875**5)
    assert {float(s["step"]) for s in g6["optimizer"]["state"].values()} == {7.0}  # 0..2, then 3..6


def test_persistent_nan_stops_after_the_rollbacks_with_exit_2(tiny_run, monkeypatch, capsys, caplog):
    cfg = write_config(tiny_run, eval_interval=2)
    real = loop.generator_step_losses

    calls = {"n": 0}

    def nan_from_step_1(net_d, out, hps):
        losses = real(net_d, out, hps)
        calls["n"] += 1
        if calls["n"] > 1:
            losses["loss_gen_all"] = losses["loss_gen_all"] * float("inf")
        return losses

    monkeypatch.setattr(loop, "generator_step_losses", nan_from_step_1)
    monkeypatch.setattr(loop, "GUARD", loop.GuardPolicy(max_consecutive_bad=3, max_rollbacks=2, lr_factor=0.1))
    caplog.set_level(logging.WARNING)
    assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "40") == 2
    err = capsys.readouterr().err
    assert "training diverged: steps 1–3 all had NaN/inf" in err and "after 2 rollback(s)" in err
    assert "0.01× the configured one" in err  # lowered twice by 0.1
    assert "float16 on a GPU without fast float16" in err and "clipped, silent or empty-band" in err
    assert "lower it" in err
    assert caplog.text.count("going back to step 0's checkpoint") == 2
    # step 0 was saved (no update had failed yet); nothing inside the NaN streaks
    assert sorted(p.name for p in (tiny_run / "logs/44k").glob("G_*.pth")) == ["G_0.pth"]


def test_lr_schedule_equals_41_exponential_lr_with_warmup():
    from modules.hparams import HParams

    for warmup in (0, 3):
        hps = HParams(learning_rate=1e-3, lr_decay=0.9, warmup_epochs=warmup)
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=1e-3)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9, last_epoch=-1)  # 4.1, from scratch
        for epoch in range(1, 9):
            if epoch <= warmup:
                for g in opt.param_groups:
                    g["lr"] = 1e-3 / warmup * epoch
            assert loop.lr_at_epoch(epoch, hps) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), (warmup, epoch)
            opt.step()
            sched.step()


def test_optimizer_is_41_adamw(tmp_path):
    hps = get_hparams_from_file(write_config(tmp_path, betas=[0.7, 0.95], eps=1e-8))
    net = _g(hps)
    opt = loop.build_optimizer(net, hps.train)
    assert isinstance(opt, torch.optim.AdamW)
    (group,) = opt.param_groups
    assert group["weight_decay"] == 0.01 and group["betas"] == (0.7, 0.95) and group["eps"] == 1e-8
    assert group["lr"] == hps.train.learning_rate
    assert group["params"] == list(net.parameters())  # 4.1's parameter order (optimizer state indices)


def test_mixed_precision_is_a_gpu_option(caplog):
    from modules.hparams import HParams

    caplog.set_level(logging.WARNING)
    p = loop.resolve_precision(HParams(fp16_run=True, half_type="bf16"), torch.device("cpu"))
    assert not p.enabled and not p.use_scaler
    assert "mixed precision is a GPU option" in caplog.text
    assert not loop.resolve_precision(HParams(fp16_run=False), torch.device("cpu")).enabled


def test_bad_configs_fail_with_a_clear_message(tiny_run, capsys):
    cfg = write_config(tiny_run)
    data = json.loads(cfg.read_text())
    data["spk"]["spk2"] = 7
    cfg.write_text(json.dumps(data))
    assert run_train("-c", str(cfg), "-m", "44k") == 2
    assert "speaker ids {'spk2': 7} are outside 0..1" in capsys.readouterr().err

    cfg = write_config(tiny_run)
    (tiny_run / "dataset/44k/spk1/spk1_0.wav.soft.pt").unlink()
    assert run_train("-c", str(cfg), "-m", "44k") == 2
    err = capsys.readouterr().err
    assert "spk1_0.wav: missing spk1_0.wav.soft.pt" in err and "preprocess_hubert_f0.py" in err


def test_float16_overflow_is_left_to_the_scaler_unless_the_scale_is_down_to_one(tiny_run):
    from pathlib import Path

    from training.data import build_train_loader

    cfg = write_config(tiny_run)
    options = loop.TrainOptions(Path(cfg), "fp16")
    hps = loop.load_config(options)
    state = loop.create_state(hps, options, loop.Runtime(torch.device("cpu")), loop.Precision("cpu", use_scaler=True))
    batch = next(iter(build_train_loader(hps)[0]))
    weight = state.net_g.pre.weight
    hook = weight.register_hook(lambda g: g * float("inf"))  # finite losses, overflowing gradients
    before = weight.detach().clone()
    result = loop.train_step(state, batch)  # scale 65536: an ordinary overflow, the scaler skips it
    assert not result.skipped and state.scaler.get_scale() == 32768.0
    assert torch.equal(weight, before)
    state.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    result = loop.train_step(state, batch)
    assert result.skipped and "float16 gradients overflow even at loss scale 1" in result.reason
    hook.remove()
    assert not loop.train_step(state, batch).skipped
    assert not torch.equal(weight, before)


def test_ctrl_c_finishes_the_step_saves_and_exits_130(tiny_run, monkeypatch, caplog):
    import os
    import signal

    cfg = write_config(tiny_run, eval_interval=100)
    real = loop.train_step
    calls = {"n": 0}

    def step(state, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives during step 2
        return real(state, batch)

    monkeypatch.setattr(loop, "train_step", step)
    caplog.set_level(logging.INFO)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the tests run in a background job
    assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "50") == 130
    assert "SIGINT received: finishing step 2, saving a checkpoint" in caplog.text
    assert sorted(p.name for p in (tiny_run / "logs/44k").glob("G_*.pth")) == ["G_0.pth", "G_2.pth"]
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
