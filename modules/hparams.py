"""Configuration loading: one loader for ``config.json`` (SoVITS) and ``diffusion.yaml``.

The result is an :class:`HParams` tree with attribute *and* key access (``hps.data.hop_length``
and ``hps["data"]["hop_length"]``). Reading a key that is not there raises (never returns
``None``), and a file with a key that no version of so-vits-svc 4.x knows is rejected with a
message naming the file, the key and the closest known key, because a typo in a config would
otherwise silently fall back to a default.

Configs written by the original 4.0 / 4.1 code load unchanged; keys that old configs lack get
their 4.1 inference defaults through :func:`apply_inference_defaults`.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from modules.errors import ConfigError

log = logging.getLogger(__name__)

# --- schema -----------------------------------------------------------------------------------
# Every key any 4.x config.json is known to contain. Sections not listed (e.g. "spk") are free.
_SOVITS_KEYS: dict[str, set[str]] = {
    "train": {
        "log_interval", "eval_interval", "seed", "epochs", "learning_rate", "betas", "eps",
        "batch_size", "fp16_run", "half_type", "lr_decay", "segment_size", "init_lr_ratio",
        "warmup_epochs", "c_mel", "c_kl", "use_sr", "max_speclen", "port", "keep_ckpts",
        "all_in_mem", "vol_aug",
        # accepted extensions of this project (documented in docs/compatibility.md)
        "save_every_minutes", "num_workers", "val_scores",
    },
    "data": {
        "training_files", "validation_files", "max_wav_value", "sampling_rate", "filter_length",
        "hop_length", "win_length", "n_mel_channels", "mel_fmin", "mel_fmax",
        "unit_interpolate_mode", "add_blank", "n_speakers", "cleaned_text", "contentvec_final_proj",
    },
    "model": {
        "inter_channels", "hidden_channels", "filter_channels", "n_heads", "n_layers",
        "kernel_size", "p_dropout", "resblock", "resblock_kernel_sizes", "resblock_dilation_sizes",
        "upsample_rates", "upsample_initial_channel", "upsample_kernel_sizes", "n_layers_q",
        "n_layers_trans_flow", "n_flow_layer", "use_spectral_norm", "gin_channels", "ssl_dim",
        "n_speakers", "vocoder_name", "speech_encoder", "speaker_embedding", "vol_embedding",
        "use_depthwise_conv", "flow_share_parameter", "use_automatic_f0_prediction",
        "use_transformer_flow", "sampling_rate",
    },
}
_SOVITS_TOP = {"train", "data", "model", "spk"}

_DIFFUSION_KEYS: dict[str, set[str]] = {
    "data": {
        "sampling_rate", "block_size", "duration", "encoder", "cnhubertsoft_gate",
        "encoder_sample_rate", "encoder_hop_size", "encoder_out_channels", "training_files",
        "validation_files", "extensions", "unit_interpolate_mode",
    },
    "model": {"type", "n_layers", "n_chans", "n_hidden", "use_pitch_aug", "timesteps", "k_step_max", "n_spk"},
    "vocoder": {"type", "ckpt"},
    "infer": {"speedup", "method"},
    "env": {"expdir", "gpu_id"},
    "train": {
        "num_workers", "amp_dtype", "batch_size", "cache_all_data", "cache_device", "cache_fp16",
        "epochs", "interval_log", "interval_val", "interval_force_save", "lr", "decay_step",
        "gamma", "weight_decay", "save_opt",
        "save_every_minutes",
    },
}
_DIFFUSION_TOP = {"data", "model", "vocoder", "infer", "env", "train", "spk", "device"}

# Defaults 4.1's inference code substitutes when an (older) config lacks a key (spec §2).
INFERENCE_DEFAULTS = {
    ("model", "speech_encoder"): "vec768l12",
    ("model", "vol_embedding"): False,
    ("data", "unit_interpolate_mode"): "left",
}


class HParams(Mapping[str, Any]):
    """A config section: attribute and key access; missing keys raise with the full key path."""

    def __init__(self, _path: str = "", **kwargs: Any) -> None:
        object.__setattr__(self, "_path", _path)
        object.__setattr__(self, "_data", {})
        for k, v in kwargs.items():
            self[k] = v

    # -- access ------------------------------------------------------------------------------
    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(self._missing(key)) from None

    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(self._missing(key)) from None

    def _missing(self, key: str) -> str:
        where = f"{self._path}.{key}" if self._path else key
        known = ", ".join(sorted(self._data)) or "(none)"
        return f"config has no key '{where}' (keys here: {known})"

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, Mapping) and not isinstance(value, HParams):
            value = HParams(f"{self._path}.{key}" if self._path else key, **value)
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __repr__(self) -> str:
        return f"HParams({self.to_dict()!r})"

    def __deepcopy__(self, memo: dict) -> "HParams":
        return HParams(self._path, **copy.deepcopy(self.to_dict(), memo))

    def __getstate__(self) -> dict:
        return {"path": self._path, "data": self.to_dict()}

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "_path", state["path"])
        object.__setattr__(self, "_data", {})
        for k, v in state["data"].items():
            self[k] = v

    def to_dict(self) -> dict[str, Any]:
        """A plain nested ``dict`` (for JSON/YAML dumping), keys in file order."""
        return {k: (v.to_dict() if isinstance(v, HParams) else copy.deepcopy(v)) for k, v in self._data.items()}


# --- loading ------------------------------------------------------------------------------------
def _read_raw(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    if not text.strip():
        raise ConfigError(f"{path}: config file is empty (run preprocess_flist_config.py to generate it)")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        raise ConfigError(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, found {type(data).__name__}")
    return data


def _check_keys(data: dict, path: Path, top: set[str], sections: dict[str, set[str]]) -> None:
    for key in data:
        if key not in top:
            raise ConfigError(_unknown(path, key, top))
    for sec, known in sections.items():
        value = data.get(sec)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: section '{sec}' must be a mapping, found {type(value).__name__}")
        for key in value:
            if key not in known:
                raise ConfigError(_unknown(path, f"{sec}.{key}", {f"{sec}.{k}" for k in known}))


def _unknown(path: Path, key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{path}: unknown config key '{key}'{hint}; remove it or fix its spelling"


def _kind(data: dict) -> str:
    if "vocoder" in data or "infer" in data or "env" in data:
        return "diffusion"
    return "sovits"


def get_hparams_from_file(config_path: str | os.PathLike, infer_mode: bool = False, strict: bool = True) -> HParams:
    """Load a SoVITS ``config.json`` or a diffusion ``*.yaml`` into :class:`HParams`.

    ``strict`` rejects keys unknown to every 4.x version. ``infer_mode`` fills keys that old
    (4.0) configs lack with the defaults 4.1's inference uses (:data:`INFERENCE_DEFAULTS`).
    """
    path = Path(config_path)
    return hparams_from_dict(_read_raw(path), source=path, infer_mode=infer_mode, strict=strict)


def hparams_from_dict(data: Mapping[str, Any], *, source: str | os.PathLike = "config", infer_mode: bool = False,
                      strict: bool = True) -> HParams:
    """:func:`get_hparams_from_file` for a config already in memory (e.g. one stored inside a model
    file); ``source`` names it in error messages."""
    data = copy.deepcopy(dict(data))
    if strict:
        if _kind(data) == "diffusion":
            _check_keys(data, Path(source), _DIFFUSION_TOP, _DIFFUSION_KEYS)
        else:
            _check_keys(data, Path(source), _SOVITS_TOP, _SOVITS_KEYS)
    hps = HParams(**data)
    if infer_mode:
        apply_inference_defaults(hps)
    return hps


def apply_inference_defaults(hps: HParams) -> HParams:
    """Fill keys missing from old configs with 4.1's inference defaults (in place)."""
    for (section, key), value in INFERENCE_DEFAULTS.items():
        if section in hps and key not in hps[section]:
            hps[section][key] = value
    return hps


