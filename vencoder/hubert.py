"""HuBERT-family encoders: ContentVec / HuBERT fairseq checkpoints and bshall's HuBERT-Soft.

The network is transformers' :class:`~transformers.HubertModel`, which computes what fairseq's
``HubertModel.extract_features`` computes (conv feature extractor → LayerNorm → projection →
x + pos_conv(x) → transformer) once the state-dict keys are renamed. Both layouts are covered:

* post-LN (``layer_norm_first: false``; ContentVec / HuBERT base, HuBERT-Soft): the encoder
  LayerNorm is applied *before* the layers, nothing after;
* pre-LN (``layer_norm_first: true``; HuBERT large): the encoder LayerNorm is applied after the
  last layer, unless an output layer is requested (fairseq then returns that layer's raw output).

fairseq pads the frame sequence to a multiple of ``required_seq_len_multiple`` (2) with a frame
that is masked as a key and cropped afterwards; it does not change the other frames, so it is not
reproduced. Only the layers up to the requested ``output_layer`` are built and run.

Frame count for N16 input samples: floor((N16 − 400) / 320) + 1 (HuBERT-Soft pads 40 zeros on each
side first → floor(N16 / 320)). Inputs shorter than one receptive field (400 samples) are
zero-padded to it and give one frame (4.1 crashes on them).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modules.checkpoint import mark_random_weights
from modules.errors import CheckpointError

from .base import ModuleEncoder, SpeechEncoder
from .build import assign_weights, empty
from .files import (NamespaceStandIn, OmegaConfStandIn, fairseq_dictionary,
                    load_encoder_file, min_samples, parse_conv_layers, plain, require_tensors,
                    save_fairseq_checkpoint, wrong_kind)
from .random_weights import fill_random, weight_norm_g

log = logging.getLogger(__name__)

#: fairseq ``HubertConfig`` defaults for fields an older checkpoint may omit.
FAIRSEQ_HUBERT_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default", "encoder_layers": 12, "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_type": "transformer", "layer_norm_first": False,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2", "conv_bias": False,
    "conv_pos": 128, "conv_pos_groups": 16, "conv_pos_batch_norm": False, "final_dim": 0,
    "untie_final_proj": False, "required_seq_len_multiple": 2, "pos_enc_type": "abs",
}

_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_accurate": "gelu_new", "gelu_fast": "gelu_new"}


# --- the network -------------------------------------------------------------------------------
def build_hf_hubert(*, embed_dim: int, layers: int, ffn_dim: int, heads: int, conv_layers: list[tuple[int, int, int]],
                    conv_bias: bool, extractor_layer_norm: bool, layer_norm_first: bool, conv_pos: int,
                    conv_pos_groups: int, activation: str = "gelu") -> nn.Module:
    """A transformers ``HubertModel`` with fairseq's architecture options, dropout off, eval mode."""
    from transformers import HubertConfig, HubertModel

    if embed_dim % heads:
        raise CheckpointError(f"encoder width {embed_dim} is not divisible by {heads} attention heads")
    cfg = HubertConfig(
        hidden_size=embed_dim, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn_dim,
        hidden_act=_ACTIVATIONS[activation], hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0,
        feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, layer_norm_eps=1e-5,
        feat_extract_norm="layer" if extractor_layer_norm else "group", feat_extract_activation="gelu",
        conv_dim=[c for c, _, _ in conv_layers], conv_kernel=[k for _, k, _ in conv_layers],
        conv_stride=[s for _, _, s in conv_layers], conv_bias=conv_bias,
        num_conv_pos_embeddings=conv_pos, num_conv_pos_embedding_groups=conv_pos_groups,
        conv_pos_batch_norm=False, do_stable_layer_norm=layer_norm_first, feat_proj_layer_norm=True,
        apply_spec_augment=False, mask_time_prob=0.0,
    )
    model = HubertModel(cfg)
    return model.eval()


