"""Feature retrieval: train_index, 4.1's feature_and_index.pkl read safely, the safe format, mixing."""

from __future__ import annotations

import copyreg
import json
import os
import pickle
import subprocess
import sys
import types

import faiss
import numpy as np
import pytest
import torch

import cluster
import cluster.training as training
from cluster.storage import _np_reconstruct
from cluster.training import n_ivf_lists, train_feature_index
from modules.cli import run_main
from modules.errors import CheckpointError, SvcError, UnsafeFileError
from tests.cluster_helpers import DIM, make_dataset, write_units

SPK = {"alice": 0, "bob": 1}


@pytest.fixture()
def dataset(tmp_path):
    frames = make_dataset(tmp_path / "44k", SPK, files=3, frames=80)
    return tmp_path / "44k", frames


def _sorted_rows(a):
    return a[np.lexsort(a.T[::-1])]


def _stored(index):
    return index.reconstruct_n(0, index.ntotal)


def test_train_index_rule_and_contents(dataset, tmp_path):
    root, frames = dataset
    (out,) = train_feature_index(root, SPK, tmp_path / "logs" / "feature_and_index.pkl", progress=False)
    idx = cluster.load_index(out)
    assert sorted(idx) == [0, 1]
    n = len(frames["alice"])  # 240 frames → min(int(16·√240), 240 // 39) = 6 lists
    assert n_ivf_lists(n) == min(int(16 * np.sqrt(n)), n // 39) == 6
    for name, sid in SPK.items():
        index = idx[sid]
        assert isinstance(index, faiss.IndexIVFFlat)
        assert index.nlist == 6 and index.nprobe == 1 and index.metric_type == faiss.METRIC_L2
        assert index.ntotal == n and index.d == DIM
        # the stored rows are the speaker's frames, shuffled
        np.testing.assert_array_equal(_sorted_rows(_stored(index)), _sorted_rows(frames[name]))


def test_large_speaker_is_replaced_by_centres_and_tiny_one_gets_one_list(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "INDEX_MAX_ROWS", 100)
    monkeypatch.setattr(training, "INDEX_N_CENTRES", 10)
    root = tmp_path / "ds"
    make_dataset(root, {"big": 0}, files=2, frames=80)
    rng = np.random.default_rng(0)
    write_units(root / "tiny" / "a.wav.soft.pt", rng.standard_normal((20, DIM)).astype(np.float32))
    (out,) = train_feature_index(root, {"big": 0, "tiny": 3}, tmp_path / "f.pkl", progress=False)
    idx = cluster.load_index(out)
    assert idx[0].ntotal == 10  # 160 rows > 100 → 10 k-means centres
    assert idx[3].ntotal == 20 and idx[3].nlist == 1  # 20 < 39 rows: one list (4.1 asked for IVF0)


def test_safe_format_round_trip_and_tamper_checks(dataset, tmp_path):
    root, _ = dataset
    manifest = tmp_path / "out" / "feature_and_index.json"
    written = cluster.write_index_file(
        {0: _small_index(), 1: _small_index(seed=1)}, manifest, names={0: "alice", 1: "bob"}
    )
    assert [p.name for p in written] == ["feature_and_index.0.index", "feature_and_index.1.index", "feature_and_index.json"]
    idx = cluster.load_index(manifest)
    assert idx.names == {0: "alice", 1: "bob"} and idx.speaker_id("bob") == 1
    np.testing.assert_array_equal(_stored(idx[1]), _stored(_small_index(seed=1)))
    # the same indexes through the 4.1 pickle
    cluster.write_index_file(dict(idx), tmp_path / "out" / "f.pkl")
    np.testing.assert_array_equal(_stored(cluster.load_index(tmp_path / "out" / "f.pkl")[0]), _stored(idx[0]))

    data = json.loads(manifest.read_text())
    (tmp_path / "out" / "feature_and_index.0.index").write_bytes(faiss.serialize_index(_small_index(seed=9)).tobytes())
    with pytest.raises(CheckpointError, match="SHA-256"):
        cluster.load_index(manifest)
    data["speakers"]["0"]["file"] = "../evil.index"
    manifest.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="plain file name"):
        cluster.load_index(manifest)
    with pytest.raises(CheckpointError, match="unknown feature index format"):
        cluster.load_index(written[0])


