"""The one table of speech encoders (spec §4.2): name → loader, weight file, rate, hop, dimension.

Scripts, configs (``ssl_dim`` / ``gin_channels`` via :func:`encoder_dim`) and the web UI read
this table; nothing else branches on encoder names. Loaders and random-checkpoint writers are
named as ``"module:function"`` and imported on first use, so importing :mod:`vencoder` is cheap.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from modules.errors import SvcError
from modules.pretrained import PRETRAINED, expected_path

from .base import HOP, SAMPLE_RATE


@dataclass(frozen=True)
class EncoderSpec:
    """One speech encoder of 4.1.

    ``dim`` is the output width of the published model (what a config's ``ssl_dim`` must say);
    a loaded encoder reports the width of the file it actually read as ``.dim``.
    ``output_layer`` is the 1-based transformer layer taken (None: the model's final output) and
    ``final_proj`` says whether the checkpoint's projection is applied after it.
    """

    name: str
    dim: int
    pretrained: str                 # key in modules.pretrained.PRETRAINED
    family: str                     # which loader family reads the file
    loader: str                     # "module:function" (spec, path, device, dtype) -> SpeechEncoder
    writer: str                     # "module:function" (spec, path, size=, seed=) -> None
    description: str
    output_layer: int | None = None
    final_proj: bool = False
    framing: str = "conv"           # frame-count rule, see n_frames()
    sample_rate: int = SAMPLE_RATE  # Hz of the input audio
    hop: int = HOP                  # input samples per output frame
    extra: dict = field(default_factory=dict)

    @property
    def filename(self) -> str:
        """File name under ``pretrain/`` that 4.1 opens."""
        return PRETRAINED[self.pretrained].filename

    @property
    def url(self) -> str:
        return PRETRAINED[self.pretrained].url

    @property
    def expected_path(self) -> Path:
        return expected_path(self.pretrained)

    def n_frames(self, n_samples: int) -> int:
        """Unit frames for ``n_samples`` of 16 kHz input with the published architecture (spec §4.2).

        ``conv``: floor((N16 − 400)/320) + 1, inputs under 400 samples padded to one frame;
        ``soft`` (40 zeros padded on each side first): max(1, floor(N16/320)); ``whisper``: floor(N16/320).
        """
        if self.framing == "whisper":
            return n_samples // self.hop
        if self.framing == "soft":
            return max(1, n_samples // self.hop)
        return (max(n_samples, 400) - 400) // self.hop + 1

    def resolve(self, ref: str) -> Callable[..., Any]:
        module, func = ref.split(":")
        return getattr(importlib.import_module(module), func)


def _spec(name: str, dim: int, family: str, description: str, **kw: Any) -> EncoderSpec:
    loader, writer = _FAMILIES[family]
    return EncoderSpec(name=name, dim=dim, pretrained=kw.pop("pretrained", name), family=family,
                       loader=loader, writer=writer, description=description, **kw)


_FAMILIES = {
    "fairseq-hubert": ("vencoder.hubert:load_fairseq_hubert", "vencoder.hubert:write_fairseq_hubert"),
    "hubert-soft": ("vencoder.hubert:load_hubert_soft", "vencoder.hubert:write_hubert_soft"),
    "whisper": ("vencoder.whisper:load_whisper", "vencoder.whisper:write_whisper"),
    "wavlm": ("vencoder.wavlm:load_wavlm", "vencoder.wavlm:write_wavlm"),
    "dphubert": ("vencoder.dphubert:load_dphubert", "vencoder.dphubert:write_dphubert"),
    "onnx": ("vencoder.onnx:load_onnx", "vencoder.onnx:write_onnx"),
}

ENCODERS: dict[str, EncoderSpec] = {s.name: s for s in [
    _spec("vec768l12", 768, "fairseq-hubert", "ContentVec, output of transformer layer 12",
          output_layer=12, extra={"full": "contentvec"}),
    _spec("vec256l9", 256, "fairseq-hubert", "ContentVec, layer 9 through final_proj",
          output_layer=9, final_proj=True, extra={"full": "contentvec"}),
    _spec("vec256l9-onnx", 256, "onnx", "ContentVec layer 9 + projection, ONNX graph",
          extra={"layer": 9, "proj": True}),
    _spec("vec256l12-onnx", 256, "onnx", "ContentVec layer 12 + projection, ONNX graph",
          extra={"layer": 12, "proj": True}),
    _spec("vec768l9-onnx", 768, "onnx", "ContentVec layer 9, ONNX graph", extra={"layer": 9, "proj": False}),
    _spec("vec768l12-onnx", 768, "onnx", "ContentVec layer 12, ONNX graph", extra={"layer": 12, "proj": False}),
    _spec("hubertsoft-onnx", 256, "onnx", "HuBERT-Soft, ONNX graph", extra={"layer": 12, "proj": True},
          framing="soft"),
    _spec("hubertsoft", 256, "hubert-soft", "HuBERT-Soft (bshall), 12 layers + proj", framing="soft"),
    _spec("whisper-ppg", 1024, "whisper", "OpenAI Whisper medium audio encoder", extra={"full": "medium"},
          framing="whisper"),
    _spec("whisper-ppg-large", 1280, "whisper", "OpenAI Whisper large-v2 audio encoder", extra={"full": "large-v2"},
          framing="whisper"),
    _spec("cnhubertlarge", 1024, "fairseq-hubert", "Chinese HuBERT large, final output",
          extra={"full": "hubert-large"}),
    _spec("dphubert", 768, "dphubert", "DPHuBERT (pruned HuBERT), final output"),
    _spec("wavlmbase+", 768, "wavlm", "Microsoft WavLM Base+, final output"),
]}


def list_encoders() -> list[str]:
    """Every 4.1 speech-encoder name, in table order."""
    return list(ENCODERS)


def get_spec(name: str) -> EncoderSpec:
    """The table entry for ``name``; unknown names raise :class:`SvcError` listing the valid ones."""
    try:
        return ENCODERS[name]
    except (KeyError, TypeError):
        raise SvcError(f"unknown speech encoder {name!r}; valid names: {', '.join(ENCODERS)}") from None


def encoder_dim(name: str) -> int:
    """Output width C of encoder ``name`` (the config's ``ssl_dim`` / ``gin_channels``)."""
    return get_spec(name).dim


def make_random_checkpoint(name: str, path: str | os.PathLike, *, size: str = "tiny", seed: int = 0,
                           **options: Any) -> Path:
    """Write a random-weight checkpoint for encoder ``name`` at ``path`` in its published format.

    ``size="tiny"`` gives small widths and depths (fast tests); ``size="full"`` the real
    architecture (benchmarks, demos without the real weights). ``options`` go to the family's
    writer (fairseq ContentVec/HuBERT: ``residual_scale``). The file carries the random-weight
    marker (``modules.checkpoint.RANDOM_WEIGHTS_KEY``). Returns ``path``.
    """
    spec = get_spec(name)
    if size not in ("tiny", "full"):
        raise SvcError(f"size must be 'tiny' or 'full', got {size!r}")
    path = Path(path)
    try:
        spec.resolve(spec.writer)(spec, path, size=size, seed=int(seed), **options)
    except TypeError as e:
        if options and "unexpected keyword argument" in str(e):
            raise SvcError(f"random checkpoint of '{name}': {e}") from None
        raise
    return path
