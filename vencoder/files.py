"""Reading (and writing) speech-encoder weight files in their published formats, safely.

Every file is read through :func:`modules.checkpoint.torch_load` (``weights_only=True``). fairseq
checkpoints (ContentVec, HuBERT) pickle a few foreign objects next to the weights: a
``fairseq.data.dictionary.Dictionary`` in ``task_state``, an ``argparse.Namespace`` in ``args`` for
older files, and in some files omegaconf containers or numpy scalars. Those names are mapped to the
stand-ins below, which only *record* the pickled state: no code named by the file runs, and any
other global is refused with :class:`~modules.errors.UnsafeFileError`.

The loaders never read the recorded objects except for configuration values, which are
converted to plain Python data by :func:`plain`.
"""

from __future__ import annotations

import ast
import logging
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Mapping

import torch

from modules.checkpoint import RANDOM_WEIGHTS_KEY, has_random_weights, torch_load, warn_random_weights
from modules.errors import CheckpointError
from modules.io_utils import atomic_path

log = logging.getLogger(__name__)


# --- stand-ins ----------------------------------------------------------------------------------
class RecordedObject:
    """Stand-in for a pickled foreign object: keeps constructor arguments and state, nothing else."""

    _foreign_name = "object"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args
        self.__dict__["_state"] = None

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state
        if isinstance(state, dict):
            self.__dict__.update({k: v for k, v in state.items()
                                  if isinstance(k, str) and not k.startswith("__") and k not in ("_args", "_state")})

    def __repr__(self) -> str:
        return f"<recorded {self._foreign_name}>"


class NamespaceStandIn(RecordedObject):
    """``argparse.Namespace`` of old fairseq checkpoints (``ckpt['args']``)."""

    _foreign_name = "argparse.Namespace"


class FairseqDictionaryStandIn(RecordedObject):
    """``fairseq.data.dictionary.Dictionary`` in ``ckpt['task_state']`` (label vocabulary; unused)."""

    _foreign_name = "fairseq.data.dictionary.Dictionary"


class OmegaConfStandIn(RecordedObject):
    """omegaconf ``DictConfig`` / ``ListConfig`` / value nodes / metadata (configs of some fairseq files)."""

    _foreign_name = "omegaconf object"


