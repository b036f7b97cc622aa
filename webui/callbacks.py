"""What the web UI's buttons do, as plain functions (no Gradio here; :mod:`webui.app` wires them).

Every function takes ordinary values (paths, numbers, an :class:`~inference.infer_tool.Svc`) and
returns ordinary values; user mistakes raise :class:`~modules.errors.SvcError` with a message
that says what to do. The app shows those messages in the page.

Files written (relative to the working directory, as 4.1's web UI):

* conversions: ``results/result_<upload stem>_<speaker>_<key><cluster><mode>.<format>``
  (4.1's web-UI name: key = ``<int(transpose)>key`` or ``auto``; cluster = ``_`` or
  ``_kmeans<ratio>_`` / ``_index<ratio>_`` (4.1: ``_<ratio>_``); mode = ``sovits`` / ``sovdiff`` /
  ``diff``); an existing result is kept and the new one gets a numeric suffix;
* static mixing: ``results/output.pth`` (4.1 wrote ``./output.pth``);
* compression: ``results/<model stem>_release[_half].pth`` (``compress_model.py``'s name).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from inference.batch import cluster_tag, unique_path
from inference.options import ConversionOptions, OptionError
from modules.errors import SvcError

log = logging.getLogger(__name__)

RESULTS_DIR = Path("results")
TRAINED_DIR = Path("trained")          # 4.1's local model root ("./trained")
DEVICE_AUTO = "Auto"
DEVICE_CPU = "cpu"
OUTPUT_FORMATS = ("wav", "flac", "mp3")
MIX_OUTPUT_NAME = "output.pth"         # 4.1's static-mix output name
MIX_DEFAULT_RATE = 100               # 4.1 pre-fills every model with 100 (%)
MIX_MODE_LABELS = {"convex": "Convex (softmax of rate/100, 4.1 mode 0)",
                   "linear": "Linear (rate/100 as given, 4.1 mode 1)"}


# --- inference settings ------------------------------------------------------------------------
# The page's settings are ConversionOptions fields (labels, ranges, help and checks come from
# their metadata) in the order of 4.1's two columns, plus the output format.
SETTINGS_LEFT = ("auto_predict_f0", "f0_predictor", "transpose", "cluster_infer_ratio", "slice_db", "output_format",
                 "noice_scale", "k_step", "auto_key", "f0_repair")
SETTINGS_RIGHT = ("pad_seconds", "clip_seconds", "lg_num", "lgr_num", "enhancer_adaptive_key", "cr_threshold",
                  "loudness_envelope_adjustment", "second_encoding", "precision", "f0_min", "f0_max")
OUTPUT_FORMAT_LABEL = "Output format"
DEFAULT_OUTPUT_FORMAT = "wav"
# 4.1's web UI imposed the input's loudness envelope (0); its CLI keeps the output's (1). A web-UI
# user gets what 4.1's web UI gave.
WEB_UI_DEFAULTS = {"loudness_envelope_adjustment": 0}


@functools.lru_cache(maxsize=1)
def web_defaults() -> ConversionOptions:
    """The options a fresh page shows: 4.1's web-UI defaults."""
    return ConversionOptions(**WEB_UI_DEFAULTS)


def label(name: str) -> str:
    """The page's label of a setting (``output_format`` or a ConversionOptions field)."""
    return OUTPUT_FORMAT_LABEL if name == "output_format" else ConversionOptions.spec(name).label


