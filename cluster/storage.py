"""File formats of clustering and retrieval, read safely and written atomically.

``kmeans_10000.pt`` (spec §7.9)
    ``torch.save`` of ``{speaker name: {"n_features_in_": int, "_n_threads": int,
    "cluster_centers_": numpy float32 [K, C]}}``. Read with ``weights_only=True``; the only
    globals allowed beyond PyTorch's defaults are numpy's array/dtype rebuilders (under both
    their numpy 1.x and 2.x names). Written with the numpy 1.x names
    (``numpy.core.multiarray._reconstruct``), which every numpy can read, so files made here
    also load in the original 4.1 environment (numpy 1.23).

``feature_and_index.pkl`` (spec §7.10, 4.1's retrieval index)
    A pickle of ``{speaker id: faiss index}``; faiss indexes pickle as their SWIG class plus the
    state ``{"this": <faiss.serialize_index bytes>}``. 4.1 read it with ``pickle.load``, which
    runs any code a crafted file names. Here a restricted unpickler maps the faiss classes to an
    inert stand-in that only keeps the bytes (later handed to ``faiss.deserialize_index``),
    accepts plain containers, ints, bytes and numeric numpy arrays, and refuses every other
    global before anything is called. Written like 4.1 (protocol 4), so 4.1 can read ours.

``*.json`` (this project's safe index format)
    A small manifest plus one ``faiss.write_index`` file per speaker next to it
    (``<stem>.<id>.index``), each checked by SHA-256. No pickle at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from modules.checkpoint import (KMEANS_NUMPY_GLOBALS, FaissIndexState, feature_index_unpickler,  # noqa: F401
                               np_reconstruct as _np_reconstruct, torch_load)
from modules.errors import CheckpointError, SvcError, UnsafeFileError
from modules.io_utils import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

KMEANS_KEYS = ("n_features_in_", "_n_threads", "cluster_centers_")
MANIFEST_FORMAT = "so-vits-svc-feature-index"
MANIFEST_VERSION = 1
PICKLE_SUFFIXES = (".pkl", ".pickle")
MANIFEST_SUFFIXES = (".json",)


def import_faiss():
    """``import faiss`` with a clear error when it is missing, and without its loader's chatter."""
    # faiss.loader logs every CPU-feature probe at INFO level.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError:
        raise SvcError("feature retrieval needs the faiss package: pip install faiss-cpu") from None
    return faiss


# --- kmeans_10000.pt ----------------------------------------------------------------------------
class _Numpy1NamesPickler(pickle._Pickler):  # the pure-Python pickler lets save_global be overridden
    """Pickler that writes numpy's array rebuilder under its numpy 1.x name.

    numpy 2 pickles arrays as ``numpy._core.multiarray._reconstruct``, which numpy 1.x (4.1's
    environment) cannot import; ``numpy.core.multiarray._reconstruct`` loads in both.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is _np_reconstruct and self.proto < 4:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


class _PickleModule:
    """The ``pickle_module`` handed to ``torch.save``: standard pickle with the pickler above."""

    Pickler = _Numpy1NamesPickler
    Unpickler = pickle.Unpickler
    HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL

    @staticmethod
    def dump(obj: Any, f: Any, protocol: int = 2) -> None:
        _Numpy1NamesPickler(f, protocol=protocol).dump(obj)


def save_kmeans(centres: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Write ``kmeans_<K>.pt`` in the 4.1 layout (see module docstring), atomically.

    ``centres`` maps speaker name → the three 4.1 fields (values are normalised: ints, and
    C-contiguous float32 centres).
    """
    obj: dict[str, dict[str, Any]] = {}
    for spk, entry in centres.items():
        c = np.ascontiguousarray(np.asarray(entry["cluster_centers_"], dtype=np.float32))
        if c.ndim != 2:
            raise ValueError(f"speaker '{spk}': cluster_centers_ must be [K, C], got shape {c.shape}")
        obj[str(spk)] = {
            "n_features_in_": int(entry.get("n_features_in_", c.shape[1])),
            "_n_threads": int(entry.get("_n_threads", 4)),
            "cluster_centers_": c,
        }
    with atomic_path(path) as tmp:
        torch.save(obj, tmp, pickle_module=_PickleModule, pickle_protocol=2)


