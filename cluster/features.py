"""Reading a speaker's encoder units (``X.wav.soft.pt``) for clustering and retrieval.

Each ``.soft.pt`` (spec §1.3) holds float32 ``[1, C, N]``: N frames of the speech encoder at
50 Hz (not stretched to synthesizer frames). Training needs them as one ``[N_total, C]`` float32
matrix. 4.1 kept a list of per-file arrays, their concatenation and a float32 copy (≈ 3× the
data); here the files are read twice instead: a first pass checks every file and counts frames,
the second copies each file straight into a preallocated matrix (≈ 1× the data plus one file).
With ``max_frames`` the matrix is a uniform random subset of that size (reservoir sampling), so
memory stays bounded however large the dataset is.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from modules.checkpoint import torch_load
from modules.errors import CheckpointError, SvcError

log = logging.getLogger(__name__)

UNITS_SUFFIX = ".soft.pt"


def list_speaker_dirs(dataset: str | os.PathLike) -> list[Path]:
    """Speaker directories of a dataset root, sorted by name; hidden ones are skipped.

    4.1 used the unsorted ``os.listdir`` and also trained on ``.ipynb_checkpoints``; sorting
    makes runs repeatable and hidden directories are never speakers.
    """
    root = Path(dataset)
    if not root.is_dir():
        raise SvcError(f"{root}: dataset directory not found (run resample.py and preprocess_hubert_f0.py first)")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise SvcError(f"{root}: no speaker directories found (expected {root}/<speaker>/*.wav{UNITS_SUFFIX})")
    return dirs


def list_unit_files(speaker_dir: str | os.PathLike, pattern: str = f"*{UNITS_SUFFIX}") -> list[Path]:
    """The unit files of one speaker directory, sorted; an error if there are none."""
    d = Path(speaker_dir)
    if not d.is_dir():
        raise SvcError(f"{d}: speaker directory not found")
    files = sorted(p for p in d.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise SvcError(
            f"{d}: no encoder unit files ({pattern}); run preprocess_hubert_f0.py for this speaker first"
        )
    return files


def load_units(path: str | os.PathLike) -> np.ndarray:
    """One ``.soft.pt`` → float32 ``[N, C]`` (frames × channels), checked for shape and NaN."""
    path = Path(path)
    obj = torch_load(path, what="encoder unit file (.soft.pt)")
    if not isinstance(obj, torch.Tensor) or obj.dim() != 3 or obj.shape[0] != 1 or not obj.is_floating_point():
        desc = f"tensor {tuple(obj.shape)} {obj.dtype}" if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise CheckpointError(
            f"{path}: expected a float tensor [1, C, N] of encoder units, found {desc}; "
            "re-run preprocess_hubert_f0.py"
        )
    units = obj[0].transpose(0, 1).to(torch.float32).contiguous().numpy()
    if not np.isfinite(units).all():
        raise CheckpointError(f"{path}: encoder units contain NaN or inf; delete the file and re-run preprocess_hubert_f0.py")
    return units


@dataclass
class SpeakerUnits:
    """The unit files of one speaker and what the first pass learnt about them."""

    name: str
    files: list[Path]
    frames: list[int]
    dim: int

    @property
    def total(self) -> int:
        return int(sum(self.frames))


def scan_units(name: str, files: Sequence[Path], *, progress: bool = True) -> SpeakerUnits:
    """First pass: read every file once, check it, count frames; all files must share C."""
    frames: list[int] = []
    dim = None
    for f in tqdm(files, desc=f"{name}: checking units", unit="file", leave=False, disable=not progress):
        u = load_units(f)
        if dim is None:
            dim = u.shape[1]
        elif u.shape[1] != dim:
            raise CheckpointError(
                f"{f}: has {u.shape[1]} channels but {files[0]} has {dim}; the speaker's units come from "
                "different speech encoders. Re-run preprocess_hubert_f0.py for the whole dataset."
            )
        frames.append(u.shape[0])
    if dim is None:
        raise SvcError(f"speaker '{name}': no unit files")
    info = SpeakerUnits(name=name, files=list(files), frames=frames, dim=int(dim))
    if info.total == 0:
        raise SvcError(f"speaker '{name}': the unit files hold 0 frames; the audio is too short or empty")
    return info


def iter_units(info: SpeakerUnits, *, progress: bool = True, desc: str = "reading units") -> Iterator[np.ndarray]:
    """Second pass: yield each file's ``[N_i, C]`` units in file order."""
    for f in tqdm(info.files, desc=f"{info.name}: {desc}", unit="file", leave=False, disable=not progress):
        u = load_units(f)
        if u.shape[1] != info.dim:
            raise CheckpointError(f"{f}: changed while it was being read (channel count {u.shape[1]} != {info.dim})")
        yield u


def gather_units(
    info: SpeakerUnits,
    *,
    max_frames: int | None = None,
    rng: np.random.Generator | None = None,
    progress: bool = True,
) -> np.ndarray:
    """All frames of a speaker as one float32 ``[N, C]`` matrix (file order, then frame order).

    With ``max_frames`` (> 0) and more frames than that, a uniform random subset of exactly
    ``max_frames`` rows is kept (reservoir sampling while streaming the files), so peak memory is
    ``max_frames × C × 4`` bytes plus one file.
    """
    total = info.total
    cap = total if not max_frames or max_frames <= 0 else min(int(max_frames), total)
    out = np.empty((cap, info.dim), dtype=np.float32)
    if cap == total:
        pos = 0
        for u in iter_units(info, progress=progress):
            n = u.shape[0]
            if pos + n > total:
                raise CheckpointError(f"speaker '{info.name}': a unit file grew while it was being read")
            out[pos : pos + n] = u
            pos += n
        if pos != total:
            raise CheckpointError(f"speaker '{info.name}': a unit file shrank while it was being read")
        return out
    # Reservoir sampling (algorithm R, vectorised per file): row i (0-based, in stream order)
    # replaces slot j ~ U{0..i} when j < cap. Later rows overwrite earlier ones in the same
    # file, as in the sequential algorithm.
    rng = rng if rng is not None else np.random.default_rng()
    log.info("speaker '%s': %d frames, keeping a random subset of %d (max_frames)", info.name, total, cap)
    seen = 0
    for u in iter_units(info, progress=progress):
        n = u.shape[0]
        fill = min(max(cap - seen, 0), n)
        if fill:
            out[seen : seen + fill] = u[:fill]
        if fill < n:
            idx = np.arange(seen + fill, seen + n)
            j = rng.integers(0, idx + 1)
            keep = j < cap
            for row, slot in zip(np.nonzero(keep)[0] + fill, j[keep]):
                out[slot] = u[row]
        seen += n
    return out
