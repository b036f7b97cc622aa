"""Inference side of clustering and retrieval: nearest centres, retrieved features, mixing (spec §9).

Both methods pull the content units ``c`` of a slice towards the target speaker's training units:

- k-means (``kmeans_10000.pt``, keyed by speaker **name**): each frame is replaced by its
  nearest centre;
- retrieval (``feature_and_index.pkl`` or our ``.json``, keyed by speaker **id**): each frame is
  replaced by the (1/D)²-weighted mean of its k = 8 nearest stored frames.

Then ``c ← r·replacement + (1 − r)·c`` with ``r = cluster_infer_ratio``; ``r = 0`` returns ``c``
untouched (4.1 skips the step), ``r = 1`` returns the replacement exactly. The arithmetic
follows 4.1 operation by operation (torch float32 for k-means, numpy float32 for retrieval), so
results match 4.1 for the same files. One fix: 4.1 produced NaN for a frame whose nearest stored
frame is at distance 0 (1/0² = inf); here such a frame takes the mean of its exact matches.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from cluster.kmeans import nearest_centres
from cluster.storage import MANIFEST_SUFFIXES, PICKLE_SUFFIXES, import_faiss, read_index_file, read_kmeans
from modules.errors import CheckpointError, SvcError

log = logging.getLogger(__name__)

RETRIEVAL_K = 8
_RETRIEVAL_BLOCK_ROWS = 4096


def check_ratio(ratio: float) -> float:
    r = float(ratio)
    if not math.isfinite(r) or r < 0.0 or r > 1.0:
        raise SvcError(f"cluster_infer_ratio must be between 0 and 1, got {ratio!r}")
    return r


# --- k-means --------------------------------------------------------------------------------------
class KMeansModel:
    """One speaker's k-means centres; the attributes 4.1 injected into an sklearn ``KMeans``.

    ``cluster_centers_``: float32 ``[K, C]``; ``n_features_in_``: C; ``_n_threads``: stored as is.
    """

    def __init__(self, cluster_centers_: np.ndarray, n_features_in_: int | None = None, _n_threads: int = 4) -> None:
        self.cluster_centers_ = np.ascontiguousarray(cluster_centers_, dtype=np.float32)
        self.n_features_in_ = int(n_features_in_ if n_features_in_ is not None else self.cluster_centers_.shape[1])
        self._n_threads = int(_n_threads)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def n_clusters(self) -> int:
        return self.cluster_centers_.shape[0]

    def _centres(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._on.get(device)
        if cached is None:
            c = torch.from_numpy(self.cluster_centers_).to(device)
            cached = (c, (c * c).sum(dim=1))
            self._on[device] = cached
        return cached

    def _as_rows(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(x)
        if t.dim() != 2 or t.shape[1] != self.n_features_in_:
            raise SvcError(
                f"features of shape {tuple(t.shape)} do not fit a k-means model with {self.n_features_in_} "
                "channels; the cluster model was trained with another speech encoder"
            )
        return t.to(torch.float32)

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Nearest-centre label (int64 ``[T]``) of each row of ``x [T, C]``; numpy in → numpy out."""
        t = self._as_rows(x)
        centres, sq = self._centres(t.device)
        labels = nearest_centres(t, centres, sq)
        return labels.cpu().numpy() if isinstance(x, np.ndarray) else labels

    def centers_for(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """The nearest centre of each row of ``x [T, C]`` → ``[T, C]`` float32 (numpy or tensor like ``x``)."""
        t = self._as_rows(x)
        centres, sq = self._centres(t.device)
        out = centres[nearest_centres(t, centres, sq)]
        return out.cpu().numpy() if isinstance(x, np.ndarray) else out


class KMeansClusters(dict):
    """``{speaker name: KMeansModel}`` as returned by 4.1's ``cluster.get_cluster_model``."""

    kind = "kmeans"

    def __init__(self, models: Mapping[str, KMeansModel], path: str | os.PathLike | None = None) -> None:
        super().__init__(models)
        self.path = Path(path) if path is not None else None

    def model_for(self, speaker: str | int, spk2id: Mapping[str, int] | None = None) -> KMeansModel:
        name = speaker
        if not isinstance(speaker, str) and spk2id is not None:
            by_id = {int(v): k for k, v in spk2id.items()}
            name = by_id.get(int(speaker), speaker)
        if name not in self:
            raise SvcError(
                f"speaker {speaker!r} is not in the cluster model{f' {self.path}' if self.path else ''}; "
                f"it has: {', '.join(sorted(map(str, self)))}"
            )
        return self[name]

    def mix(self, c: torch.Tensor, speaker: str | int, ratio: float, *, spk2id: Mapping[str, int] | None = None) -> torch.Tensor:
        """``c [C, T]`` → ``ratio·nearest_centres + (1 − ratio)·c`` (``c`` itself when ratio is 0)."""
        r = check_ratio(ratio)
        if r == 0.0:
            return c
        km = self.model_for(speaker, spk2id)
        cluster_c = km.centers_for(c.detach().transpose(0, 1)).transpose(0, 1)
        return r * cluster_c + (1 - r) * c


def get_cluster_model(ckpt_path: str | os.PathLike) -> KMeansClusters:
    """Load ``kmeans_10000.pt`` safely → ``{speaker name: KMeansModel}``."""
    raw = read_kmeans(ckpt_path)
    models = {spk: KMeansModel(e["cluster_centers_"], e["n_features_in_"], e["_n_threads"]) for spk, e in raw.items()}
    return KMeansClusters(models, path=ckpt_path)


def _speaker_model(model: Mapping[str, KMeansModel], speaker: str) -> KMeansModel:
    if isinstance(model, KMeansClusters):
        return model.model_for(speaker)
    try:
        return model[speaker]
    except KeyError:
        raise SvcError(f"speaker {speaker!r} is not in the cluster model; it has: {', '.join(sorted(map(str, model)))}") from None


def get_cluster_result(model: Mapping[str, KMeansModel], x: np.ndarray | torch.Tensor, speaker: str):
    """4.1 API: nearest-centre labels of ``x [T, C]`` for ``speaker``."""
    return _speaker_model(model, speaker).predict(x)


def get_cluster_center_result(model: Mapping[str, KMeansModel], x: np.ndarray | torch.Tensor, speaker: str):
    """4.1 API: nearest centres ``[T, C]`` of ``x [T, C]`` for ``speaker`` (numpy or tensor like ``x``)."""
    return _speaker_model(model, speaker).centers_for(x)


def get_center(model: Mapping[str, KMeansModel], x: Any, speaker: str) -> np.ndarray:
    """4.1 API: the centres with labels ``x``."""
    return _speaker_model(model, speaker).cluster_centers_[x]


# --- retrieval ------------------------------------------------------------------------------------
class FeatureIndex(Mapping[int, Any]):
    """Per-speaker faiss indexes (``{speaker id: index}``, as 4.1's loaded pickle) plus retrieval."""

    kind = "index"

    def __init__(
        self, indexes: Mapping[int, Any], *, names: Mapping[int, str] | None = None, path: str | os.PathLike | None = None
    ) -> None:
        self._indexes = {int(k): v for k, v in indexes.items()}
        self.names = dict(names or {})
        self.path = Path(path) if path is not None else None
        self._big: tuple[int, np.ndarray] | None = None  # (speaker id, reconstruct_n) for non-IVF indexes
        self._direct_map: set[int] = set()

    def __getitem__(self, sid: int) -> Any:
        return self._indexes[sid]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indexes)

    def __len__(self) -> int:
        return len(self._indexes)

    def speaker_id(self, speaker: str | int, spk2id: Mapping[str, int] | None = None) -> int:
        """Resolve a speaker name (via ``spk2id`` or the manifest's names) or id to an id in the index."""
        if isinstance(speaker, (int, np.integer)) and not isinstance(speaker, bool):
            sid = int(speaker)
        else:
            lookup = dict(spk2id) if spk2id is not None else {v: k for k, v in self.names.items()}
            if speaker not in lookup:
                known = ", ".join(sorted(map(str, lookup))) or "(no speaker names known; pass the config's spk map)"
                raise SvcError(f"speaker {speaker!r} is not in the speaker list; known: {known}")
            sid = int(lookup[speaker])
        if sid not in self._indexes:
            raise SvcError(
                f"speaker id {sid} has no entry in the feature index{f' {self.path}' if self.path else ''}; "
                f"it has ids {sorted(self._indexes)}"
            )
        return sid

    def _vectors(self, sid: int, ids: np.ndarray) -> np.ndarray:
        """Stored vectors for ``ids [T, k]`` → ``[T, k, C]``; missing ids (-1) give zero rows."""
        faiss = import_faiss()

        index = self._indexes[sid]
        valid = ids >= 0
        flat = np.where(valid, ids, 0).reshape(-1).astype(np.int64)
        if isinstance(index, faiss.IndexIVF):
            # IVF-Flat stores the raw vectors; a direct map reads exactly the rows 4.1 read from
            # its reconstruct_n copy, without holding a second copy of the whole index.
            if sid not in self._direct_map:
                index.make_direct_map()
                self._direct_map.add(sid)
            vecs = index.reconstruct_batch(flat)
        else:
            if self._big is None or self._big[0] != sid:
                self._big = (sid, index.reconstruct_n(0, index.ntotal))
            vecs = self._big[1][flat]
        vecs = vecs.reshape(ids.shape[0], ids.shape[1], -1)
        vecs[~valid] = 0.0
        return vecs

    def retrieve(self, x: np.ndarray, speaker: str | int, *, k: int = RETRIEVAL_K, spk2id: Mapping[str, int] | None = None) -> np.ndarray:
        """Retrieved features for ``x [T, C]`` (float32): Σ w·v over the k nearest stored frames,
        w = (1/D)² normalised per frame (D = squared L2 distance)."""
        sid = self.speaker_id(speaker, spk2id)
        index = self._indexes[sid]
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != index.d:
            raise SvcError(
                f"features of shape {x.shape} do not fit the feature index of speaker id {sid} "
                f"({index.d} channels); the index was trained with another speech encoder"
            )
        out = np.empty_like(x)
        for s in range(0, x.shape[0], _RETRIEVAL_BLOCK_ROWS):
            out[s : s + _RETRIEVAL_BLOCK_ROWS] = self._retrieve_block(sid, index, x[s : s + _RETRIEVAL_BLOCK_ROWS], k)
        return out

    def _retrieve_block(self, sid: int, index: Any, x: np.ndarray, k: int) -> np.ndarray:
        score, ix = index.search(x, k=k)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            weight = np.square(1 / score)
            weight /= weight.sum(axis=1, keepdims=True)
        bad = ~np.isfinite(weight).all(axis=1)
        if bad.any():
            # 4.1 gave NaN here: an exact match (D = 0) makes 1/D² infinite. The limit of the
            # weighting is an equal share among the closest neighbours.
            valid = ix[bad] >= 0
            d = np.where(valid, score[bad], np.inf)
            closest = valid & (d == d.min(axis=1, keepdims=True))
            cnt = closest.sum(axis=1, keepdims=True)
            weight[bad] = np.where(cnt > 0, closest / np.maximum(cnt, 1), 0).astype(np.float32)
        npy = np.sum(self._vectors(sid, ix) * np.expand_dims(weight, axis=2), axis=1)
        empty = (ix < 0).all(axis=1)
        if empty.any():  # nothing found in the probed list: keep the frame as it is
            npy[empty] = x[empty]
        return npy

    def mix(self, c: torch.Tensor, speaker: str | int, ratio: float, *, spk2id: Mapping[str, int] | None = None) -> torch.Tensor:
        """``c [C, T]`` → ``ratio·retrieved + (1 − ratio)·c`` as float32 on ``c``'s device (``c`` when ratio is 0)."""
        r = check_ratio(ratio)
        if r == 0.0:
            return c
        feat_np = np.ascontiguousarray(c.detach().transpose(0, 1).cpu().numpy())
        npy = self.retrieve(feat_np, speaker, spk2id=spk2id)
        mixed = r * npy + (1 - r) * feat_np
        return torch.from_numpy(np.ascontiguousarray(mixed, dtype=np.float32)).to(c.device).transpose(0, 1)


