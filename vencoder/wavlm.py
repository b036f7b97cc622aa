"""WavLM (Microsoft's ``WavLM-Base+.pt``: ``{"cfg": WavLMConfig fields, "model": state dict}``).

The network is transformers' :class:`~transformers.WavLMModel`: the HuBERT trunk plus a bucketed
relative-position bias computed in layer 0 and gated per layer (``gru_rel_pos``), as in
Microsoft's code. 4.1 returns ``extract_features(wav)[0]``: every layer, and for the post-LN Base+
nothing after the last one. Frame count: floor((N16 − 400)/320) + 1; shorter inputs are zero-padded
to 400 samples (one frame).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from modules.checkpoint import atomic_torch_save, mark_random_weights
from modules.errors import CheckpointError

from .base import ModuleEncoder, SpeechEncoder
from .build import assign_weights, empty
from .files import load_encoder_file, min_samples, parse_conv_layers, plain, require_tensors, wrong_kind
from .hubert import _ACTIVATIONS, _fairseq_to_hf, _pos_conv_keys
from .random_weights import fill_random, weight_norm_g

#: Microsoft ``WavLMConfig`` defaults (fields a cfg may omit).
WAVLM_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default", "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12, "activation_fn": "gelu", "layer_norm_first": False,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2", "conv_bias": False,
    "feature_grad_mult": 1.0, "normalize": False, "dropout": 0.1, "attention_dropout": 0.1,
    "activation_dropout": 0.0, "encoder_layerdrop": 0.0, "dropout_input": 0.0, "dropout_features": 0.0,
    "mask_length": 10, "mask_prob": 0.65, "mask_selection": "static", "mask_other": 0.0, "no_mask_overlap": False,
    "mask_min_space": 1, "mask_channel_length": 10, "mask_channel_prob": 0.0, "mask_channel_selection": "static",
    "mask_channel_other": 0.0, "no_mask_channel_overlap": False, "mask_channel_min_space": 1, "conv_pos": 128,
    "conv_pos_groups": 16, "relative_position_embedding": False, "num_buckets": 320, "max_distance": 1280,
    "gru_rel_pos": False,
}


class WavLMUnits(nn.Module):
    """``forward(wav [1, N16]) → [1, C, N]`` (waveform LayerNorm first when the cfg says ``normalize``)."""

    def __init__(self, wavlm: nn.Module, *, normalize: bool) -> None:
        super().__init__()
        self.wavlm = wavlm
        self.normalize = normalize

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            wav = nn.functional.layer_norm(wav, wav.shape)
        return self.wavlm(wav).last_hidden_state.transpose(1, 2)


WavLMEncoder = ModuleEncoder  # the 4.1-era name of this family's encoder class


def load_wavlm(spec: Any, path: Path, device: torch.device, dtype: torch.dtype) -> SpeechEncoder:
    from transformers import WavLMConfig, WavLMModel

    ckpt = load_encoder_file(path, what=f"speech encoder '{spec.name}' (WavLM checkpoint)")
    if not isinstance(ckpt, dict) or "cfg" not in ckpt or "model" not in ckpt or "task_state" in ckpt:
        raise wrong_kind(path, ckpt, encoder=spec.name, expected="a WavLM checkpoint ({'cfg', 'model'})")
    cfg = plain(ckpt["cfg"])
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: WavLM 'cfg' is not a dict of settings")
    c = {**WAVLM_DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    if not c["relative_position_embedding"] or not c["gru_rel_pos"]:
        raise CheckpointError(f"{path}: WavLM without gated relative position bias is not supported "
                              "(relative_position_embedding and gru_rel_pos must be true, as in WavLM Base+/Large)")
    if c["activation_fn"] not in _ACTIVATIONS:
        raise CheckpointError(f"{path}: unsupported activation_fn {c['activation_fn']!r}")
    sd = require_tensors(path, ckpt["model"], encoder=spec.name, where="model")
    conv = parse_conv_layers(c["conv_feature_layers"], source=str(path))
    embed = int(c["encoder_embed_dim"])
    hf_cfg = WavLMConfig(
        hidden_size=embed, num_hidden_layers=int(c["encoder_layers"]), num_attention_heads=int(c["encoder_attention_heads"]),
        intermediate_size=int(c["encoder_ffn_embed_dim"]), hidden_act=_ACTIVATIONS[c["activation_fn"]],
        hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0,
        layerdrop=0.0, layer_norm_eps=1e-5, feat_extract_norm="layer" if c["extractor_mode"] == "layer_norm" else "group",
        feat_extract_activation="gelu", conv_dim=[x for x, _, _ in conv], conv_kernel=[k for _, k, _ in conv],
        conv_stride=[s for _, _, s in conv], conv_bias=bool(c["conv_bias"]), num_conv_pos_embeddings=int(c["conv_pos"]),
        num_conv_pos_embedding_groups=int(c["conv_pos_groups"]), num_buckets=int(c["num_buckets"]),
        max_bucket_distance=int(c["max_distance"]), do_stable_layer_norm=bool(c["layer_norm_first"]),
        apply_spec_augment=False, mask_time_prob=0.0,
    )
    model = empty(lambda: WavLMModel(hf_cfg))
    renamed = {}
    for k, v in sd.items():
        k = (k.replace(".self_attn.grep_linear.", ".self_attn.gru_rel_pos_linear.")
             .replace(".self_attn.grep_a", ".self_attn.gru_rel_pos_const")
             .replace(".self_attn.relative_attention_bias.", ".self_attn.rel_attn_embed."))
        renamed[k] = v
    mapped, unused = _fairseq_to_hf(renamed, layers=int(c["encoder_layers"]), pos_conv_keys=_pos_conv_keys(model))
    if unused:
        raise CheckpointError(f"{path}: unexpected keys for a WavLM checkpoint: {', '.join(unused[:8])}")
    assign_weights(model, mapped, source=str(path), zero_if_missing=("masked_spec_embed",))
    units = WavLMUnits(model, normalize=bool(c["normalize"])).to(device=device, dtype=dtype).eval()
    return WavLMEncoder(name=spec.name, dim=embed, model=units, device=device, dtype=dtype, path=path,
                        min_len=min_samples(conv))


def _wavlm_cfg(size: str) -> dict[str, Any]:
    base = {**WAVLM_DEFAULTS, "feature_grad_mult": 0.1, "encoder_layerdrop": 0.05, "dropout_input": 0.1,
            "dropout_features": 0.1, "mask_prob": 0.8, "relative_position_embedding": True, "num_buckets": 320,
            "max_distance": 800, "gru_rel_pos": True}
    if size == "tiny":
        base.update(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=4,
                    conv_feature_layers="[(24,10,5)] + [(24,3,2)] * 4 + [(24,2,2)] * 2")
    return base


def write_wavlm(spec: Any, path: Path, *, size: str, seed: int) -> None:
    """``{"cfg": every WavLMConfig field, "model": state dict}`` as Microsoft publishes WavLM-Base+.pt."""
    c = _wavlm_cfg(size)
    conv = parse_conv_layers(c["conv_feature_layers"])
    e, f, h = c["encoder_embed_dim"], c["encoder_ffn_embed_dim"], c["encoder_attention_heads"]
    shapes: dict[str, tuple[int, ...]] = {"mask_emb": (e,)}
    cin = 1
    for i, (ch, k, _) in enumerate(conv):
        shapes[f"feature_extractor.conv_layers.{i}.0.weight"] = (ch, cin, k)
        if i == 0:
            shapes["feature_extractor.conv_layers.0.2.weight"] = (ch,)
            shapes["feature_extractor.conv_layers.0.2.bias"] = (ch,)
        cin = ch
    shapes.update({"post_extract_proj.weight": (e, cin), "post_extract_proj.bias": (e,),
                   "encoder.pos_conv.0.bias": (e,), "encoder.pos_conv.0.weight_g": (1, 1, c["conv_pos"]),
                   "encoder.pos_conv.0.weight_v": (e, e // c["conv_pos_groups"], c["conv_pos"])})
    for i in range(c["encoder_layers"]):
        p = f"encoder.layers.{i}.self_attn."
        shapes[p + "grep_a"] = (1, h, 1, 1)
        if i == 0:
            shapes[p + "relative_attention_bias.weight"] = (c["num_buckets"], h)
        for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
            shapes[p + f"{n}.weight"] = (e, e)
            shapes[p + f"{n}.bias"] = (e,)
        shapes.update({p + "grep_linear.weight": (8, e // h), p + "grep_linear.bias": (8,)})
        q = f"encoder.layers.{i}."
        shapes.update({q + "self_attn_layer_norm.weight": (e,), q + "self_attn_layer_norm.bias": (e,),
                       q + "fc1.weight": (f, e), q + "fc1.bias": (f,), q + "fc2.weight": (e, f), q + "fc2.bias": (e,),
                       q + "final_layer_norm.weight": (e,), q + "final_layer_norm.bias": (e,)})
    shapes.update({"encoder.layer_norm.weight": (e,), "encoder.layer_norm.bias": (e,),
                   "layer_norm.weight": (cin,), "layer_norm.bias": (cin,)})
    sd = fill_random(shapes, seed=seed)
    sd["encoder.pos_conv.0.weight_g"] = weight_norm_g(sd["encoder.pos_conv.0.weight_v"], dim=2)
    for k in sd:
        if k.endswith("grep_a"):
            sd[k] = sd[k] + 1.0  # Microsoft initialises the gate constant to ones
    atomic_torch_save(mark_random_weights({"cfg": c, "model": sd}), path)
