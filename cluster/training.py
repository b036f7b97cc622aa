"""Training per-speaker k-means models and faiss feature indexes (spec §9.1, §9.2).

Entry points for the scripts: :func:`train_cluster_model` (``cluster/train_cluster.py``) and
:func:`train_feature_index` (``train_index.py``). Features are read with
:mod:`cluster.features` (two passes, one preallocated matrix per speaker).

Speakers with fewer frames than centres: k-means with K ≥ N has the frames themselves as its
optimum, so the centres are the speaker's N frames (with a warning) instead of failing as 4.1's
sklearn call did. Speakers with fewer than 39 frames get a one-list IVF index (4.1 asked faiss for
``IVF0`` and failed).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from cluster.features import SpeakerUnits, gather_units, list_speaker_dirs, list_unit_files, scan_units
from cluster.storage import import_faiss, save_kmeans, write_index_file
from modules.errors import SvcError

log = logging.getLogger(__name__)

N_CLUSTERS = 10000
# 4.1's MiniBatchKMeans settings in cluster/train_cluster.py (use_minibatch=True branch).
MINIBATCH_BATCH_SIZE = 4096
MINIBATCH_MAX_ITER = 80
# 4.1's torch k-means settings (--gpu).
TORCH_MAX_ITER = 500
TORCH_TOL = 1e-2
# train_index: rows above which the index stores k-means centres instead of frames (spec §9.2).
INDEX_MAX_ROWS = 200_000
INDEX_N_CENTRES = 10000
INDEX_ADD_BATCH = 8192
INDEX_K_FRAMES_PER_LIST = 39


# --- k-means --------------------------------------------------------------------------------------
def fit_kmeans(
    features: np.ndarray,
    n_clusters: int,
    *,
    method: str = "kmeans",
    seed: int | None = 0,
    device: str | None = None,
    progress: bool = True,
    name: str = "",
) -> dict[str, Any]:
    """Cluster ``features [N, C]`` (float32) → the 4.1 entry ``{n_features_in_, _n_threads, cluster_centers_}``.

    ``method``: ``"kmeans"`` (sklearn ``KMeans``, 4.1's default), ``"minibatch"`` (sklearn
    ``MiniBatchKMeans``, batch 4096, 80 iterations, as 4.1's minibatch branch) or ``"torch"``
    (:class:`cluster.kmeans.TorchKMeans`, 4.1's ``--gpu`` method, on ``device``).
    """
    n, dim = features.shape
    if n_clusters < 1:
        raise SvcError(f"n_clusters must be at least 1, got {n_clusters}")
    if n <= n_clusters:
        log.warning(
            "speaker '%s' has only %d frames (%.0f s of units at 50 Hz) for %d centres; its centres are its "
            "frames. Add more audio for a real clustering (>= %d frames).",
            name, n, n / 50.0, n_clusters, n_clusters + 1,
        )
        return {"n_features_in_": dim, "_n_threads": 4, "cluster_centers_": np.array(features, dtype=np.float32)}
    t0 = time.perf_counter()
    if method == "torch":
        from cluster.kmeans import TorchKMeans

        km = TorchKMeans(n_clusters, max_iter=TORCH_MAX_ITER, tol=TORCH_TOL, device=device, seed=seed, progress=progress)
        log.info("speaker '%s': torch k-means on %s", name, km.device)
        centres = km.fit(features).cluster_centers_
        threads = 4  # what 4.1 stored for its GPU path
    else:
        from sklearn.cluster import KMeans, MiniBatchKMeans

        if method == "minibatch":
            est = MiniBatchKMeans(
                n_clusters=n_clusters, batch_size=MINIBATCH_BATCH_SIZE, max_iter=MINIBATCH_MAX_ITER, random_state=seed
            )
        elif method == "kmeans":
            est = KMeans(n_clusters=n_clusters, random_state=seed)
        else:
            raise ValueError(f"unknown k-means method {method!r}")
        est.fit(features)
        centres = est.cluster_centers_
        threads = int(getattr(est, "_n_threads", os.cpu_count() or 1))
    log.info("speaker '%s': %d centres from %d frames in %.1f s (%s)", name, n_clusters, n, time.perf_counter() - t0, method)
    return {"n_features_in_": dim, "_n_threads": threads, "cluster_centers_": np.asarray(centres, dtype=np.float32)}


def train_cluster_model(
    dataset: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    n_clusters: int = N_CLUSTERS,
    method: str = "kmeans",
    seed: int | None = 0,
    device: str | None = None,
    max_frames: int | None = None,
    progress: bool = True,
) -> Path:
    """Train k-means for every speaker directory of ``dataset``; write ``<output_dir>/kmeans_<K>.pt``.

    Every speaker's files are checked before any clustering starts, so a bad file fails fast.
    """
    speakers = []
    for d in list_speaker_dirs(dataset):
        speakers.append(scan_units(d.name, list_unit_files(d), progress=progress))
    _check_same_dim(speakers)
    rng = np.random.default_rng(seed)
    ckpt: dict[str, dict[str, Any]] = {}
    for info in tqdm(speakers, desc="speakers", unit="spk", disable=not progress or len(speakers) < 2):
        log.info("training k-means for speaker '%s' (%d files, %d frames)", info.name, len(info.files), info.total)
        feats = gather_units(info, max_frames=max_frames, rng=rng, progress=progress)
        ckpt[info.name] = fit_kmeans(feats, n_clusters, method=method, seed=seed, device=device, progress=progress, name=info.name)
        del feats
    path = Path(output_dir) / f"kmeans_{n_clusters}.pt"
    save_kmeans(ckpt, path)
    log.info("wrote %s (%d speakers)", path, len(ckpt))
    return path


def _check_same_dim(speakers: list[SpeakerUnits]) -> None:
    dims = {s.dim for s in speakers}
    if len(dims) > 1:
        detail = ", ".join(f"{s.name}: {s.dim}" for s in speakers)
        raise SvcError(f"speakers have units of different sizes ({detail}); re-run preprocess_hubert_f0.py for the whole dataset")


# --- faiss index ----------------------------------------------------------------------------------
def n_ivf_lists(n: int) -> int:
    """4.1/RVC rule ``min(int(16·√n), n // 39)``, at least 1 (4.1 failed below 39 rows)."""
    return max(1, min(int(16 * np.sqrt(n)), n // INDEX_K_FRAMES_PER_LIST))


def build_index(features: np.ndarray, *, progress: bool = True, name: str = "") -> Any:
    """IVF-Flat (L2) index over ``features [n, C]``: ``IVF<n_ivf>,Flat``, nprobe 1, trained on all rows,
    rows added in batches of 8192 (ids 0..n−1)."""
    faiss = import_faiss()

    n, dim = features.shape
    n_ivf = n_ivf_lists(n)
    if n < INDEX_K_FRAMES_PER_LIST:
        log.warning("speaker '%s': only %d frames; building a single-list index", name, n)
    index = faiss.index_factory(dim, f"IVF{n_ivf},Flat")
    faiss.extract_index_ivf(index).nprobe = 1
    log.info("speaker '%s': training IVF%d,Flat on %d rows", name, n_ivf, n)
    index.train(features)
    for s in tqdm(range(0, n, INDEX_ADD_BATCH), desc=f"{name}: adding to index", unit="batch", leave=False, disable=not progress):
        index.add(features[s : s + INDEX_ADD_BATCH])
    return index


def index_rows(features: np.ndarray, *, seed: int | None = 0, name: str = "") -> np.ndarray:
    """Rows an index stores (spec §9.2): the frames shuffled, or above 200,000 rows the 10000
    centres of ``MiniBatchKMeans(batch 256·cpu_count, init="random")``. Shuffles in place."""
    rng = np.random.default_rng(seed)
    rng.shuffle(features)  # in place, along rows
    if features.shape[0] <= INDEX_MAX_ROWS:
        return features
    from sklearn.cluster import MiniBatchKMeans

    log.info("speaker '%s': %d rows > %d, replacing them by %d k-means centres", name, features.shape[0], INDEX_MAX_ROWS, INDEX_N_CENTRES)
    t0 = time.perf_counter()
    km = MiniBatchKMeans(
        n_clusters=INDEX_N_CENTRES,
        batch_size=256 * (os.cpu_count() or 1),
        init="random",
        compute_labels=False,
        random_state=seed,
    ).fit(features)
    log.info("speaker '%s': k-means done in %.1f s", name, time.perf_counter() - t0)
    return np.ascontiguousarray(km.cluster_centers_, dtype=np.float32)


def train_feature_index(
    root_dir: str | os.PathLike,
    spk: Mapping[str, int],
    output: str | os.PathLike,
    *,
    seed: int | None = 0,
    max_frames: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Train one index per speaker of ``spk`` (name → id) from ``<root_dir>/<name>/*.wav.soft.pt``
    and write them to ``output`` (``.pkl`` = 4.1 format, ``.json`` = safe format)."""
    if not spk:
        raise SvcError("the config's 'spk' section is empty; run preprocess_flist_config.py")
    ids = [int(v) for v in spk.values()]
    if len(set(ids)) != len(ids):
        raise SvcError(f"the config's 'spk' section gives two speakers the same id: {dict(spk)}")
    root = Path(root_dir)
    if not root.is_dir():
        raise SvcError(f"{root}: dataset directory not found (run resample.py and preprocess_hubert_f0.py first)")
    speakers = []
    for name, sid in spk.items():
        files = list_unit_files(root / name, pattern="*.wav.soft.pt")
        speakers.append((int(sid), scan_units(name, files, progress=progress)))
    _check_same_dim([info for _, info in speakers])
    rng = np.random.default_rng(seed)
    indexes: dict[int, Any] = {}
    names: dict[int, str] = {}
    for sid, info in tqdm(speakers, desc="speakers", unit="spk", disable=not progress or len(speakers) < 2):
        log.info("building the feature index of speaker '%s' (id %d, %d frames)", info.name, sid, info.total)
        feats = gather_units(info, max_frames=max_frames, rng=rng, progress=progress)
        rows = index_rows(feats, seed=seed, name=info.name)
        del feats
        indexes[sid] = build_index(rows, progress=progress, name=info.name)
        names[sid] = info.name
        del rows
    written = write_index_file(indexes, output, names=names)
    log.info("wrote %s (%d speakers)", Path(output), len(indexes))
    return written
