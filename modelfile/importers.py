"""Importers: a SoVITS ``G_*.pth`` + ``config.json`` from 4.1, 4.0 or so-vits-svc-fork (4.0 models).

All three store the same generator state-dict keys (the fork's hifi-gan decoder included); what
differs is the config:

- **4.1**: ``model.speech_encoder`` is set. Used as is.
- **4.0**: no ``model.speech_encoder``. 4.1's inference would then assume ``vec768l12``, which is
  wrong for the common 256-dim 4.0 models (4.1's README tells users to add the key by hand).
  Here it is derived: ``data.contentvec_final_proj: false`` (the 4.0 "Vec768-Layer12" branch) or
  ``ssl_dim`` 768 → ``vec768l12``; ``ssl_dim`` 256 → ``vec256l9``; anything else is refused.
- **so-vits-svc-fork**: ``model.type_`` (decoder kind) and its iSTFT settings. Only
  ``"hifi-gan"`` has a counterpart here (the NSF-HiFiGAN decoder, same keys); the iSTFT decoders
  (``istft``, ``ms-istft``, ``mb-istft``) cannot convert and are refused. The encoder follows the
  fork's rule: ``data.contentvec_final_proj`` true (its default) → layer 9 + projection
  (``vec256l9``), false → layer 12 (``vec768l12``).

Checkpoints are read with ``weights_only`` (:func:`modules.checkpoint.torch_load`); keys
prefixed by a DDP (``module.``) or ``torch.compile`` (``_orig_mod.``) wrapper are unprefixed.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modules.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

TRAINING_ONLY_PREFIX = "enc_q."  # the posterior encoder: training only (spec §6.7)
# Config keys only so-vits-svc-fork writes (model section).
FORK_MODEL_KEYS = ("type_", "gen_istft_n_fft", "gen_istft_hop_size", "subbands")
FORK_CONVERTIBLE_DECODERS = ("hifi-gan",)


@dataclass
class ImportedModel:
    """A generator ready to be stored: normalised 4.1 config and inference weights."""

    config: dict[str, Any]                 # plain 4.1 config dict (inference defaults filled)
    state: dict[str, torch.Tensor]         # generator weights without enc_q, as stored in the checkpoint
    flavour: str                           # "4.1", "4.0" or "so-vits-svc-fork"
    iteration: int | None = None
    notes: list[str] = field(default_factory=list)  # conversions applied, for --info


def read_config_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (give the config.json the model was trained with, -c)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON config: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict) or not isinstance(data.get("data"), dict):
        raise ConfigError(f"{path}: not a so-vits-svc config.json (needs 'data' and 'model' sections)")
    return data


def detect_flavour(config: dict[str, Any]) -> str:
    model = config["model"]
    if any(k in model for k in FORK_MODEL_KEYS):
        return "so-vits-svc-fork"
    if "speech_encoder" in model:
        return "4.1"
    return "4.0"


def _derive_encoder(config: dict[str, Any], source: str) -> str:
    """The speech encoder of a config without ``model.speech_encoder`` (module docstring)."""
    final_proj = config["data"].get("contentvec_final_proj", True)
    ssl_dim = config["model"].get("ssl_dim")
    if final_proj is False or ssl_dim == 768:
        if ssl_dim not in (768, None):
            raise ConfigError(f"{source}: data.contentvec_final_proj is false (ContentVec layer 12, 768 channels) but "
                              f"model.ssl_dim is {ssl_dim}; fix the config")
        return "vec768l12"
    if ssl_dim == 256:
        return "vec256l9"
    raise ConfigError(f"{source}: the config names no speech encoder and model.ssl_dim {ssl_dim!r} does not tell "
                      "which one; add model.speech_encoder (see python export_model.py --help)")


def normalise_config(raw: dict[str, Any], source: str = "config") -> tuple[dict[str, Any], str, list[str]]:
    """A 4.1 config from a 4.1 / 4.0 / fork config → ``(config, flavour, notes)``.

    The result passes this project's strict config check (unknown keys are errors) and has
    4.1's inference defaults filled in, so the model file describes itself completely.
    """
    from modules.hparams import hparams_from_dict

    cfg = copy.deepcopy(raw)
    flavour = detect_flavour(cfg)
    notes: list[str] = []
    model = cfg["model"]
    if flavour == "so-vits-svc-fork":
        kind = model.get("type_", "hifi-gan")
        if kind not in FORK_CONVERTIBLE_DECODERS:
            raise CheckpointError(
                f"{source}: so-vits-svc-fork decoder type '{kind}' cannot be converted: this project has no "
                f"{kind} decoder (only the NSF-HiFiGAN one, fork type 'hifi-gan'). See docs/compat/modelfile.md")
        for k in FORK_MODEL_KEYS:
            if k in model:
                del model[k]
        notes.append(f"so-vits-svc-fork config: decoder type '{kind}' is NSF-HiFiGAN; fork-only keys dropped")
    if "speech_encoder" not in model:
        model["speech_encoder"] = _derive_encoder(cfg, source)
        notes.append(f"no model.speech_encoder in the config: '{model['speech_encoder']}' derived from "
                     f"ssl_dim {model.get('ssl_dim')} / data.contentvec_final_proj")
    hps = hparams_from_dict(cfg, source=source, infer_mode=True)
    return hps.to_dict(), flavour, notes


def build_synthesizer_for(config: dict[str, Any], *, device: str | torch.device = "cpu"):
    """An untrained ``SynthesizerTrn`` for ``config`` (4.1 construction), RNG state untouched."""
    from models import SynthesizerTrn

    data, model, train = config["data"], config["model"], config["train"]
    try:
        with torch.random.fork_rng(devices=[]), torch.device(device):
            return SynthesizerTrn(int(data["filter_length"]) // 2 + 1, int(train["segment_size"]) // int(data["hop_length"]),
                                  **model)
    except (TypeError, KeyError) as e:
        raise ConfigError(f"the model section of the config does not fit SynthesizerTrn: {e}") from None


def check_state_fits(config: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming the keys when ``state`` does not fit ``config``'s model.

    Built on the meta device: no memory, no weights initialised.
    """
    from modules.checkpoint import load_state_dict_checked

    net = build_synthesizer_for(config, device="meta")
    own = {k: v for k, v in net.state_dict().items() if not k.startswith(TRAINING_ONLY_PREFIX)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
           if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or bad:
        # Same wording as every other loader (names keys, suggests the config fields to check).
        load_state_dict_checked(build_synthesizer_for(config), state, source=source,
                                allow_missing=(TRAINING_ONLY_PREFIX,), reinit_on_mismatch=())


def _embedded_config(ckpt: dict, model_path: Path) -> dict[str, Any]:
    """The config a checkpoint carries under ``"config"`` (a dict or JSON text), if any."""
    raw = ckpt.get("config")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict) or not isinstance(raw.get("data"), dict):
        raise ConfigError(f"{model_path}: the checkpoint carries no config; pass its config.json with -c")
    return raw


