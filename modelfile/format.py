"""The ``<name>.svc.safetensors`` container: layout, header checks, writing.

A model file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file::

    ┌──────────┬──────────────────────────────┬──────────────────────────────┐
    │ u64 (LE) │ header: JSON, N bytes        │ tensor data (raw, LE)        │
    │    N     │ {name: {dtype, shape,        │ each tensor at               │
    │          │  data_offsets}, __metadata__}│ [begin, end) of this region  │
    └──────────┴──────────────────────────────┴──────────────────────────────┘

Reading it parses JSON and copies bytes; nothing in the file can name code to run (unlike a
``torch.save`` pickle). ``__metadata__`` may only map strings to strings, so everything this
project records is one JSON document under :data:`METADATA_KEY`; ``"format": "pt"`` is also set
because other safetensors tools look for it.

Tensor names (``<part>.<name>``)::

    synthesizer.<state-dict key>          SynthesizerTrn weights, no enc_q (float32 or float16)
    cluster.kmeans.<i>                    k-means centres [K, C] float32 of speaker i of the list
    cluster.index.<sid>.vectors           retrieval features [N, C] float32 of speaker id sid
    cluster.index.<sid>.centroids         IVF coarse centroids [nlist, C] float32 (IVF indexes)
    diffusion.<state-dict key>            Unit2Mel weights (as stored in model_*.pt)

The metadata lists every tensor name per part (``tensors``), so a file missing one is refused
with its name. Metadata fields are documented in :func:`modelfile.export.build_metadata`.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from modules.errors import CheckpointError, UnsafeFileError

log = logging.getLogger(__name__)

FORMAT_NAME = "so-vits-svc-model"
FORMAT_VERSION = 1                 # bump when a reader of version 1 could misread a new file
METADATA_KEY = "svc_model"         # the one __metadata__ entry holding our JSON
FILE_SUFFIX = ".svc.safetensors"   # recommended name ending
SAFETENSORS_SUFFIX = ".safetensors"
# Version of this project written into files. It is the 4.1 release reimplemented; the suffix
# counts revisions of this project's own format writer.
PROJECT_VERSION = "4.1-reimpl.1"

PART_PREFIXES = {"synthesizer": "synthesizer.", "cluster": "cluster.", "diffusion": "diffusion."}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit

# safetensors dtype names → torch dtypes this format may hold.
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class Header:
    """What the header of a model file says, checked against the file size."""

    path: Path
    metadata: dict[str, Any]              # the decoded JSON under METADATA_KEY
    tensors: dict[str, dict[str, Any]]    # name → {"dtype", "shape", "data_offsets"}
    file_size: int


def _not_ours(path: Path, first: bytes) -> str | None:
    """A message when the first bytes show a pickle or a PyTorch zip instead of safetensors."""
    if first[:2] == b"PK":
        return (f"{path}: this is a PyTorch checkpoint (zip/pickle), not a .svc.safetensors model file; it was "
                "not loaded and nothing in it was executed. Make a model file from it with "
                "export_model.py -m G.pth -c config.json -o model.svc.safetensors")
    if first[:1] == b"\x80" or first[:1] in (b"(", b"}", b"]", b"c"):
        return (f"{path}: this is a Python pickle renamed to {path.suffix}, not a safetensors file; it was "
                "refused and nothing in it was executed. If it came from a source you do not trust, delete it.")
    return None


def read_header(path: str | os.PathLike) -> Header:
    """Parse and check the header of ``path`` without reading any tensor data.

    Raises :class:`CheckpointError` naming what is wrong: missing/empty/truncated file, a header
    length that does not fit the file, a header that is not JSON, tensor ranges outside the data,
    missing or non-JSON metadata, another format or an unknown format version. A pickle or a
    PyTorch zip renamed to ``.safetensors`` raises :class:`UnsafeFileError` (nothing is unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        first = f.read(8)
        if len(first) < 8:
            what = _not_ours(path, first)
            if what:
                raise UnsafeFileError(what)
            raise CheckpointError(f"{path}: truncated model file ({size} bytes; a safetensors file starts with an "
                                  "8-byte header length). Download or copy it again.")
        (n,) = struct.unpack("<Q", first)
        if n > MAX_HEADER_BYTES or n + 8 > size:
            what = _not_ours(path, first)
            if what:
                raise UnsafeFileError(what)
            raise CheckpointError(
                f"{path}: wrong header length: the file says its header has {n} bytes but the file has only "
                f"{size} bytes{' (over the 100 MB limit)' if n > MAX_HEADER_BYTES else ''}; it is truncated, "
                "damaged or not a safetensors file. Download or copy it again.")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({e}); the file is damaged or was "
                              "edited. Download or copy it again.") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is a {type(header).__name__}, not a JSON object")
    meta_block = header.pop("__metadata__", None)
    tensors = _check_tensor_table(path, header, data_size=size - 8 - n)
    metadata = _decode_metadata(path, meta_block)
    return Header(path=path, metadata=metadata, tensors=tensors, file_size=size)


