"""Export a SoVITS model to ONNX for MoeVoiceStudio and other onnxruntime hosts (spec §1.10, §12.1).

Files, as 4.1's ``onnx_export.py -n <name>`` writes them::

    checkpoints/<name>/model.pth, config.json      (inputs; or model.svc.safetensors alone)
    checkpoints/<name>/<name>_SoVits.onnx           (the graph, opset 16)
    checkpoints/<name>.json                         (MoeVS descriptor, JSON indent 4)

Exporter: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``). It keeps every
axis of spec §12.1 dynamic, writes opset 16 as 4.1 did and does not need onnxscript; the
torch.export-based exporter needs opset ≥ 18 and took ~3× longer here (docs/compat/onnx.md).

The graph draws one random number per harmonic (the sine source's initial phases,
``RandomUniformLike`` [1, 9]) on every run, as 4.1's graph does; the snake decoder also draws its
additive source noise. :func:`pin_random_nodes` turns those draws into inputs so that a run can
be compared with PyTorch (:func:`check_export`, the tests).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modules.errors import CheckpointError, ConfigError, SvcError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL_NAME", "INPUT_NAMES", "OPSET", "ExportPaths", "build_graph", "check_export", "dummy_inputs",
    "export_graph", "export_sovits", "load_synthesizer", "max_rel_diff", "moevs_descriptor", "ort_session",
    "pin_random_nodes", "pinned_feeds", "random_draws", "resolve_paths", "run_onnx", "write_descriptor",
]

DEFAULT_MODEL_NAME = "TransformerFlow"  # 4.1's default for -n
OPSET = 16  # 4.1's opset; every op of the graph exists there
INPUT_NAMES = ("c", "f0", "mel2ph", "uv", "noise", "sid")  # + "vol" for vol_embedding models
OUTPUT_NAME = "audio"
# Trace length: long enough for the general branch of the relative attention (> window 4 + 1
# frames), short so the trace (one forward pass) is quick. Every axis stays dynamic.
DUMMY_FRAMES = 24
DUMMY_UNITS = 13
# Relative tolerance of check_export: max|onnx - torch| / max|torch|.
CHECK_TOLERANCE = 1e-4

_RANDOM_OPS = {"RandomUniform": "uniform", "RandomUniformLike": "uniform",
               "RandomNormal": "normal", "RandomNormalLike": "normal"}


# --- paths ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportPaths:
    name: str
    model: Path
    config: Path | None   # None: the model is a .svc.safetensors file carrying its config
    onnx: Path
    descriptor: Path


def resolve_paths(model_name: str | None = None, *, model_path: str | os.PathLike | None = None,
                  config_path: str | os.PathLike | None = None, output: str | os.PathLike | None = None,
                  descriptor: str | os.PathLike | None = None, root: str | os.PathLike = "checkpoints") -> ExportPaths:
    """4.1's layout from ``model_name`` (``<root>/<name>/model.pth`` …); explicit paths override it.

    Without ``model_name`` the name comes from ``output`` (``<name>_SoVits.onnx`` → ``<name>``;
    MoeVS finds the graph as ``<Folder>/<Folder>_SoVits.onnx``), else it is 4.1's default
    ``TransformerFlow``. Without ``descriptor`` the MoeVS file is ``<root>/<name>.json``, or
    ``<name>.json`` next to ``output`` when an output path is given. Missing inputs raise with
    the expected location. The model may be a ``.svc.safetensors`` model file (``--model_path``,
    or ``<root>/<name>/model.svc.safetensors`` when there is no ``model.pth``); it needs no config.
    """
    from modelfile import FILE_SUFFIX, is_model_file

    if model_name:
        name = model_name
    elif output:
        stem = Path(output).name
        name = stem[: -len("_SoVits.onnx")] if stem.endswith("_SoVits.onnx") else Path(stem).stem
    else:
        name = DEFAULT_MODEL_NAME
    if not name.strip() or any(sep in name for sep in ("/", "\\")) or name in (".", ".."):
        raise SvcError(f"model name {name!r} must be a plain folder name (no path separators); "
                       "use --model_path/--config_path/--output for files elsewhere")
    folder = Path(root) / name
    model = Path(model_path) if model_path else folder / "model.pth"
    if not model_path and not model.is_file() and (folder / f"model{FILE_SUFFIX}").is_file():
        model = folder / f"model{FILE_SUFFIX}"
    config = Path(config_path) if config_path else folder / "config.json"
    if model.is_file() and is_model_file(model):
        if config_path:
            raise SvcError(f"{model} is a model file that carries its own config; drop --config_path {config_path}")
        config = None
    onnx_path = Path(output) if output else folder / f"{name}_SoVits.onnx"
    if descriptor:
        desc = Path(descriptor)
    elif output:
        desc = onnx_path.with_name(f"{name}.json")
    else:
        desc = Path(root) / f"{name}.json"
    layout = (f"put the model as {folder / 'model.pth'} and its config as {folder / 'config.json'} "
              f"(4.1's layout for -n {name}), or pass --model_path/--config_path")
    if not model.is_file():
        raise CheckpointError(f"model file {model} not found; {layout}")
    if config is not None and not config.is_file():
        raise ConfigError(f"config file {config} not found; {layout}")
    if onnx_path.suffix.lower() != ".onnx":
        raise SvcError(f"output {onnx_path} must end in .onnx")
    if desc.resolve() in (model.resolve(), (config or model).resolve()):
        raise SvcError(f"the descriptor path {desc} would overwrite an input; pass --descriptor")
    return ExportPaths(name=name, model=model, config=config, onnx=onnx_path, descriptor=desc)


# --- model ------------------------------------------------------------------------------------------
def load_synthesizer(model_path: str | os.PathLike, config_path: str | os.PathLike | None):
    """Build the synthesizer from ``config.json`` and load ``model.pth`` → ``(net, hps)``; with
    ``config_path`` None, from a ``.svc.safetensors`` model file (no pickle read).

    The net is float32 (half "release" files are widened), in eval mode, without ``enc_q``,
    with weight norm folded into plain weights (the graph then holds each weight once instead
    of recomputing g·v/‖v‖ on every run). A speaker table of another size is an error here.
    """
    from models import SynthesizerTrn
    from modules.checkpoint import load_checkpoint
    from modules.hparams import get_hparams_from_file

    if config_path is None:
        from modelfile import load_model_file

        bundle = load_model_file(model_path, load_cluster=False, load_diffusion=False)
        net = bundle.build_synthesizer().float()
        return net.for_inference(conv2d=False), bundle.config
    hps = get_hparams_from_file(config_path)
    for section in ("data", "train", "model"):
        if section not in hps:
            raise ConfigError(f"{config_path}: no '{section}' section; this is not a so-vits-svc config.json")
    try:
        net = SynthesizerTrn(int(hps.data.filter_length) // 2 + 1,
                             int(hps.train.segment_size) // int(hps.data.hop_length), **hps.model)
    except (TypeError, KeyError, AttributeError) as e:
        raise ConfigError(f"{config_path}: the model section does not fit SynthesizerTrn ({e})") from None
    load_checkpoint(model_path, net, skip_optimizer=True, allow_missing=("enc_q",), reinit_on_mismatch=())
    net.float()
    net = net.for_inference(conv2d=False)  # eval, no grad, no enc_q, folded weight norm (a new object)
    return net, hps


def speaker_names(hps) -> list[str]:
    """The config's speaker names in file order (``spk`` map)."""
    spk = hps.get("spk") or {}
    return list(spk)