def read_kmeans(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read and check a 4.1 ``kmeans_*.pt`` → ``{speaker name: {the three fields}}``.

    Centres come back as float32 ``[K, C]``; a file of any other shape or with NaN is refused
    with an error naming the speaker.
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES + MANIFEST_SUFFIXES:
        raise CheckpointError(
            f"{path}: this is a feature-retrieval index, not a k-means model; use it with feature "
            "retrieval (inference_main.py -fr / --feature_retrieval)"
        )
    raw = torch_load(path, stand_ins=KMEANS_NUMPY_GLOBALS, what="k-means cluster model")
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(
            f"{path}: not a k-means cluster model (expected a dict speaker name → "
            f"{{{', '.join(KMEANS_KEYS)}}}, found {type(raw).__name__}{' (empty)' if isinstance(raw, dict) else ''}); "
            "train one with cluster/train_cluster.py"
        )
    out: dict[str, dict[str, Any]] = {}
    for spk, entry in raw.items():
        where = f"{path}: speaker '{spk}'"
        if not isinstance(entry, dict) or any(k not in entry for k in KMEANS_KEYS):
            found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise CheckpointError(f"{where}: expected the keys {list(KMEANS_KEYS)}, found {found}")
        c = entry["cluster_centers_"]
        if isinstance(c, torch.Tensor):
            c = c.detach().cpu().numpy()
        if not isinstance(c, np.ndarray) or c.ndim != 2 or c.shape[0] < 1 or c.dtype.kind != "f":
            desc = f"array {getattr(c, 'shape', '?')} {getattr(c, 'dtype', '?')}" if hasattr(c, "shape") else type(c).__name__
            raise CheckpointError(f"{where}: cluster_centers_ must be a float array [K, C], found {desc}")
        c = np.ascontiguousarray(c, dtype=np.float32)
        n_feat = int(entry["n_features_in_"])
        if n_feat != c.shape[1]:
            raise CheckpointError(f"{where}: n_features_in_ = {n_feat} but the centres have {c.shape[1]} channels")
        if not np.isfinite(c).all():
            raise CheckpointError(f"{where}: cluster_centers_ contain NaN or inf; retrain with cluster/train_cluster.py")
        out[str(spk)] = {"n_features_in_": n_feat, "_n_threads": int(entry["_n_threads"]), "cluster_centers_": c}
    return out


# --- feature_and_index.pkl: restricted unpickling -------------------------------------------------
# The allow-list and the stand-ins live in modules.checkpoint (the one loader of untrusted files).
_IndexUnpickler = feature_index_unpickler


def _deserialize_faiss(blob: bytes, where: str) -> Any:
    faiss = import_faiss()

    try:
        return faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise CheckpointError(f"{where}: the faiss index data is corrupt ({first}); retrain it with train_index.py") from None


def _read_index_pickle(path: Path) -> dict[int, Any]:
    try:
        with open(path, "rb") as f:
            raw = _IndexUnpickler(f, str(path)).load()
    except UnsafeFileError as e:
        if str(path) in str(e):
            raise
        raise UnsafeFileError(f"{path}: refused to load: {e}. Nothing from the file was executed.") from None
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
        MemoryError, RecursionError, OverflowError,
    ) as e:
        raise CheckpointError(f"{path}: not a valid feature index pickle ({path.stat().st_size} bytes): {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(
            f"{path}: not a feature index (expected a dict speaker id → faiss index, found "
            f"{type(raw).__name__}{' (empty)' if isinstance(raw, dict) else ''}); train one with train_index.py"
        )
    out: dict[int, Any] = {}
    for key, value in raw.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise CheckpointError(f"{path}: speaker key {key!r} is not an integer speaker id")
        if not isinstance(value, FaissIndexState) or value.data is None:
            raise CheckpointError(f"{path}: entry for speaker id {key} is a {type(value).__name__}, not a faiss index")
        out[int(key)] = _deserialize_faiss(value.data, f"{path}: speaker id {key}")
    return out


