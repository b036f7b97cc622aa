"""Typed views of the two configs: :class:`SovitsConfig` (``config.json``) and :class:`DiffusionConfig`
(``diffusion.yaml``), built once from a loaded :class:`~modules.hparams.HParams`.

Defaults are 4.1's template values (``configs/config_template.json``,
``configs/diffusion_template.yaml``) for keys older configs lack; a key the dataclass does not
know is a :class:`~modules.errors.ConfigError` naming it (the loader already rejects keys no 4.x
version knows; this catches the rest). Model hyper-parameters stay a plain mapping
(``model_kwargs``) because they are passed verbatim to the model constructors, as in 4.1.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

from modules.errors import ConfigError

T = TypeVar("T")


def _build(cls: type[T], section: Mapping[str, Any] | None, where: str) -> T:
    """``cls(**section)`` with a clear error for unknown keys and for values of the wrong kind."""
    data = dict(section or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(names), n=1)
        hint = f" (did you mean '{where}.{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown config key '{where}.{unknown[0]}'{hint}; remove it or fix its spelling")
    obj = cls(**data)
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        kind = _KINDS.get(str(f.type))
        if kind is None or value is None:
            continue
        try:
            object.__setattr__(obj, f.name, kind(value))
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{where}.{f.name}' must be {str(f.type)}, found {value!r}") from None
    return obj


def _as_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    raise ValueError(v)


def _as_int(v: Any) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(v)
    return int(v)


_KINDS = {"int": _as_int, "float": float, "bool": _as_bool, "str": str, "int | None": _as_int,
          "float | None": float, "tuple[float, float]": lambda v: tuple(float(x) for x in v)}


# --- SoVITS config.json ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SovitsTrainConfig:
    log_interval: int = 200
    eval_interval: int = 800
    seed: int = 1234
    epochs: int = 10000
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.8, 0.99)
    eps: float = 1e-9
    batch_size: int = 6
    fp16_run: bool = False
    half_type: str = "fp16"          # fp16 | bf16 | auto (auto: bf16 where the GPU has it, else fp32)
    lr_decay: float = 0.999875
    segment_size: int = 10240        # samples at data.sampling_rate
    init_lr_ratio: float = 1
    warmup_epochs: int = 0
    c_mel: float = 45
    c_kl: float = 1.0
    use_sr: bool = True
    max_speclen: int = 512
    port: str = "8001"
    keep_ckpts: int = 3
    all_in_mem: bool = False
    vol_aug: bool = False
    save_every_minutes: float | None = None   # extension: also save every N minutes
    num_workers: int | None = None            # extension: DataLoader workers
    val_scores: bool = True                   # extension: validation scores + best.json at eval_interval

    @property
    def precision(self) -> str:
        """fp32 / fp16 / bf16 / auto from ``fp16_run`` + ``half_type`` (4.1's two keys)."""
        if not self.fp16_run:
            return "fp32"
        return {"bf16": "bf16", "auto": "auto"}.get(str(self.half_type).lower(), "fp16")


@dataclass(frozen=True)
class SovitsDataConfig:
    training_files: str = "filelists/train.txt"
    validation_files: str = "filelists/val.txt"
    max_wav_value: float = 32768.0
    sampling_rate: int = 44100       # Hz
    filter_length: int = 2048        # samples
    hop_length: int = 512            # samples per frame
    win_length: int = 2048
    n_mel_channels: int = 80
    mel_fmin: float = 0.0
    mel_fmax: float | None = 22050
    unit_interpolate_mode: str = "nearest"
    add_blank: bool | None = None
    n_speakers: int | None = None
    cleaned_text: bool | None = None
    contentvec_final_proj: bool | None = None


@dataclass(frozen=True)
class SovitsConfig:
    """``config.json`` of a SoVITS model: typed ``train`` / ``data``, the model kwargs, the speaker map."""

    train: SovitsTrainConfig
    data: SovitsDataConfig
    model_kwargs: Mapping[str, Any]
    spk: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_hparams(cls, hps: Mapping[str, Any]) -> "SovitsConfig":
        model = hps.get("model")
        if model is None:
            raise ConfigError("config has no 'model' section; is this a so-vits-svc config.json?")
        spk = {str(k): int(v) for k, v in dict(hps.get("spk") or {}).items()}
        return cls(_build(SovitsTrainConfig, hps.get("train"), "train"), _build(SovitsDataConfig, hps.get("data"), "data"),
                   _to_plain(model), spk)

    @property
    def n_speakers(self) -> int:
        return int(self.model_kwargs["n_speakers"])

    @property
    def segment_frames(self) -> int:
        """Training slice length in frames (``segment_size / hop_length``)."""
        return self.train.segment_size // self.data.hop_length

    @property
    def spec_channels(self) -> int:
        """Linear-spectrogram bins: ``filter_length / 2 + 1``."""
        return self.data.filter_length // 2 + 1


# --- diffusion.yaml --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiffusionTrainConfig:
    num_workers: int = 4
    amp_dtype: str = "fp32"          # fp32 | fp16 | bf16 | auto
    batch_size: int = 48
    cache_all_data: bool = True
    cache_device: str = "cpu"
    cache_fp16: bool = True
    epochs: int = 100000
    interval_log: int = 10           # steps
    interval_val: int = 2000         # steps: validate and save
    interval_force_save: int = 5000  # steps: checkpoints kept for good
    lr: float = 1e-4
    decay_step: int = 100000
    gamma: float = 0.5
    weight_decay: float = 0.0
    save_opt: bool = False
    save_every_minutes: float | None = None   # extension: also save every N minutes


@dataclass(frozen=True)
class DiffusionConfig:
    """``diffusion.yaml``: the typed ``train`` section; the other sections as 4.1 reads them."""

    train: DiffusionTrainConfig
    expdir: str
    device: str | None
    gpu_id: int
    sections: Mapping[str, Any]      # data, model, vocoder, infer, spk (plain dicts)

    @classmethod
    def from_hparams(cls, hps: Mapping[str, Any]) -> "DiffusionConfig":
        env = dict(hps.get("env") or {})
        if "expdir" not in env:
            raise ConfigError("diffusion config has no env.expdir (the folder for checkpoints)")
        device = hps.get("device")
        return cls(_build(DiffusionTrainConfig, hps.get("train"), "train"), str(env["expdir"]),
                   None if device in (None, "") else str(device), int(env.get("gpu_id", 0) or 0),
                   {k: _to_plain(v) for k, v in hps.items() if k not in ("train", "env", "device")})


def _to_plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    return value
