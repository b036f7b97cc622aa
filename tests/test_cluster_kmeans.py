"""k-means clustering: training, the 4.1 kmeans_10000.pt layout both ways, nearest centres, mixing."""

from __future__ import annotations

import os
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import cluster
from cluster.features import gather_units, list_unit_files, scan_units
from cluster.kmeans import TorchKMeans
from cluster.training import fit_kmeans, train_cluster_model
from modules.cli import run_main
from modules.errors import CheckpointError, SvcError, UnsafeFileError
from tests.cluster_helpers import DIM, blob_centres, make_dataset, match_error, write_units

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def dataset(tmp_path):
    frames = make_dataset(tmp_path / "44k")
    return tmp_path / "44k", frames


@pytest.mark.parametrize("method", ["kmeans", "minibatch", "torch"])
def test_train_finds_the_blobs_and_writes_41_layout(dataset, tmp_path, method):
    root, _ = dataset
    path = train_cluster_model(root, tmp_path / "logs", n_clusters=4, method=method, progress=False)
    assert path == tmp_path / "logs" / "kmeans_4.pt"
    raw = cluster.read_kmeans(path)
    assert sorted(raw) == ["alice", "bob"]
    for i, spk in enumerate(["alice", "bob"]):
        entry = raw[spk]
        assert set(entry) == {"n_features_in_", "_n_threads", "cluster_centers_"}
        assert entry["n_features_in_"] == DIM and isinstance(entry["_n_threads"], int)
        c = entry["cluster_centers_"]
        assert c.dtype == np.float32 and c.shape == (4, DIM)
        assert match_error(c, blob_centres(i)) < 0.5
    if method == "torch":
        assert raw["alice"]["_n_threads"] == 4  # what 4.1's GPU path stores


