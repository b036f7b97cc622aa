"""Whisper PPG encoders (OpenAI checkpoints ``{"dims": ..., "model_state_dict": ...}``).

The audio encoder is transformers' :class:`WhisperEncoder` with OpenAI's keys renamed (conv1/conv2
+ GELU, fixed positional table, pre-LN blocks with a bias-less key projection, final ``ln_post``).
Only the encoder half of the file is read (the file is memory-mapped; the decoder is never loaded).

Per 30-s window (480000 samples at 16 kHz)::

    wav ──zero-pad to 480000──► log-mel [80, 3000] ──encoder──► [1500, C] ──keep N16 // 320──► [1, C, N]

4.1 silently truncated longer inputs (spec §13.29). Here the input is cut into consecutive
30-s windows, each padded and encoded exactly as 4.1 encodes a short input, and the outputs are
concatenated, so N = N16 // 320 for every length and inputs up to 30 s give 4.1's exact result.
"""

from __future__ import annotations

import logging
import math
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modules.checkpoint import atomic_torch_save, mark_random_weights
from modules.errors import CheckpointError
from modules.mel_processing import whisper_log_mel_spectrogram

from .base import HOP, SpeechEncoder
from .build import assign_weights, empty
from .files import load_encoder_file, wrong_kind

log = logging.getLogger(__name__)

CHUNK_SAMPLES = 480000         # 30 s at 16 kHz: Whisper's fixed input window
WINDOWS_PER_BATCH = 4          # windows encoded together for long inputs (bounds memory)
_DIM_KEYS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")

WHISPER_DIMS: dict[str, dict[str, int]] = {
    "medium": dict(n_mels=80, n_vocab=51865, n_audio_ctx=1500, n_audio_state=1024, n_audio_head=16, n_audio_layer=24,
                   n_text_ctx=448, n_text_state=1024, n_text_head=16, n_text_layer=24),
    "large-v2": dict(n_mels=80, n_vocab=51865, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
                     n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=32),
    "tiny": dict(n_mels=80, n_vocab=512, n_audio_ctx=1500, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                 n_text_ctx=448, n_text_state=32, n_text_head=4, n_text_layer=1),
}