def speaker_rows(hps, n_speakers: int) -> list[int]:
    """``emb_g`` row of each speaker of the ``spk`` map, in file order (the mix columns)."""
    rows = []
    for name, sid in (hps.get("spk") or {}).items():
        if isinstance(sid, bool) or not isinstance(sid, int) or not 0 <= sid < n_speakers:
            raise ConfigError(f"config 'spk' maps {name!r} to {sid!r}, but the model has speaker ids "
                              f"0..{n_speakers - 1}; fix the 'spk' map of config.json")
        rows.append(sid)
    return rows


def build_graph(net, hps, *, speaker_mix: bool | None = None):
    """Wrap a loaded net as :class:`onnxexport.sovits.SovitsOnnx`.

    ``speaker_mix`` None → 4.1's rule: the mix graph when the config lists ≥ 2 speakers.
    """
    from onnxexport.sovits import SovitsOnnx

    rows = speaker_rows(hps, int(net.n_speakers))
    if speaker_mix is None:
        speaker_mix = len(rows) >= 2
    if speaker_mix and not rows:
        raise ConfigError("a speaker-mix graph needs the config's 'spk' map to list the speakers")
    return SovitsOnnx(net, speaker_rows=rows if speaker_mix else None).eval()


def input_names(graph) -> list[str]:
    return list(INPUT_NAMES) + (["vol"] if graph.vol_embedding else [])