def test_written_file_only_names_globals_numpy1_has(dataset, tmp_path):
    """Our file must load in 4.1's environment (numpy 1.23): no numpy._core names."""
    root, _ = dataset
    path = train_cluster_model(root, tmp_path, n_clusters=4, progress=False)
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    names = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert names <= {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype", "_codecs encode"}
    assert "numpy.core.multiarray _reconstruct" in names


def _write_41_style(path, centres_by_spk):
    # What 4.1's train_cluster.py does: plain torch.save of a dict with numpy centres.
    torch.save(
        {spk: {"n_features_in_": c.shape[1], "_n_threads": 6, "cluster_centers_": c} for spk, c in centres_by_spk.items()},
        path,
    )


def test_original_file_loads_and_predicts_like_sklearn(tmp_path):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(1)
    centres = rng.standard_normal((50, DIM)).astype(np.float32)
    path = tmp_path / "kmeans_10000.pt"
    _write_41_style(path, {"spk0": centres})
    model = cluster.get_cluster_model(path)
    assert list(model) == ["spk0"] and model["spk0"]._n_threads == 6
    np.testing.assert_array_equal(model["spk0"].cluster_centers_, centres)

    # 4.1 loaded the same file into sklearn KMeans objects; labels must agree.
    km = KMeans(DIM)
    km.__dict__.update(n_features_in_=DIM, _n_threads=1, cluster_centers_=centres)
    x = rng.standard_normal((300, DIM)).astype(np.float32)
    np.testing.assert_array_equal(cluster.get_cluster_result(model, x, "spk0"), km.predict(x))
    np.testing.assert_array_equal(cluster.get_cluster_center_result(model, x, "spk0"), centres[km.predict(x)])
    got_t = cluster.get_cluster_center_result(model, torch.from_numpy(x), "spk0")
    assert isinstance(got_t, torch.Tensor)
    np.testing.assert_array_equal(got_t.numpy(), centres[km.predict(x)])
    np.testing.assert_array_equal(cluster.get_center(model, np.array([3, 1]), "spk0"), centres[[3, 1]])


def test_round_trip_and_numpy1_named_file(tmp_path):
    centres = np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
    path = tmp_path / "kmeans_10000.pt"
    cluster.save_kmeans({"a": {"cluster_centers_": centres, "_n_threads": 2}}, path)
    back = cluster.read_kmeans(path)
    assert back["a"]["n_features_in_"] == DIM and back["a"]["_n_threads"] == 2
    np.testing.assert_array_equal(back["a"]["cluster_centers_"], centres)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_malicious_kmeans_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "kmeans_10000.pt"
    torch.save({"spk": {"n_features_in_": 2, "_n_threads": 1, "cluster_centers_": Evil()}}, path)
    with pytest.raises(UnsafeFileError):
        cluster.get_cluster_model(path)
    assert not marker.exists()


def test_bad_kmeans_files_give_clear_errors(tmp_path):
    path = tmp_path / "k.pt"
    torch.save({"spk": {"n_features_in_": 3, "cluster_centers_": np.zeros((2, 3), np.float32)}}, path)
    with pytest.raises(CheckpointError, match="_n_threads"):
        cluster.get_cluster_model(path)
    torch.save({"spk": {"n_features_in_": 4, "_n_threads": 1, "cluster_centers_": np.zeros((2, 3), np.float32)}}, path)
    with pytest.raises(CheckpointError, match="n_features_in_ = 4"):
        cluster.get_cluster_model(path)
    with pytest.raises(CheckpointError, match="feature-retrieval index"):
        cluster.get_cluster_model(tmp_path / "feature_and_index.pkl")
    with pytest.raises(CheckpointError, match="not found"):
        cluster.get_cluster_model(tmp_path / "missing.pt")


def test_speaker_with_fewer_frames_than_clusters_keeps_its_frames(tmp_path, caplog):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, DIM)).astype(np.float32), rng.standard_normal((4, DIM)).astype(np.float32)
    write_units(tmp_path / "ds" / "tiny" / "a.wav.soft.pt", a)
    write_units(tmp_path / "ds" / "tiny" / "b.wav.soft.pt", b)
    with caplog.at_level("WARNING"):
        path = train_cluster_model(tmp_path / "ds", tmp_path, n_clusters=20, progress=False)
    assert "only 9 frames" in caplog.text
    np.testing.assert_array_equal(cluster.read_kmeans(path)["tiny"]["cluster_centers_"], np.concatenate([a, b]))


def test_dataset_errors_name_the_problem(tmp_path):
    (tmp_path / "ds" / "empty").mkdir(parents=True)
    with pytest.raises(SvcError, match="preprocess_hubert_f0"):
        train_cluster_model(tmp_path / "ds", tmp_path, n_clusters=2, progress=False)
    write_units(tmp_path / "ds2" / "s" / "a.wav.soft.pt", np.zeros((10, 4), np.float32))
    write_units(tmp_path / "ds2" / "s" / "b.wav.soft.pt", np.zeros((10, 5), np.float32))
    with pytest.raises(CheckpointError, match="different speech encoders"):
        train_cluster_model(tmp_path / "ds2", tmp_path, n_clusters=2, progress=False)
    bad = np.zeros((10, 4), np.float32)
    bad[3, 1] = np.nan
    write_units(tmp_path / "ds3" / "s" / "a.wav.soft.pt", bad)
    with pytest.raises(CheckpointError, match="NaN"):
        train_cluster_model(tmp_path / "ds3", tmp_path, n_clusters=2, progress=False)
    with pytest.raises(SvcError, match="not found"):
        train_cluster_model(tmp_path / "nope", tmp_path, n_clusters=2, progress=False)


def test_gather_units_full_and_bounded(dataset):
    root, frames = dataset
    info = scan_units("alice", list_unit_files(root / "alice"), progress=False)
    assert info.total == len(frames["alice"]) and info.dim == DIM
    np.testing.assert_array_equal(gather_units(info, progress=False), frames["alice"])
    sub = gather_units(info, max_frames=50, rng=np.random.default_rng(0), progress=False)
    assert sub.shape == (50, DIM)
    # every kept row is a real frame, no row twice
    rows = {r.tobytes() for r in frames["alice"]}
    assert all(r.tobytes() in rows for r in sub) and len({r.tobytes() for r in sub}) == 50