class WhisperPPGModel(nn.Module):
    """``forward(mel [B, n_mels, 2·n_audio_ctx]) → [B, n_audio_ctx, C]`` (OpenAI's ``AudioEncoder``)."""

    def __init__(self, encoder: nn.Module, n_mels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.n_mels = n_mels

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encoder(mel).last_hidden_state


class WhisperPPG(SpeechEncoder):
    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        n_frames = wav.numel() // HOP
        n_windows = max(1, math.ceil(wav.numel() / CHUNK_SAMPLES))
        if n_windows > 1:
            log.debug("%s: %.1f s input encoded as %d windows of 30 s", self.name, wav.numel() / 16000, n_windows)
        padded = nn.functional.pad(wav.float(), (0, n_windows * CHUNK_SAMPLES - wav.numel()))
        windows = padded.view(n_windows, CHUNK_SAMPLES)
        outs = []
        for start in range(0, n_windows, WINDOWS_PER_BATCH):
            mel = whisper_log_mel_spectrogram(windows[start:start + WINDOWS_PER_BATCH], n_mels=self.model.n_mels)
            outs.append(self.model(mel.to(self.dtype)))           # [b, 1500, C]
        ppg = torch.cat(outs, 0).reshape(-1, self.dim)[:n_frames]  # windows back to back
        return ppg.T[None]                                        # [1, C, N]


def _check_dims(ckpt: Any, path: Path, name: str) -> dict[str, int]:
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise wrong_kind(path, ckpt, encoder=name, expected="an OpenAI Whisper checkpoint ({'dims', 'model_state_dict'})")
    dims = ckpt["dims"]
    if not isinstance(dims, dict) or any(not isinstance(dims.get(k), int) for k in _DIM_KEYS):
        raise CheckpointError(f"{path}: Whisper 'dims' must give integers for {', '.join(_DIM_KEYS)}; got {dims!r}")
    return dims


def _openai_to_hf(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if not k.startswith("encoder."):
            continue
        k = k[len("encoder."):]
        if k == "positional_embedding":
            out["embed_positions.weight"] = v
            continue
        k = (k.replace("blocks.", "layers.").replace(".attn.query.", ".self_attn.q_proj.")
             .replace(".attn.key.", ".self_attn.k_proj.").replace(".attn.value.", ".self_attn.v_proj.")
             .replace(".attn.out.", ".self_attn.out_proj.").replace(".attn_ln.", ".self_attn_layer_norm.")
             .replace(".mlp.0.", ".fc1.").replace(".mlp.2.", ".fc2.").replace(".mlp_ln.", ".final_layer_norm.")
             .replace("ln_post.", "layer_norm."))
        out[k] = v
    if not out:
        raise CheckpointError(f"{path}: Whisper checkpoint has no 'encoder.*' weights")
    return out


def load_whisper(spec: Any, path: Path, device: torch.device, dtype: torch.dtype) -> SpeechEncoder:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    ckpt = load_encoder_file(path, what=f"speech encoder '{spec.name}' (Whisper checkpoint)",
                             mmap=zipfile.is_zipfile(path))
    dims = _check_dims(ckpt, path, spec.name)
    sd = ckpt["model_state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: Whisper 'model_state_dict' is not a state dict of tensors")
    s, h = dims["n_audio_state"], dims["n_audio_head"]
    cfg = WhisperConfig(d_model=s, encoder_layers=dims["n_audio_layer"], encoder_attention_heads=h,
                        encoder_ffn_dim=4 * s, num_mel_bins=dims["n_mels"], max_source_positions=dims["n_audio_ctx"],
                        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
                        activation_function="gelu", scale_embedding=False)
    enc = empty(lambda: WhisperEncoder(cfg))
    mapped = {k: v.float() for k, v in _openai_to_hf(sd, path).items()}  # fp16 file → float32 model (as 4.1)
    del ckpt, sd
    assign_weights(enc, mapped, source=str(path))
    model = WhisperPPGModel(enc, dims["n_mels"]).to(device=device, dtype=dtype).eval()
    return WhisperPPG(name=spec.name, dim=s, model=model, device=device, dtype=dtype, path=path)


def _sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed positional table ``[length, channels]`` (sin half, cos half)."""
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def write_whisper(spec: Any, path: Path, *, size: str, seed: int) -> None:
    """``{"dims", "model_state_dict"}`` with every tensor float16, as OpenAI publishes medium.pt / large-v2.pt."""
    dims = dict(WHISPER_DIMS[spec.extra["full"] if size == "full" else "tiny"])
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def add(name: str, *shape: int) -> None:
        t = torch.empty(shape)
        if len(shape) >= 2:
            t.normal_(0.0, 1.0 / math.sqrt(math.prod(shape[1:])), generator=gen)
        elif name.endswith("ln.weight") or name.endswith("_ln.weight"):
            t.normal_(0.0, 0.02, generator=gen).add_(1.0)
        else:
            t.normal_(0.0, 0.02, generator=gen)
        sd[name] = t.half()

    def block(p: str, s: int, cross: bool) -> None:
        for att in ("attn", "cross_attn") if cross else ("attn",):
            add(f"{p}.{att}.query.weight", s, s); add(f"{p}.{att}.query.bias", s)
            add(f"{p}.{att}.key.weight", s, s)
            add(f"{p}.{att}.value.weight", s, s); add(f"{p}.{att}.value.bias", s)
            add(f"{p}.{att}.out.weight", s, s); add(f"{p}.{att}.out.bias", s)
            add(f"{p}.{att}_ln.weight", s); add(f"{p}.{att}_ln.bias", s)
        add(f"{p}.mlp.0.weight", 4 * s, s); add(f"{p}.mlp.0.bias", 4 * s)
        add(f"{p}.mlp.2.weight", s, 4 * s); add(f"{p}.mlp.2.bias", s)
        add(f"{p}.mlp_ln.weight", s); add(f"{p}.mlp_ln.bias", s)

    s = dims["n_audio_state"]
    sd["encoder.positional_embedding"] = _sinusoids(dims["n_audio_ctx"], s).half()
    add("encoder.conv1.weight", s, dims["n_mels"], 3); add("encoder.conv1.bias", s)
    add("encoder.conv2.weight", s, s, 3); add("encoder.conv2.bias", s)
    for i in range(dims["n_audio_layer"]):
        block(f"encoder.blocks.{i}", s, cross=False)
    add("encoder.ln_post.weight", s); add("encoder.ln_post.bias", s)
    t = dims["n_text_state"]
    add("decoder.positional_embedding", dims["n_text_ctx"], t)
    add("decoder.token_embedding.weight", dims["n_vocab"], t)
    for i in range(dims["n_text_layer"]):
        block(f"decoder.blocks.{i}", t, cross=True)
    add("decoder.ln.weight", t); add("decoder.ln.bias", t)
    atomic_torch_save(mark_random_weights({"dims": dims, "model_state_dict": sd}), path)