def load_index(path: str | os.PathLike) -> FeatureIndex:
    """Load a feature index safely: 4.1's ``.pkl`` (allow-list unpickler) or our ``.json`` manifest."""
    indexes, names = read_index_file(path)
    return FeatureIndex(indexes, names=names, path=path)


def load_cluster_model(path: str | os.PathLike, *, feature_retrieval: bool | None = None) -> KMeansClusters | FeatureIndex:
    """Load a k-means model or a feature index.

    ``feature_retrieval`` True/False chooses like 4.1's ``-fr`` flag; None chooses by extension
    (``.pkl``/``.json`` → index, as 4.1's web UI does for ``.pkl``; anything else → k-means).
    """
    path = Path(path)
    if feature_retrieval is None:
        feature_retrieval = path.suffix.lower() in PICKLE_SUFFIXES + MANIFEST_SUFFIXES
    if feature_retrieval:
        return load_index(path)
    return get_cluster_model(path)


def mix_units(
    c: torch.Tensor,
    model: KMeansClusters | FeatureIndex,
    speaker: str | int,
    ratio: float,
    *,
    spk2id: Mapping[str, int] | None = None,
) -> torch.Tensor:
    """Spec §9 mixing for either kind of model: ``c [C, T]`` → ``ratio·target + (1 − ratio)·c``."""
    if not hasattr(model, "mix"):
        raise CheckpointError(f"{type(model).__name__} is not a cluster model or feature index")
    return model.mix(c, speaker, ratio, spk2id=spk2id)
