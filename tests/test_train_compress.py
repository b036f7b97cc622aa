"""compress_model.py: release models without enc_q / optimizer moments, fp32 or fp16 (spec §7.4)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import compress_model
from models import SynthesizerTrn
from modules.checkpoint import (CONFIG_KEY, config_from_checkpoint, has_random_weights, load_checkpoint,
                                mark_random_weights, save_checkpoint, torch_load)
from modules.cli import run_main
from modules.hparams import get_hparams_from_file
from tests.train_helpers import one_thread, write_config  # noqa: F401
from training.loop import build_optimizer


def _net(hps):
    torch.manual_seed(0)
    return SynthesizerTrn(hps.data.filter_length // 2 + 1, hps.train.segment_size // hps.data.hop_length, **hps.model)


@pytest.fixture
def trained(tmp_path, one_thread):
    """A G checkpoint as training writes it (with optimizer moments) and its config."""
    cfg = write_config(tmp_path)
    hps = get_hparams_from_file(cfg)
    net = _net(hps)
    for p in net.parameters():  # non-trivial weights everywhere (the flow's post conv starts at zero)
        p.data.add_(0.02 * torch.randn_like(p))
    optim = build_optimizer(net, hps.train)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    optim.step()
    path = tmp_path / "logs/44k/G_5.pth"
    save_checkpoint(net, optim, 2e-3, 3, path, step=5)
    return cfg, hps, path


def _audio(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = 30
    c = torch.randn(1, net.ssl_dim, t, generator=g)
    f0 = torch.full((1, t), 180.0)
    uv = torch.ones(1, t)
    audio, _ = net.eval().infer(c, f0, uv, g=torch.LongTensor([[1]]), noice_scale=0.4)
    return audio


def _load_like_41(path, net):
    """4.1's ``utils.load_checkpoint`` for inference: every model key from the file when present
    with the same shape, else the model's own (enc_q stays random and unused)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)["model"]
    own = net.state_dict()
    net.load_state_dict({k: saved[k] if k in saved and saved[k].shape == v.shape else v for k, v in own.items()})
    return net


def test_release_model_drops_training_state_and_gives_the_same_audio(trained):
    cfg, hps, path = trained
    assert run_main(compress_model.main, ["-c", str(cfg), "-i", str(path)]) == 0
    out = path.with_name("G_5_release.pth")
    full, rel = torch_load(path), torch_load(out)
    # 4.1's keys as 4.1 writes them, plus the config the trainer's checkpoints carry (issue 19)
    assert set(rel) == {"model", "iteration", "optimizer", "learning_rate", CONFIG_KEY}
    assert rel[CONFIG_KEY] == json.loads(cfg.read_text()) and rel[CONFIG_KEY]["spk"] == hps.spk.to_dict()
    assert config_from_checkpoint(out) == rel[CONFIG_KEY]
    assert not has_random_weights(rel)
    assert rel["iteration"] == 0 and rel["learning_rate"] == 0.0001
    assert set(rel["model"]) == {k for k in full["model"] if "enc_q" not in k}
    assert any("enc_q" in k for k in full["model"])
    assert all(torch.equal(v, full["model"][k]) for k, v in rel["model"].items())
    # a fresh AdamW over the whole model (enc_q included), as 4.1 writes it
    assert rel["optimizer"]["state"] == {}
    assert len(rel["optimizer"]["param_groups"][0]["params"]) == len(list(_net(hps).parameters()))
    assert out.stat().st_size < path.stat().st_size / 2

    reference = _audio(load_checkpoint(path, _net(hps))[0])
    ours = load_checkpoint(out, _net(hps), allow_missing=("enc_q",))[0]
    assert torch.equal(_audio(ours), reference)
    assert torch.equal(_audio(_load_like_41(out, _net(hps))), reference)


def test_half_release_keeps_shared_tensors_shared(trained):
    cfg, hps, path = trained
    out = path.parent / "release_half.pth"
    assert run_main(compress_model.main, ["-c", str(cfg), "-i", str(path), "-o", str(out), "-hf"]) == 0
    rel = torch_load(out)
    assert all(v.dtype == torch.float16 for v in rel["model"].values() if v.is_floating_point())
    # the flow's shared WaveNet is stored once, under all of its names (as in the fp32 file)
    wn = rel["model"]["flow.wn.cond_layer.bias"]
    assert rel["model"]["flow.flows.2.enc.cond_layer.bias"].data_ptr() == wn.data_ptr()
    fp32 = path.parent / "release.pth"
    assert run_main(compress_model.main, ["-c", str(cfg), "-i", str(path), "-o", str(fp32)]) == 0
    assert out.stat().st_size < 0.7 * fp32.stat().st_size  # (the tiny model's zip headers weigh in)

    net = load_checkpoint(out, _net(hps), allow_missing=("enc_q",))[0]
    assert net.pre.weight.dtype == torch.float16  # 4.1 casts the model to the file's dtype
    reference = _audio(load_checkpoint(path, _net(hps))[0])
    audio = _audio(net.float())
    assert float((audio - reference).norm() / reference.norm()) < 2e-2


def test_mismatched_config_or_output_is_refused(trained, tmp_path, capsys):
    cfg, hps, path = trained
    other = write_config(tmp_path, "other.json", model={"ssl_dim": 32})
    assert run_main(compress_model.main, ["-c", str(other), "-i", str(path)]) == 2
    assert "does not fit this model" in capsys.readouterr().err
    assert run_main(compress_model.main, ["-c", str(cfg), "-i", str(path), "-o", str(path)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert not path.with_name("G_5_release.pth").exists()


def test_a_model_trained_on_a_random_encoder_stays_marked(trained, tmp_path, caplog):
    cfg, hps, path = trained
    marked = tmp_path / "G_9.pth"
    torch.save(mark_random_weights(torch_load(path)), marked)
    out = tmp_path / "release.pth"
    assert run_main(compress_model.main, ["-c", str(cfg), "-i", str(marked), "-o", str(out), "-hf"]) == 0
    rel = torch_load(out)
    assert has_random_weights(rel) and CONFIG_KEY in rel
    caplog.set_level(logging.WARNING)
    load_checkpoint(out, _net(hps), allow_missing=("enc_q",))
    load_checkpoint(out, _net(hps), allow_missing=("enc_q",))
    warnings = [r.getMessage() for r in caplog.records if "HAS RANDOM WEIGHTS" in r.getMessage()]
    assert len(warnings) == 1 and str(out) in warnings[0] and "trained on features" in warnings[0]
