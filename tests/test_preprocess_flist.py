"""preprocess_flist_config.py: speaker ids, split, lists, configs (spec §1.2, §2.3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import preprocess_flist_config as flist_script
from modules.cli import run_main
from modules.errors import ConfigError
from preprocessing.flist import build_configs, scan, split
from preprocessing.report import DatasetError
from tests.preprocess_helpers import voice, write

SR = 44100


def _dataset(root, layout):
    """layout: {speaker: n_clips}; speakers created in the given (unsorted) order."""
    for s, (spk, n) in enumerate(layout.items()):
        for i in range(n):
            write(root / spk / f"{spk}_{i}.wav", voice(0.35, SR, f0=150 + 10 * i, seed=s * 10 + i), SR, "PCM_16")
    return root


def _run(tmp_path, src, *extra):
    argv = ["--source_dir", str(src), "--train_list", str(tmp_path / "fl" / "train.txt"),
            "--val_list", str(tmp_path / "fl" / "val.txt"), "--config_dir", str(tmp_path / "cfg"), *extra]
    return run_main(flist_script.main, argv)


def _lines(path):
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text.splitlines()


def test_speaker_ids_follow_sorted_names_and_split_is_reproducible(tmp_path):
    src = _dataset(tmp_path / "ds", {"zeta": 4, "alpha": 3, "Mid": 5})
    assert _run(tmp_path, src) == 0
    cfg = json.loads((tmp_path / "cfg" / "config.json").read_text())
    assert cfg["spk"] == {"Mid": 0, "alpha": 1, "zeta": 2}
    assert cfg["model"]["n_speakers"] == 3
    train, val = _lines(tmp_path / "fl" / "train.txt"), _lines(tmp_path / "fl" / "val.txt")
    assert len(val) == 6 and len(train) == 12 - 6
    assert not set(train) & set(val)
    for spk in ("zeta", "alpha", "Mid"):
        assert sum(line.split("/")[-2] == spk for line in val) == 2
    assert all(line.startswith(f"{src}/") and line.endswith(".wav") for line in train + val)
    # same seed → identical files; another seed → another split of the same clips
    first = (tmp_path / "fl" / "train.txt").read_bytes(), (tmp_path / "fl" / "val.txt").read_bytes()
    assert _run(tmp_path, src) == 0
    assert ((tmp_path / "fl" / "train.txt").read_bytes(), (tmp_path / "fl" / "val.txt").read_bytes()) == first
    assert _run(tmp_path, src, "--seed", "7") == 0
    train7, val7 = _lines(tmp_path / "fl" / "train.txt"), _lines(tmp_path / "fl" / "val.txt")
    assert sorted(train7 + val7) == sorted(train + val)
    assert (train7, val7) != (train, val)


def test_split_does_not_depend_on_listing_order():
    a = {"s1": ["x/s1/a.wav", "x/s1/b.wav", "x/s1/c.wav"], "s0": ["x/s0/c.wav", "x/s0/a.wav", "x/s0/b.wav"]}
    b = {k: list(reversed(v)) for k, v in reversed(list(a.items()))}
    assert split(a, seed=3) == split(b, seed=3)


def test_configs_filled_as_41():
    spk = {"a": 0, "b": 1}
    cfg, diff = build_configs(spk, "vec768l12")
    m = cfg["model"]
    assert (m["ssl_dim"], m["gin_channels"], m["filter_channels"], m["n_speakers"]) == (768, 768, 768, 2)
    assert m["speech_encoder"] == "vec768l12" and cfg["spk"] == spk
    assert not m["vol_embedding"] and not cfg["train"]["vol_aug"]
    assert cfg["data"]["training_files"] == "filelists/train.txt"  # template value kept, as 4.1
    assert (diff["model"]["n_spk"], diff["data"]["encoder"], diff["data"]["encoder_out_channels"]) == (2, "vec768l12", 768)
    assert diff["spk"] == spk

    m = build_configs(spk, "vec256l9")[0]["model"]
    assert (m["ssl_dim"], m["gin_channels"], m["filter_channels"]) == (256, 256, 768)
    m = build_configs(spk, "whisper-ppg-large")[0]["model"]
    assert (m["ssl_dim"], m["gin_channels"], m["filter_channels"]) == (1280, 1280, 1280)
    cfg, diff = build_configs(spk, "vec768l12-onnx")  # 4.1 did not know the -onnx names
    assert cfg["model"]["ssl_dim"] == 768 and diff["data"]["encoder_out_channels"] == 768
    m = build_configs(spk, "hubertsoft-onnx")[0]["model"]
    assert (m["ssl_dim"], m["filter_channels"]) == (256, 768)

    cfg, _ = build_configs(spk, "whisper-ppg", tiny=True, vol_aug=True, tf_flow=True)
    m = cfg["model"]
    assert m["ssl_dim"] == 1024 and m["filter_channels"] == 512  # --tiny wins over the encoder rule
    assert m["upsample_initial_channel"] == 400 and m["use_depthwise_conv"]
    assert m["vol_embedding"] and cfg["train"]["vol_aug"]
    assert m["flow_share_parameter"] and m["use_transformer_flow"]

    with pytest.raises(ConfigError, match="unknown --speech_encoder 'contentvec'"):
        build_configs(spk, "contentvec")


def test_written_configs_load_and_diffusion_yaml_is_sorted(tmp_path):
    from modules.hparams import get_hparams_from_file

    src = _dataset(tmp_path / "ds", {"a": 3, "b": 3})
    assert _run(tmp_path, src, "--speech_encoder", "hubertsoft", "--vol_aug") == 0
    hps = get_hparams_from_file(tmp_path / "cfg" / "config.json")
    assert hps.model.ssl_dim == 256 and hps.model.vol_embedding
    # custom list paths are recorded in the configs (4.1 kept the template's)
    assert hps.data.training_files == str(tmp_path / "fl" / "train.txt")
    text = (tmp_path / "cfg" / "diffusion.yaml").read_text()
    top = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith(" ")]
    assert top == sorted(top)
    diff = yaml.safe_load(text)
    assert diff["data"]["encoder"] == "hubertsoft" and diff["data"]["encoder_out_channels"] == 256
    assert diff["model"]["n_spk"] == 2 and diff["spk"] == {"a": 0, "b": 1}


def test_too_few_clips_is_a_clear_error(tmp_path, capsys):
    src = _dataset(tmp_path / "ds", {"plenty": 5, "sparse": 2})
    assert _run(tmp_path, src) == 2
    err = capsys.readouterr().err
    assert "too few clips for a validation split" in err and "'sparse' (2 clips)" in err
    assert not (tmp_path / "cfg" / "config.json").exists()
    with pytest.raises(DatasetError, match="'a' \\(1 clip\\)"):
        split({"a": ["x"]})


def test_unusable_clips_are_reported_and_left_out(tmp_path):
    src = _dataset(tmp_path / "ds", {"a": 3, "b": 3})
    a = src / "a"
    write(a / "short.wav", voice(0.2, SR), SR, "PCM_16")                      # < 0.3 s: skipped as 4.1
    write(a / "rate48k.wav", voice(0.5, 48000), 48000, "PCM_16")              # wrong rate
    write(a / "stereo.wav", np.stack([voice(0.5, SR)] * 2, 1), SR, "PCM_16")  # not mono
    write(a / "float.wav", voice(0.5, SR), SR, "FLOAT")                       # trainer divides by 32768
    write(a / "名前 space.wav", voice(0.5, SR, seed=4), SR, "PCM_16")          # fine (4.1 only warned)
    (a / "a_0.wav.soft.pt").write_bytes(b"x")                                 # artifacts are ignored
    (a / "a_0.spec.pt").write_bytes(b"x")
    (a / ".DS_Store").write_bytes(b"x")
    (a / "take.flac").write_bytes(b"x")
    (src / "empty").mkdir()
    listing = scan(str(src), progress=False)
    status = {o.path.rsplit("/", 1)[-1]: (o.status, o.reason) for o in listing.summary.outcomes}
    assert status["short.wav"][0] == "skipped" and "0.3 s" in status["short.wav"][1]
    assert status["rate48k.wav"][0] == "failed" and "48000 Hz" in status["rate48k.wav"][1]
    assert status["stereo.wav"][0] == "failed" and "2 channels" in status["stereo.wav"][1]
    assert status["float.wav"][0] == "failed" and "16-bit PCM" in status["float.wav"][1]
    assert status[".DS_Store"][0] == "skipped" and status["take.flac"][0] == "skipped"
    assert status["empty"][0] == "skipped" and "no usable clip" in status["empty"][1]
    assert "a_0.wav.soft.pt" not in status and "a_0.spec.pt" not in status
    assert sorted(n.rsplit("/", 1)[-1] for n in listing.speakers["a"]) == ["a_0.wav", "a_1.wav", "a_2.wav",
                                                                          "名前 space.wav"]
    assert set(listing.speakers) == {"a", "b"}  # the empty folder gets no id
    assert _run(tmp_path, src) == 1  # lists written, but the failures are signalled
    assert (tmp_path / "cfg" / "config.json").exists()