def check_output_format(output_format: Any) -> str:
    if output_format not in OUTPUT_FORMATS:
        raise SvcError(f"output format {output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    return str(output_format)


#: optional number settings (None = 4.1's behaviour): their boxes start empty and take 0 as empty
OPTIONAL_NUMBERS = {n for n, s in ConversionOptions.fields_meta().items() if s.optional}


def settings_from_ui(values: Mapping[str, Any]) -> tuple[ConversionOptions, str]:
    """The page's control values → ``(options, output format)``; a bad value raises naming its label."""
    values = dict(values)
    output_format = check_output_format(values.pop("output_format", DEFAULT_OUTPUT_FORMAT))
    for name in OPTIONAL_NUMBERS & set(values):  # an emptied number box arrives as 0: "not set"
        if values[name] in (0, "0"):
            values[name] = None
    try:
        options = ConversionOptions.from_mapping(values, source="web UI", base=web_defaults())
    except OptionError as e:
        if e.field is None:
            raise
        raise SvcError(f"'{label(e.field)}' {e.problem}") from None
    return options, output_format


# --- devices -----------------------------------------------------------------------------------
def device_choices() -> list[str]:
    """4.1's device list: ``Auto``, one ``CUDA:<i> <name>`` per GPU, ``cpu``."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        gpus = [f"CUDA:{i} {torch.cuda.get_device_properties(i).name}" for i in range(torch.cuda.device_count())]
    return [DEVICE_AUTO, *gpus, DEVICE_CPU]


def device_from_choice(choice: str | None) -> str | None:
    """``Auto`` → None (CUDA if available), ``cpu`` → "cpu", ``CUDA:<i> <name>`` → "cuda:<i>"."""
    if choice is None or choice == "" or choice == DEVICE_AUTO:
        return None
    if choice == DEVICE_CPU:
        return DEVICE_CPU
    head = choice.split(" ", 1)[0]
    if head.upper().startswith("CUDA:") and head[5:].isdigit():
        return f"cuda:{int(head[5:])}"
    raise SvcError(f"unknown device {choice!r}; choose one of: {', '.join(device_choices())}")


def _device_name(dev: Any) -> str:
    import torch

    dev = torch.device(dev)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_properties(dev).name})"
    return str(dev)


# --- local models ------------------------------------------------------------------------------
def scan_local_models(root: str | os.PathLike = TRAINED_DIR) -> list[str]:
    """Folders under ``root`` (any depth) holding exactly one ``.json`` and one ``.pth`` (4.1's rule),
    then ``.svc.safetensors`` model files under ``root`` (any depth), each list sorted."""
    from modelfile import FILE_SUFFIX

    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for folder in sorted({p.parent for p in root.rglob("*.json")}):
        if len(list(folder.glob("*.json"))) == 1 and len(list(folder.glob("*.pth"))) == 1:
            found.append(str(folder))
    found += [str(p) for p in sorted(root.rglob("*" + FILE_SUFFIX)) if p.is_file()]
    return found


def local_model_files(folder: str | os.PathLike | None) -> tuple[Path, Path | None]:
    """``(G .pth, config .json)`` of a local model folder, or ``(model file, None)`` for a
    ``.svc.safetensors`` file."""
    if not folder:
        raise SvcError(f"no local model chosen: put a folder with one G_*.pth and its config.json, or a "
                       f".svc.safetensors model file, under {TRAINED_DIR}/, press 'Refresh' and choose it")
    folder = Path(folder)
    if folder.is_file():
        from modelfile import is_model_file

        if not is_model_file(folder):
            raise SvcError(f"{folder}: not a .svc.safetensors model file")
        return folder, None
    pths, jsons = sorted(folder.glob("*.pth")), sorted(folder.glob("*.json"))
    if len(pths) != 1 or len(jsons) != 1:
        raise SvcError(f"{folder}: a local model folder must hold exactly one .pth and one .json "
                       f"(found {len(pths)} .pth, {len(jsons)} .json)")
    return pths[0], jsons[0]


# --- loading -----------------------------------------------------------------------------------
def _existing(path: str | os.PathLike | None, what: str) -> Path | None:
    if path is None or str(path) == "":
        return None
    p = Path(path)
    if not p.is_file():
        raise SvcError(f"{what} {p} not found; upload it again")
    return p


def load_model(*, model_path: str | os.PathLike | None, config_path: str | os.PathLike | None,
               diffusion_model_path: str | os.PathLike | None = None,
               diffusion_config_path: str | os.PathLike | None = None,
               cluster_model_path: str | os.PathLike | None = None, device: str | None = DEVICE_AUTO,
               enhance: bool = False, only_diffusion: bool = False,
               file_diffusion: bool = False) -> tuple[Any, str]:
    """Load a model as 4.1's "load model" button → ``(Svc, status message)``.

    A diffusion model turns shallow diffusion on (4.1); a cluster file whose name contains
    ``.pkl`` is a feature index, any other a k-means model. ``model_path`` may be a
    ``.svc.safetensors`` model file: then no config is needed (an uploaded one is not used), its
    cluster / index part is loaded unless a cluster file is given, and its diffusion model is
    used for shallow diffusion when ``file_diffusion`` is set (or for diffusion only) unless a
    diffusion model is given. The status lists what the file says about itself.
    """
    from modelfile import is_model_file

    model = _existing(model_path, "model file")
    config = _existing(config_path, "config file")
    diff_model = _existing(diffusion_model_path, "diffusion model")
    diff_config = _existing(diffusion_config_path, "diffusion config")
    cluster = _existing(cluster_model_path, "cluster / index file")
    if config is not None and is_model_file(config):
        raise SvcError(f"{config.name} is a .svc.safetensors model file; put it in the model box (it needs no config)")
    if model is not None and is_model_file(model):
        return _load_model_file(model, config, diff_model, diff_config, cluster, device, enhance, only_diffusion,
                                file_diffusion)
    if file_diffusion and not only_diffusion:
        raise SvcError("'Shallow diffusion with the model file's diffusion model' needs a .svc.safetensors model; "
                       "for a G_*.pth give the diffusion model and its config.yaml")
    if not only_diffusion and (model is None or config is None):
        missing = " and ".join(w for w, p in (("a model (G_*.pth)", model), ("its config.json", config)) if p is None)
        raise SvcError(f"choose {missing} first (upload tab), or pick a folder in the local tab")
    if not only_diffusion and model.suffix.lower() == ".json":
        raise SvcError(f"{model.name} is a config file; the model is the G_*.pth "
                       f"({'the two files look swapped' if config.suffix.lower() != '.json' else 'choose it'})")
    if not only_diffusion and config.suffix.lower() in (".pth", ".pt", ".pkl"):
        raise SvcError(f"{config.name} is a model file; the config is the config.json the model was trained with")
    if (diff_model is None) != (diff_config is None):
        raise SvcError("shallow diffusion needs both the diffusion model (model_*.pt) and its config.yaml; "
                       f"only the {'model' if diff_model else 'config'} was given")
    if only_diffusion and diff_model is None:
        raise SvcError("diffusion-only inference needs a diffusion model (model_*.pt) and its config.yaml")
    feature_retrieval = cluster is not None and ".pkl" in cluster.name

    from inference.infer_tool import Svc

    kwargs: dict[str, Any] = dict(device=device_from_choice(device), cluster_model_path=str(cluster or ""),
                                  nsf_hifigan_enhance=bool(enhance), shallow_diffusion=diff_model is not None,
                                  only_diffusion=bool(only_diffusion), feature_retrieval=feature_retrieval)
    if diff_model is not None:
        kwargs.update(diffusion_model_path=str(diff_model), diffusion_config_path=str(diff_config))
    t0 = time.perf_counter()
    svc = Svc(None if only_diffusion else model, None if only_diffusion else config, **kwargs)
    lines = [f"Loaded {'diffusion-only model ' + diff_model.name if only_diffusion else model.name} on "
             f"{_device_name(svc.dev)} in {time.perf_counter() - t0:.1f} s."]
    if cluster is None:
        lines.append("No cluster model or feature index.")
    else:
        lines.append(f"{'Feature index' if feature_retrieval else 'Cluster model'} {cluster.name} loaded.")
    if diff_model is None:
        lines.append("No diffusion model.")
    else:
        lines.append(f"Diffusion model {diff_model.name} loaded ({'only diffusion' if only_diffusion else 'shallow'}).")
    return svc, "\n".join(lines + _enhancer_and_speakers(svc, enhance))


def _load_model_file(model: Path, config: Path | None, diff_model: Path | None, diff_config: Path | None,
                     cluster: Path | None, device: str | None, enhance: bool, only_diffusion: bool,
                     file_diffusion: bool) -> tuple[Any, str]:
    """:func:`load_model` for a ``.svc.safetensors`` model file."""
    from modelfile import read_info

    meta = read_info(model).metadata  # a damaged or disguised file is refused here, nothing loaded
    if (diff_model is None) != (diff_config is None):
        raise SvcError("shallow diffusion needs both the diffusion model (model_*.pt) and its config.yaml; "
                       f"only the {'model' if diff_model else 'config'} was given")
    use_file_diffusion = diff_model is None and (file_diffusion or only_diffusion)
    if use_file_diffusion and not meta.get("diffusion"):
        raise SvcError(f"{model.name} holds no diffusion model: upload one (model_*.pt and its config.yaml) or "
                       "untick the diffusion box")
    feature_retrieval = cluster is not None and ".pkl" in cluster.name

    from inference.infer_tool import Svc

    shallow = diff_model is not None or use_file_diffusion
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = dict(device=device_from_choice(device), cluster_model_path=str(cluster or ""),
                                  nsf_hifigan_enhance=bool(enhance), shallow_diffusion=shallow,
                                  only_diffusion=bool(only_diffusion), feature_retrieval=feature_retrieval,
                                  diffusion_model_path=None)  # None: the file's own diffusion part
    if diff_model is not None:
        kwargs.update(diffusion_model_path=str(diff_model), diffusion_config_path=str(diff_config))
    svc = Svc(model, None, **kwargs)
    lines = [f"Loaded {model.name} on {_device_name(svc.dev)} in {time.perf_counter() - t0:.1f} s"
             f"{' (diffusion only)' if only_diffusion else ''}."]
    lines += svc.model_file.summary()
    if config is not None:
        lines.append(f"{config.name} is not used: the model file carries its config.")
    if svc.cluster_model is None:
        lines.append("No cluster model or feature index.")
    else:
        where = cluster.name if cluster is not None else "from the model file"
        lines.append(f"{'Feature index' if svc.feature_retrieval else 'Cluster model'} {where} loaded.")
    if shallow or only_diffusion:
        where = diff_model.name if diff_model is not None else "from the model file"
        lines.append(f"Diffusion model {where} loaded ({'only diffusion' if only_diffusion else 'shallow'}).")
    elif meta.get("diffusion"):
        lines.append("The model file also holds a diffusion model (tick 'Shallow diffusion with the model file's "
                     "diffusion model' to use it).")
    else:
        lines.append("No diffusion model.")
    return svc, "\n".join(lines + _enhancer_and_speakers(svc, enhance))


def _enhancer_and_speakers(svc: Any, enhance: bool) -> list[str]:
    lines = []
    if enhance and not svc.nsf_hifigan_enhance:
        lines.append("The NSF-HiFiGAN enhancer is not used together with diffusion.")
    elif svc.nsf_hifigan_enhance:
        lines.append("NSF-HiFiGAN enhancer on.")
    lines.append("Speakers: " + (", ".join(svc.spk2id) or "(none in the config)"))
    return lines


def speakers(svc: Any) -> list[str]:
    """The model's speaker names (from its config's ``spk`` map), in id order."""
    if svc is None:
        return []
    return [name for name, _ in sorted(svc.spk2id.items(), key=lambda kv: int(kv[1]))]


def unload_model(svc: Any) -> str:
    """Free the session's model (4.1's "unload model")."""
    if svc is None:
        return "No model to unload."
    svc.unload_model()
    return "Model unloaded."


# --- conversion --------------------------------------------------------------------------------
def output_file_name(basename: str, *, speaker: str, tran: float, auto_predict_f0: bool, cluster_infer_ratio: float,
                     shallow_diffusion: bool, only_diffusion: bool, output_format: str,
                     feature_retrieval: bool = False) -> str:
    """4.1's web-UI result name: ``result_<basename>_<spk>_<key><cluster><mode>.<format>``, with
    the cluster mode beside the ratio when one is used (``_kmeans0.5_`` / ``_index0.5_``)."""
    key = "auto" if auto_predict_f0 else f"{int(tran)}key"
    cluster = cluster_tag(cluster_infer_ratio, feature_retrieval) + "_"
    mode = "diff" if only_diffusion else "sovdiff" if shallow_diffusion else "sovits"
    speaker = str(speaker).replace("/", "_").replace(os.sep, "_")
    return f"result_{basename}_{speaker}_{key}{cluster}{mode}.{output_format}"


@dataclass(frozen=True)
class Conversion:
    path: Path              # the written file
    seconds: float          # audio length (s)
    elapsed: float          # wall time of the conversion (s)
    message: str
    f0: Any = None          # the inference.pitch.F0Curve the conversion used


def convert_file(svc: Any, audio_path: str | os.PathLike | None, speaker: str | None,
                 options: ConversionOptions | None = None, *, output_format: str = DEFAULT_OUTPUT_FORMAT,
                 results_dir: str | os.PathLike = RESULTS_DIR,
                 on_start: Callable[[float], None] | None = None,
                 on_slice_done: Callable[[], None] | None = None,
                 f0_curve: tuple[Any, Any] | None = None, workers: int = 1,
                 set_threads: Callable[[int], int] | None = None, slice_threads: int = 1) -> Conversion:
    """Convert an uploaded file (any soundfile format, mono or stereo, any rate) for ``speaker``
    and write it under ``results_dir`` with 4.1's web-UI name (an existing file is kept: the new
    one gets a numeric suffix). ``options`` default to :func:`web_defaults`. ``on_start(duration_s)``
    is called once the audio is read (the app uses it for its progress display); ``on_slice_done``
    goes to :meth:`Svc.convert` (the script's runtime hook), and so do ``f0_curve`` (an uploaded
    F0 file's curve, used instead of predicting) and the parallel-slice settings ``workers``,
    ``set_threads``, ``slice_threads`` (the script's runtime profile). The result holds the f0 curve used."""
    options = web_defaults() if options is None else options
    output_format = check_output_format(output_format)
    if svc is None or getattr(svc, "hubert_model", None) is None:
        raise SvcError("no model is loaded: choose a model and press 'Load model' first")
    if audio_path is None or str(audio_path) == "":
        raise SvcError("upload an audio file first")
    if not speaker:
        raise SvcError(f"choose a speaker (this model has: {', '.join(speakers(svc)) or 'none'})")
    if options.cluster_infer_ratio != 0 and svc.cluster_model is None:
        raise SvcError(f"'{label('cluster_infer_ratio')}' is {options.cluster_infer_ratio} but no "
                       "cluster model or feature index is loaded: load one with the model, or set the ratio to 0")
    from modules.audio import load_audio, save_audio

    y, sr = load_audio(audio_path)
    seconds = len(y) / sr
    if on_start is not None:
        on_start(seconds)
    t0 = time.perf_counter()
    used = []
    audio = svc.convert(y, sr, speaker, options, on_slice_done=on_slice_done, f0_curve=f0_curve, on_f0=used.append,
                        workers=workers, set_threads=set_threads, slice_threads=slice_threads)
    elapsed = time.perf_counter() - t0
    out = unique_path(Path(results_dir) / output_file_name(
        Path(audio_path).stem, speaker=speaker, tran=options.transpose, auto_predict_f0=options.auto_predict_f0,
        cluster_infer_ratio=options.cluster_infer_ratio, shallow_diffusion=svc.shallow_diffusion,
        only_diffusion=svc.only_diffusion, output_format=output_format, feature_retrieval=svc.feature_retrieval))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_audio(out, audio, svc.target_sample, format=output_format)
    svc.clear_empty()
    msg = (f"Success: {seconds:.2f} s of audio converted to '{speaker}' in {elapsed:.2f} s "
           f"(real-time factor {elapsed / max(seconds, 1e-9):.2f}). Saved as {out}")
    log.info(msg)
    return Conversion(out, seconds, elapsed, msg, used[0] if used else None)


# --- static model mixing -----------------------------------------------------------------------
def display_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """File names for the rates table, made unique (``G_0.pth``, ``G_0.pth (2)``, ...)."""
    names: list[str] = []
    for p in paths:
        base = Path(p).name
        name, k = base, 2
        while name in names:
            name, k = f"{base} ({k})", k + 1
        names.append(name)
    return names


def mix_rates_text(paths: Sequence[str | os.PathLike] | None, previous: str | None = None) -> str:
    """The editable JSON ``{file name: rate %}`` for ``paths``: 100 each, keeping rates already typed."""
    if not paths:
        return ""
    old: dict[str, Any] = {}
    if previous:
        try:
            parsed = json.loads(previous)
            old = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            old = {}
    rates = {}
    for name in display_names(paths):
        v = old.get(name, MIX_DEFAULT_RATE)
        rates[name] = v if isinstance(v, (int, float)) and not isinstance(v, bool) else MIX_DEFAULT_RATE
    return json.dumps(rates, indent=2, ensure_ascii=False)


def parse_mix_rates(paths: Sequence[str | os.PathLike], text: str | None) -> list[float]:
    """Rates (percent) in the order of ``paths`` from the JSON text, with clear errors."""
    names = display_names(paths)
    if not text or not text.strip():
        raise SvcError("the rates box is empty; upload the models again to pre-fill it")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise SvcError(f"the rates box is not valid JSON ({e}); write it as {{\"file name\": rate, ...}}") from None
    if not isinstance(data, Mapping):
        raise SvcError("the rates box must be a JSON object {\"file name\": rate in %, ...}")
    unknown = [k for k in data if k not in names]
    missing = [n for n in names if n not in data]
    if unknown or missing:
        raise SvcError("the rates do not match the uploaded models"
                       + (f"; unknown names: {', '.join(unknown)}" if unknown else "")
                       + (f"; no rate for: {', '.join(missing)}" if missing else "")
                       + f". Models: {', '.join(names)}")
    rates = []
    for n in names:
        v = data[n]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SvcError(f"rate of {n} must be a number (percent), got {v!r}")
        rates.append(float(v))
    return rates


def mix_models(paths: Sequence[str | os.PathLike] | None, rates_text: str | None, mode: str, *,
               results_dir: str | os.PathLike = RESULTS_DIR) -> tuple[Path, str]:
    """Static voice mixing (spec §11.1) → ``(results/output.pth, message)``."""
    from inference.model_mix import MIX_MODES, mix_model, mix_weights

    if not paths:
        raise SvcError("upload the models to mix first (G_*.pth or .svc.safetensors trained with the same config)")
    if mode not in MIX_MODES:
        raise SvcError(f"unknown mixing mode {mode!r}; choose one of: {', '.join(MIX_MODES)}")
    rates = parse_mix_rates(paths, rates_text)
    out = Path(results_dir) / MIX_OUTPUT_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    mix_model([str(p) for p in paths], rates, mode, out)
    weights = [round(float(w), 4) for w in mix_weights(rates, mode)]
    names = display_names(paths)
    return out, (f"Mixed {len(paths)} models ({mode}; weights "
                 + ", ".join(f"{n}: {w}" for n, w in zip(names, weights)) + f"). Saved as {out}")


# --- compression -------------------------------------------------------------------------------
def compress(model_path: str | os.PathLike | None, config_path: str | os.PathLike | None, half: bool = False, *,
             results_dir: str | os.PathLike = RESULTS_DIR) -> tuple[Path, str]:
    """``compress_model.py`` for an uploaded checkpoint → ``(results/<stem>_release[_half].pth, message)``."""
    from training.compress import compress_model, default_output_path

    model = _existing(model_path, "model file")
    config = _existing(config_path, "config file")
    if model is None or config is None:
        raise SvcError("compression needs the model (G_*.pth) and the config.json it was trained with")
    out = Path(results_dir) / default_output_path(model.name, bool(half)).name
    out.parent.mkdir(parents=True, exist_ok=True)
    compress_model(config_path=config, input_path=model, output_path=out, half=bool(half))
    before, after = model.stat().st_size, out.stat().st_size
    return out, (f"Compressed {model.name}: {before / 1e6:.1f} MB → {after / 1e6:.1f} MB"
                 f"{' (float16)' if half else ''}. Saved as {out}. It can no longer be trained further.")