def import_generator(model_path: str | os.PathLike, config_path: str | os.PathLike | None) -> ImportedModel:
    """Read ``G_*.pth`` + ``config.json`` (4.1 / 4.0 / fork), check they fit, keep inference weights.

    Without ``config_path`` the checkpoint's own ``"config"`` entry is used (checkpoints that
    carry their config); an explicit config always wins.
    """
    from modules.checkpoint import torch_load
    from training.compress import strip_module_prefix

    model_path = Path(model_path)
    if config_path is not None:  # a bad config is reported before the (slow) checkpoint load
        raw = read_config_json(config_path)
        config, flavour, notes = normalise_config(raw, source=str(config_path))
    ckpt = torch_load(model_path, what="so-vits-svc checkpoint")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        found = list(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{model_path}: not a so-vits-svc G checkpoint (expected a dict with a 'model' state "
                              f"dict, found {found}); D_*.pth, diffusion and encoder files are not SoVITS models")
    if config_path is None:
        config_path = f"{model_path} (embedded config)"
        config, flavour, notes = normalise_config(_embedded_config(ckpt, model_path), source=config_path)
        notes.append("config taken from the checkpoint")
    state = strip_module_prefix(ckpt["model"])
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{model_path}: entry '{k}' is a {type(v).__name__}, not a tensor")
        if v.is_floating_point() and v.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise CheckpointError(f"{model_path}: tensor '{k}' is {v.dtype}; expected float32/float16/bfloat16")
    state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIX)}
    check_state_fits(config, state, str(model_path))
    iteration = ckpt.get("iteration")
    n_spk = int(config["model"]["n_speakers"])
    for name, sid in (config.get("spk") or {}).items():
        if not isinstance(sid, int) or isinstance(sid, bool) or not 0 <= sid < n_spk:
            raise ConfigError(f"{config_path}: speaker '{name}' has id {sid!r}, outside 0..{n_spk - 1} "
                              f"(model.n_speakers = {n_spk})")
    return ImportedModel(config=config, state=state, flavour=flavour,
                         iteration=int(iteration) if isinstance(iteration, int) else None, notes=notes)
