"""Realtime settings (spec §11.3): what the GUI sets, saved as JSON (4.1 pickled it).

The knobs a realtime conversion shares with an offline one (transpose, noise scale, f0 predictor
and threshold, cluster ratio, automatic f0, enhancer key, diffusion depth, second encoding) take
their type, range and choices from :class:`inference.options.ConversionOptions`' field metadata
(:data:`SHARED_OPTIONS`); only the realtime-only settings are checked here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from inference.options import ConversionOptions, OptionError
from modules.errors import ConfigError

__all__ = ["SHARED_OPTIONS", "RealtimeSettings", "load_settings", "save_settings"]

# realtime setting → ConversionOptions field it is checked against (names kept: they are the keys of
# saved settings files and of the GUI's controls)
SHARED_OPTIONS = {
    "transpose": "transpose",
    "noise_scale": "noice_scale",
    "cluster_ratio": "cluster_infer_ratio",
    "f0_predictor": "f0_predictor",
    "f0_threshold": "cr_threshold",
    "auto_f0": "auto_predict_f0",
    "enhancer_adaptive_key": "enhancer_adaptive_key",
    "k_step": "k_step",
    "second_encoding": "second_encoding",
    "precision": "precision",
    "f0_min": "f0_min",
    "f0_max": "f0_max",
    "f0_repair": "f0_repair",
}
_KIND_TYPE = {"float": "float", "int": "int", "bool": "bool", "choice": "str"}  # OptionSpec.kind → JSON type


@dataclass
class RealtimeSettings:
    """Everything the realtime GUI sets (spec §11.3), saved as JSON (4.1 pickled it).

    Times are in seconds, the threshold in dB, ``transpose`` in semitones. ``config_path`` /
    ``diffusion_config_path`` empty = ``config.json`` / ``config.yaml`` beside the model file.
    ``model_path`` may be a ``.svc.safetensors`` model file: then no config is used, and its
    cluster / diffusion parts stand in for ``cluster_model_path`` / ``diffusion_model_path``
    while those are empty or at their defaults.
    ``sample_rate`` 0 = open the sound devices at the model rate if they accept it, else at
    their default rate (with resampling). Fields marked *live* take effect on the next block.
    """

    # model
    model_path: str = "logs/44k/G_30000.pth"
    config_path: str = ""
    cluster_model_path: str = "logs/44k/kmeans_10000.pt"
    speaker: str = ""                   # live; empty = the model's first speaker
    device: str = "auto"                # torch device: auto, cpu, cuda, cuda:N
    # sound devices
    input_device: str = ""              # "<name> (<host API>)" as 4.1; empty = system default
    output_device: str = ""
    sample_rate: int = 0
    # normal settings
    threshold: float = -45.0            # live; response threshold (volume gate), dB
    cluster_ratio: float = 0.0          # live; k-means / retrieval mix ratio
    transpose: float = 0.0              # live
    noise_scale: float = 0.4            # live
    # performance
    block_time: float = 0.5
    crossfade_time: float = 0.04
    history_blocks: int = 4             # 4.1 "extra" buffer blocks of context
    f0_predictor: str = "fcpe"          # live
    f0_threshold: float = 0.05          # live; cr_threshold of crepe / rmvpe / fcpe
    enhancer: bool = False
    feature_retrieval: bool = False
    auto_f0: bool = False               # live
    skip_safe_zone: bool = False        # live; 4.1 "diff_silence": synthesise only the tail
    enhancer_adaptive_key: float = 0.0  # live
    # shallow diffusion
    diffusion_model_path: str = "logs/44k/diffusion/model_400000.pt"
    diffusion_config_path: str = ""
    use_diffusion: bool = False
    k_step: int = 100                   # live
    diffusion_speedup: int = 10         # live
    diffusion_method: str = "ddim"      # live
    second_encoding: bool = False       # live
    # new in this implementation
    feature_context: float = 1.0        # s of left context for f0 / units of new frames
    incremental: bool = True            # False: recompute f0 / units of the whole buffer (4.1)
    precision: str = "fp32"             # fp32, bf16, fp16, auto (ConversionOptions.precision); at Start
    f0_min: float | None = None         # live; Hz, None = 4.1's range (issue 20)
    f0_max: float | None = None         # live
    f0_repair: bool = False             # live; octave repair (sees one block and its context)

    LIVE = ("speaker", "threshold", "cluster_ratio", "transpose", "noise_scale", "f0_predictor", "f0_threshold",
            "auto_f0", "skip_safe_zone", "enhancer_adaptive_key", "k_step", "diffusion_speedup",
            "diffusion_method", "second_encoding", "f0_min", "f0_max", "f0_repair")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # 5 → 5.0 for float fields; wrong types are errors
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), _type_of(f), "settings"))

    # --- JSON ---
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "settings") -> "RealtimeSettings":
        """Build from a mapping; unknown keys and wrong types are :class:`ConfigError`\\ s."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a JSON object of settings, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(known)}")
        return cls(**{name: _coerce(name, value, _type_of(known[name]), source) for name, value in data.items()})

    def replace(self, **changes) -> "RealtimeSettings":
        return RealtimeSettings.from_dict({**self.to_dict(), **changes})

    def validate(self) -> "RealtimeSettings":
        """Refuse impossible values, naming the setting. Returns ``self``."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        need(0.01 <= self.block_time <= 10, f"block_time must be in [0.01, 10] s, got {self.block_time}")
        need(0 < self.crossfade_time <= 1, f"crossfade_time must be in (0, 1] s, got {self.crossfade_time}")
        need(self.history_blocks >= 0, f"history_blocks must be ≥ 0, got {self.history_blocks}")
        need(self.threshold <= 0, f"threshold is in dB below full scale and must be ≤ 0, got {self.threshold}")
        need(self.diffusion_speedup >= 1, f"diffusion_speedup must be ≥ 1, got {self.diffusion_speedup}")
        need(self.feature_context >= 0, f"feature_context must be ≥ 0 s, got {self.feature_context}")
        need(self.sample_rate == 0 or 8000 <= self.sample_rate <= 384000,
             f"sample_rate must be 0 (automatic) or a device rate in Hz, got {self.sample_rate}")
        from diffusion.samplers import SAMPLERS
        need(self.diffusion_method in SAMPLERS,
             f"unknown diffusion_method {self.diffusion_method!r}; choose one of: {', '.join(SAMPLERS)}")
        for name, option in SHARED_OPTIONS.items():  # ranges and choices: ConversionOptions' metadata
            try:
                ConversionOptions.from_mapping({option: getattr(self, name)}, source=f"setting {name!r}")
            except OptionError as e:
                raise ConfigError(f"{e} (realtime setting {name!r} is the conversion option {option})") from None
        try:  # checks across fields (f0_min < f0_max)
            self.conversion_options()
        except OptionError as e:
            raise ConfigError(str(e)) from None
        return self

    def conversion_options(self) -> ConversionOptions:
        """The shared knobs as :class:`ConversionOptions` (other fields at their defaults)."""
        return ConversionOptions.from_mapping({o: getattr(self, n) for n, o in SHARED_OPTIONS.items()},
                                              source="realtime settings")

    def resolved_config_path(self) -> Path | None:
        """The model's config.json; None for a ``.svc.safetensors`` model file (it carries its config)."""
        from modelfile import is_model_file

        if is_model_file(self.model_path):
            return None
        return Path(self.config_path) if self.config_path else Path(self.model_path).parent / "config.json"

    def given(self, name: str) -> str | None:
        """A path field's value, or None when it is empty or at its default (for a model file
        that means: the file's own part)."""
        value = getattr(self, name)
        return None if value in ("", _DEFAULTS[name]) else value

    def resolved_diffusion_config_path(self) -> Path:
        if self.diffusion_config_path:
            return Path(self.diffusion_config_path)
        return Path(self.diffusion_model_path).parent / "config.yaml"


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RealtimeSettings)}


