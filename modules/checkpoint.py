"""The one loader (and writer) of model files.

Model files are untrusted. Everything is read with ``torch.load(weights_only=True)``: PyTorch's
restricted unpickler builds tensors and plain containers and refuses every other global. Legacy
formats that reference foreign classes (fairseq's ``argparse.Namespace`` / omegaconf configs,
faiss objects inside ``feature_and_index.pkl``) are read by the same restricted machinery with an
explicit allow-list of *stand-in* classes: the stand-ins only record the pickled state, so no
code named by the file ever runs. Anything outside the allow-list is refused with
:class:`~modules.errors.UnsafeFileError`.

Writing is atomic (temporary name + rename), so a kill during a save never leaves a truncated
checkpoint under the final name.

SoVITS checkpoints (``G_*.pth`` / ``D_*.pth``) keep the 4.1 layout (spec §7.1): a dict with
``model``, ``iteration`` (the epoch), ``optimizer`` and ``learning_rate``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as _np
import torch

from modules.errors import CheckpointError, UnsafeFileError
from modules.io_utils import atomic_path

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]

log = logging.getLogger(__name__)

# State-dict keys whose shape may legitimately differ from the model's: fine-tuning a base model
# trained with another speaker count. They are re-initialised (and announced), never refused.
REINIT_ON_SHAPE_MISMATCH = ("emb_g.weight",)


# --- reading ------------------------------------------------------------------------------------
def _describe(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        return "unreadable"
    return f"{size} bytes"


def torch_load(
    path: str | os.PathLike,
    *,
    map_location: str | torch.device | None = "cpu",
    stand_ins: Mapping[str, type | Callable] | None = None,
    what: str = "model file",
    mmap: bool = False,
) -> Any:
    """``torch.load(path, weights_only=True)`` with clear errors.

    ``mmap=True`` maps the tensors of a zip checkpoint instead of reading them all (large files
    of which only a part is used, e.g. Whisper's encoder half).

    ``stand_ins`` maps fully qualified global names found in legacy files (for example
    ``"argparse.Namespace"``) to harmless local classes that only record state; they extend the
    allow-list for this call only. A file that names any other global is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: {what} is empty (0 bytes); download or copy it again")
    globals_list = [(obj, name) for name, obj in (stand_ins or {}).items()]
    try:
        with torch.serialization.safe_globals(globals_list):
            if mmap:
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"(?:Unsupported global|GLOBAL) *:? *(?:GLOBAL )?([\w.]+)", msg)
        if m or "weights_only" in msg.lower():
            name = m.group(1) if m else "an unknown global"
            raise UnsafeFileError(
                f"{path}: refused to load: the file references '{name}', which is not on the "
                f"allow-list for a {what}. Nothing from the file was executed. If this file came "
                "from a source you do not trust, delete it."
            ) from None
        raise CheckpointError(f"{path}: not a valid {what} ({_describe(path)}): {msg.splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: cannot read {what} ({_describe(path)}); it is truncated or not a PyTorch "
            f"file: {first}. Download or copy it again."
        ) from None


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only the globals in ``allowed``.

    Used for plain (non-zip) legacy pickles such as 4.1's ``feature_and_index.pkl`` and numpy
    object arrays. ``allowed`` maps ``"module.name"`` to the object to return for it (usually a
    stand-in class or a checking function). ``resolve(module, name)``, when given, is asked first
    for names that follow a pattern (faiss's CPU-specific module names) and returns None to refuse.
    ``refusal`` ends the refusal message (what such a file should contain instead).
    """

    def __init__(self, file: io.BufferedIOBase, allowed: Mapping[str, Any], source: str = "file", *,
                 resolve: Callable[[str, str], Any] | None = None, refusal: str = "which is not on the allow-list") -> None:
        super().__init__(file)
        self._allowed = dict(allowed)
        self._source = source
        self._resolve = resolve
        self._refusal = refusal

    def find_class(self, module: str, name: str) -> Any:
        if self._resolve is not None:
            found = self._resolve(module, name)
            if found is not None:
                return found
        full = f"{module}.{name}"
        if full in self._allowed:
            return self._allowed[full]
        raise UnsafeFileError(
            f"{self._source}: refused to load: the pickle references '{full}', {self._refusal}. "
            "Nothing from the file was executed. If this file came from a source you do not trust, delete it."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(f"{self._source}: refused to load: unexpected persistent id in pickle")


# --- allow-lists of legacy pickles --------------------------------------------------------------
# numpy pickles arrays under numpy.core.* (1.x) or numpy._core.* (2.x); both spellings are listed.
_NP_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
np_reconstruct = _np_multiarray._reconstruct  # numpy's array rebuilder (what array pickles name)


def numpy_object_array_globals() -> dict[str, Any]:
    """Globals a numpy object-array ``.npy`` (4.1's ``.aug_mel.npy`` etc.) may name: array, dtype
    and scalar rebuilders only."""
    allowed: dict[str, Any] = {"numpy.ndarray": _np.ndarray, "numpy.dtype": _np.dtype}
    for mod in _NP_MODULES:
        allowed[f"{mod}._reconstruct"] = _np_multiarray._reconstruct
        allowed[f"{mod}.scalar"] = _np_multiarray.scalar
    return allowed


# kmeans_*.pt (torch zip): only the array rebuilders and the float dtypes centres can have.
KMEANS_NUMPY_GLOBALS: dict[str, Any] = {
    **{f"{mod}._reconstruct": _np_multiarray._reconstruct for mod in _NP_MODULES},
    "numpy.ndarray": _np.ndarray,
    "numpy.dtype": _np.dtype,
    "numpy.dtypes.Float32DType": type(_np.dtype(_np.float32)),
    "numpy.dtypes.Float64DType": type(_np.dtype(_np.float64)),
}


class FaissIndexState:
    """Inert stand-in for a pickled faiss index: keeps the serialized bytes, runs nothing.

    The unpickler creates it with ``cls.__new__`` (NEWOBJ) or ``cls()``, then hands the pickled
    state to :meth:`__setstate__`; the faiss class name is the stand-in subclass's name.
    """

    data: bytes | None = None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]  # copyreg protocol-0/1 form (dict, slots)
        if not isinstance(state, dict) or set(state) != {"this"} or not isinstance(state["this"], (bytes, bytearray)):
            raise UnsafeFileError(
                "a pickled faiss index does not have the expected state {'this': <bytes>}; refused"
            )
        self.data = bytes(state["this"])

    def __reduce__(self):  # never let the stand-in be pickled back out by accident
        raise TypeError("FaissIndexState cannot be pickled")


_FAISS_STAND_INS: dict[str, type] = {}
# faiss's SWIG module is named after the CPU build: faiss.swigfaiss, faiss.swigfaiss_avx2,
# faiss.swigfaiss_avx512, ... (and faiss._swigfaiss in some builds). Only Index* class names.
_FAISS_MODULE_RE = re.compile(r"faiss\._?swigfaiss\w*")
_FAISS_CLASS_RE = re.compile(r"Index\w*")


def faiss_stand_in(module: str, name: str) -> type | None:
    """The inert :class:`FaissIndexState` subclass for a faiss ``Index*`` class, or None."""
    if not (_FAISS_MODULE_RE.fullmatch(module) and _FAISS_CLASS_RE.fullmatch(name)):
        return None
    cls = _FAISS_STAND_INS.get(name)
    if cls is None:
        cls = type(name, (FaissIndexState,), {})
        _FAISS_STAND_INS[name] = cls
    return cls


class _NdarrayRef:
    """Stands for ``numpy.ndarray`` in a pickle; only :func:`_safe_reconstruct` accepts it."""


class _ObjectRef:
    """Stands for ``builtins.object`` (protocol 0/1 pickles); only :func:`_safe_copyreg_reconstructor` accepts it."""


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    if subtype is not _NdarrayRef:
        raise UnsafeFileError("numpy array rebuild for a type other than numpy.ndarray; refused")
    return _np_multiarray._reconstruct(_np.ndarray, shape, dtype)


def _safe_dtype(spec: Any, align: Any = False, copy: Any = False) -> Any:
    if not isinstance(spec, str):
        raise UnsafeFileError(f"numpy dtype from {type(spec).__name__}; refused")
    dt = _np.dtype(spec)
    if dt.kind not in "biuf":
        raise UnsafeFileError(f"numpy dtype '{spec}' is not a plain number type; refused")
    return _np.dtype(spec, bool(align), bool(copy))


def _safe_codecs_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    # Protocol 0-2 pickles store bytes as _codecs.encode(<latin-1 str>, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafeFileError("unexpected use of _codecs.encode in pickle; refused")
    return text.encode("latin1")


def _safe_copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # Protocol 0/1 pickles build objects as copyreg._reconstructor(cls, object, None).
    if not (isinstance(cls, type) and issubclass(cls, FaissIndexState)) or base is not _ObjectRef or state is not None:
        raise UnsafeFileError("copyreg._reconstructor used for something other than a faiss index; refused")
    return cls()


# feature_and_index.pkl: plain containers, ints, bytes, numeric numpy arrays and faiss stand-ins.
FEATURE_INDEX_GLOBALS: dict[str, Any] = {
    **{f"{mod}._reconstruct": _safe_reconstruct for mod in _NP_MODULES},
    "numpy.ndarray": _NdarrayRef,
    "numpy.dtype": _safe_dtype,
    "_codecs.encode": _safe_codecs_encode,
    "copyreg._reconstructor": _safe_copyreg_reconstructor,
    "copy_reg._reconstructor": _safe_copyreg_reconstructor,
    "builtins.object": _ObjectRef,
    "__builtin__.object": _ObjectRef,
}


def feature_index_unpickler(file: Any, source: str) -> RestrictedUnpickler:
    """The allow-list unpickler for 4.1's ``feature_and_index.pkl`` ({speaker id: faiss index})."""
    return RestrictedUnpickler(file, FEATURE_INDEX_GLOBALS, source, resolve=faiss_stand_in,
                               refusal="which a feature index never contains")


def restricted_pickle_load(path: str | os.PathLike, allowed: Mapping[str, Any], what: str = "file") -> Any:
    """Read a plain pickle through :class:`RestrictedUnpickler` with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, allowed, source=str(path)).load()
    except UnsafeFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: not a valid {what} ({_describe(path)}): {e}") from None


# --- writing ------------------------------------------------------------------------------------
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same directory, then rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# --- random-weight marker -----------------------------------------------------------------------
# Test / demo files with random weights carry this key at the top level of the saved dict (ONNX
# graphs: a metadata property of the same name), so the mark travels with the file through copies
# and renames; a stand-in under a real file name can never pass for trained weights unnoticed.
RANDOM_WEIGHTS_KEY = "svc_random_weights"
_warned_random: set[str] = set()


def mark_random_weights(obj: dict) -> dict:
    """Add the random-weight marker to a checkpoint dict about to be saved; returns ``obj``."""
    obj[RANDOM_WEIGHTS_KEY] = True
    return obj


def has_random_weights(obj: Any) -> bool:
    """Whether a loaded checkpoint carries the random-weight marker."""
    return isinstance(obj, Mapping) and obj.get(RANDOM_WEIGHTS_KEY) is True


def warn_random_weights(path: str | os.PathLike, what: str) -> bool:
    """Log a loud warning that ``path`` holds random weights, once per file and process.

    Returns True when the warning was logged now (False: already said for this file).
    """
    key = str(Path(path).resolve())
    if key in _warned_random:
        return False
    _warned_random.add(key)
    bar = "!" * 78
    log.warning("\n%s\n!! %s %s HAS RANDOM WEIGHTS (marked '%s' inside the file).\n!! It was written by a "
                "test or by demo.py as a stand-in: everything computed with it (features, training, audio) "
                "shows\n!! that the pipeline runs, NOT voice quality. Put the real file in its place "
                "(python download_pretrain.py --list).\n%s", bar, what, path, RANDOM_WEIGHTS_KEY, bar)
    return True


# --- state dicts -------------------------------------------------------------------------------
def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def load_state_dict_checked(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
    allow_missing: Iterable[str] = (),
    reinit_on_mismatch: Iterable[str] = REINIT_ON_SHAPE_MISMATCH,
) -> dict[str, list[str]]:
    """Load ``state_dict`` into ``model`` and report every key that does not fit, by name.

    Missing keys (except prefixes in ``allow_missing``), unexpected keys and shape mismatches
    raise :class:`CheckpointError` instead of silently keeping random weights. A shape mismatch
    of a key in ``reinit_on_mismatch`` (the speaker table when fine-tuning with another speaker
    count) keeps the model's fresh tensor and is logged as a warning. Returns what happened.
    """
    model = _unwrap(model)
    own = model.state_dict()
    allow_missing = tuple(allow_missing)
    reinit_keys = set(reinit_on_mismatch)
    missing = [k for k in own if k not in state_dict and not k.startswith(allow_missing)]
    unexpected = [k for k in state_dict if k not in own]
    mismatched, reinit = [], []
    merged = {}
    for k, v in own.items():
        if k not in state_dict:
            merged[k] = v
            continue
        src = state_dict[k]
        if not isinstance(src, torch.Tensor):
            raise CheckpointError(f"{source}: entry '{k}' is a {type(src).__name__}, not a tensor")
        if tuple(src.shape) != tuple(v.shape):
            if k in reinit_keys:
                reinit.append(k)
                merged[k] = v
                log.warning(
                    "%s: '%s' has shape %s but the model needs %s; it is re-initialised (expected when "
                    "fine-tuning a base model with another speaker count)", source, k, tuple(src.shape), tuple(v.shape)
                )
                continue
            mismatched.append(f"{k}: file {tuple(src.shape)} vs model {tuple(v.shape)}")
            continue
        merged[k] = src.to(dtype=v.dtype) if src.is_floating_point() and v.is_floating_point() else src
    problems = []
    if mismatched:
        problems.append("shape mismatch for " + "; ".join(mismatched[:8]) + (" ..." if len(mismatched) > 8 else ""))
    if missing:
        problems.append(f"{len(missing)} missing keys: " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: " + ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else ""))
    if problems:
        raise CheckpointError(
            f"{source} does not fit this model ({'; '.join(problems)}). Check that the config "
            "matches the checkpoint (speech encoder / ssl_dim, vol_embedding, flow options, vocoder)."
        )
    model.load_state_dict(merged, strict=False)
    return {"reinitialised": reinit}


# --- SoVITS G/D checkpoints --------------------------------------------------------------------
def load_checkpoint(
    checkpoint_path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    skip_optimizer: bool = False,
    *,
    allow_missing: Iterable[str] = (),
    reinit_on_mismatch: Iterable[str] = REINIT_ON_SHAPE_MISMATCH,
) -> tuple[torch.nn.Module, torch.optim.Optimizer | None, float, int]:
    """Load a 4.1 ``G_*.pth`` / ``D_*.pth`` (spec §7.1) → ``(model, optimizer, learning_rate, iteration)``.

    Unlike 4.1, keys that do not fit are reported (see :func:`load_state_dict_checked`).
    ``allow_missing`` lets inference accept compressed models without ``enc_q``;
    ``reinit_on_mismatch=()`` makes a mis-shaped speaker table an error (export, inference). The optimizer
    state is restored only when its parameter count matches; otherwise a warning says so.
    """
    checkpoint_path = Path(checkpoint_path)
    ckpt = torch_load(checkpoint_path, what="so-vits-svc checkpoint")
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        keys = list(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{checkpoint_path}: not a so-vits-svc checkpoint (expected a dict with 'model', "
            f"'iteration', 'optimizer', 'learning_rate'; found {keys})"
        )
    iteration = int(ckpt.get("iteration", 0) or 0)
    learning_rate = float(ckpt.get("learning_rate", 0.0) or 0.0)
    state = ckpt["model"]
    first = next((v for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    target = _unwrap(model)
    if first is not None and first.dtype != next(target.parameters()).dtype:
        # 4.1 casts the model to the checkpoint's dtype (half "release" models).
        target.to(first.dtype)
    load_state_dict_checked(target, state, source=str(checkpoint_path), allow_missing=allow_missing,
                            reinit_on_mismatch=reinit_on_mismatch)
    if optimizer is not None and not skip_optimizer and ckpt.get("optimizer") is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            log.warning("%s: optimizer state not restored (%s); continuing with a fresh optimizer", checkpoint_path, e)
    log.info("Loaded checkpoint '%s' (iteration %d)", checkpoint_path, iteration)
    return model, optimizer, learning_rate, iteration


def save_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    learning_rate: float,
    iteration: int,
    checkpoint_path: str | os.PathLike,
    **extra: Any,
) -> None:
    """Write a 4.1-format checkpoint atomically. ``extra`` keys (e.g. ``step``) are added."""
    state_dict = _unwrap(model).state_dict()
    obj = {
        "model": state_dict,
        "iteration": int(iteration),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "learning_rate": float(learning_rate),
        **extra,
    }
    atomic_torch_save(obj, checkpoint_path)
    log.info("Saved checkpoint '%s' (iteration %d)", checkpoint_path, iteration)


_STEP_RE = re.compile(r"_(\d+)\.(?:pth|pt)$")


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step number in a checkpoint file name (``G_800.pth`` → 800), or None."""
    m = _STEP_RE.search(Path(path).name)
    return int(m.group(1)) if m else None


def latest_checkpoint_path(dir_path: str | os.PathLike, regex: str = "G_*.pth") -> str | None:
    """The checkpoint matching the glob ``regex`` in ``dir_path`` with the highest step number.

    4.1 concatenated every digit of the whole path (spec §13.17), so ``logs/44k2/G_9.pth``
    could sort after ``G_100.pth``; here only the step in the file name counts. Temporary
    files from interrupted saves never match. Returns None when there is none.
    """
    files = [p for p in Path(dir_path).glob(regex) if checkpoint_step(p) is not None and not p.name.startswith(".")]
    if not files:
        return None
    return str(max(files, key=lambda p: checkpoint_step(p)))


def clean_checkpoints(path_to_models: str | os.PathLike = "logs/44k/", n_ckpts_to_keep: int = 2, sort_by_time: bool = True) -> list[str]:
    """Delete all but the newest ``n_ckpts_to_keep`` ``G_<n>.pth`` / ``D_<n>.pth`` (by step).

    ``*_0.pth`` (base models) are never deleted. Unlike 4.1 (spec §13.17) only files named
    exactly ``G_<n>.pth`` / ``D_<n>.pth`` count, and order is by step, not modification time
    (``sort_by_time`` is accepted for compatibility and ignored). ``n_ckpts_to_keep`` ≤ 0 keeps
    everything. Returns the deleted paths.
    """
    if n_ckpts_to_keep <= 0:
        return []
    deleted = []
    for prefix in ("G", "D"):
        files = []
        for p in Path(path_to_models).glob(f"{prefix}_*.pth"):
            if re.fullmatch(rf"{prefix}_(\d+)\.pth", p.name) and p.name != f"{prefix}_0.pth":
                files.append(p)
        files.sort(key=checkpoint_step)
        for p in files[:-n_ckpts_to_keep]:
            try:
                p.unlink()
                deleted.append(str(p))
                log.info("Deleted old checkpoint %s", p)
            except FileNotFoundError:
                pass
    return deleted


# --- self-describing checkpoints ----------------------------------------------------------------
CONFIG_KEY = "config"  # extra key of our G_/D_/model_ files: the full config the model was trained with


def config_from_checkpoint(path: str | os.PathLike) -> dict | None:
    """The config stored in a checkpoint written by this project (``G_*.pth``, ``D_*.pth``,
    diffusion ``model_*.pt``; speaker map included as ``spk``), or None for a 4.1 file without one.

    Only the small ``config`` entry is read; the tensors are memory-mapped, not loaded. A side
    ``config.json`` given by the user still wins over this (callers decide).
    """
    ckpt = torch_load(path, what="model file", mmap=zipfile.is_zipfile(path))
    if not isinstance(ckpt, dict):
        return None
    config = ckpt.get(CONFIG_KEY)
    return dict(config) if isinstance(config, Mapping) else None


def remove_interrupted_saves(dir_path: str | os.PathLike, names: Iterable[str] = ("G_*", "D_*", "model_*")) -> list[Path]:
    """Delete temporaries that a killed save left (``.<name>.<random>.tmp.<suffix>``, see
    :func:`modules.io_utils.atomic_path`) for checkpoints matching ``names``. Call it only while no
    other process saves into ``dir_path`` (at the start of training). Returns what was deleted."""
    removed = []
    for pattern in names:
        for p in Path(dir_path).glob(f".{pattern}.*.tmp.*"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    if removed:
        log.warning("%s: removed %d partial file(s) of interrupted saves: %s", dir_path, len(removed),
                    ", ".join(p.name for p in removed))
    return removed