def test_torch_kmeans_is_seeded_and_keeps_unused_centres():
    rng = np.random.default_rng(0)
    x = blob_centres(0)[rng.integers(0, 4, 400)] + 0.01 * rng.standard_normal((400, DIM))
    x = x.astype(np.float32)
    a = TorchKMeans(4, device="cpu", seed=5, progress=False).fit(x).cluster_centers_
    b = TorchKMeans(4, device="cpu", seed=5, progress=False).fit(x).cluster_centers_
    np.testing.assert_array_equal(a, b)
    assert match_error(a, blob_centres(0)) < 0.1
    # 6 centres for 4 distinct points: two centres duplicate a point and never win a row; they
    # must stay put (4.1 moved such centres to the origin: c·(1 − lr) + 0·lr with lr = 1)
    exact = blob_centres(0)[rng.integers(0, 4, 400)]
    c = TorchKMeans(6, device="cpu", seed=0, batch_size=64, progress=False).fit(exact).cluster_centers_
    assert np.linalg.norm(c, axis=1).min() > 5.0


def test_fit_kmeans_rejects_unknown_method():
    with pytest.raises(ValueError):
        fit_kmeans(np.zeros((10, 2), np.float32), 2, method="nope")


# --- mixing ---------------------------------------------------------------------------------------
@pytest.fixture()
def kmeans_model(tmp_path):
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((32, DIM)).astype(np.float32)
    path = tmp_path / "kmeans_10000.pt"
    cluster.save_kmeans({"alice": {"cluster_centers_": centres}}, path)
    return cluster.load_cluster_model(path), centres


def test_mix_ratio_0_is_identity_and_1_gives_centres(kmeans_model):
    model, centres = kmeans_model
    c = torch.randn(DIM, 40, generator=torch.Generator().manual_seed(0))  # [C, T] as in Svc
    assert model.mix(c, "alice", 0) is c
    assert cluster.mix_units(c, model, "alice", 0.0) is c
    full = cluster.mix_units(c, model, "alice", 1.0)
    expected = torch.from_numpy(cluster.get_cluster_center_result(model, c.T.numpy(), "alice")).T
    assert torch.equal(full, expected)
    # every output frame is one of the centres
    assert all(any(np.array_equal(f, k) for k in centres) for f in full.T.numpy())
    half = cluster.mix_units(c, model, "alice", 0.3)
    assert torch.equal(half, 0.3 * expected + (1 - 0.3) * c)  # 4.1's expression, float32


def test_mix_errors(kmeans_model):
    model, _ = kmeans_model
    c = torch.zeros(DIM, 5)
    with pytest.raises(SvcError, match="not in the cluster model.*alice"):
        model.mix(c, "carol", 0.5)
    with pytest.raises(SvcError, match="between 0 and 1"):
        model.mix(c, "alice", 1.5)
    with pytest.raises(SvcError, match="another speech encoder"):
        model.mix(torch.zeros(DIM + 1, 5), "alice", 0.5)
    # a speaker id resolves through the config's spk map
    assert model.mix(c, 0, 1.0, spk2id={"alice": 0}).shape == c.shape


# --- the script ----------------------------------------------------------------------------------
def test_script_runs_from_project_root(dataset, tmp_path):
    root, _ = dataset
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH="")
    r = subprocess.run(
        [sys.executable, "cluster/train_cluster.py", "--dataset", str(root), "--output", str(out), "--n_clusters", "4", "--gpu"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(cluster.get_cluster_model(out / "kmeans_4.pt")) == ["alice", "bob"]


def test_script_errors_exit_nonzero(tmp_path, capsys):
    from cluster.train_cluster import main

    assert run_main(main, ["--dataset", str(tmp_path / "missing"), "--output", str(tmp_path)]) == 2
    assert "dataset directory not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--gpu", "--minibatch"])