def _type_of(f: dataclasses.Field) -> str:
    """JSON type of a setting: a shared knob's comes from its ConversionOptions field."""
    if f.name in SHARED_OPTIONS:
        spec = ConversionOptions.spec(SHARED_OPTIONS[f.name])
        return ("optional " if spec.optional else "") + _KIND_TYPE[spec.kind]
    return getattr(f.type, "__name__", f.type)


def _coerce(name: str, value: Any, type_name: Any, source: str) -> Any:
    type_name = getattr(type_name, "__name__", type_name)
    if isinstance(type_name, str) and type_name.startswith("optional "):
        if value is None:
            return None
        type_name = type_name[len("optional "):]
    ok = {"str": isinstance(value, str), "bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool)
          or isinstance(value, float) and value.is_integer(),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool)}[type_name]
    if not ok:
        raise ConfigError(f"{source}: setting {name!r} must be a {type_name}, got {value!r}")
    return {"int": int, "float": float}.get(type_name, lambda v: v)(value)


def load_settings(path: str | os.PathLike) -> RealtimeSettings:
    """Read settings JSON written by :func:`save_settings` (missing keys take the defaults)."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: settings file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON settings file ({e}); delete it to start from the defaults") from None
    return RealtimeSettings.from_dict(data, source=str(path))


def save_settings(settings: RealtimeSettings, path: str | os.PathLike) -> Path:
    """Write settings as JSON, atomically."""
    import json

    from modules.io_utils import atomic_write_text

    atomic_write_text(path, json.dumps(settings.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return Path(path)