def test_export_index_for_onnx(tmp_path):
    pkl = tmp_path / "feature_and_index.pkl"
    pkl.write_bytes(pickle.dumps({0: _small_index(), 2: _small_index(seed=2)}, protocol=4))
    files = cluster.export_index_for_onnx(pkl, tmp_path / "crs")
    assert [f.name for f in files] == ["Index-0.index", "Index-2.index"]
    np.testing.assert_array_equal(_stored(faiss.read_index(str(files[1]))), _stored(_small_index(seed=2)))


# --- 4.1's pickle, read through the allow-list -------------------------------------------------------
def _small_index(seed=0, n=200, nlist=4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    index = faiss.index_factory(DIM, f"IVF{nlist},Flat")
    faiss.extract_index_ivf(index).nprobe = 1
    index.train(x)
    index.add(x)
    return index


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_41_pickle_is_read_for_every_protocol(tmp_path, protocol):
    # Exactly what 4.1's train_index.py writes: pickle of {speaker id: faiss index object}.
    path = tmp_path / "feature_and_index.pkl"
    originals = {0: _small_index(0), 5: _small_index(5)}
    path.write_bytes(pickle.dumps(originals, protocol=protocol))
    idx = cluster.load_index(path)
    assert sorted(idx) == [0, 5]
    for sid, index in originals.items():
        assert type(idx[sid]) is faiss.IndexIVFFlat and idx[sid].nprobe == 1
        np.testing.assert_array_equal(_stored(idx[sid]), _stored(index))


def _pickle_as_faiss_class(module, class_name, states, monkeypatch, protocol=4):
    """Pickle ``{id: <module>.<class_name> object with state}`` as faiss builds name their classes."""
    fake = types.ModuleType(module)
    cls = type(class_name, (), {"__reduce_ex__": lambda self, proto: (copyreg.__newobj__, (type(self),), self.state)})
    cls.__module__, cls.__qualname__ = module, class_name
    setattr(fake, class_name, cls)
    objs = {}
    for sid, state in states.items():
        objs[sid] = cls()
        objs[sid].state = state
    with monkeypatch.context() as m:  # restores the real module (if any) right after pickling
        m.setitem(sys.modules, module, fake)
        return pickle.dumps(objs, protocol=protocol)


def test_faiss_class_from_another_cpu_build_is_accepted(tmp_path, monkeypatch):
    """4.1 users' files name e.g. faiss.swigfaiss_avx2.IndexIVFFlat (the build-specific module)."""
    blob = faiss.serialize_index(_small_index(3)).tobytes()
    path = tmp_path / "feature_and_index.pkl"
    path.write_bytes(_pickle_as_faiss_class("faiss.swigfaiss_avx2", "IndexIVFFlat", {1: {"this": blob}}, monkeypatch))
    idx = cluster.load_index(path)
    np.testing.assert_array_equal(_stored(idx[1]), _stored(_small_index(3)))


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _evil_payloads(marker):
    return {
        "os.system": _Reduce(os.system, (f"touch {marker}",)),
        "subprocess.Popen": _Reduce(subprocess.Popen, (["touch", str(marker)],)),
        "builtins.exec": _Reduce(exec, (f"open({str(marker)!r}, 'w').close()",)),
        "faiss function": _Reduce(faiss.read_index, (str(marker),)),
        # only allowed names, but _reconstruct asked to build something other than an ndarray
        "numpy _reconstruct of another type": _Reduce(_np_reconstruct, (object, (0,), b"b")),
        "numpy object dtype": _Reduce(np.dtype, ("O", False, True)),
    }


@pytest.mark.parametrize("kind", list(_evil_payloads("x")))
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickles_are_refused_without_running_anything(tmp_path, kind, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "feature_and_index.pkl"
    path.write_bytes(pickle.dumps({0: _evil_payloads(marker)[kind]}, protocol=protocol))
    with pytest.raises(UnsafeFileError, match="refused"):
        cluster.load_index(path)
    assert not marker.exists()


def test_stand_in_refuses_odd_state_and_non_index_values(tmp_path, monkeypatch):
    blob = _pickle_as_faiss_class("faiss.swigfaiss", "IndexFlat", {0: {"this": b"x", "cmd": "rm"}}, monkeypatch)
    path = tmp_path / "odd.pkl"
    path.write_bytes(blob)
    with pytest.raises(UnsafeFileError, match="expected state"):
        cluster.load_index(path)
    path.write_bytes(pickle.dumps({0: np.zeros(3, np.float32)}, protocol=4))
    with pytest.raises(CheckpointError, match="not a faiss index"):
        cluster.load_index(path)
    path.write_bytes(pickle.dumps({"alice": _small_index()}, protocol=4))
    with pytest.raises(CheckpointError, match="not an integer speaker id"):
        cluster.load_index(path)
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError):
        cluster.load_index(path)


def test_numeric_numpy_arrays_are_allowed_inside(tmp_path):
    from cluster.storage import _IndexUnpickler

    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    for protocol in (2, 4):
        import io

        got = _IndexUnpickler(io.BytesIO(pickle.dumps({"a": arr, "n": 3}, protocol=protocol)), "mem").load()
        np.testing.assert_array_equal(got["a"], arr)
    with pytest.raises(UnsafeFileError):
        import io

        _IndexUnpickler(io.BytesIO(pickle.dumps(np.array([object()], dtype=object), protocol=4)), "mem").load()


# --- retrieval and mixing ------------------------------------------------------------------------
def _retrieve_41(index, x, k=8):
    """4.1's Svc.get_unit_f0 retrieval, verbatim arithmetic."""
    big_npy = index.reconstruct_n(0, index.ntotal)
    score, ix = index.search(x, k=k)
    weight = np.square(1 / score)
    weight /= weight.sum(axis=1, keepdims=True)
    return np.sum(big_npy[ix] * np.expand_dims(weight, axis=2), axis=1)


@pytest.fixture()
def feature_index(tmp_path):
    path = tmp_path / "feature_and_index.pkl"
    path.write_bytes(pickle.dumps({0: _small_index(0), 1: _small_index(1)}, protocol=4))
    return cluster.load_cluster_model(path)  # chosen by extension


def test_retrieval_matches_41_bit_for_bit(feature_index):
    x = np.random.default_rng(11).standard_normal((300, DIM)).astype(np.float32)
    got = feature_index.retrieve(x, 1)
    np.testing.assert_array_equal(got, _retrieve_41(feature_index[1], x))


def test_exact_match_gives_the_stored_frame_not_nan(feature_index):
    stored = _stored(feature_index[0])[:5]
    got = feature_index.retrieve(stored, 0)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, stored, rtol=0, atol=0)