def _check_tensor_table(path: Path, header: dict, data_size: int) -> dict[str, dict[str, Any]]:
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise CheckpointError(f"{path}: header entry for tensor '{name}' is malformed (needs dtype, shape, "
                                  "data_offsets)")
        dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPES:
            raise CheckpointError(f"{path}: tensor '{name}' has dtype {dtype!r}, which a model file never holds")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)):
            raise CheckpointError(f"{path}: tensor '{name}' has a malformed shape {shape!r} or data_offsets {offs!r}")
        begin, end = offs
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * _ITEMSIZE[dtype] or begin < 0:
            raise CheckpointError(f"{path}: tensor '{name}' ({dtype} {shape}) does not match its byte range {offs}")
        if end > data_size:
            raise CheckpointError(
                f"{path}: truncated model file: tensor '{name}' ends at byte {end} of the data but only {data_size} "
                "bytes are there. Download or copy it again.")
        spans.append((begin, end, name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            raise CheckpointError(f"{path}: tensor data is not laid out contiguously (tensor '{name}' starts at "
                                  f"{begin}, expected {pos}); the file was damaged or edited")
        pos = end
    if pos != data_size:
        raise CheckpointError(f"{path}: {data_size - pos} bytes after the last tensor; the file was damaged or edited")
    return header


def _decode_metadata(path: Path, block: Any) -> dict[str, Any]:
    if not isinstance(block, dict) or METADATA_KEY not in block:
        raise CheckpointError(
            f"{path}: a safetensors file without so-vits-svc metadata (no '{METADATA_KEY}' entry), so not a "
            "so-vits-svc model file; make one with export_model.py")
    text = block[METADATA_KEY]
    try:
        meta = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: the '{METADATA_KEY}' metadata is not valid JSON ({e}); the file is damaged "
                              "or was edited") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the '{METADATA_KEY}' metadata must be a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: metadata format is {meta.get('format')!r}, expected '{FORMAT_NAME}'")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: metadata has no integer format_version (found {version!r})")
    if version != FORMAT_VERSION:
        newer = version > FORMAT_VERSION
        raise CheckpointError(
            f"{path}: model file format version {version} is not supported (this program reads version "
            f"{FORMAT_VERSION}){'; it was made by a newer version of this project: update it' if newer else ''}")
    return meta


def check_manifest(header: Header) -> None:
    """Every tensor the metadata lists must be in the header, and no unlisted tensor may be."""
    listed: set[str] = set()
    for part, entry in (("synthesizer", header.metadata.get("synthesizer")), ("cluster", header.metadata.get("cluster")),
                        ("diffusion", header.metadata.get("diffusion"))):
        if entry is None:
            continue
        names = entry.get("tensors") if isinstance(entry, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise CheckpointError(f"{header.path}: metadata of part '{part}' has no tensor list")
        missing = [n for n in names if n not in header.tensors]
        if missing:
            raise CheckpointError(
                f"{header.path}: {len(missing)} tensors of part '{part}' are missing from the file: "
                + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "") + ". The file is damaged or was edited.")
        listed.update(names)
    if header.metadata.get("synthesizer") is None:
        raise CheckpointError(f"{header.path}: metadata has no 'synthesizer' part")
    extra = sorted(set(header.tensors) - listed)
    if extra:
        raise CheckpointError(f"{header.path}: {len(extra)} tensors are not listed in the metadata: "
                              + ", ".join(extra[:8]) + (" ..." if len(extra) > 8 else ""))


def write_model_file(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``tensors`` and the JSON ``metadata`` to ``path`` atomically (temporary name + rename).

    Tensors sharing memory (tied parameters) are written as separate copies: safetensors stores
    no aliases.
    """
    from safetensors.torch import save_file

    from modules.io_utils import atomic_path

    seen: set[tuple[int, int]] = set()
    plain = {}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()  # shared with another name, or a view into a larger storage
        seen.add(key)
        plain[name] = t
    block = {"format": "pt", METADATA_KEY: json.dumps(metadata, ensure_ascii=False, sort_keys=False)}
    with atomic_path(path, suffix=SAFETENSORS_SUFFIX) as tmp:
        save_file(plain, str(tmp), metadata=block)


def read_tensors(header: Header, names: list[str], *, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read the named tensors (already checked to exist by :func:`check_manifest`)."""
    from safetensors import SafetensorError, safe_open

    out = {}
    try:
        with safe_open(str(header.path), framework="pt", device=device) as f:
            for name in names:
                out[name] = f.get_tensor(name)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{header.path}: cannot read tensor data ({e}); the file is damaged. "
                              "Download or copy it again.") from None
    return out
