"""One conversion request's knobs: :class:`ConversionOptions` (issue 18).

Every setting that changes *how* audio is converted (not which model, device or output file)
is one field of a frozen dataclass. Each field carries an :class:`OptionSpec` in its metadata:
unit, 4.1 default, valid range or choices, help text, web-UI label and the 4.1 command-line
flags. Values are checked once, in ``__post_init__``; every front end builds its controls from
:meth:`ConversionOptions.fields_meta` and its values through :meth:`ConversionOptions.from_mapping`
(or :func:`add_arguments` / :func:`from_namespace` for argparse), so names, defaults, ranges and
error messages exist in one place::

    opts = ConversionOptions(transpose=2, f0_predictor="rmvpe")
    audio = svc.convert(y, sr, "alice", opts)              # float32 [L · model_sr / sr]
    louder = opts.replace(loudness_envelope_adjustment=0)

Field names are 4.1's keyword names of ``Svc.slice_inference`` / ``Svc.infer`` (``noice_scale``,
``lg_num``, ...) so 4.1 callers' keyword arguments map one to one; only the transposition is
called ``transpose`` (4.1: positional ``tran``, accepted as an alias by ``from_mapping``).

The f0-predictor name is validated here and nowhere else (against ``modules.F0Predictor``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

from modules.errors import SvcError

SEED = 52468  # SynthesizerTrn.infer's default seed (4.1)


class OptionError(SvcError, ValueError):
    """A conversion option is out of range, of the wrong type, or unknown (the message names it).

    ``field`` is the option's name (None for unknown names) and ``problem`` the message without
    the name, so a front end can name the option its own way (the web UI uses its label)."""

    def __init__(self, message: str, field: str | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.problem = problem or message


@dataclass(frozen=True)
class OptionSpec:
    """What front ends need to know about one option.

    Attributes:
        kind: ``"float"``, ``"int"``, ``"bool"`` or ``"choice"`` (a string from :attr:`choices`).
        unit: unit of the value in words ("semitones", "s", "dB", "ratio 0..1", "" when none).
        help: one line for help texts and tooltips.
        label: the web UI's label (and the name error messages use for web-UI users).
        flags: the command-line flags, 4.1's spelling first (``("-t", "--trans")``); empty = no flag.
        minimum, maximum: inclusive bounds (None = unbounded on that side).
        choices: zero-argument function giving the valid strings (read when validating, so a
            registry extended at run time is honoured).
        cli_type: the argparse ``type`` where 4.1's flag differs from the field's kind (``-t`` is
            ``int`` in 4.1, the field takes any number).
        per_input: the flag takes one value per input file (``-t 0 2``), padded with the first.
        optional: ``None`` is a valid value (it means "4.1's behaviour", e.g. ``f0_min``).
    """

    kind: str
    unit: str
    help: str
    label: str
    flags: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    choices: Callable[[], list[str]] | None = None
    cli_type: type | None = None
    per_input: bool = False
    optional: bool = False

    def range_text(self) -> str:
        """``[0, 1]``, ``≥ 0``, ``≤ 0``, or ``""`` (unbounded)."""
        if self.minimum is not None and self.maximum is not None:
            return f"[{_num(self.minimum)}, {_num(self.maximum)}]"
        if self.minimum is not None:
            return f"≥ {_num(self.minimum)}"
        if self.maximum is not None:
            return f"≤ {_num(self.maximum)}"
        return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def precision_choices() -> list[str]:
    """Valid ``precision`` values (``modules.precision.PRECISIONS``)."""
    from modules.precision import PRECISIONS

    return list(PRECISIONS)


def f0_predictor_choices() -> list[str]:
    """Valid ``f0_predictor`` values listed to users: the ``modules.F0Predictor`` registry's names
    and its hybrid presets (any other ``hybrid:a+b`` of registry names is accepted too)."""
    from modules.F0Predictor import list_f0_predictors

    return list_f0_predictors(hybrids=True)


def _opt(default: Any, kind: str, unit: str, label: str, help: str, flags: tuple[str, ...] = (), **spec: Any) -> Any:
    return field(default=default, metadata={"spec": OptionSpec(kind, unit, help, label, flags, **spec)})


@dataclass(frozen=True)
class ConversionOptions:
    """Every knob of one conversion, with 4.1's defaults (``inference_main.py``'s).

    Times are in seconds, pitch in semitones, thresholds in dB or 0..1. Construct it with
    keywords; invalid values raise :class:`OptionError` naming the field, its flag, the value
    and the valid range.
    """

    transpose: float = _opt(0, "float", "semitones", "Transpose (semitones)",
                            "pitch shift in semitones (+12 = an octave up)", ("-t", "--trans"),
                            minimum=-48, maximum=48, cli_type=int, per_input=True)
    slice_db: float = _opt(-40, "float", "dB", "Slicing threshold (dB)",
                           "silence threshold for slicing (-30 noisy input, -50 dry vocals with breaths)",
                           ("-sd", "--slice_db"), minimum=-120, maximum=0, cli_type=int)
    cluster_infer_ratio: float = _opt(0, "float", "ratio 0..1", "Cluster / feature-retrieval ratio",
                                      "mixing ratio of clustering / feature retrieval (0 = off; ≈0.5 more target "
                                      "timbre, less clear articulation)", ("-cr", "--cluster_infer_ratio"),
                                      minimum=0, maximum=1)
    auto_predict_f0: bool = _opt(False, "bool", "", "Automatic f0 prediction",
                                 "predict f0 with the model (speech only; singing goes out of tune, -t stops "
                                 "working)", ("-a", "--auto_predict_f0"))
    noice_scale: float = _opt(0.4, "float", "", "Noise scale", "prior noise scale (best left alone)",
                              ("-ns", "--noice_scale"), minimum=0)
    pad_seconds: float = _opt(0.5, "float", "s", "Pad seconds",
                              "silence added around each slice (avoids clicks at the ends)", ("-p", "--pad_seconds"),
                              minimum=0)
    clip_seconds: float = _opt(0, "float", "s", "Forced clip length (s)",
                               "force-split voiced audio into pieces of this many seconds (0 = slice at silences "
                               "only)", ("-cl", "--clip"), minimum=0)
    lg_num: float = _opt(0, "float", "s", "Crossfade between clips (s)",
                         "crossfade length between forced clips (only with -cl; at most the clip length)",
                         ("-lg", "--linear_gradient"), minimum=0)
    lgr_num: float = _opt(0.75, "float", "ratio 0..1", "Crossfade retain ratio",
                          "part of the crossfade (-lg) that is blended", ("-lgr", "--linear_gradient_retain"),
                          minimum=0, maximum=1)
    f0_predictor: str = _opt("pm", "choice", "", "F0 predictor",
                             "f0 predictor: a name from the modules.F0Predictor registry (pm, dio, harvest, crepe, "
                             "rmvpe, fcpe; crepe / rmvpe / fcpe use the f0 filter threshold)",
                             ("-f0p", "--f0_predictor"), choices=f0_predictor_choices)
    enhancer_adaptive_key: float = _opt(0, "float", "semitones", "Enhancer adaptive key (semitones)",
                                        "shift the NSF-HiFiGAN enhancer's range (lets it reach higher notes)",
                                        ("-eak", "--enhancer_adaptive_key"), minimum=-48, maximum=48, cli_type=int)
    cr_threshold: float = _opt(0.05, "float", "ratio 0..1", "F0 filter threshold",
                               "voicing threshold of crepe / rmvpe / fcpe (lower = fewer out-of-tune notes, more "
                               "muted ones)", ("-ft", "--f0_filter_threshold"), minimum=0, maximum=1)
    k_step: int = _opt(100, "int", "steps", "Shallow diffusion steps",
                       "shallow-diffusion depth (only with a diffusion model; more = closer to it)",
                       ("-ks", "--k_step"), minimum=1, maximum=1000)
    use_spk_mix: bool = _opt(False, "bool", "", "Speaker mix",
                             "dynamic speaker mix (the speaker is a spk_mix_map: spkmix.py)", ("-usm", "--use_spk_mix"))
    second_encoding: bool = _opt(False, "bool", "", "Second encoding",
                                 "re-encode the SoVITS output before shallow diffusion (hit or miss)",
                                 ("-se", "--second_encoding"))
    loudness_envelope_adjustment: float = _opt(1, "float", "ratio 0..1", "Loudness envelope ratio",
                                               "1 keeps the output's loudness envelope, 0 imposes the input's",
                                               ("-lea", "--loudness_envelope_adjustment"), minimum=0, maximum=1)
    max_chunk_seconds: float = _opt(60.0, "float", "s", "Longest voiced chunk (s)",
                                    "split voiced stretches longer than this at their quietest point (0 = never; "
                                    "4.1 never split)", ("--max_chunk_seconds",), minimum=0)
    f0_filter: bool = _opt(False, "bool", "", "Stop on unvoiced input",
                           "raise F0FilterException when a segment has no voiced frame (4.1 infer's f0_filter)",
                           ("--f0_filter",))
    seed: int = _opt(SEED, "int", "", "Seed", "random seed of the synthesizer's prior noise (4.1: 52468)",
                     ("--seed",), minimum=0, maximum=2**63 - 1)
    precision: str = _opt("fp32", "choice", "", "Precision",
                          "compute precision of the speech encoder, synthesizer and diffusion: fp32 (4.1's, "
                          "default), bf16 (about 2x faster on GPUs and on CPUs with AVX512-BF16/AMX; audio "
                          "about 35-45 dB SNR from fp32), fp16 (GPUs), auto (bf16 where native, else fp32); "
                          "f0, sine phase, mel and loudness stay fp32", ("--precision",),
                          choices=precision_choices)

    # --- pitch (issue 20); every default keeps 4.1's output
    f0_min: float | None = _opt(None, "float", "Hz", "Lowest f0 (Hz)",
                                "lowest f0 the predictor searches (empty = 4.1's: 50 Hz for dio/harvest/pm/crepe, "
                                "rmvpe/fcpe unrestricted)", ("--f0_min",), minimum=1, maximum=8000, optional=True)
    f0_max: float | None = _opt(None, "float", "Hz", "Highest f0 (Hz)",
                                "highest f0 the predictor searches (empty = 4.1's: 1100 Hz for dio/harvest/pm/crepe, "
                                "rmvpe/fcpe unrestricted)", ("--f0_max",), minimum=1, maximum=8000, optional=True)
    f0_repair: bool = _opt(False, "bool", "", "Octave repair",
                           "move short f0 segments an octave (or a fifth) off their context back (modules.f0_repair)",
                           ("--f0_repair",))
    auto_key: bool = _opt(False, "bool", "", "Automatic key",
                          "transpose by the suggested key (source's median f0 onto the speaker's, from the model's "
                          "f0 statistics) instead of -t", ("--auto_key",))

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        specs = self.fields_meta()
        for name, spec in specs.items():
            value = _check_value(name, spec, getattr(self, name))
            if value is not getattr(self, name):
                object.__setattr__(self, name, value)
        if self.f0_min is not None and self.f0_max is not None and self.f0_min >= self.f0_max:
            raise _bad("f0_min", specs["f0_min"], f"must be below f0_max (--f0_max): f0_min = {_num(self.f0_min)} Hz, "
                       f"f0_max = {_num(self.f0_max)} Hz")
        if self.clip_seconds > 0 and self.lg_num > self.clip_seconds:
            raise _bad("lg_num", specs["lg_num"], f"must be in [0, clip_seconds = {self.clip_seconds}] s (the "
                       f"crossfade cannot be longer than the clip length), got {self.lg_num}")

    # ------------------------------------------------------------------ metadata
    @classmethod
    def fields_meta(cls) -> dict[str, OptionSpec]:
        """``{field name: OptionSpec}`` in declaration order."""
        return {f.name: f.metadata["spec"] for f in fields(cls)}

    @classmethod
    def spec(cls, name: str) -> OptionSpec:
        try:
            return cls.__dataclass_fields__[name].metadata["spec"]
        except KeyError:
            raise OptionError(f"unknown conversion option {name!r}; known: {', '.join(cls.fields_meta())}") from None

    @classmethod
    def default(cls, name: str) -> Any:
        return cls.__dataclass_fields__[name].default

    @classmethod
    def choices(cls, name: str) -> list[str]:
        """The valid values of a ``"choice"`` option."""
        spec = cls.spec(name)
        return list(spec.choices()) if spec.choices else []

    # ------------------------------------------------------------------ building
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "options", base: "ConversionOptions | None" = None,
                     ignore_unknown: bool = False) -> "ConversionOptions":
        """Options from loosely typed values (JSON, form fields, argparse): numbers given as
        strings are parsed, ``1.0`` is accepted for an int field, ``"true"``/``1`` for a bool.
        ``tran`` is accepted for ``transpose``. ``source`` names where the values came from in
        error messages; fields not given keep ``base``'s values (default: 4.1's defaults).
        Unknown keys raise unless ``ignore_unknown``."""
        specs = cls.fields_meta()
        changes: dict[str, Any] = {}
        for key, value in values.items():
            name = ALIASES.get(key, key)
            if name not in specs:
                if ignore_unknown:
                    continue
                raise OptionError(f"{source}: unknown conversion option {key!r}; known: {', '.join(specs)}")
            changes[name] = _coerce(name, specs[name], value, source)
        start = base if base is not None else cls()
        return dataclasses.replace(start, **changes)

    def replace(self, **changes: Any) -> "ConversionOptions":
        """A copy with ``changes`` applied (validated again; unknown names raise)."""
        specs = self.fields_meta()
        unknown = [k for k in changes if k not in specs]
        if unknown:
            raise OptionError(f"unknown conversion option(s) {', '.join(unknown)}; known: {', '.join(specs)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


ALIASES = {"tran": "transpose"}  # 4.1 keyword names that differ from the field names


def _bad(name: str, spec: OptionSpec, problem: str, source: str | None = None) -> OptionError:
    """The error for option ``name``: ``[source: ]name (flags) problem``."""
    where = _where(name, spec)
    return OptionError(f"{source}: {where} {problem}" if source else f"{where} {problem}", name, problem)


def _flags(spec: OptionSpec) -> str:
    return "/".join(spec.flags) if spec.flags else "no flag"


def _where(name: str, spec: OptionSpec) -> str:
    return f"{name} ({_flags(spec)})" if spec.flags else name


def _check_value(name: str, spec: OptionSpec, value: Any, source: str | None = None) -> Any:
    """Type and range check of one value; returns it (ints given as numpy ints become ints)."""
    if value is None and spec.optional:
        return None
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise _bad(name, spec, f"must be true or false, got {value!r}", source)
        return value
    if spec.kind == "choice":
        valid = ConversionOptions.choices(name)
        if value not in valid and not _other_valid_choice(name, value):
            raise _bad(name, spec, f"must be one of {', '.join(valid)}, got {value!r}", source)
        return value
    if isinstance(value, bool) or not _is_number(value):
        raise _bad(name, spec, f"must be a number{_unit(spec)}, got {value!r}", source)
    if not math.isfinite(float(value)):
        raise _bad(name, spec, f"must be a finite number{_unit(spec)}, got {value!r}", source)
    if spec.kind == "int":
        if float(value) != int(value):
            raise _bad(name, spec, f"must be a whole number, got {value!r}", source)
        value = int(value)
    elif type(value) not in (int, float):
        value = float(value)  # numpy scalars: plain Python numbers (stable names, JSON)
    lo, hi = spec.minimum, spec.maximum
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _bad(name, spec, f"must be in {spec.range_text()}{_unit(spec)}, got {value!r}", source)
    return value


def _other_valid_choice(name: str, value: Any) -> bool:
    """A value outside the listed choices that is still valid: any ``hybrid:a+b[+c...]`` of registry names."""
    if name != "f0_predictor" or not isinstance(value, str):
        return False
    from modules.F0Predictor import check_f0_predictor_name

    try:
        check_f0_predictor_name(value)
    except SvcError:
        return False
    return True


def _unit(spec: OptionSpec) -> str:
    return f" ({spec.unit})" if spec.unit and not spec.unit.startswith("ratio") else ""


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, (str, bytes))


def _coerce(name: str, spec: OptionSpec, value: Any, source: str) -> Any:
    """Loosely typed ``value`` → the field's type; the range check is left to ``__post_init__``."""
    if spec.kind == "bool":
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off", ""):
                return False
            raise _bad(name, spec, f"must be true or false, got {value!r}", source)
        if value is None:
            return False
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        return value  # rejected by the check, naming the value
    if spec.kind == "choice":
        if value is None or value == "":
            raise _bad(name, spec, f"is empty; choose one of {', '.join(ConversionOptions.choices(name))}", source)
        return str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        if spec.optional:
            return None
        raise _bad(name, spec, f"is empty; enter a number (default {ConversionOptions.default(name)})", source)
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                raise _bad(name, spec, f"must be a number{_unit(spec)}, got {value!r}", source) from None
    if not _is_number(value) or isinstance(value, bool):
        raise _bad(name, spec, f"must be a number{_unit(spec)}, got {value!r}", source)
    if not math.isfinite(float(value)):
        raise _bad(name, spec, f"must be a finite number, got {value!r}", source)
    if spec.kind == "int":
        if float(value) != round(float(value)):
            raise _bad(name, spec, f"must be a whole number, got {value!r}", source)
        return int(round(float(value)))
    return value