def test_mix_ratio_0_is_identity_and_1_gives_retrieved(feature_index):
    c = torch.randn(DIM, 30, generator=torch.Generator().manual_seed(1))  # [C, T] as in Svc
    assert feature_index.mix(c, 0, 0.0) is c
    full = cluster.mix_units(c, feature_index, "bob", 1.0, spk2id=SPK)
    retrieved = _retrieve_41(feature_index[1], np.ascontiguousarray(c.T.numpy()))
    np.testing.assert_array_equal(full.T.numpy(), retrieved)
    half = cluster.mix_units(c, feature_index, 1, 0.25)
    np.testing.assert_array_equal(half.T.numpy(), 0.25 * retrieved + (1 - 0.25) * c.T.numpy())


def test_retrieval_errors(feature_index):
    with pytest.raises(SvcError, match="ids \\[0, 1\\]"):
        feature_index.retrieve(np.zeros((2, DIM), np.float32), 7)
    with pytest.raises(SvcError, match="not in the speaker list"):
        feature_index.retrieve(np.zeros((2, DIM), np.float32), "carol", spk2id=SPK)
    with pytest.raises(SvcError, match="another speech encoder"):
        feature_index.retrieve(np.zeros((2, DIM + 2), np.float32), 0)


# --- the script ----------------------------------------------------------------------------------
def test_train_index_script(dataset, tmp_path, capsys):
    from train_index import main

    root, _ = dataset
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"spk": SPK}))
    out = tmp_path / "logs"
    assert run_main(main, ["--root_dir", str(root), "-c", str(cfg), "--output_dir", str(out)]) == 0
    assert sorted(cluster.load_index(out / "feature_and_index.pkl")) == [0, 1]
    assert run_main(main, ["--root_dir", str(root), "-c", str(cfg), "--output", str(out / "safe.json")]) == 0
    assert cluster.load_index(out / "safe.json").names == {0: "alice", 1: "bob"}
    cfg.write_text(json.dumps({"spk": {"alice": 0, "carol": 1}}))
    assert run_main(main, ["--root_dir", str(root), "-c", str(cfg), "--output_dir", str(out)]) == 2
    assert "carol" in capsys.readouterr().err
