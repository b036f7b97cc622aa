"""Step 2: speaker ids, train/validation file lists and the two generated configs (spec §1.2, §2.3).

Differences from 4.1 (deliberate, see docs/compat/preprocess.md):

* speaker ids follow the **sorted** folder names (4.1 used ``os.listdir`` order, which differs
  between machines and file systems), and the files of a speaker are sorted before shuffling;
* the shuffles use ``random.Random(seed)`` (4.1: unseeded), so the split is reproducible;
* speaker folders without usable audio get no id (4.1 gave them one); a speaker with too few
  clips for the validation split is an error instead of silently never being trained;
* files the trainer cannot read (wrong rate, not 16-bit PCM, not mono, truncated, unreadable:
  :func:`modules.wavcheck.check_wav`) are reported and left out instead of breaking training later;
* the dataset quality summary (:mod:`preprocessing.quality`) is logged first; ``strict`` stops
  before anything is written when a clip cannot be trained on.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.errors import ConfigError
from modules.wavcheck import WavCheck, WavProblem, WavRequirements, check_wav
from preprocessing.features import is_artifact_name
from preprocessing.report import DatasetError, FileOutcome, RunSummary

log = logging.getLogger(__name__)

MIN_SECONDS = 0.3                  # 4.1 leaves out shorter clips
VAL_PER_SPEAKER = 2                # 4.1 puts two clips per speaker into validation
DEFAULT_SEED = 1234
# 4.1 warns about file names outside this set (e.g. non-ASCII, spaces).
PLAIN_NAME = re.compile(r"^[.a-zA-Z0-9_/]+$")
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "configs"
TINY_FILTER_CHANNELS = 512
# Encoders of 256 channels keep the template's filter_channels (4.1's vec256l9/hubertsoft branch);
# wider ones set filter_channels to their width.
NARROW_ENCODER_DIM = 256


@dataclass
class DatasetListing:
    """Usable clips per speaker (sorted names → sorted list paths) plus what was left out."""

    speakers: dict[str, list[str]] = field(default_factory=dict)
    summary: RunSummary = field(default_factory=lambda: RunSummary("preprocess_flist_config"))
    odd_names: list[str] = field(default_factory=list)


def list_path(source_dir: str, speaker: str, name: str) -> str:
    """The line written to the file list: 4.1 joins the three parts with '/' as given."""
    return "/".join([source_dir.replace("\\", "/").rstrip("/") or ".", speaker, name])


def _check_clip(path: Path, sampling_rate: int | None) -> WavCheck:
    """The trainer's requirements (modules.wavcheck) plus 4.1's shortest clip for the file lists."""
    min_samples = int(MIN_SECONDS * sampling_rate) if sampling_rate else 0
    return check_wav(path, WavRequirements(sampling_rate=sampling_rate, min_samples=min_samples))


def scan(source_dir: str, *, sampling_rate: int | None = 44100, progress: bool = True) -> DatasetListing:
    """Collect the usable clips of ``<source_dir>/<speaker>/*.wav``, speakers in sorted order."""
    from tqdm import tqdm

    root = Path(source_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found (expected {root}/<speaker>/<file>.wav; "
                           "set --source_dir, or run resample.py first)")
    out = DatasetListing()
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    for entry in tqdm(entries, desc="speakers", unit="spk", disable=not progress):
        if entry.name.startswith(".") or not entry.is_dir():
            out.summary.add(FileOutcome(str(entry), "skipped", "not a speaker folder"))
            continue
        clips: list[str] = []
        for f in sorted(entry.iterdir(), key=lambda p: p.name):
            name = f.name
            if is_artifact_name(name):
                continue  # features written by preprocess_hubert_f0.py
            if name.startswith(".") or f.is_dir():
                out.summary.add(FileOutcome(str(f), "skipped", "hidden file or folder"
                                            if name.startswith(".") else "nested folder"))
                continue
            if not name.endswith(".wav"):
                out.summary.add(FileOutcome(str(f), "skipped", "not a .wav file (run resample.py to convert)"))
                continue
            if "|" in name or "\n" in name or "\r" in name:
                out.summary.add(FileOutcome(str(f), "failed", "the name holds '|' or a line break, which the file "
                                                              "list format cannot store; rename it"))
                continue
            check = _check_clip(f, sampling_rate)
            if check.problem is WavProblem.TOO_SHORT:  # 4.1 leaves these out silently
                out.summary.add(FileOutcome(str(f), "skipped", f"shorter than {MIN_SECONDS} s"))
                continue
            if check.problem:
                out.summary.add(FileOutcome(str(f), "failed", check.reason))
                continue
            if not PLAIN_NAME.match(name):
                out.odd_names.append(str(f))
            clips.append(list_path(source_dir, entry.name, name))
            out.summary.add(FileOutcome(str(f), "done"))
        if clips:
            out.speakers[entry.name] = clips
        else:
            out.summary.add(FileOutcome(str(entry), "skipped", "speaker folder holds no usable clip (no id given)"))
    if out.odd_names:
        shown = ", ".join(out.odd_names[:10]) + (f" (+{len(out.odd_names) - 10} more)" if len(out.odd_names) > 10 else "")
        log.warning("%d file name(s) contain characters other than ASCII letters, digits, '_' and '.' "
                    "(4.1 warns about these; this implementation handles them): %s", len(out.odd_names), shown)
    return out


def split(speakers: dict[str, list[str]], *, seed: int = DEFAULT_SEED,
          val_per_speaker: int = VAL_PER_SPEAKER) -> tuple[list[str], list[str]]:
    """4.1's split: per speaker shuffle, first ``val_per_speaker`` to validation; shuffle both lists.

    Deterministic for a given ``seed``. Raises :class:`DatasetError` naming every speaker with
    too few clips to keep at least one for training.
    """
    too_few = {spk: len(files) for spk, files in speakers.items() if len(files) <= val_per_speaker}
    if too_few:
        listing = ", ".join(f"'{s}' ({n} clip{'s' if n != 1 else ''})" for s, n in sorted(too_few.items()))
        raise DatasetError(
            f"too few clips for a validation split: {listing}. Each speaker needs more than {val_per_speaker} "
            f"usable clips ({val_per_speaker} go to validation, the rest to training); add clips, remove the "
            "speaker folder, or lower --val_per_speaker")
    rng = random.Random(seed)
    train: list[str] = []
    val: list[str] = []
    for spk in sorted(speakers):
        files = sorted(speakers[spk])
        rng.shuffle(files)
        val += files[:val_per_speaker]
        train += files[val_per_speaker:]
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


# --- configs ------------------------------------------------------------------------------------
def _load_template(name: str, template_dir: Path) -> dict[str, Any]:
    from modules.hparams import get_hparams_from_file

    path = template_dir / name
    if not path.is_file():
        raise ConfigError(f"{path}: config template not found (it ships with the project in configs/)")
    return get_hparams_from_file(path).to_dict()


def build_configs(spk_map: dict[str, int], speech_encoder: str, *, vol_aug: bool = False, tiny: bool = False,
                  tf_flow: bool = False, train_list: str | None = None, val_list: str | None = None,
                  template_dir: str | os.PathLike = TEMPLATE_DIR) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fill the templates as 4.1 does (spec §2.3) → ``(config.json dict, diffusion.yaml dict)``.

    The encoder width comes from the encoder registry (so the ``-onnx`` encoders work too).
    ``train_list`` / ``val_list`` are written into the configs only when given (4.1 always kept
    the templates' ``filelists/train.txt`` / ``filelists/val.txt``).
    """
    import vencoder

    known = list(vencoder.list_encoders())
    if speech_encoder not in known:
        raise ConfigError(f"unknown --speech_encoder '{speech_encoder}'; choose one of {', '.join(known)}")
    dim = int(vencoder.encoder_dim(speech_encoder))
    template_dir = Path(template_dir)
    config = copy.deepcopy(_load_template("config_tiny_template.json" if tiny else "config_template.json", template_dir))
    diffusion = copy.deepcopy(_load_template("diffusion_template.yaml", template_dir))

    model = config["model"]
    config["spk"] = dict(spk_map)
    model["n_speakers"] = len(spk_map)
    model["speech_encoder"] = speech_encoder
    model["ssl_dim"] = model["gin_channels"] = dim
    if dim != NARROW_ENCODER_DIM:
        model["filter_channels"] = dim
    if vol_aug:
        config["train"]["vol_aug"] = model["vol_embedding"] = True
    if tiny:
        model["filter_channels"] = TINY_FILTER_CHANNELS
    if tf_flow:
        model["flow_share_parameter"] = model["use_transformer_flow"] = True

    diffusion["model"]["n_spk"] = len(spk_map)
    diffusion["data"]["encoder"] = speech_encoder
    diffusion["data"]["encoder_out_channels"] = dim
    diffusion["spk"] = dict(spk_map)
    diffusion["device"] = _diffusion_device(diffusion.get("device"))
    if train_list is not None:
        config["data"]["training_files"] = diffusion["data"]["training_files"] = train_list
    if val_list is not None:
        config["data"]["validation_files"] = diffusion["data"]["validation_files"] = val_list
    return config, diffusion


def _diffusion_device(template_device: str | None) -> str:
    """The template's ``cuda`` where CUDA exists, else ``cpu`` (4.1 wrote ``cuda`` everywhere, and
    train_diff.py then failed on CPU-only machines)."""
    import torch

    if str(template_device).startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    return template_device or "cpu"


def write_list(path: str | os.PathLike, lines: list[str]) -> None:
    """One path per line, newline-terminated (4.1's format), written atomically."""
    from modules.io_utils import atomic_write_text

    atomic_write_text(path, "".join(line + "\n" for line in lines))


def make_filelists_and_configs(
    *,
    source_dir: str,
    train_list: str,
    val_list: str,
    speech_encoder: str,
    vol_aug: bool = False,
    tiny: bool = False,
    tf_flow: bool = False,
    seed: int = DEFAULT_SEED,
    val_per_speaker: int = VAL_PER_SPEAKER,
    config_dir: str | os.PathLike = "configs",
    write_list_paths_to_config: bool = False,
    progress: bool = True,
    quality_check: bool = True,
    strict: bool = False,
) -> RunSummary:
    """The whole of ``preprocess_flist_config.py``; returns the summary of the scanned files.

    ``quality_check`` logs the dataset quality summary first (:mod:`preprocessing.quality`);
    ``strict`` stops with :class:`DatasetError` listing every unusable clip before anything is written.
    An existing ``config.json`` / ``diffusion.yaml`` that differs from the new one is kept as
    ``<name>.<timestamp>.bak`` (logged).
    """
    from modules.hparams import backup_changed_config, save_config

    # Validate the encoder before scanning a large dataset.
    config, diffusion = build_configs({}, speech_encoder, vol_aug=vol_aug, tiny=tiny, tf_flow=tf_flow)
    if quality_check or strict:
        _quality_summary(source_dir, int(config["data"]["sampling_rate"]), speech_encoder, strict, progress)
    listing = scan(source_dir, sampling_rate=int(config["data"]["sampling_rate"]), progress=progress)
    if not listing.speakers:
        listing.summary.log(log)
        raise DatasetError(f"{source_dir}: no usable clips found in any <speaker>/ folder "
                           "(expected 16-bit mono .wav at the config's rate; run resample.py first)")
    spk_map = {spk: i for i, spk in enumerate(sorted(listing.speakers))}
    train, val = split(listing.speakers, seed=seed, val_per_speaker=val_per_speaker)
    config, diffusion = build_configs(
        spk_map, speech_encoder, vol_aug=vol_aug, tiny=tiny, tf_flow=tf_flow,
        train_list=train_list if write_list_paths_to_config else None,
        val_list=val_list if write_list_paths_to_config else None)

    write_list(train_list, train)
    write_list(val_list, val)
    config_dir = Path(config_dir)
    for cfg, name in ((config, "config.json"), (diffusion, "diffusion.yaml")):
        backup_changed_config(config_dir / name, cfg)  # an edited config is kept, not replaced silently
        save_config(cfg, config_dir / name)
    log.info("%d speaker(s): %s", len(spk_map), ", ".join(f"{s}={i}" for s, i in spk_map.items()))
    log.info("wrote %s (%d clips), %s (%d clips), %s, %s", train_list, len(train), val_list, len(val),
             config_dir / "config.json", config_dir / "diffusion.yaml")
    return listing.summary


def _quality_summary(source_dir: str, sampling_rate: int, speech_encoder: str, strict: bool, progress: bool) -> None:
    """Log the quality report's summary; with ``strict`` its errors stop the run (issue 22)."""
    from preprocessing.quality import QualityOptions, check_dataset, log_summary

    if not Path(source_dir).is_dir():
        return  # scan() reports the missing folder
    try:
        report = check_dataset(source_dir, QualityOptions(sampling_rate=sampling_rate, min_seconds=MIN_SECONDS,
                                                          speech_encoder=speech_encoder), progress=progress)
    except DatasetError:
        return  # no audio at all: scan() says so with the file-list wording
    log_summary(report, log, errors=strict)  # without --strict the scan below reports the unusable clips
    if strict and report.errors:
        shown = "\n  ".join(str(p) for p in report.errors[:20])
        more = f"\n  ... and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
        raise DatasetError(f"{source_dir}: {len(report.errors)} clip(s) cannot be trained on (--strict):\n  "
                           f"{shown}{more}\nNothing was written; fix or remove them and run again")
