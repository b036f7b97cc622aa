"""DPHuBERT (``DPHuBERT-sp0.75.pth``: ``{"config": wav2vec2_model kwargs, "state_dict": ...}``).

A structurally pruned HuBERT in torchaudio's wav2vec2 layout: every layer may have its own head
count and FFN width, and a layer may lack attention or FFN entirely (its LayerNorms still apply).
No library model has per-layer widths, so the network is written here, state-dict compatible
with the published file.

Computation (``forward(wav [1, N16]) → [1, C, N]``)::

    conv stack (GroupNorm on conv 0 or LayerNorm on every conv; GELU) × dummy_weight
    → LayerNorm → Linear → x + pos_conv(x) → [LayerNorm] → layers → [LayerNorm]

The transformer's LayerNorm runs before the layers when ``encoder_layer_norm_first`` is false (the
torchaudio builder negates the flag), after them otherwise. Post-LN layer: x = LN(x + attn(x));
x = LN_final(x + ffn(x)). Pre-LN layer: x += attn(LN(x)); x += ffn(LN_final(x)).

4.1 never calls ``eval()`` on this model, so its output is random (dropout, layer drop; spec
§13.28). Here the model is in eval mode and deterministic.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modules.checkpoint import atomic_torch_save, mark_random_weights
from modules.errors import CheckpointError

from .base import ModuleEncoder, SpeechEncoder
from .build import assign_weights, empty
from .files import min_samples, load_encoder_file, require_tensors, wrong_kind
from .random_weights import fill_random, weight_norm_g


class _TransposedLayerNorm(nn.LayerNorm):
    """LayerNorm over channels of a ``[B, C, T]`` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(-2, -1)).transpose(-2, -1)


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bias: bool, norm: nn.Module | None) -> None:
        super().__init__()
        self.layer_norm = norm  # registered first: the published state dict lists it before the conv
        self.conv = nn.Conv1d(cin, cout, kernel, stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return nn.functional.gelu(x)


class FeatureExtractor(nn.Module):
    """``[B, N16]`` → ``[B, T, C]`` conv features scaled per channel by ``dummy_weight``."""

    def __init__(self, mode: str, layers: list[tuple[int, int, int]], bias: bool) -> None:
        super().__init__()
        blocks, cin = [], 1
        for i, (c, k, s) in enumerate(layers):
            if mode == "group_norm":
                norm = nn.GroupNorm(c, c, affine=True) if i == 0 else None
            else:
                norm = _TransposedLayerNorm(c, elementwise_affine=True)
            blocks.append(ConvBlock(cin, c, k, s, bias, norm))
            cin = c
        self.conv_layers = nn.ModuleList(blocks)
        self.dummy_weight = nn.Parameter(torch.ones(cin), requires_grad=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav[:, None]
        for block in self.conv_layers:
            x = block(x)
        return x.transpose(1, 2) * self.dummy_weight


class FeatureProjection(nn.Module):
    def __init__(self, cin: int, embed: int) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(cin)
        self.projection = nn.Linear(cin, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.layer_norm(x))


class PosConv(nn.Module):
    """Weight-normed grouped conv over time (last frame dropped for even kernels), GELU."""

    def __init__(self, embed: int, kernel: int, groups: int) -> None:
        super().__init__()
        conv = nn.Conv1d(embed, embed, kernel, padding=kernel // 2, groups=groups)
        with warnings.catch_warnings():  # the legacy API keeps the published key names weight_g / weight_v
            warnings.simplefilter("ignore", FutureWarning)
            self.conv = nn.utils.weight_norm(conv, name="weight", dim=2)
        self.remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.remove:
            y = y[..., :-self.remove]
        return nn.functional.gelu(y).transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, embed: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.k_proj = nn.Linear(embed, inner)
        self.v_proj = nn.Linear(embed, inner)
        self.q_proj = nn.Linear(embed, inner)
        self.out_proj = nn.Linear(inner, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        shape = (b, t, self.heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        y = nn.functional.scaled_dot_product_attention(q, k, v)  # softmax(q·kᵀ/√d)·v
        return self.out_proj(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class FeedForward(nn.Module):
    def __init__(self, embed: int, inner: int) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(embed, inner)
        self.output_dense = nn.Linear(inner, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(nn.functional.gelu(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    def __init__(self, embed: int, attention: SelfAttention | None, feed_forward: FeedForward | None,
                 layer_norm_first: bool) -> None:
        super().__init__()
        self.attention = attention
        self.layer_norm = nn.LayerNorm(embed)
        self.feed_forward = feed_forward
        self.final_layer_norm = nn.LayerNorm(embed)
        self.layer_norm_first = layer_norm_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            x = x + self.attention(self.layer_norm(x) if self.layer_norm_first else x)
        if self.layer_norm_first:
            if self.feed_forward is not None:
                x = x + self.feed_forward(self.final_layer_norm(x))
            return x
        x = self.layer_norm(x)  # post-LN: both norms apply even when a block was pruned away
        if self.feed_forward is not None:
            x = x + self.feed_forward(x)
        return self.final_layer_norm(x)


class Transformer(nn.Module):
    def __init__(self, embed: int, pos_conv: PosConv, layers: list[EncoderLayer], norm_before_layers: bool) -> None:
        super().__init__()
        self.pos_conv_embed = pos_conv
        self.layer_norm = nn.LayerNorm(embed)
        self.layers = nn.ModuleList(layers)
        self.norm_before_layers = norm_before_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_conv_embed(x)
        if self.norm_before_layers:
            x = self.layer_norm(x)
        for layer in self.layers:
            x = layer(x)
        if not self.norm_before_layers:
            x = self.layer_norm(x)
        return x


class Encoder(nn.Module):
    def __init__(self, projection: FeatureProjection, transformer: Transformer) -> None:
        super().__init__()
        self.feature_projection = projection
        self.transformer = transformer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer(self.feature_projection(x))


class Wav2Vec2(nn.Module):
    """``forward(wav [1, N16]) → [1, C, N]``."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        conv = [tuple(int(v) for v in layer) for layer in cfg["extractor_conv_layer_config"]]
        e, n = int(cfg["encoder_embed_dim"]), int(cfg["encoder_num_layers"])
        self.normalize_waveform = bool(cfg.get("normalize_waveform", False))
        self.feature_extractor = FeatureExtractor(cfg["extractor_mode"], conv, bool(cfg["extractor_conv_bias"]))
        layers = []
        for i in range(n):
            att = (SelfAttention(e, int(cfg["encoder_num_heads"][i]), int(cfg["encoder_head_dim"]))
                   if cfg["encoder_use_attention"][i] and int(cfg["encoder_num_heads"][i]) > 0 else None)
            ff = (FeedForward(e, int(cfg["encoder_ff_interm_features"][i]))
                  if cfg["encoder_use_feed_forward"][i] and int(cfg["encoder_ff_interm_features"][i]) > 0 else None)
            layers.append(EncoderLayer(e, att, ff, bool(cfg["encoder_layer_norm_first"])))
        transformer = Transformer(e, PosConv(e, int(cfg["encoder_pos_conv_kernel"]), int(cfg["encoder_pos_conv_groups"])),
                                  layers, norm_before_layers=not bool(cfg["encoder_layer_norm_first"]))
        self.encoder = Encoder(FeatureProjection(conv[-1][0], e), transformer)
        self.conv = conv
        self.embed = e

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.normalize_waveform:
            wav = nn.functional.layer_norm(wav, wav.shape[-1:])
        return self.encoder(self.feature_extractor(wav)).transpose(1, 2)


_REQUIRED = ("extractor_mode", "extractor_conv_layer_config", "extractor_conv_bias", "encoder_embed_dim",
             "encoder_pos_conv_kernel", "encoder_pos_conv_groups", "encoder_num_layers", "encoder_use_attention",
             "encoder_use_feed_forward", "encoder_num_heads", "encoder_head_dim", "encoder_ff_interm_features",
             "encoder_layer_norm_first")


DPHubertEncoder = ModuleEncoder  # the 4.1-era name of this family's encoder class


def load_dphubert(spec: Any, path: Path, device: torch.device, dtype: torch.dtype) -> SpeechEncoder:
    ckpt = load_encoder_file(path, what=f"speech encoder '{spec.name}' (DPHuBERT checkpoint)")
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise wrong_kind(path, ckpt, encoder=spec.name, expected="a DPHuBERT checkpoint ({'config', 'state_dict'})")
    cfg = ckpt["config"]
    missing = [k for k in _REQUIRED if not isinstance(cfg, dict) or k not in cfg]
    if missing:
        raise CheckpointError(f"{path}: DPHuBERT 'config' lacks {', '.join(missing)}")
    if "encoder_remaining_heads" in cfg:
        raise CheckpointError(f"{path}: WavLM-based DPHuBERT checkpoints are not supported; use the HuBERT-based "
                              "DPHuBERT-sp0.75.pth")
    if cfg["extractor_mode"] not in ("group_norm", "layer_norm"):
        raise CheckpointError(f"{path}: unknown extractor_mode {cfg['extractor_mode']!r}")
    if cfg.get("aux_num_out") is not None:
        raise CheckpointError(f"{path}: DPHuBERT with an auxiliary (fine-tuning) head is not supported")
    try:
        model = empty(lambda: Wav2Vec2(cfg))
    except (TypeError, ValueError, IndexError) as e:
        raise CheckpointError(f"{path}: inconsistent DPHuBERT config ({e})") from None
    sd = require_tensors(path, ckpt["state_dict"], encoder=spec.name, where="state_dict")
    # 4.1 loads with strict=False; here leftovers of pruning (hard-concrete masks) are the only keys allowed to be
    # extra, and nothing the network uses may be missing.
    sd = {k: v for k, v in sd.items() if "hard_concrete" not in k}
    assign_weights(model, sd, source=str(path))
    model = model.to(device=device, dtype=dtype).eval()
    return DPHubertEncoder(name=spec.name, dim=model.embed, model=model, device=device, dtype=dtype, path=path,
                           min_len=min_samples(model.conv))


def _dphubert_config(size: str) -> dict[str, Any]:
    if size == "full":  # shape of a 0.75-sparsity HuBERT base: 12 layers of mixed head counts / FFN widths
        conv = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
        heads = [12, 10, 9, 8, 6, 5, 4, 3, 3, 2, 0, 0]
        ffn = [1400, 1200, 1100, 1000, 900, 800, 700, 600, 500, 400, 300, 0]
        e, n, head_dim = 768, 12, 64
    else:
        conv = [(24, 10, 5), (28, 3, 2), (20, 3, 2), (26, 3, 2), (22, 3, 2), (30, 2, 2), (18, 2, 2)]
        heads, ffn, e, n, head_dim = [3, 2, 0], [40, 0, 24], 32, 3, 8
    return {
        "extractor_mode": "group_norm", "extractor_conv_bias": False, "encoder_embed_dim": e,
        "encoder_projection_dropout": 0.1, "encoder_pos_conv_kernel": 128, "encoder_pos_conv_groups": 16,
        "encoder_head_dim": head_dim, "encoder_attention_dropout": 0.1, "encoder_ff_interm_dropout": 0.0,
        "encoder_dropout": 0.1, "encoder_layer_norm_first": False, "encoder_layer_drop": 0.05, "aux_num_out": None,
        "normalize_waveform": False, "extractor_conv_layer_config": conv, "encoder_num_layers": n,
        "encoder_use_attention": [h > 0 for h in heads], "encoder_use_feed_forward": [f > 0 for f in ffn],
        "encoder_num_heads": heads, "encoder_ff_interm_features": ffn, "extractor_prune_conv_channels": False,
        "encoder_prune_attention_heads": False, "encoder_prune_attention_layer": False,
        "encoder_prune_feed_forward_intermediate": False, "encoder_prune_feed_forward_layer": False,
    }


def write_dphubert(spec: Any, path: Path, *, size: str, seed: int) -> None:
    """``{"state_dict", "config", "distill_linear_projs"}`` as DPHuBERT's released checkpoint."""
    cfg = _dphubert_config(size)
    model = Wav2Vec2(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = fill_random(shapes, seed=seed)
    sd["feature_extractor.dummy_weight"] = sd["feature_extractor.dummy_weight"] + 1.0
    v_key = "encoder.transformer.pos_conv_embed.conv.weight_v"
    sd["encoder.transformer.pos_conv_embed.conv.weight_g"] = weight_norm_g(sd[v_key], dim=2)
    e = cfg["encoder_embed_dim"]
    proj = fill_random({f"{i}.{n}": ((768, e) if n == "weight" else (768,)) for i in range(4) for n in ("weight", "bias")},
                       seed=seed + 1)
    atomic_torch_save(mark_random_weights({"state_dict": sd, "config": cfg, "distill_linear_projs": proj}), path)
