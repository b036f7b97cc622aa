"""Loading the standalone NSF-HiFiGAN vocoder from ``pretrain/nsf_hifigan/`` (spec §7.7).

A vocoder directory holds ``model`` (``{"generator": state_dict}`` with legacy weight-norm
keys) and ``config.json`` next to it. The model is read with ``weights_only`` loading, every key
is checked (strict), weight norm is folded for inference, and the result is cached so the
diffusion vocoder and the enhancer share one instance per file and device.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import fields
from pathlib import Path

import torch

from modules.checkpoint import load_state_dict_checked, torch_load
from modules.errors import CheckpointError, ConfigError, MissingPretrainedError
from modules.pretrained import missing_message
from vdecoder.nsf_hifigan.models import Generator, NsfHifiganConfig

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
_REQUIRED = tuple(f.name for f in fields(NsfHifiganConfig) if f.name != "extra")

_cache: dict[tuple, tuple[Generator, NsfHifiganConfig]] = {}


def config_path_for(model_path: str | os.PathLike) -> Path:
    """The ``config.json`` that belongs to a vocoder checkpoint (same directory)."""
    return Path(model_path).parent / CONFIG_NAME


def load_config(model_path: str | os.PathLike, *, pretrained_key: str = "nsf-hifigan") -> NsfHifiganConfig:
    """Read and validate the ``config.json`` next to ``model_path``."""
    path = config_path_for(model_path)
    if not path.is_file():
        if not Path(model_path).is_file():
            raise MissingPretrainedError(missing_message(pretrained_key, model_path))
        raise ConfigError(
            f"{path}: the vocoder's config.json is missing; it must sit next to {model_path} "
            "(both come from the same release zip)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable vocoder config ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ConfigError(f"{path}: vocoder config lacks {', '.join(missing)}")
    try:
        h = NsfHifiganConfig(
            sampling_rate=int(raw["sampling_rate"]), num_mels=int(raw["num_mels"]), n_fft=int(raw["n_fft"]),
            win_size=int(raw["win_size"]), hop_size=int(raw["hop_size"]), fmin=float(raw["fmin"]),
            fmax=float(raw["fmax"]), resblock=str(raw["resblock"]),
            resblock_kernel_sizes=tuple(int(k) for k in raw["resblock_kernel_sizes"]),
            resblock_dilation_sizes=tuple(tuple(int(d) for d in ds) for ds in raw["resblock_dilation_sizes"]),
            upsample_rates=tuple(int(u) for u in raw["upsample_rates"]),
            upsample_kernel_sizes=tuple(int(k) for k in raw["upsample_kernel_sizes"]),
            upsample_initial_channel=int(raw["upsample_initial_channel"]),
            extra={k: v for k, v in raw.items() if k not in _REQUIRED},
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: invalid vocoder config value ({e})") from None
    if h.resblock not in ("1", "2"):
        raise ConfigError(f"{path}: resblock must be \"1\" or \"2\", found {h.resblock!r}")
    if len(h.upsample_rates) != len(h.upsample_kernel_sizes):
        raise ConfigError(f"{path}: upsample_rates and upsample_kernel_sizes differ in length")
    if h.upsample_factor != h.hop_size:
        raise ConfigError(
            f"{path}: product of upsample_rates ({h.upsample_factor}) must equal hop_size ({h.hop_size})"
        )
    return h


def load_model(model_path: str | os.PathLike, device: str | torch.device = "cpu", *,
               pretrained_key: str = "nsf-hifigan") -> tuple[Generator, NsfHifiganConfig]:
    """Load (once per process) the vocoder at ``model_path`` → ``(generator, config)``.

    The generator is in eval mode, prepared for inference (weight norm folded, channels-last
    2-D convolutions) with gradients off. Missing,
    unexpected or mis-shaped keys raise :class:`CheckpointError` naming them.
    """
    path = Path(model_path)
    if not path.is_file():
        raise MissingPretrainedError(missing_message(pretrained_key, path))
    key = (str(path.resolve()), path.stat().st_mtime_ns, str(torch.device(device)))
    if key in _cache:
        return _cache[key]
    h = load_config(path, pretrained_key=pretrained_key)
    ckpt = torch_load(path, what="NSF-HiFiGAN vocoder checkpoint")
    if not isinstance(ckpt, dict) or "generator" not in ckpt:
        found = list(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an NSF-HiFiGAN checkpoint (expected a dict with 'generator'; found {found})")
    # Building runs the default initialisers; keep them off the global RNG so loading a model
    # never changes what a seeded inference draws afterwards.
    with torch.random.fork_rng(devices=[]):
        generator = Generator(h)
    load_state_dict_checked(generator, ckpt["generator"], source=str(path), reinit_on_mismatch=())
    generator.eval().prepare_for_inference()
    generator.requires_grad_(False)
    generator.to(device)
    log.info("Loaded NSF-HiFiGAN vocoder %s (%d mels, %d Hz, hop %d)", path, h.num_mels, h.sampling_rate, h.hop_size)
    _cache[key] = (generator, h)
    return generator, h


def clear_cache() -> None:
    """Forget every cached vocoder (frees memory; the next load reads the file again)."""
    _cache.clear()