class _TypeMarker:
    """A global that a pickle names only as a value (``typing.Any``, ``builtins.dict`` in omegaconf
    metadata). It cannot be called, so a pickle cannot use it to build anything."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<type marker {self.name}>"


class NumpyDTypeStandIn(RecordedObject):
    """``numpy.dtype(...)`` as pickled inside numpy scalars; records the type string and byte order."""

    _foreign_name = "numpy.dtype"


_NUMPY_FORMATS = {"f8": "d", "f4": "f", "f2": "e", "i8": "q", "i4": "i", "i2": "h", "i1": "b",
                  "u8": "Q", "u4": "I", "u2": "H", "u1": "B", "b1": "?"}


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """Rebuild a numpy scalar (``numpy.core.multiarray.scalar``) as a plain Python number.

    Only fixed-size numeric types are decoded (with :mod:`struct`); anything else is refused.
    """
    if not isinstance(dtype, NumpyDTypeStandIn) or not isinstance(data, (bytes, bytearray)):
        raise CheckpointError("unsupported numpy scalar in file")
    code = str(dtype._args[0]) if dtype._args else ""
    fmt = _NUMPY_FORMATS.get(code)
    if fmt is None:
        raise CheckpointError(f"unsupported numpy scalar type '{code}' in file")
    order = ">" if isinstance(dtype._state, tuple) and len(dtype._state) > 1 and dtype._state[1] == ">" else "<"
    if struct.calcsize(order + fmt) != len(data):
        raise CheckpointError(f"malformed numpy scalar of type '{code}' in file")
    return struct.unpack(order + fmt, bytes(data))[0]


_OMEGACONF = ["omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig",
              "omegaconf.base.ContainerMetadata", "omegaconf.base.Metadata",
              "omegaconf.nodes.AnyNode", "omegaconf.nodes.StringNode", "omegaconf.nodes.IntegerNode",
              "omegaconf.nodes.FloatNode", "omegaconf.nodes.BooleanNode", "omegaconf.nodes.EnumNode",
              "omegaconf.nodes.ValueNode"]

def _defaultdict(*args: Any) -> dict:
    """``collections.defaultdict(factory)`` (omegaconf metadata caches) → a plain, empty dict."""
    return {}


#: Foreign globals the published encoder files may name, and what they become when read.
FAIRSEQ_STAND_INS: dict[str, Any] = {
    "argparse.Namespace": NamespaceStandIn,
    "fairseq.data.dictionary.Dictionary": FairseqDictionaryStandIn,
    **{name: OmegaConfStandIn for name in _OMEGACONF},
    "typing.Any": _TypeMarker("typing.Any"),
    "builtins.dict": _TypeMarker("dict"),
    "builtins.list": _TypeMarker("list"),
    "builtins.object": _TypeMarker("object"),
    "collections.defaultdict": _defaultdict,
    "numpy.dtype": NumpyDTypeStandIn,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
}


def plain(obj: Any) -> Any:
    """Convert recorded config objects (Namespace, omegaconf containers) into dicts/lists/scalars."""
    if isinstance(obj, OmegaConfStandIn):
        state = obj._state if isinstance(obj._state, dict) else {}
        if "_content" in state:
            return plain(state["_content"])
        if "_val" in state:
            return plain(state["_val"])
        return None
    if isinstance(obj, RecordedObject):
        state = obj._state if isinstance(obj._state, dict) else {}
        return {k: plain(v) for k, v in state.items() if isinstance(k, str)}
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


# --- reading ------------------------------------------------------------------------------------
def load_encoder_file(path: str | os.PathLike, *, what: str, mmap: bool = False) -> Any:
    """Read an encoder weight file safely (see module docstring). Raises CheckpointError/UnsafeFileError.

    A file marked as random weights (``modules.checkpoint.RANDOM_WEIGHTS_KEY``) is announced with a
    loud warning (once per file) and returned without the marker.
    """
    try:
        obj = torch_load(path, stand_ins=FAIRSEQ_STAND_INS, what=what, mmap=mmap)
    except TypeError as e:  # a pickle that tries to call a type marker
        raise CheckpointError(f"{path}: not a valid {what}: malformed pickle ({e})") from None
    if has_random_weights(obj):
        warn_random_weights(path, what)
        obj = {k: v for k, v in obj.items() if k != RANDOM_WEIGHTS_KEY}  # the loaders see the published layout
    return obj


def describe_kind(obj: Any) -> str:
    """A short human description of what a loaded file looks like (for wrong-kind messages)."""
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}"
    keys = set(obj)
    if {"model", "iteration", "optimizer", "learning_rate"} <= keys:
        return "a so-vits-svc model checkpoint (G_*.pth / D_*.pth)"
    if {"dims", "model_state_dict"} <= keys:
        return "an OpenAI Whisper checkpoint (for whisper-ppg / whisper-ppg-large)"
    if "model" in keys and ("cfg" in keys or "args" in keys) and "task_state" in keys:
        return "a fairseq checkpoint (for vec768l12 / vec256l9 / cnhubertlarge)"
    if {"cfg", "model"} <= keys:
        return "a WavLM checkpoint (for wavlmbase+)"
    if {"config", "state_dict"} <= keys:
        return "a DPHuBERT checkpoint (for dphubert)"
    if "model" in keys and "config" in keys and isinstance(obj.get("config"), Mapping) and "mel" in obj["config"]:
        return "an F0-predictor / vocoder checkpoint (config with 'mel')"
    if keys and all(isinstance(v, torch.Tensor) for v in obj.values()):
        first = sorted(keys)[0]
        if any(k.replace("module.", "", 1).startswith("feature_extractor.conv0") for k in keys):
            return "a HuBERT-Soft state dict (for hubertsoft)"
        return f"a bare state dict (first key '{first}')"
    return "a dict with keys " + ", ".join(sorted(map(str, keys))[:8])


def wrong_kind(path: Path, obj: Any, *, encoder: str, expected: str) -> CheckpointError:
    """The error for a readable file that is not the expected encoder format."""
    from modules.pretrained import PRETRAINED

    entry = PRETRAINED.get(encoder)
    hint = f" The file for '{encoder}' is {entry.filename} from {entry.url}." if entry else ""
    return CheckpointError(
        f"{path}: this is {describe_kind(obj)}, not {expected} as speech encoder '{encoder}' needs.{hint}"
    )


def require_tensors(path: Path, sd: Any, *, encoder: str, where: str) -> dict[str, torch.Tensor]:
    """Check that ``sd`` is a mapping of name → tensor and return it as a dict."""
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: '{where}' is not a state dict of tensors; the file is not a valid "
                              f"'{encoder}' checkpoint")
    return dict(sd)


# --- fairseq conv_feature_layers ------------------------------------------------------------------
def parse_conv_layers(spec: Any, *, source: str = "config") -> list[tuple[int, int, int]]:
    """Parse fairseq's ``conv_feature_layers`` (e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``) without eval.

    Accepts the string form (list literals joined by ``+`` and repeated by ``* n``) or an
    already-parsed list of triples. Returns ``[(channels, kernel, stride), ...]``.
    """
    if isinstance(spec, (list, tuple)):
        value = spec
    else:
        def ev(node: ast.AST) -> Any:
            if isinstance(node, ast.Expression):
                return ev(node.body)
            if isinstance(node, (ast.List, ast.Tuple)):
                return [ev(e) for e in node.elts]
            if isinstance(node, ast.Constant) and isinstance(node.value, int):
                return node.value
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
                return ev(node.left) + ev(node.right)
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
                left, right = ev(node.left), ev(node.right)
                if isinstance(right, int) and isinstance(left, list) and 0 <= right <= 64:
                    return left * right
            raise ValueError("unsupported expression")
        try:
            value = ev(ast.parse(str(spec), mode="eval"))
        except (SyntaxError, ValueError, RecursionError):
            raise CheckpointError(f"{source}: cannot parse conv_feature_layers {spec!r}") from None
    try:
        layers = [(int(c), int(k), int(s)) for c, k, s in value]
    except (TypeError, ValueError):
        raise CheckpointError(f"{source}: conv_feature_layers {spec!r} is not a list of (dim, kernel, stride)") from None
    if not layers:
        raise CheckpointError(f"{source}: conv_feature_layers is empty")
    return layers


def conv_frames(n_samples: int, layers: list[tuple[int, int, int]]) -> int:
    """Frames after a stack of unpadded strided convs: L ← floor((L − k)/s) + 1 per layer."""
    n = n_samples
    for _, k, s in layers:
        n = (n - k) // s + 1
    return max(n, 0)


def min_samples(layers: list[tuple[int, int, int]]) -> int:
    """The shortest input that yields one frame (the receptive field; 400 for the HuBERT stack)."""
    n = 1
    for _, k, s in reversed(layers):
        n = (n - 1) * s + k
    return n


# --- writing fairseq files ----------------------------------------------------------------------
class _FairseqDictionaryWriter:
    """Written as ``fairseq.data.dictionary.Dictionary`` by :func:`save_fairseq_checkpoint`."""

    def __init__(self, symbols: list[str]) -> None:
        self.bos_word, self.unk_word, self.pad_word, self.eos_word = "<s>", "<unk>", "<pad>", "</s>"
        self.symbols = list(symbols)
        self.count = [1] * len(symbols)
        self.indices = {s: i for i, s in enumerate(symbols)}
        self.bos_index, self.pad_index, self.eos_index, self.unk_index = 0, 1, 2, 3
        self.nspecial = 4


def fairseq_dictionary(n_labels: int = 500) -> _FairseqDictionaryWriter:
    """The k-means label dictionary of HuBERT pre-training: 4 specials + ``0..n_labels-1``."""
    return _FairseqDictionaryWriter(["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(n_labels)])


class _ForeignNamePickler(pickle._Pickler):  # pure-Python pickler: lets us name a class we do not import
    _names = {_FairseqDictionaryWriter: b"fairseq.data.dictionary\nDictionary\n"}

    def save_global(self, obj: Any, name: str | None = None) -> None:
        target = self._names.get(obj) if isinstance(obj, type) else None
        if target is None:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + target)
        self.memoize(obj)


class _ForeignNamePickleModule:
    Pickler = _ForeignNamePickler


def save_fairseq_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` (atomic) where label dictionaries are pickled under fairseq's class name,
    exactly as fairseq writes them, without importing fairseq."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp, pickle_module=_ForeignNamePickleModule)
