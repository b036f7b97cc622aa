"""train_diff.py: a tiny Unit2Mel trained on a synthetic dataset written in 4.1's artifact formats."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from diffusion_helpers import single_thread, write_config, write_dataset, write_tiny_vocoder
from modules.hparams import get_hparams_from_file


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffdata")
    vocoder = write_tiny_vocoder(root / "nsf_hifigan")
    train_list, val_list = write_dataset(root / "dataset" / "44k", vocoder)
    return root, vocoder, train_list, val_list


def _config(tmp_path, dataset, **overrides):
    root, vocoder, train_list, val_list = dataset
    return write_config(tmp_path / "diffusion.yaml", train_list=train_list, val_list=val_list, vocoder_path=vocoder,
                        expdir=tmp_path / "exp", **overrides)


def _seed(n=0):
    torch.manual_seed(n)
    random.seed(n)


def test_trains_with_falling_loss_and_resumes(tmp_path, dataset):
    from diffusion.solver import train

    cfg = _config(tmp_path, dataset, train__save_opt=True)
    _seed()
    first = train(get_hparams_from_file(cfg), tensorboard=True)
    losses = np.array(first.losses)
    assert first.global_step == 40 and len(losses) == 40 and first.nan_steps == 0
    assert losses[-10:].mean() < 0.9 * losses[:10].mean(), losses

    exp = tmp_path / "exp"
    # 4.1's retention: model_20 is replaced by model_40 (20 is not a multiple of interval_force_save)
    assert sorted(p.name for p in exp.glob("model_*.pt")) == ["model_40.pt"]
    ckpt = torch.load(exp / "model_40.pt", weights_only=True)
    assert set(ckpt) == {"global_step", "model", "optimizer", "config", "train_state"} and ckpt["global_step"] == 40
    assert ckpt["config"]["spk"] == {"spk0": 0, "spk1": 1} and ckpt["train_state"]["step"] == 40
    assert "decoder.denoise_fn.residual_layers.1.dilated_conv.weight" in ckpt["model"]
    assert "spk_embed.weight" in ckpt["model"] and "aug_shift_embed.weight" in ckpt["model"]
    assert (exp / "config.yaml").is_file() and "model checkpoint saved" in (exp / "log_info.txt").read_text()
    assert list((exp / "logs").glob("events.out.tfevents.*"))
    assert len(first.validation_losses) == 2 and all(np.isfinite(first.validation_losses))
    assert not list(exp.glob(".*tmp*"))  # atomic writes leave no temporaries

    # resume: epochs 40 → 50 continues from step 40, with the optimizer state of the file
    cfg = _config(tmp_path, dataset, train__save_opt=True, train__epochs=50)
    _seed(1)
    second = train(get_hparams_from_file(cfg), tensorboard=False)
    assert second.resumed_from == exp / "model_40.pt"
    assert second.global_step == 50 and len(second.losses) == 10
    assert second.checkpoints == [exp / "model_50.pt"]  # saved at the end (4.1 would have lost these steps)
    assert np.mean(second.losses) < losses[:10].mean()  # it did not start from scratch

    # the trained model loads strictly for inference and produces mels
    from diffusion.unit2mel import load_model_vocoder

    model, vocoder, args = load_model_vocoder(exp / "model_50.pt", "cpu")
    units, f0 = torch.randn(1, 30, 8), torch.full((1, 30, 1), 200.0)
    mel = model(units, f0, torch.rand(1, 30, 1) * 0.1, spk_id=torch.tensor([[1]]), gt_spec=torch.randn(1, 30, 32) - 6,
                k_step=20, infer_speedup=10, method="dpm-solver++", use_tqdm=False)
    assert mel.shape == (1, 30, 32) and torch.isfinite(mel).all()


def test_cli_trains_on_cpu_and_reports_bad_input(tmp_path, dataset, capsys):
    import train_diff
    from modules.cli import run_main

    # k_step_max 100: a shallow-only model, validated (every 2 steps) from the ground-truth mel
    cfg = _config(tmp_path, dataset, device="cuda" if not torch.cuda.is_available() else "cpu",
                  model__k_step_max=100, train__interval_val=2)
    if not torch.cuda.is_available():
        assert run_main(train_diff.main, ["-c", str(cfg)]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    _seed()
    assert run_main(train_diff.main, ["-c", str(cfg), "--device", "cpu", "--max_steps", "3"]) == 0
    assert (tmp_path / "exp" / "model_3.pt").is_file() and (tmp_path / "exp" / "model_2.pt").is_file()
    assert run_main(train_diff.main, ["-c", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_nan_loss_is_skipped_then_rolled_back_then_fails_the_run(tmp_path, dataset, monkeypatch, capsys, caplog):
    import logging

    import diffusion.solver as solver
    import train_diff
    from diffusion.diffusion import GaussianDiffusion
    from modules.cli import run_main

    real = GaussianDiffusion.training_loss
    calls = {"n": 0}

    def sometimes_nan(self, gt_spec, cond):
        calls["n"] += 1
        loss = real(self, gt_spec, cond)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(GaussianDiffusion, "training_loss", sometimes_nan)
    cfg = _config(tmp_path, dataset, train__epochs=4, train__interval_val=1000)
    _seed()
    caplog.set_level(logging.WARNING)
    assert run_main(train_diff.main, ["-c", str(cfg)]) == 0  # one bad step: skipped, counted, warned
    assert "step 2: non-finite loss; update skipped (1 skipped so far)" in caplog.text
    assert "1 update(s) were skipped" in caplog.text
    assert (tmp_path / "exp" / "model_4.pt").is_file()  # the good steps are kept

    # a NaN streak: roll back to model_2 with half the rate, then give up after the allowed rollbacks
    monkeypatch.setattr(solver, "GUARD", solver.GuardPolicy(max_consecutive_bad=2, max_rollbacks=1))
    calls["n"] = 0

    def nan_from_step_3(self, gt_spec, cond):
        calls["n"] += 1
        loss = real(self, gt_spec, cond)
        return loss * float("nan") if calls["n"] > 2 else loss

    monkeypatch.setattr(GaussianDiffusion, "training_loss", nan_from_step_3)
    caplog.clear()
    cfg = _config(tmp_path, dataset, train__epochs=100, train__interval_val=2, env__expdir=str(tmp_path / "exp2"))
    assert run_main(train_diff.main, ["-c", str(cfg)]) == 2
    assert "steps 3–4 had NaN/inf losses or gradients: rollback 1 of 1, going back to step 2's checkpoint" in caplog.text
    err = capsys.readouterr().err
    assert "training diverged: steps 3–4 all had NaN/inf" in err and "0.5× the configured one" in err
    assert "amp_dtype fp32" in err
    assert sorted(p.name for p in (tmp_path / "exp2").glob("model_*.pt")) == ["model_2.pt"]


def test_bad_dataset_files_are_named(tmp_path, dataset):
    from diffusion.data_loaders import AudioDataset
    from preprocessing import features as art
    from preprocessing.report import DatasetError

    root, vocoder, train_list, _ = dataset
    wav = train_list.read_text().split()[0]
    lst = tmp_path / "one.txt"
    lst.write_text(wav + "\n")
    common = dict(waveform_sec=0.5, hop_size=512, sample_rate=44100, n_spk=2, spk={"spk0": 0, "spk1": 1}, use_aug=True)
    ds = AudioDataset(lst, **common)
    item = ds[0]
    assert item["mel"].shape == (43, 32) and item["units"].shape == (43, 8) and item["f0"].shape == (43, 1)
    assert item["aug_shift"].shape == (1, 1) and item["spk_id"].tolist() == [0]

    with pytest.raises(DatasetError, match="speaker folder 'spk0' is not in the config's spk map"):
        AudioDataset(lst, **{**common, "spk": {"other": 0}})
    with pytest.raises(DatasetError, match="every file is shorter"):
        AudioDataset(lst, **{**common, "waveform_sec": 5.0})

    # a mel with the wrong frame count, then a missing artifact
    bad = tmp_path / "spk0" / "x.wav"
    bad.parent.mkdir()
    for suffix in ("", ".f0.npy", ".vol.npy", ".aug_vol.npy", ".aug_mel.npy", ".soft.pt"):
        (bad.parent / (bad.name + suffix)).write_bytes(open(wav + suffix, "rb").read())
    mel = art.load_float_array(wav + ".mel.npy")
    art.save_float_array(str(bad) + ".mel.npy", mel[:-3])
    lst.write_text(str(bad) + "\n")
    with pytest.raises(DatasetError, match="x.wav.mel.npy: the mel has"):
        AudioDataset(lst, **common)
    (bad.parent / (bad.name + ".mel.npy")).unlink()
    with pytest.raises(DatasetError, match="x.wav.mel.npy: not found"):
        AudioDataset(lst, **common)


def test_lazy_loading_reads_the_augmented_mel(tmp_path, dataset):
    """Without cache_all_data 4.1 read the plain mel even for augmented items; we read aug_mel."""
    from diffusion.data_loaders import AudioDataset
    from preprocessing import features as art

    root, vocoder, train_list, _ = dataset
    wav = train_list.read_text().split()[0]
    lst = tmp_path / "one.txt"
    lst.write_text(wav + "\n")
    ds = AudioDataset(lst, waveform_sec=0.5, hop_size=512, sample_rate=44100, load_all_data=False, use_aug=True)
    aug_mel, keyshift = art.load_aug_mel(wav + ".aug_mel.npy")
    random.seed(0)
    items = [ds[0] for _ in range(12)]
    augmented = [it for it in items if float(it["aug_shift"]) != 0]
    assert augmented and len(augmented) < len(items)
    for it in augmented:
        assert float(it["aug_shift"]) == pytest.approx(keyshift)
        starts = [s for s in range(aug_mel.shape[0] - 42) if np.array_equal(aug_mel[s:s + 43], it["mel"].numpy())]
        assert starts, "augmented item does not hold a crop of the augmented mel"


def test_training_draws_steps_below_k_step_max():
    from diffusion.unit2mel import Unit2Mel

    torch.manual_seed(0)
    model = Unit2Mel(8, 1, True, 16, 1, 8, 8, 1000, 100)
    seen = []
    real = model.decoder.denoise_fn.forward

    def spy(spec, t, cond, projected=None):
        seen.append(t.clone())
        return real(spec, t, cond, projected)

    model.decoder.denoise_fn.forward = spy
    for _ in range(20):
        model(torch.randn(8, 5, 8), torch.full((8, 5, 1), 200.0), torch.rand(8, 5, 1), gt_spec=torch.randn(8, 5, 16),
              infer=False, aug_shift=torch.zeros(8, 1, 1))
    t = torch.cat(seen)
    assert int(t.max()) < 100 and int(t.max()) > 80 and int(t.min()) < 20
