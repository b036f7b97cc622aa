"""Optional parts of a model file: k-means centres or retrieval features, and the diffusion model.

Each part is ``pack_*`` (objects from the existing loaders → tensors + a JSON-able description)
and ``unpack_*`` (the reverse, into the objects the inference code already uses:
:class:`cluster.KMeansClusters` / :class:`cluster.FeatureIndex`, and a diffusion state dict +
config).

Retrieval indexes are stored as data, not as faiss's binary blob: the stored frames
(``vectors``, in id order) and, for IVF-Flat, the coarse centroids. Loading rebuilds the
index: an ``IVF<nlist>,Flat`` index whose quantizer gets the stored centroids (no k-means
training, so nothing random), the same ``nprobe``, and the frames added in id order in
``train_index.py``'s batches. Every list then holds the same ids in the same order, so searches
return exactly what the original index returned (tested).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from modules.errors import CheckpointError

log = logging.getLogger(__name__)

KMEANS = "kmeans"
INDEX = "index"


# --- cluster / retrieval --------------------------------------------------------------------------
def load_cluster_source(path: str | os.PathLike):
    """A k-means file or a feature index by its name (``.pkl``/``.json`` → index, as 4.1's web UI)."""
    import cluster

    return cluster.load_cluster_model(Path(path))


def pack_cluster(model: Any, *, spk2id: Mapping[str, int], unit_dim: int, source: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors + description of a loaded ``KMeansClusters`` or ``FeatureIndex``."""
    from cluster import FeatureIndex, KMeansClusters

    if isinstance(model, KMeansClusters):
        return _pack_kmeans(model, spk2id=spk2id, unit_dim=unit_dim, source=source)
    if isinstance(model, FeatureIndex):
        return _pack_index(model, spk2id=spk2id, unit_dim=unit_dim, source=source)
    raise CheckpointError(f"{source}: not a k-means model or feature index ({type(model).__name__})")


def _pack_kmeans(model, *, spk2id, unit_dim, source):
    tensors, speakers = {}, []
    for i, (name, km) in enumerate(model.items()):
        if km.n_features_in_ != unit_dim:
            raise CheckpointError(f"{source}: speaker '{name}' has {km.n_features_in_}-channel centres but the model "
                                  f"reads {unit_dim}-channel units; the k-means file belongs to another model")
        if name not in spk2id:
            log.warning("%s: k-means speaker '%s' is not in the model's speaker list; stored anyway", source, name)
        key = f"cluster.kmeans.{i}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(km.cluster_centers_, dtype=np.float32))
        speakers.append({"name": name, "n_threads": int(km._n_threads), "tensor": key,
                         "n_clusters": int(km.n_clusters)})
    return tensors, {"kind": KMEANS, "speakers": speakers, "tensors": list(tensors)}


def _index_contents(index: Any, sid: int, source: str) -> dict[str, Any]:
    """(kind, vectors [N, C] in id order, centroids or None, nprobe) of one faiss index."""
    from cluster.storage import import_faiss

    faiss = import_faiss()
    where = f"{source}: speaker id {sid}"
    if index.metric_type != faiss.METRIC_L2:
        raise CheckpointError(f"{where}: only L2 indexes can be stored (this one has metric {index.metric_type})")
    n = int(index.ntotal)
    if isinstance(index, faiss.IndexIVFFlat):
        ivf = index
        centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
        ids = np.concatenate([faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), ivf.invlists.list_size(lst)).copy()
                              for lst in range(ivf.nlist)]) if n else np.zeros(0, np.int64)
        if not np.array_equal(np.sort(ids), np.arange(n)):
            raise CheckpointError(f"{where}: the index ids are not 0..{n - 1}; it was not made by train_index.py")
        ivf.make_direct_map()
        vectors = ivf.reconstruct_n(0, n)
        return {"type": "IVFFlat", "vectors": vectors, "centroids": centroids, "nprobe": int(ivf.nprobe),
                "nlist": int(ivf.nlist)}
    if type(index) in (faiss.IndexFlatL2, faiss.IndexFlat):
        return {"type": "Flat", "vectors": index.reconstruct_n(0, n), "centroids": None}
    raise CheckpointError(f"{where}: a {type(index).__name__} cannot be stored in a model file (only IVF-Flat and "
                          "Flat L2 indexes, what train_index.py writes); share the index file separately")


def _pack_index(model, *, spk2id, unit_dim, source):
    names = {v: k for k, v in spk2id.items()}
    tensors, speakers = {}, []
    for sid in sorted(model):
        index = model[sid]
        if int(index.d) != unit_dim:
            raise CheckpointError(f"{source}: speaker id {sid} has a {index.d}-channel index but the model reads "
                                  f"{unit_dim}-channel units; the index belongs to another model")
        if sid not in names:
            log.warning("%s: index speaker id %d is not in the model's speaker list; stored anyway", source, sid)
        c = _index_contents(index, sid, source)
        entry = {"id": int(sid), "name": names.get(sid), "type": c["type"], "ntotal": int(index.ntotal),
                 "dim": int(index.d), "vectors": f"cluster.index.{sid}.vectors"}
        tensors[entry["vectors"]] = torch.from_numpy(np.ascontiguousarray(c["vectors"], dtype=np.float32))
        if c["centroids"] is not None:
            entry.update(nlist=c["nlist"], nprobe=c["nprobe"], centroids=f"cluster.index.{sid}.centroids")
            tensors[entry["centroids"]] = torch.from_numpy(np.ascontiguousarray(c["centroids"], dtype=np.float32))
        speakers.append(entry)
    return tensors, {"kind": INDEX, "speakers": speakers, "tensors": list(tensors)}


def unpack_cluster(desc: Mapping[str, Any], get: Callable[[str], torch.Tensor], *, source: str):
    """``KMeansClusters`` or ``FeatureIndex`` from a stored description and its tensors."""
    from cluster import FeatureIndex, KMeansClusters, KMeansModel

    kind = desc.get("kind")
    try:
        if kind == KMEANS:
            models = {}
            for s in desc["speakers"]:
                centres = get(s["tensor"]).to(torch.float32).numpy()
                if centres.ndim != 2 or not np.isfinite(centres).all():
                    raise CheckpointError(f"{source}: k-means centres of speaker '{s['name']}' are not a finite [K, C] array")
                models[str(s["name"])] = KMeansModel(centres, centres.shape[1], int(s.get("n_threads", 4)))
            return KMeansClusters(models, path=source)
        if kind == INDEX:
            indexes, names = {}, {}
            for s in desc["speakers"]:
                sid = int(s["id"])
                indexes[sid] = _rebuild_index(s, get, f"{source}: speaker id {sid}")
                if isinstance(s.get("name"), str):
                    names[sid] = s["name"]
            return FeatureIndex(indexes, names=names, path=source)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: malformed cluster metadata ({type(e).__name__}: {e})") from None
    raise CheckpointError(f"{source}: unknown cluster kind {kind!r} (expected '{KMEANS}' or '{INDEX}')")


def _rebuild_index(s: Mapping[str, Any], get: Callable[[str], torch.Tensor], where: str):
    from cluster.storage import import_faiss
    from cluster.training import INDEX_ADD_BATCH

    faiss = import_faiss()
    vectors = np.ascontiguousarray(get(s["vectors"]).to(torch.float32).numpy())
    dim = int(s["dim"])
    if vectors.ndim != 2 or vectors.shape[1] != dim or vectors.shape[0] != int(s["ntotal"]):
        raise CheckpointError(f"{where}: stored features have shape {vectors.shape}, metadata says "
                              f"[{s['ntotal']}, {dim}]")
    if s["type"] == "Flat":
        index = faiss.IndexFlatL2(dim)
    elif s["type"] == "IVFFlat":
        centroids = np.ascontiguousarray(get(s["centroids"]).to(torch.float32).numpy())
        nlist = int(s["nlist"])
        if centroids.shape != (nlist, dim):
            raise CheckpointError(f"{where}: stored centroids have shape {centroids.shape}, expected ({nlist}, {dim})")
        index = faiss.index_factory(dim, f"IVF{nlist},Flat")
        index.quantizer.add(centroids)   # the trained coarse quantizer, as stored: no re-training
        index.is_trained = True
        index.nprobe = int(s["nprobe"])
    else:
        raise CheckpointError(f"{where}: unknown index type {s['type']!r}")
    # Same batches as train_index.py, so each frame is assigned to its list by the same arithmetic.
    for start in range(0, vectors.shape[0], INDEX_ADD_BATCH):
        index.add(vectors[start:start + INDEX_ADD_BATCH])
    return index


# --- diffusion ------------------------------------------------------------------------------------
def pack_diffusion(model_path: str | os.PathLike, config_path: str | os.PathLike, *, unit_dim: int | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors + description (config, step, mel size) of a diffusion ``model_*.pt`` and its YAML."""
    from diffusion.unit2mel import build_model, read_checkpoint
    from modules.checkpoint import load_state_dict_checked
    from modules.hparams import get_hparams_from_file

    model_path, config_path = Path(model_path), Path(config_path)
    args = get_hparams_from_file(config_path, strict=False)
    ckpt = read_checkpoint(model_path)
    state = {k: v for k, v in ckpt["model"].items()}
    proj = state.get("decoder.denoise_fn.input_projection.weight")
    if not isinstance(proj, torch.Tensor) or proj.dim() != 3:
        raise CheckpointError(f"{model_path}: not a Unit2Mel diffusion model (no decoder.denoise_fn.input_projection)")
    out_dims = int(proj.shape[1])  # the mel size of the vocoder it was trained for
    with torch.random.fork_rng(devices=[]):
        model = build_model(args, out_dims)
    load_state_dict_checked(model, state, source=str(model_path), reinit_on_mismatch=())
    enc_dim = int(args["data"]["encoder_out_channels"])
    if unit_dim is not None and enc_dim != unit_dim:
        log.warning("%s: the diffusion model reads %d-channel units, the SoVITS model %d; shallow diffusion will "
                    "need its own speech encoder (%s)", config_path, enc_dim, unit_dim, args["data"]["encoder"])
    tensors = {f"diffusion.{k}": v for k, v in state.items()}
    step = ckpt.get("global_step")
    desc = {"config": args.to_dict(), "global_step": int(step) if isinstance(step, int) else None,
            "out_dims": out_dims, "tensors": list(tensors)}
    return tensors, desc