class HubertUnits(nn.Module):
    """HuBERT trunk (+ optional projection). ``forward(wav [1, N16]) → [1, C, N]``."""

    def __init__(self, hubert: nn.Module, proj: nn.Linear | None, *, pad: int = 0, final_norm: bool = True) -> None:
        super().__init__()
        self.hubert = hubert
        self.proj = proj
        self.pad = pad  # zeros added on each side of the waveform (HuBERT-Soft: 40)
        if not final_norm and hasattr(hubert.encoder, "layer_norm") and hubert.config.do_stable_layer_norm:
            # fairseq skips the closing LayerNorm of a pre-LN encoder when an output layer is given
            hubert.encoder.layer_norm = nn.Identity()

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.pad:
            wav = nn.functional.pad(wav, (self.pad, self.pad))
        x = self.hubert(wav).last_hidden_state  # [1, N, E]
        if self.proj is not None:
            x = self.proj(x)
        return x.transpose(1, 2)


HubertEncoder = ModuleEncoder  # the 4.1-era name of this family's encoder class


# --- fairseq checkpoints -----------------------------------------------------------------------
def fairseq_config(ckpt: Any, path: Path, encoder: str) -> tuple[dict, dict]:
    """``(model_cfg, task_cfg)`` of a fairseq checkpoint (``cfg`` dict/omegaconf or old ``args``)."""
    if not isinstance(ckpt, dict) or "model" not in ckpt or not ({"cfg", "args"} & set(ckpt)):
        raise wrong_kind(path, ckpt, encoder=encoder, expected="a fairseq HuBERT/ContentVec checkpoint")
    cfg = ckpt.get("cfg")
    if cfg is not None:
        cfg = plain(cfg)
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            raise CheckpointError(f"{path}: fairseq checkpoint has no 'cfg.model' section; the file is damaged "
                                  "or not a HuBERT checkpoint")
        model_cfg, task_cfg = dict(cfg["model"]), dict(cfg.get("task") or {})
    elif isinstance(ckpt.get("args"), (NamespaceStandIn, OmegaConfStandIn, dict)):
        args = plain(ckpt["args"]) or {}
        model_cfg = dict(args)
        model_cfg.setdefault("_name", args.get("arch", "hubert"))
        task_cfg = {"_name": args.get("task"), "normalize": args.get("normalize", False)}
    else:
        raise CheckpointError(f"{path}: fairseq checkpoint has neither 'cfg' nor 'args'; cannot tell its architecture")
    name = str(model_cfg.get("_name") or "")
    if not name.startswith("hubert"):
        hint = (" ContentVec's full checkpoint needs the speaker-conditioned model; use the *legacy* file "
                "checkpoint_best_legacy_500.pt" if "contentvec" in name else "")
        raise CheckpointError(f"{path}: fairseq model '{name}' is not a HuBERT model, which '{encoder}' needs.{hint}")
    merged = {**FAIRSEQ_HUBERT_DEFAULTS, **{k: v for k, v in model_cfg.items() if v is not None}}
    if merged["layer_type"] != "transformer" or merged.get("pos_enc_type", "abs") != "abs":
        raise CheckpointError(f"{path}: unsupported HuBERT variant (layer_type={merged['layer_type']}, "
                              f"pos_enc_type={merged.get('pos_enc_type')}); only the transformer layout is supported")
    if merged.get("conv_pos_batch_norm"):
        raise CheckpointError(f"{path}: HuBERT with conv_pos_batch_norm is not supported")
    if merged["activation_fn"] not in _ACTIVATIONS:
        raise CheckpointError(f"{path}: unsupported activation_fn {merged['activation_fn']!r}")
    return merged, task_cfg


# fairseq name → transformers name, outside the per-layer and conv-stack keys
_TOP_LEVEL_KEYS = {
    "layer_norm.weight": "feature_projection.layer_norm.weight",
    "layer_norm.bias": "feature_projection.layer_norm.bias",
    "post_extract_proj.weight": "feature_projection.projection.weight",
    "post_extract_proj.bias": "feature_projection.projection.bias",
    "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.conv.bias",
    "encoder.layer_norm.weight": "encoder.layer_norm.weight",
    "encoder.layer_norm.bias": "encoder.layer_norm.bias",
}
_TRAINING_ONLY = ("mask_emb", "label_embs_concat", "final_proj.weight", "final_proj.bias")