def save_index_pickle(indexes: Mapping[int, Any], path: str | os.PathLike) -> None:
    """Write ``{speaker id: faiss index}`` as 4.1's ``feature_and_index.pkl`` (protocol 4), atomically."""
    payload = {int(k): v for k, v in indexes.items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(payload, f, protocol=4)


# --- safe format: manifest + faiss.write_index files --------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def index_file_name(manifest: Path, speaker_id: int) -> str:
    return f"{manifest.stem}.{int(speaker_id)}.index"


def save_index_manifest(
    indexes: Mapping[int, Any], path: str | os.PathLike, *, names: Mapping[int, str] | None = None
) -> list[Path]:
    """Write the safe index format: ``<stem>.<id>.index`` per speaker, then the manifest ``path``.

    Returns the files written (index files first, manifest last). Every file is written to a
    temporary name and renamed, and the manifest (with SHA-256 of each index file) comes last.
    """
    faiss = import_faiss()

    path = Path(path)
    names = dict(names or {})
    speakers = {}
    written = []
    for sid, index in sorted(indexes.items()):
        fname = index_file_name(path, sid)
        target = path.parent / fname
        with atomic_path(target) as tmp:
            faiss.write_index(index, str(tmp))
        written.append(target)
        speakers[str(int(sid))] = {
            "name": names.get(int(sid)),
            "file": fname,
            "ntotal": int(index.ntotal),
            "dim": int(index.d),
            "sha256": _sha256(target),
        }
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "metric": "L2",
        "speakers": speakers,
    }
    atomic_write_text(path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    written.append(path)
    return written


def _read_index_manifest(path: Path) -> tuple[dict[int, Any], dict[int, str]]:
    faiss = import_faiss()

    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read feature index manifest: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{path}: not a feature index manifest (expected \"format\": \"{MANIFEST_FORMAT}\")")
    if manifest.get("version") != MANIFEST_VERSION:
        raise CheckpointError(
            f"{path}: feature index manifest version {manifest.get('version')!r} is not supported "
            f"(this version reads {MANIFEST_VERSION})"
        )
    speakers = manifest.get("speakers")
    if not isinstance(speakers, dict) or not speakers:
        raise CheckpointError(f"{path}: the manifest lists no speakers")
    indexes: dict[int, Any] = {}
    names: dict[int, str] = {}
    for key, entry in speakers.items():
        where = f"{path}: speaker id {key}"
        if not re.fullmatch(r"\d+", str(key)) or not isinstance(entry, dict):
            raise CheckpointError(f"{where}: malformed manifest entry")
        fname = entry.get("file")
        # Only plain names next to the manifest: no directories, no '..', no absolute paths.
        if not isinstance(fname, str) or not re.fullmatch(r"[^/\\:]+", fname) or fname.startswith("."):
            raise CheckpointError(f"{where}: index file name {fname!r} must be a plain file name next to the manifest")
        target = path.parent / fname
        if not target.is_file():
            raise CheckpointError(f"{where}: index file {target} not found (copy it next to the manifest)")
        digest = _sha256(target)
        if digest != entry.get("sha256"):
            raise CheckpointError(
                f"{where}: {target} does not match the manifest (SHA-256 differs); the files come from "
                "different runs or were damaged. Copy them again or re-run train_index.py"
            )
        try:
            index = faiss.read_index(str(target))
        except RuntimeError as e:
            raise CheckpointError(f"{where}: {target} is not a readable faiss index: {str(e).strip().splitlines()[0]}") from None
        if "dim" in entry and int(entry["dim"]) != index.d:
            raise CheckpointError(f"{where}: manifest says dim {entry['dim']} but {target} has {index.d}")
        indexes[int(key)] = index
        if isinstance(entry.get("name"), str):
            names[int(key)] = entry["name"]
    return indexes, names


# --- by extension ---------------------------------------------------------------------------------
def read_index_file(path: str | os.PathLike) -> tuple[dict[int, Any], dict[int, str]]:
    """Read a feature index by extension → ``({speaker id: faiss index}, {speaker id: name})``.

    ``.pkl`` is 4.1's pickle (names are unknown: 4.1 keys by id only); ``.json`` the safe format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: feature index not found (train one with train_index.py)")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return _read_index_pickle(path), {}
    if suffix in MANIFEST_SUFFIXES:
        return _read_index_manifest(path)
    raise CheckpointError(
        f"{path}: unknown feature index format '{suffix}'; expected 4.1's feature_and_index.pkl "
        "or this project's manifest (.json)"
    )


def write_index_file(indexes: Mapping[int, Any], path: str | os.PathLike, *, names: Mapping[int, str] | None = None) -> list[Path]:
    """Write a feature index by extension: ``.pkl`` (4.1 pickle) or ``.json`` (safe manifest)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        save_index_pickle(indexes, path)
        return [path]
    if suffix in MANIFEST_SUFFIXES:
        return save_index_manifest(indexes, path, names=names)
    raise SvcError(f"{path}: choose a feature index file ending in .pkl (4.1 format) or .json (safe format)")


def export_index_for_onnx(path: str | os.PathLike, out_dir: str | os.PathLike = "checkpoints/crs") -> list[Path]:
    """4.1's ``export_index_for_onnx.py``: each speaker's index as ``<out_dir>/Index-<id>.index``."""
    faiss = import_faiss()

    indexes, _ = read_index_file(path)
    out = Path(out_dir)
    written = []
    for sid, index in sorted(indexes.items()):
        target = out / f"Index-{sid}.index"
        with atomic_path(target) as tmp:
            faiss.write_index(index, str(tmp))
        written.append(target)
    return written
