"""preprocess_flist_config.py keeps an edited config as a timestamped backup; diffusion.yaml's device exists."""

from __future__ import annotations

import datetime
import json
import logging

import pytest
import torch
import yaml

import preprocess_flist_config as flist_script
from modules.hparams import backup_changed_config
from preprocessing.flist import build_configs
from tests.preprocess_helpers import voice, write

SR = 44100


@pytest.fixture
def dataset(tmp_path):
    for s, spk in enumerate(("a", "b")):
        for i in range(3):
            write(tmp_path / "ds" / spk / f"{spk}_{i}.wav", voice(0.35, SR, f0=150 + 10 * i, seed=s * 10 + i), SR,
                  "PCM_16")
    return tmp_path / "ds"


def _run(tmp_path, src):
    argv = ["--source_dir", str(src), "--train_list", str(tmp_path / "fl" / "train.txt"),
            "--val_list", str(tmp_path / "fl" / "val.txt"), "--config_dir", str(tmp_path / "cfg")]
    assert flist_script.main(argv) == 0


def test_edited_config_is_kept_as_a_timestamped_backup(tmp_path, dataset, caplog):
    cfg_dir = tmp_path / "cfg"
    _run(tmp_path, dataset)
    generated = (cfg_dir / "config.json").read_text()
    _run(tmp_path, dataset)                       # same settings, unedited: nothing to keep
    assert sorted(p.name for p in cfg_dir.iterdir()) == ["config.json", "diffusion.yaml"]

    edited = json.loads(generated)
    edited["train"]["batch_size"] = 2
    (cfg_dir / "config.json").write_text(json.dumps(edited, indent=2))
    caplog.set_level(logging.WARNING)
    _run(tmp_path, dataset)
    backups = sorted(cfg_dir.glob("config.json.*.bak"))
    assert len(backups) == 1 and json.loads(backups[0].read_text())["train"]["batch_size"] == 2
    stamp = backups[0].name[len("config.json."):-len(".bak")]
    datetime.datetime.strptime(stamp, "%Y-%m-%dT%H-%M-%S")
    assert (cfg_dir / "config.json").read_text() == generated   # the new config is the generated one
    assert str(backups[0]) in caplog.text and "config.json differs" in caplog.text
    assert not list(cfg_dir.glob("diffusion.yaml.*.bak"))        # unchanged: no backup


def test_backups_never_overwrite_each_other(tmp_path):
    path = tmp_path / "config.json"
    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    names = []
    for i in range(3):
        path.write_text(json.dumps({"edit": i}))
        names.append(backup_changed_config(path, {"edit": "new"}, now=now).name)
    assert names == ["config.json.2026-01-02T03-04-05.bak", "config.json.2026-01-02T03-04-05-1.bak",
                     "config.json.2026-01-02T03-04-05-2.bak"]
    path.write_text("{ not json")                                   # unreadable: kept too
    assert backup_changed_config(path, {"edit": "new"}, now=now) is not None
    assert backup_changed_config(tmp_path / "none.json", {"a": 1}) is None


@pytest.mark.parametrize("cuda", [False, True])
def test_diffusion_device_exists(cuda, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    _, diff = build_configs({"a": 0}, "vec768l12")
    assert diff["device"] == ("cuda" if cuda else "cpu")


def test_written_diffusion_yaml_has_cpu_without_cuda(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _run(tmp_path, dataset)
    assert yaml.safe_load((tmp_path / "cfg" / "diffusion.yaml").read_text())["device"] == "cpu"