def dynamic_axes(graph) -> dict[str, dict[int, str]]:
    """Spec §12.1's dynamic axes (c [0, 1]; f0, mel2ph, uv, vol [1]; noise [2]; mix sid [0])."""
    axes = {"c": {0: "batch", 1: "units"}, "f0": {1: "frames"}, "mel2ph": {1: "frames"}, "uv": {1: "frames"},
            "noise": {2: "frames"}, OUTPUT_NAME: {0: "batch", 2: "samples"}}
    if graph.speaker_mix:
        axes["sid"] = {0: "frames"}
    if graph.vol_embedding:
        axes["vol"] = {1: "frames"}
    return axes


def dummy_inputs(graph, frames: int = DUMMY_FRAMES, units: int = DUMMY_UNITS, *, seed: int = 0,
                 noise_scale: float = 0.4) -> dict[str, torch.Tensor]:
    """Inputs of the graph's shapes and dtypes: ``units`` unit rows stretched to ``frames`` frames,
    a voiced glide with an unvoiced stretch, an even mix of all speakers (mix graph) or id 0."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(frames, dtype=torch.float32)
    uv = torch.ones(1, frames)
    uv[:, frames // 3: frames // 3 + max(1, frames // 8)] = 0
    inputs = {
        "c": torch.randn(1, units, graph.ssl_dim, generator=gen),
        "f0": (180.0 + 60.0 * torch.sin(t / 7.0))[None],
        "mel2ph": (torch.arange(frames) * units // frames + 1)[None],  # 1-based
        "uv": uv,
        "noise": torch.randn(1, graph.inter_channels, frames, generator=gen) * noise_scale,
        "sid": (torch.full((frames, graph.n_mix), 1.0 / graph.n_mix) if graph.speaker_mix
                else torch.zeros(1, dtype=torch.long)),
    }
    if graph.vol_embedding:
        inputs["vol"] = 0.1 + 0.05 * torch.rand(1, frames, generator=gen)
    return inputs


# --- export ------------------------------------------------------------------------------------------
def export_graph(graph, path: str | os.PathLike) -> Path:
    """Trace ``graph`` and write it to ``path`` (atomically) with spec §12.1's names and axes."""
    from modules.io_utils import atomic_path

    path = Path(path)
    inputs = dummy_inputs(graph)
    names = input_names(graph)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        # Expected with this exporter: its deprecation notice, and tracer notes about the shape
        # arithmetic of the relative attention (traced generically for every length).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*[Cc]onstant folding.*")
        torch.onnx.export(
            graph, tuple(inputs[n] for n in names), str(tmp), input_names=names, output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes(graph), opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def moevs_descriptor(name: str, hps, graph) -> dict[str, Any]:
    """The MoeVoiceStudio model descriptor 4.1 writes next to the graph (spec §12.1)."""
    gin = int(graph.gin_channels)
    layer = "layer-12" if gin == 768 else "layer-9"  # 4.1's rule (by gin_channels)
    return {
        "Folder": name,
        "Name": name,
        "Type": "SoVits",
        "Rate": hps.data.sampling_rate,
        "Hop": hps.data.hop_length,
        "Hubert": f"vec-{gin}-{layer}",
        "SoVits4": True,
        "SoVits3": False,
        "CharaMix": bool(graph.speaker_mix),
        "Volume": bool(graph.vol_embedding),
        "HiddenSize": gin,
        "Characters": speaker_names(hps),
        "Cluster": "",
    }


def write_descriptor(path: str | os.PathLike, descriptor: Mapping[str, Any]) -> Path:
    from modules.io_utils import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps(descriptor, indent=4))  # 4.1: json.dump(indent=4)
    return path


# --- running the graph ------------------------------------------------------------------------------
def pin_random_nodes(model) -> list[tuple[str, str]]:
    """Replace the graph's random-number nodes by inputs, in place → ``[(input name, kind)]``.

    ``kind`` is "uniform" or "normal"; inputs are named ``random_<i>`` in node order, and carry
    exactly the tensor the node would have drawn (same shape). Only for checking a graph.
    """
    import onnx
    from onnx import helper

    pinned = []
    graph = model.graph
    for node in list(graph.node):
        kind = _RANDOM_OPS.get(node.op_type)
        if kind is None:
            continue
        name = f"random_{len(pinned)}"
        graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        graph.node.insert(list(graph.node).index(node), helper.make_node("Identity", [name], [node.output[0]]))
        graph.node.remove(node)
        pinned.append((name, kind))
    return pinned


