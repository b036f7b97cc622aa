"""ONNX speech encoders (MoeSS exports: ``vec-256-layer-9.onnx`` ... ``hubert-soft.onnx``) via onnxruntime.

The graph takes 16 kHz audio as its first input, ``[1, 1, N16]`` float32 (4.1's layout; graphs
declaring rank 2 ``[1, N16]`` or float16 input are fed accordingly), and its first output is
``[1, N, C]`` (transposed to ``[1, C, N]``). Layer choice and projection are baked into the graph.

Fixes over 4.1 (spec §13.27): the encoder's ``model`` accepts ``.to(device/dtype)`` (4.1's ``Svc``
called it on the raw session and crashed); any ``cuda``/``cuda:N`` device selects the CUDA provider
for that GPU when onnxruntime has it (4.1 crashed or silently used the CPU); the output is returned
on the requested device in the requested dtype.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modules.checkpoint import RANDOM_WEIGHTS_KEY, warn_random_weights
from modules.errors import AudioError, CheckpointError
from modules.io_utils import atomic_path

from .base import SpeechEncoder

log = logging.getLogger(__name__)

MIN_SAMPLES = 400  # receptive field of the HuBERT conv stack inside every published graph
_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxModel:
    """The onnxruntime session, with the few ``nn.Module`` methods callers use on ``encoder.model``."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input = session.get_inputs()[0]
        self.output = session.get_outputs()[0]

    def to(self, *args: Any, **kwargs: Any) -> "OnnxModel":
        return self  # placement is per call: the output is moved to the encoder's device / dtype

    def eval(self) -> "OnnxModel":
        return self

    def half(self) -> "OnnxModel":
        return self

    def float(self) -> "OnnxModel":
        return self

    def run(self, wav: np.ndarray) -> np.ndarray:
        rank = len(self.input.shape) if self.input.shape is not None else 3
        feed = wav.reshape((1,) * max(rank - 1, 0) + (-1,)).astype(_ORT_FLOAT.get(self.input.type, np.float32))
        return self.session.run([self.output.name], {self.input.name: feed})[0]


class OnnxEncoder(SpeechEncoder):
    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.numel() < MIN_SAMPLES:
            wav = torch.nn.functional.pad(wav, (0, MIN_SAMPLES - wav.numel()))
        try:
            out = self.model.run(wav.detach().float().cpu().numpy())
        except Exception as e:  # onnxruntime raises its own exception types
            raise AudioError(f"{self.path}: ONNX speech encoder '{self.name}' failed on input of "
                             f"{wav.numel()} samples: {str(e).splitlines()[0]}") from None
        out = torch.from_numpy(np.ascontiguousarray(out)).float()
        if out.dim() == 2:
            out = out[None]
        if out.dim() != 3 or out.shape[0] != 1:
            raise CheckpointError(f"{self.path}: ONNX graph output has shape {tuple(out.shape)}; expected [1, N, C]")
        return out.transpose(1, 2).to(self.device, self.dtype)


def _providers(device: torch.device) -> list[Any]:
    import onnxruntime as ort

    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        log.warning("onnxruntime has no CUDA support in this installation; the ONNX speech encoder runs on the CPU "
                    "(install onnxruntime-gpu to use %s)", device)
    return ["CPUExecutionProvider"]


def load_onnx(spec: Any, path: Path, device: torch.device, dtype: torch.dtype) -> SpeechEncoder:
    import onnxruntime as ort

    if zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: this is a PyTorch checkpoint, not an ONNX graph, which '{spec.name}' needs "
                              f"(the file is {spec.filename} from {spec.url}); for PyTorch encoders use the name "
                              "without '-onnx'")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())  # follow the process's torch thread setting
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=_providers(device))
    except Exception as e:  # InvalidProtobuf, Fail, ...
        raise CheckpointError(f"{path}: not a valid ONNX graph for speech encoder '{spec.name}': "
                              f"{str(e).splitlines()[0]}. Download it again from {spec.url}") from None
    if session.get_modelmeta().custom_metadata_map.get(RANDOM_WEIGHTS_KEY) == "true":
        warn_random_weights(path, f"speech encoder '{spec.name}' (ONNX graph)")
    model = OnnxModel(session)
    if model.input.type not in _ORT_FLOAT:
        raise CheckpointError(f"{path}: ONNX graph input '{model.input.name}' is {model.input.type}; expected float audio")
    shape = model.output.shape or []
    dim = shape[-1] if shape and isinstance(shape[-1], int) else None
    enc = OnnxEncoder(name=spec.name, dim=dim or spec.dim, model=model, device=device, dtype=dtype, path=path)
    if dim is None:  # width not declared in the graph: measure it once
        enc.dim = int(enc.encoder(torch.zeros(16000)).shape[1])
    return enc


# --- random graphs (tests, benchmarks) -----------------------------------------------------------
class _Export(torch.nn.Module):
    """``[1, 1, N16] → [1, N, C]`` around a units model (``[1, N16] → [1, C, N]``)."""

    def __init__(self, units: torch.nn.Module) -> None:
        super().__init__()
        self.units = units

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        return self.units(source[0]).transpose(1, 2)


def write_onnx(spec: Any, path: Path, *, size: str, seed: int) -> None:
    """Export a random-weight ContentVec / HuBERT-Soft with the layer and projection of ``spec`` as ONNX."""
    import warnings

    from .registry import ENCODERS

    if spec.name.startswith("hubertsoft"):
        base = ENCODERS["hubertsoft"]
    else:
        base = dataclasses.replace(ENCODERS["vec256l9"], output_layer=spec.extra["layer"], final_proj=spec.extra["proj"])
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / base.filename
        base.resolve(base.writer)(base, ckpt, size=size, seed=seed)
        units = base.resolve(base.loader)(base, ckpt, torch.device("cpu"), torch.float32).model
    wrapper = _Export(units).eval()
    with atomic_path(path) as tmp_path, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.zeros(1, 1, 16000),), str(tmp_path), input_names=["source"],
                          output_names=["embed"], dynamic_axes={"source": {2: "samples"}, "embed": {1: "frames"}},
                          opset_version=17, dynamo=False)
        import onnx

        graph = onnx.load(str(tmp_path))
        onnx.helper.set_model_props(graph, {RANDOM_WEIGHTS_KEY: "true"})  # the mark travels with the file
        onnx.save(graph, str(tmp_path))
