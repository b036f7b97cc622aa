"""Artifact names and on-disk formats (spec §1.3, §13.1-2): 4.1 reads ours, we read 4.1's, safely."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.errors import UnsafeFileError
from preprocessing import features as F
from preprocessing.report import DatasetError


def test_names_follow_41():
    p = F.artifact_paths("ds/44k/spk/a.wav")
    assert str(p.soft) == "ds/44k/spk/a.wav.soft.pt"
    assert str(p.f0) == "ds/44k/spk/a.wav.f0.npy"
    assert str(p.vol) == "ds/44k/spk/a.wav.vol.npy"
    assert str(p.mel) == "ds/44k/spk/a.wav.mel.npy"
    assert str(p.aug_mel) == "ds/44k/spk/a.wav.aug_mel.npy"
    assert str(p.aug_vol) == "ds/44k/spk/a.wav.aug_vol.npy"
    assert str(p.spec) == "ds/44k/spk/a.spec.pt"  # ".wav" replaced, not appended
    assert str(F.spec_path("d/a.wav.wav")) == "d/a.spec.pt.spec.pt"  # every occurrence, like str.replace
    assert str(F.spec_path("x.wav/spk/a.wav")) == "x.wav/spk/a.spec.pt"  # folders untouched
    assert F.is_artifact_name("a.wav.aug_mel.npy") and not F.is_artifact_name("a.wav")


def _f0_uv(T=50):
    f0 = np.linspace(100.0, 300.0, T)  # float64, like pyworld/parselmouth output
    uv = (np.arange(T) % 3 != 0).astype(np.float32)
    return f0, uv


def test_f0_file_is_41s_object_array(tmp_path):
    f0, uv = _f0_uv()
    path = tmp_path / "a.wav.f0.npy"
    F.save_f0(path, f0, uv)
    # byte-identical to what 4.1 writes for the same arrays
    ref = io.BytesIO()
    np.save(ref, np.asanyarray((f0, uv), dtype=object))
    assert path.read_bytes() == ref.getvalue()
    # what 4.1's trainer does with it
    arr = np.load(path, allow_pickle=True)
    assert arr.dtype == object and arr.shape == (2, 50) and type(arr[0, 0]) is float
    g0, guv = arr
    np.testing.assert_array_equal(np.array(g0, dtype=float), f0)
    # and our safe reader
    r0, ruv = F.load_f0(path)
    assert r0.dtype == np.float32 and ruv.dtype == np.float32
    np.testing.assert_array_equal(r0, f0.astype(np.float32))
    np.testing.assert_array_equal(ruv, uv)


def test_reads_41_files_written_by_numpy_directly(tmp_path):
    f0, uv = _f0_uv(7)
    np.save(tmp_path / "x.npy", np.asanyarray((f0, uv.astype(np.float64)), dtype=object))
    r0, ruv = F.load_f0(tmp_path / "x.npy")
    np.testing.assert_array_equal(r0, f0.astype(np.float32))
    mel = np.random.default_rng(0).standard_normal((9, 128)).astype(np.float32)
    np.save(tmp_path / "m.npy", np.asanyarray((mel, 2.5), dtype=object))
    got, key = F.load_aug_mel(tmp_path / "m.npy")
    np.testing.assert_array_equal(got, mel)
    assert key == 2.5


def test_aug_mel_roundtrip_and_41_view(tmp_path):
    mel = np.random.default_rng(1).standard_normal((12, 128)).astype(np.float32)
    path = tmp_path / "a.wav.aug_mel.npy"
    F.save_aug_mel(path, mel, -3.25)
    arr = np.load(path, allow_pickle=True)  # 4.1's diffusion loader
    assert arr.dtype == object and arr.shape == (2,)
    assert arr[0].dtype == np.float32 and arr[0].shape == (12, 128) and type(arr[1]) is float
    got, key = F.load_aug_mel(path)
    np.testing.assert_array_equal(got, mel)
    assert key == -3.25


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_object_arrays_with_foreign_globals_are_refused(tmp_path):
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = _Evil(), 1.0
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    with pytest.raises(UnsafeFileError, match="posix.getcwd|os.getcwd|nt.getcwd"):
        F.load_f0(tmp_path / "evil.npy")


def test_damaged_or_wrong_artifacts_give_clear_errors(tmp_path):
    f0, uv = _f0_uv()
    path = tmp_path / "a.wav.f0.npy"
    F.save_f0(path, f0, uv)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetError, match="a.wav.f0.npy.*run preprocess_hubert_f0.py again"):
        F.load_f0(path)
    with pytest.raises(DatasetError, match="not found"):
        F.load_f0(tmp_path / "missing.npy")
    F.save_float_array(tmp_path / "v.npy", np.ones(4))
    with pytest.raises(DatasetError, match="expected \\(f0, uv\\)"):
        F.load_f0(tmp_path / "v.npy")


def test_float_arrays_and_tensors(tmp_path):
    F.save_float_array(tmp_path / "a.wav.vol.npy", torch.arange(5, dtype=torch.float64))
    vol = np.load(tmp_path / "a.wav.vol.npy")  # plain array: no pickle needed
    assert vol.dtype == np.float32 and vol.shape == (5,)
    np.testing.assert_array_equal(F.load_float_array(tmp_path / "a.wav.vol.npy"), vol)

    units = torch.randn(1, 20, 768).transpose(1, 2)  # a non-contiguous view [1, 768, 20]
    F.save_soft(tmp_path / "a.wav.soft.pt", units)
    got = torch.load(tmp_path / "a.wav.soft.pt", weights_only=True)  # what 4.1's trainer does
    assert got.dtype == torch.float32 and got.shape == (1, 768, 20) and got.is_contiguous()
    torch.testing.assert_close(got, units, rtol=0, atol=0)
    torch.testing.assert_close(F.load_soft(tmp_path / "a.wav.soft.pt"), units, rtol=0, atol=0)
    # the file holds only the tensor's own storage (a view would drag its base along)
    assert (tmp_path / "a.wav.soft.pt").stat().st_size < 768 * 20 * 4 + 4096

    spec = torch.rand(1025, 30)
    F.save_spec(tmp_path / "a.spec.pt", spec)
    torch.testing.assert_close(F.load_spec(tmp_path / "a.spec.pt"), spec, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\[1, C, N\]"):
        F.save_soft(tmp_path / "b.wav.soft.pt", torch.zeros(768, 20))


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    real_write = Path.write_bytes

    def half_then_fail(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        F.save_spec(tmp_path / "a.spec.pt", torch.zeros(1025, 3))
    with pytest.raises(OSError, match="disk full"):
        F.save_f0(tmp_path / "a.wav.f0.npy", *_f0_uv())
    assert list(tmp_path.iterdir()) == []


def test_identical_tensors_give_identical_files(tmp_path):
    spec = torch.rand(1025, 7)
    F.save_spec(tmp_path / "a.spec.pt", spec)
    F.save_spec(tmp_path / "b.spec.pt", spec.clone())
    assert (tmp_path / "a.spec.pt").read_bytes() == (tmp_path / "b.spec.pt").read_bytes()