def random_draws(graph, frames: int, *, generator: torch.Generator) -> list[tuple[str, torch.Tensor]]:
    """The draws ``graph``'s forward makes, in call order, taken from ``generator``: the sine
    source's initial phases ``rand [1, dim]``, then for decoders with uv gating (snake) the
    source noise ``randn [1, L, dim]`` and the unused noise branch ``randn [1, L, 1]``. A
    generator seeded like the global one gives the global generator's numbers."""
    sine = graph.dec.m_source.l_sin_gen
    length = frames * int(graph.dec.upp)
    gen = generator
    draws = [("uniform", torch.rand(1, sine.dim, generator=gen))]
    if graph.dec.uv_noise:
        draws.append(("normal", torch.randn(1, length, sine.dim, generator=gen)))
        draws.append(("normal", torch.randn(1, length, 1, generator=gen)))
    return draws


def ort_session(model, threads: int | None = None):
    """An onnxruntime CPU session for a file path or an ``onnx.ModelProto``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    source = str(model) if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def run_onnx(model, feeds: Mapping[str, Any], *, threads: int | None = None) -> np.ndarray:
    """Run a graph (path or ``onnx.ModelProto``) in onnxruntime on CPU → ``audio`` as numpy."""
    sess = ort_session(model, threads)
    wanted = {i.name for i in sess.get_inputs()}
    arrays = {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in feeds.items() if k in wanted}
    return sess.run([OUTPUT_NAME], arrays)[0]


def max_rel_diff(a, b) -> float:
    """``max|a − b| / max|b|`` (b is the reference)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def check_export(onnx_path: str | os.PathLike, graph, inputs: Mapping[str, torch.Tensor] | None = None, *,
                 seed: int = 52468, threads: int | None = None) -> float:
    """Run the exported file in onnxruntime with its random nodes fed PyTorch's draws and return
    ``max|onnx − torch| / max|torch|`` against ``graph`` run in PyTorch on the same inputs."""
    import onnx

    inputs = dict(inputs) if inputs is not None else dummy_inputs(graph)
    names = input_names(graph)
    frames = int(inputs["f0"].shape[1])
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reference = graph(*(inputs[n] for n in names)).numpy()
    model = onnx.load(str(onnx_path))
    pinned = pin_random_nodes(model)
    draws = random_draws(graph, frames, generator=torch.Generator().manual_seed(seed))
    out = run_onnx(model, {**inputs, **pinned_feeds(pinned, draws)}, threads=threads)
    return max_rel_diff(out, reference)


def pinned_feeds(pinned: list[tuple[str, str]], draws: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pair the inputs of :func:`pin_random_nodes` with PyTorch's draws (:func:`random_draws`), in
    order. Draws the graph does not use (the snake's unused noise branch is pruned) come last."""
    if len(pinned) > len(draws):
        raise RuntimeError(f"the graph has {len(pinned)} random nodes, PyTorch made {len(draws)} draws")
    feeds = {}
    for (name, kind), (draw_kind, value) in zip(pinned, draws):
        if kind != draw_kind:
            raise RuntimeError(f"random node {name} draws {kind} numbers, PyTorch drew {draw_kind} ones")
        feeds[name] = value
    return feeds


# --- the whole job -------------------------------------------------------------------------------------
def export_sovits(paths: ExportPaths, *, speaker_mix: bool | None = None, check: bool = True) -> tuple[Path, Path]:
    """Load, export, write the descriptor and (``check``) verify in onnxruntime → (onnx, descriptor)."""
    net, hps = load_synthesizer(paths.model, paths.config)
    graph = build_graph(net, hps, speaker_mix=speaker_mix)
    kind = "speaker-mix" if graph.speaker_mix else "speaker-id"
    log.info("exporting %s (%s graph, %d speakers%s)", paths.model, kind,
             len(speaker_names(hps)), ", volume input" if graph.vol_embedding else "")
    export_graph(graph, paths.onnx)
    write_descriptor(paths.descriptor, moevs_descriptor(paths.name, hps, graph))
    log.info("wrote %s", paths.descriptor)
    if check:
        diff = check_export(paths.onnx, graph, dummy_inputs(graph, frames=DUMMY_FRAMES + 7, units=DUMMY_UNITS + 3))
        if not diff <= CHECK_TOLERANCE:
            raise SvcError(f"{paths.onnx} was written, but onnxruntime's output differs from PyTorch's by {diff:.2e} "
                           f"of the peak (tolerance {CHECK_TOLERANCE:.0e}); do not use it, and please report this "
                           "with your config.json")
        log.info("checked in onnxruntime: max difference from PyTorch %.1e of the peak", diff)
    return paths.onnx, paths.descriptor