def _fairseq_to_hf(sd: dict[str, torch.Tensor], *, layers: int,
                   pos_conv_keys: tuple[str, str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename fairseq HuBERT/WavLM keys to transformers' names. Returns (mapped, unknown fairseq keys).

    Layers from index ``layers`` on are dropped (never run); ``final_proj`` is the caller's.
    """
    names = {**_TOP_LEVEL_KEYS, "encoder.pos_conv.0.weight_g": pos_conv_keys[0],
             "encoder.pos_conv.0.weight_v": pos_conv_keys[1]}
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        if m := re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(0|2|2\.1)\.(weight|bias)", k):
            i, part, kind = m.groups()  # .0 conv; .2 GroupNorm (default mode); .2.1 LayerNorm (layer_norm mode)
            out[f"feature_extractor.conv_layers.{i}.{'conv' if part == '0' else 'layer_norm'}.{kind}"] = v
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", k):
            i, rest = int(m.group(1)), m.group(2)
            if i < layers:
                rest = (rest.replace("self_attn_layer_norm.", "layer_norm.").replace("self_attn.", "attention.")
                        .replace("fc1.", "feed_forward.intermediate_dense.")
                        .replace("fc2.", "feed_forward.output_dense."))
                out[f"encoder.layers.{i}.{rest}"] = v
        elif k in names:
            out[names[k]] = v
        elif k not in _TRAINING_ONLY and not k.startswith("label_embs"):
            unknown.append(k)
    return out, unknown


def _pos_conv_keys(model: nn.Module) -> tuple[str, str]:
    own = model.state_dict()
    if "encoder.pos_conv_embed.conv.weight_g" in own:
        return "encoder.pos_conv_embed.conv.weight_g", "encoder.pos_conv_embed.conv.weight_v"
    return ("encoder.pos_conv_embed.conv.parametrizations.weight.original0",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original1")


def load_fairseq_hubert(spec: Any, path: Path, device: torch.device, dtype: torch.dtype) -> SpeechEncoder:
    """ContentVec / HuBERT fairseq checkpoint → encoder taking ``spec.output_layer`` (+ ``final_proj``)."""
    ckpt = load_encoder_file(path, what=f"speech encoder '{spec.name}' (fairseq checkpoint)")
    mc, _task = fairseq_config(ckpt, path, spec.name)
    sd = require_tensors(path, ckpt["model"], encoder=spec.name, where="model")
    n_layers = int(mc["encoder_layers"])
    out_layer = spec.output_layer
    if out_layer is not None and not 1 <= out_layer <= n_layers:
        raise CheckpointError(f"{path}: '{spec.name}' takes transformer layer {out_layer}, but the checkpoint has "
                              f"only {n_layers} layers")
    run_layers = out_layer or n_layers
    conv = parse_conv_layers(mc["conv_feature_layers"], source=str(path))
    embed = int(mc["encoder_embed_dim"])
    hub = empty(lambda: build_hf_hubert(embed_dim=embed, layers=run_layers, ffn_dim=int(mc["encoder_ffn_embed_dim"]),
                          heads=int(mc["encoder_attention_heads"]), conv_layers=conv, conv_bias=bool(mc["conv_bias"]),
                          extractor_layer_norm=mc["extractor_mode"] == "layer_norm",
                          layer_norm_first=bool(mc["layer_norm_first"]), conv_pos=int(mc["conv_pos"]),
                          conv_pos_groups=int(mc["conv_pos_groups"]), activation=mc["activation_fn"]))
    mapped, unused = _fairseq_to_hf(sd, layers=run_layers, pos_conv_keys=_pos_conv_keys(hub))
    if unused:
        raise CheckpointError(f"{path}: unexpected keys for a HuBERT checkpoint: {', '.join(unused[:8])}")
    if "feature_projection.projection.weight" not in mapped and conv[-1][0] == embed:
        # fairseq has no post_extract_proj when the conv width equals the encoder width
        mapped["feature_projection.projection.weight"] = torch.eye(embed)
        mapped["feature_projection.projection.bias"] = torch.zeros(embed)
    assign_weights(hub, mapped, source=str(path), zero_if_missing=("masked_spec_embed",))
    proj = None
    if spec.final_proj:
        if "final_proj.weight" not in sd:
            raise CheckpointError(f"{path}: '{spec.name}' needs the checkpoint's final_proj, which is missing")
        w = sd["final_proj.weight"]
        proj = nn.Linear(w.shape[1], w.shape[0])
        proj.load_state_dict({"weight": w.float(), "bias": sd.get("final_proj.bias", torch.zeros(w.shape[0])).float()})
    model = HubertUnits(hub, proj, final_norm=out_layer is None).to(device=device, dtype=dtype).eval()
    dim = proj.out_features if proj is not None else embed
    return HubertEncoder(name=spec.name, dim=dim, model=model, device=device, dtype=dtype, path=path,
                         min_len=min_samples(conv))


# --- HuBERT-Soft (bshall) ------------------------------------------------------------------------
SOFT_HEADS = 12                                      # hard-coded in bshall's model
SOFT_STRIDES = (5, 2, 2, 2, 2, 2, 2)
SOFT_PAD = (400 - 320) // 2                          # zeros on each side of the waveform


def _soft_state_dict(ckpt: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(ckpt, dict) and "hubert" in ckpt and isinstance(ckpt["hubert"], dict):
        ckpt = ckpt["hubert"]  # training checkpoints of bshall/hubert
    if not isinstance(ckpt, dict) or not any(k.replace("module.", "", 1).startswith("feature_extractor.conv0")
                                             for k in ckpt):
        raise wrong_kind(path, ckpt, encoder="hubertsoft", expected="a HuBERT-Soft state dict")
    sd = require_tensors(path, ckpt, encoder="hubertsoft", where="state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_hubert_soft(spec: Any, path: Path, device: torch.device, dtype: torch.dtype) -> SpeechEncoder:
    """bshall's ``hubert-soft-0d54a1f4.pt`` (bare state dict, optional ``module.`` prefix)."""
    sd = _soft_state_dict(load_encoder_file(path, what="speech encoder 'hubertsoft'"), path)
    try:
        n_conv = 1 + max(int(m.group(1)) for k in sd if (m := re.fullmatch(r"feature_extractor\.conv(\d+)\.weight", k)))
        conv = [(sd[f"feature_extractor.conv{i}.weight"].shape[0], sd[f"feature_extractor.conv{i}.weight"].shape[2],
                 SOFT_STRIDES[i] if i < len(SOFT_STRIDES) else 2) for i in range(n_conv)]
        embed = sd["feature_projection.projection.weight"].shape[0]
        n_layers = 1 + max(int(m.group(1)) for k in sd if (m := re.fullmatch(r"encoder\.layers\.(\d+)\..*", k)))
        ffn = sd["encoder.layers.0.linear1.weight"].shape[0]
        kernel = sd["positional_embedding.conv.weight_v"].shape[2]
        groups = embed // sd["positional_embedding.conv.weight_v"].shape[1]
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: incomplete HuBERT-Soft state dict (missing {e})") from None
    hub = empty(lambda: build_hf_hubert(embed_dim=embed, layers=n_layers, ffn_dim=ffn, heads=SOFT_HEADS,
                                        conv_layers=conv, conv_bias=False, extractor_layer_norm=False,
                                        layer_norm_first=False, conv_pos=kernel, conv_pos_groups=groups))
    g_key, v_key = _pos_conv_keys(hub)
    mapped: dict[str, torch.Tensor] = {}
    unused = []
    for k, v in sd.items():
        if (m := re.fullmatch(r"feature_extractor\.conv(\d+)\.weight", k)):
            mapped[f"feature_extractor.conv_layers.{m.group(1)}.conv.weight"] = v
        elif (m := re.fullmatch(r"feature_extractor\.norm0\.(weight|bias)", k)):
            mapped[f"feature_extractor.conv_layers.0.layer_norm.{m.group(1)}"] = v
        elif (m := re.fullmatch(r"feature_projection\.norm\.(weight|bias)", k)):
            mapped[f"feature_projection.layer_norm.{m.group(1)}"] = v
        elif k.startswith("feature_projection.projection."):
            mapped[k] = v
        elif k.startswith("positional_embedding.conv."):
            part = k.rsplit(".", 1)[1]
            mapped[{"weight_g": g_key, "weight_v": v_key, "bias": "encoder.pos_conv_embed.conv.bias"}[part]] = v
        elif (m := re.fullmatch(r"norm\.(weight|bias)", k)):
            mapped[f"encoder.layer_norm.{m.group(1)}"] = v
        elif (m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", k)):
            i, rest = m.groups()
            pre = f"encoder.layers.{i}."
            if rest in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
                kind = "weight" if rest.endswith("weight") else "bias"
                q, kk, vv = v.chunk(3, dim=0)
                mapped.update({pre + f"attention.q_proj.{kind}": q, pre + f"attention.k_proj.{kind}": kk,
                               pre + f"attention.v_proj.{kind}": vv})
            else:
                rest = (rest.replace("self_attn.out_proj.", "attention.out_proj.")
                        .replace("linear1.", "feed_forward.intermediate_dense.")
                        .replace("linear2.", "feed_forward.output_dense.")
                        .replace("norm1.", "layer_norm.").replace("norm2.", "final_layer_norm."))
                mapped[pre + rest] = v
        elif k.startswith(("proj.", "masked_spec_embed", "label_embedding.")):
            continue
        else:
            unused.append(k)
    if unused:
        raise CheckpointError(f"{path}: unexpected keys for HuBERT-Soft: {', '.join(unused[:8])}")
    assign_weights(hub, mapped, source=str(path), zero_if_missing=("masked_spec_embed",))
    if "proj.weight" not in sd:
        raise CheckpointError(f"{path}: HuBERT-Soft state dict has no 'proj' layer")
    proj = nn.Linear(sd["proj.weight"].shape[1], sd["proj.weight"].shape[0])
    proj.load_state_dict({"weight": sd["proj.weight"].float(), "bias": sd["proj.bias"].float()})
    model = HubertUnits(hub, proj, pad=SOFT_PAD).to(device=device, dtype=dtype).eval()
    return HubertEncoder(name=spec.name, dim=proj.out_features, model=model, device=device, dtype=dtype, path=path,
                         min_len=max(min_samples(conv) - 2 * SOFT_PAD, 1))


# --- random checkpoints in the published formats ---------------------------------------------------
HUBERT_SIZES: dict[str, dict[str, Any]] = {
    # ContentVec legacy / HuBERT base (what checkpoint_best_legacy_500.pt holds)
    "contentvec/full": dict(extractor_mode="default", encoder_layers=12, encoder_embed_dim=768,
                            encoder_ffn_embed_dim=3072, encoder_attention_heads=12, layer_norm_first=False,
                            conv_feature_layers="[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
                            final_dim=256, conv_bias=False, normalize=False),
    "contentvec/tiny": dict(extractor_mode="default", encoder_layers=12, encoder_embed_dim=32,
                            encoder_ffn_embed_dim=64, encoder_attention_heads=4, layer_norm_first=False,
                            conv_feature_layers="[(24,10,5)] + [(24,3,2)] * 4 + [(24,2,2)] * 2",
                            final_dim=16, conv_bias=False, normalize=False),
    # HuBERT large (chinese-hubert-large-fairseq-ckpt.pt)
    "hubert-large/full": dict(extractor_mode="layer_norm", encoder_layers=24, encoder_embed_dim=1024,
                              encoder_ffn_embed_dim=4096, encoder_attention_heads=16, layer_norm_first=True,
                              conv_feature_layers="[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
                              final_dim=768, conv_bias=False, normalize=True),
    "hubert-large/tiny": dict(extractor_mode="layer_norm", encoder_layers=3, encoder_embed_dim=48,
                              encoder_ffn_embed_dim=96, encoder_attention_heads=4, layer_norm_first=True,
                              conv_feature_layers="[(24,10,5)] + [(24,3,2)] * 4 + [(24,2,2)] * 2",
                              final_dim=24, conv_bias=False, normalize=True),
}


def _fairseq_cfg(model: dict[str, Any], normalize: bool) -> dict[str, Any]:
    """A fairseq hydra config (plain dict, as ``OmegaConf.to_container`` stores it)."""
    model_cfg = {
        "_name": "hubert", "label_rate": 50.0, "extractor_mode": model["extractor_mode"],
        "encoder_layers": model["encoder_layers"], "encoder_embed_dim": model["encoder_embed_dim"],
        "encoder_ffn_embed_dim": model["encoder_ffn_embed_dim"],
        "encoder_attention_heads": model["encoder_attention_heads"], "activation_fn": "gelu",
        "layer_type": "transformer", "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
        "encoder_layerdrop": 0.05, "dropout_input": 0.1, "dropout_features": 0.1, "final_dim": model["final_dim"],
        "untie_final_proj": True, "layer_norm_first": model["layer_norm_first"],
        "conv_feature_layers": model["conv_feature_layers"], "conv_bias": model["conv_bias"], "logit_temp": 0.1,
        "target_glu": False, "feature_grad_mult": 0.1, "mask_length": 10, "mask_prob": 0.8,
        "mask_selection": "static", "mask_other": 0.0, "no_mask_overlap": False, "mask_min_space": 1,
        "mask_channel_length": 10, "mask_channel_prob": 0.0, "mask_channel_selection": "static",
        "mask_channel_other": 0.0, "no_mask_channel_overlap": False, "mask_channel_min_space": 1,
        "conv_pos": 128, "conv_pos_groups": 16, "conv_pos_batch_norm": False, "latent_temp": [2.0, 0.5, 0.999995],
        "skip_masked": False, "skip_nomask": False, "checkpoint_activations": False,
        "required_seq_len_multiple": 2, "depthwise_conv_kernel_size": 31, "attn_type": "", "pos_enc_type": "abs",
        "fp16": False,
    }
    task_cfg = {"_name": "hubert_pretraining", "data": "data", "fine_tuning": False, "labels": ["km"],
                "label_dir": "labels", "label_rate": 50.0, "sample_rate": 16000, "normalize": normalize,
                "enable_padding": False, "max_keep_size": None, "max_sample_size": 250000, "min_sample_size": 32000,
                "single_target": False, "random_crop": True, "pad_audio": False}
    sections = ["common", "common_eval", "distributed_training", "dataset", "optimization", "checkpoint", "bmuf",
                "generation", "eval_lm", "interactive"]
    cfg: dict[str, Any] = {"_name": None, **{s: {"_name": None} for s in sections}}
    cfg["common"].update({"seed": 1337, "fp16": True, "log_interval": 200,
                          "plasma_path": "/tmp/plasma"})
    cfg["optimization"].update({"max_update": 400000, "lr": [0.0005], "update_freq": [1]})
    cfg.update({"model": model_cfg, "task": task_cfg, "criterion": {"_name": "hubert", "pred_masked_weight": 1.0},
                "optimizer": {"_name": "adam", "adam_betas": "(0.9,0.98)", "adam_eps": 1e-06, "weight_decay": 0.01},
                "lr_scheduler": {"_name": "polynomial_decay", "warmup_updates": 32000},
                "scoring": None, "bpe": None, "tokenizer": None, "ema": {"_name": None, "store_ema": False}})
    return cfg


def fairseq_hubert_state_dict(mc: dict[str, Any], *, seed: int, n_symbols: int = 504,
                              residual_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Random fairseq ``HubertModel`` state dict (key names, order and shapes of fairseq's).

    ``residual_scale`` multiplies the output weights of every attention and feed-forward branch.
    A deep random transformer maps every frame to nearly the same vector (12 layers: frame-to-frame
    cosine similarity 0.999); branches scaled by ~0.2 keep the residual stream close to the conv
    features, so the random units still follow the input's spectrum over time (cosine ~0.3).
    """
    conv = parse_conv_layers(mc["conv_feature_layers"])
    e, f, fd = mc["encoder_embed_dim"], mc["encoder_ffn_embed_dim"], mc["final_dim"]
    shapes: dict[str, tuple[int, ...]] = {"mask_emb": (e,), "label_embs_concat": (n_symbols, fd)}
    cin = 1
    for i, (c, k, _) in enumerate(conv):
        shapes[f"feature_extractor.conv_layers.{i}.0.weight"] = (c, cin, k)
        if mc["conv_bias"]:
            shapes[f"feature_extractor.conv_layers.{i}.0.bias"] = (c,)
        if mc["extractor_mode"] == "layer_norm":
            shapes[f"feature_extractor.conv_layers.{i}.2.1.weight"] = (c,)
            shapes[f"feature_extractor.conv_layers.{i}.2.1.bias"] = (c,)
        elif i == 0:
            shapes["feature_extractor.conv_layers.0.2.weight"] = (c,)
            shapes["feature_extractor.conv_layers.0.2.bias"] = (c,)
        cin = c
    shapes.update({"post_extract_proj.weight": (e, cin), "post_extract_proj.bias": (e,),
                   "encoder.pos_conv.0.bias": (e,), "encoder.pos_conv.0.weight_g": (1, 1, 128),
                   "encoder.pos_conv.0.weight_v": (e, e // 16, 128)})
    for i in range(mc["encoder_layers"]):
        p = f"encoder.layers.{i}."
        for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
            shapes[p + f"self_attn.{n}.weight"] = (e, e)
            shapes[p + f"self_attn.{n}.bias"] = (e,)
        shapes.update({p + "self_attn_layer_norm.weight": (e,), p + "self_attn_layer_norm.bias": (e,),
                       p + "fc1.weight": (f, e), p + "fc1.bias": (f,), p + "fc2.weight": (e, f), p + "fc2.bias": (e,),
                       p + "final_layer_norm.weight": (e,), p + "final_layer_norm.bias": (e,)})
    shapes.update({"encoder.layer_norm.weight": (e,), "encoder.layer_norm.bias": (e,),
                   "layer_norm.weight": (cin,), "layer_norm.bias": (cin,),
                   "final_proj.weight": (fd, e), "final_proj.bias": (fd,)})
    sd = fill_random(shapes, seed=seed)
    sd["encoder.pos_conv.0.weight_g"] = weight_norm_g(sd["encoder.pos_conv.0.weight_v"], dim=2)
    if residual_scale != 1.0:
        for k in sd:
            if k.endswith(("self_attn.out_proj.weight", "fc2.weight")):
                sd[k] = sd[k] * residual_scale
    return sd


def write_fairseq_hubert(spec: Any, path: Path, *, size: str, seed: int, residual_scale: float = 1.0) -> None:
    """A fairseq checkpoint exactly as ``checkpoint_best_legacy_500.pt`` / HuBERT large are laid out."""
    size_cfg = dict(HUBERT_SIZES[f"{spec.extra['full']}/{size}"])
    normalize = size_cfg.pop("normalize")
    mc = {**size_cfg}
    ckpt = {
        "args": None,
        "cfg": _fairseq_cfg(mc, normalize),
        "model": fairseq_hubert_state_dict(mc, seed=seed, residual_scale=residual_scale),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {"dictionaries": [fairseq_dictionary(500)]},
        "extra_state": {"metrics": {}, "previous_training_time": 0.0,
                        "train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True}},
    }
    save_fairseq_checkpoint(mark_random_weights(ckpt), path)


def write_hubert_soft(spec: Any, path: Path, *, size: str, seed: int) -> None:
    """bshall's layout: a bare state dict with DDP's ``module.`` prefix (4.1 strips it)."""
    from modules.checkpoint import atomic_torch_save

    e, c, layers, f, proj = (768, 512, 12, 3072, 256) if size == "full" else (48, 24, 2, 96, 16)
    kernels = (10, 3, 3, 3, 3, 2, 2)
    shapes: dict[str, tuple[int, ...]] = {"masked_spec_embed": (e,)}
    for i, k in enumerate(kernels):
        shapes[f"feature_extractor.conv{i}.weight"] = (c, 1 if i == 0 else c, k)
        if i == 0:
            shapes["feature_extractor.norm0.weight"] = (c,)
            shapes["feature_extractor.norm0.bias"] = (c,)
    shapes.update({"feature_projection.norm.weight": (c,), "feature_projection.norm.bias": (c,),
                   "feature_projection.projection.weight": (e, c), "feature_projection.projection.bias": (e,),
                   "positional_embedding.conv.bias": (e,), "positional_embedding.conv.weight_g": (1, 1, 128),
                   "positional_embedding.conv.weight_v": (e, e // 16, 128),
                   "norm.weight": (e,), "norm.bias": (e,)})
    for i in range(layers):
        p = f"encoder.layers.{i}."
        shapes.update({p + "self_attn.in_proj_weight": (3 * e, e), p + "self_attn.in_proj_bias": (3 * e,),
                       p + "self_attn.out_proj.weight": (e, e), p + "self_attn.out_proj.bias": (e,),
                       p + "linear1.weight": (f, e), p + "linear1.bias": (f,), p + "linear2.weight": (e, f),
                       p + "linear2.bias": (e,), p + "norm1.weight": (e,), p + "norm1.bias": (e,),
                       p + "norm2.weight": (e,), p + "norm2.bias": (e,)})
    shapes.update({"proj.weight": (proj, e), "proj.bias": (proj,), "label_embedding.weight": (100, proj)})
    sd = fill_random(shapes, seed=seed)
    sd["positional_embedding.conv.weight_g"] = weight_norm_g(sd["positional_embedding.conv.weight_v"], dim=2)
    atomic_torch_save(mark_random_weights({"module." + k: v for k, v in sd.items()}), path)
