"""Checkpoint I/O: 4.1 format, atomic writes, safe loading, clear errors."""

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from modules import checkpoint as ck
from modules.errors import CheckpointError, UnsafeFileError


class Tiny(torch.nn.Module):
    def __init__(self, n_spk=2):
        super().__init__()
        self.emb_g = torch.nn.Embedding(n_spk, 4)
        self.lin = torch.nn.Linear(4, 3)


def test_save_load_round_trip_in_41_layout(tmp_path):
    torch.manual_seed(0)
    m = Tiny()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.8, 0.99), eps=1e-9)
    path = tmp_path / "G_800.pth"
    ck.save_checkpoint(m, opt, 1e-4, 7, path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "iteration", "optimizer", "learning_rate"}
    assert raw["iteration"] == 7 and raw["learning_rate"] == 1e-4
    m2 = Tiny()
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-4)
    _, _, lr, it = ck.load_checkpoint(path, m2, opt2)
    assert (lr, it) == (1e-4, 7)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_interrupted_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    m = Tiny()
    path = tmp_path / "G_1.pth"
    ck.save_checkpoint(m, None, 1e-4, 1, path)
    before = path.read_bytes()

    def boom(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(m, None, 1e-4, 2, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["G_1.pth"]


def test_mismatched_keys_are_reported_by_name(tmp_path):
    m = Tiny()
    sd = m.state_dict()
    sd["lin.weight"] = torch.zeros(5, 4)
    sd["extra.weight"] = torch.zeros(1)
    del sd["lin.bias"]
    with pytest.raises(CheckpointError) as e:
        ck.load_state_dict_checked(Tiny(), sd, source="G_9.pth")
    msg = str(e.value)
    assert "lin.weight" in msg and "lin.bias" in msg and "extra.weight" in msg and "G_9.pth" in msg


def test_speaker_count_mismatch_reinitialises_emb_g(caplog):
    base = Tiny(n_spk=200)
    target = Tiny(n_spk=2)
    fresh = target.emb_g.weight.detach().clone()
    res = ck.load_state_dict_checked(target, base.state_dict(), source="G_0.pth")
    assert res["reinitialised"] == ["emb_g.weight"]
    assert torch.equal(target.emb_g.weight, fresh)
    assert torch.equal(target.lin.weight, base.lin.weight)
    assert "re-initialised" in caplog.text


def test_not_a_sovits_checkpoint(tmp_path):
    p = tmp_path / "x.pth"
    torch.save({"generator": {}}, p)
    with pytest.raises(CheckpointError, match="not a so-vits-svc checkpoint"):
        ck.load_checkpoint(p, Tiny())


def test_truncated_and_empty_and_missing_files(tmp_path):
    p = tmp_path / "G_1.pth"
    ck.save_checkpoint(Tiny(), None, 1e-4, 1, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        ck.load_checkpoint(p, Tiny())
    p.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        ck.load_checkpoint(p, Tiny())
    with pytest.raises(CheckpointError, match="not found"):
        ck.load_checkpoint(tmp_path / "nope.pth", Tiny())


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/svc_pwned_marker"


def test_malicious_torch_file_is_refused_not_executed(tmp_path):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    p = tmp_path / "G_5.pth"
    torch.save({"model": {}, "x": Evil()}, p)
    with pytest.raises(UnsafeFileError, match="refused"):
        ck.load_checkpoint(p, Tiny())
    assert not os.path.exists(MARKER)


def test_restricted_pickle_refuses_globals_outside_allow_list(tmp_path):
    p = tmp_path / "feature_and_index.pkl"
    p.write_bytes(pickle.dumps({0: Evil()}))
    with pytest.raises(UnsafeFileError, match="posix.system|os.system"):
        ck.restricted_pickle_load(p, allowed={})
    assert not os.path.exists(MARKER)
    p.write_bytes(pickle.dumps({0: b"abc", "k": [1, 2.0]}))
    assert ck.restricted_pickle_load(p, allowed={}) == {0: b"abc", "k": [1, 2.0]}


def test_stand_ins_extend_the_allow_list_for_one_call(tmp_path):
    import argparse

    p = tmp_path / "enc.pt"
    torch.save({"args": argparse.Namespace(a=1), "model": {"w": torch.ones(2)}}, p)
    with pytest.raises(UnsafeFileError, match="argparse.Namespace"):
        ck.torch_load(p)

    class NS:
        pass

    obj = ck.torch_load(p, stand_ins={"argparse.Namespace": NS})
    assert isinstance(obj["args"], NS) and obj["args"].a == 1
    with pytest.raises(UnsafeFileError):
        ck.torch_load(p)  # the extension does not leak into later calls


def test_latest_checkpoint_uses_step_in_file_name(tmp_path):
    d = tmp_path / "logs" / "44k2"
    d.mkdir(parents=True)
    for n in (9, 100, 800, 0):
        (d / f"G_{n}.pth").write_bytes(b"x")
    (d / ".G_900.pth.abc.tmp.pth").write_bytes(b"x")  # interrupted save
    assert Path(ck.latest_checkpoint_path(d, "G_*.pth")).name == "G_800.pth"
    assert ck.latest_checkpoint_path(tmp_path, "G_*.pth") is None


def test_clean_checkpoints_keeps_newest_by_step_and_base_models(tmp_path):
    for n in (0, 800, 1600, 2400, 3200):
        for p in "GD":
            (tmp_path / f"{p}_{n}.pth").write_bytes(b"x")
    (tmp_path / "Gdata_notes.pth").write_bytes(b"x")  # 4.1 would have deleted this
    os.utime(tmp_path / "G_800.pth", (4e9, 4e9))  # newest mtime must not matter
    ck.clean_checkpoints(tmp_path, n_ckpts_to_keep=2)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["D_0.pth", "D_2400.pth", "D_3200.pth", "G_0.pth", "G_2400.pth", "G_3200.pth", "Gdata_notes.pth"]
    assert ck.clean_checkpoints(tmp_path, 0) == []