def backup_changed_config(path: str | os.PathLike, new: HParams | Mapping, *, now: Any = None) -> Path | None:
    """Before ``new`` replaces the config at ``path``: if the file there says something else (the user
    edited it, or it came from other settings), rename it to ``<name>.<YYYY-mm-ddTHH-MM-SS>.bak`` beside
    it and return that path (None: no file, or the same content). A file that does not parse is kept
    too. Logged at WARNING so the user sees where the old file went. ``now``: a datetime (tests).
    """
    import datetime

    path = Path(path)
    if not path.is_file():
        return None
    data = new.to_dict() if isinstance(new, HParams) else dict(new)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            old = yaml.safe_load(text)
        else:
            old = json.loads(text)
        same = old == json.loads(json.dumps(data))  # tuples → lists, as the file would hold them
    except Exception as e:  # OSError, ValueError, yaml.YAMLError: an unreadable file is kept as well
        log.debug("%s does not parse (%s): keeping it as a backup", path, e)
        same = False
    if same:
        return None
    stamp = (now or datetime.datetime.now()).strftime("%Y-%m-%dT%H-%M-%S")
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while backup.exists():  # two runs within a second
        backup = path.with_name(f"{path.name}.{stamp}-{n}.bak")
        n += 1
    os.replace(path, backup)
    log.warning("%s differs from the newly generated one (edited by hand, or other settings): kept it as %s",
                path, backup)
    return backup


def save_config(hps: HParams | Mapping, path: str | os.PathLike) -> None:
    """Write a config atomically: JSON with indent 2 (as 4.1), or YAML with sorted keys (as 4.1)."""
    from modules.io_utils import atomic_write_text

    data = hps.to_dict() if isinstance(hps, HParams) else dict(hps)
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        atomic_write_text(path, yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
    else:
        atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False))