# --- argparse -------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser | Any, *, exclude: tuple[str, ...] = ()) -> None:
    """One flag per option (4.1's names, types and defaults); ``dest`` is the field name.

    Per-input options (``-t``) take several values (a list default). Choices are not passed to
    argparse (reading the registry would import torch and slow ``--help``): the options object
    validates them (one message, one place).
    """
    for name, spec in ConversionOptions.fields_meta().items():
        if name in exclude or not spec.flags:
            continue
        default = ConversionOptions.default(name)
        text = spec.help + (f" [{spec.unit}]" if spec.unit else "") + (
            f", range {spec.range_text()}" if spec.range_text() else "")
        if spec.kind == "bool":
            parser.add_argument(*spec.flags, dest=name, action="store_true", default=default, help=spec.help)
            continue
        typ = spec.cli_type or {"float": float, "int": int, "choice": str}[spec.kind]
        metavar = spec.flags[-1].lstrip("-").upper()
        if spec.per_input:
            parser.add_argument(*spec.flags, dest=name, type=typ, nargs="+", default=[default], metavar=metavar,
                                help=text + " (one per input, padded with the first)")
        else:
            if spec.kind == "choice":
                text += f"; default {default} (an invalid name lists the valid ones)"
            parser.add_argument(*spec.flags, dest=name, type=typ, default=default, metavar=metavar, help=text)


def from_namespace(args: argparse.Namespace, **overrides: Any) -> ConversionOptions:
    """The options in parsed flags (:func:`add_arguments`); a per-input flag gives its first value
    unless ``overrides`` sets it."""
    values: dict[str, Any] = {}
    for name, spec in ConversionOptions.fields_meta().items():
        if not hasattr(args, name):
            continue
        v = getattr(args, name)
        values[name] = v[0] if spec.per_input and isinstance(v, list) else v
    values.update(overrides)
    return ConversionOptions.from_mapping(values, source="command line")
