"""Files in, files out: what ``inference_main.py`` does after parsing its flags (spec §1.8, §10.5).

Each input (a name inside ``raw/`` or any path, any soundfile format) is converted for every
speaker and written to ``results/`` under 4.1's name::

    results/<clean_name>_<key>_<spk><cluster>_<mode>_<f0p>.<wav_format>

key = ``auto`` with automatic f0 else ``<tran>key``; cluster = ``""`` or ``_<ratio>``;
mode = ``sovits`` / ``sovdiff`` (shallow diffusion) / ``diff`` (diffusion only); spk = ``spk_mix``
when mixing. Audio is written at the model rate with soundfile's default subtype for the format
(PCM_16 for wav/flac), through a temporary name.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from modules.errors import AudioError, SvcError

log = logging.getLogger(__name__)

RAW_DIR = Path("raw")
RESULTS_DIR = Path("results")


def resolve_input(name: str, raw_dir: str | os.PathLike = RAW_DIR) -> Path:
    """``name`` as a path, else inside ``raw/``; a name without a suffix also tries ``.wav`` (4.1)."""
    raw_dir = Path(raw_dir)
    candidates = [Path(name), raw_dir / name]
    if not Path(name).suffix:
        candidates += [Path(name + ".wav"), raw_dir / (name + ".wav")]
    for c in candidates:
        if c.is_file():
            return c
    raise AudioError(f"input '{name}' not found (looked for {', '.join(str(c) for c in candidates)}); put the file in "
                     f"{raw_dir}/ or give its path")


def output_name(clean_name: str, *, tran: int | float, spk: str, cluster_infer_ratio: float, auto_predict_f0: bool,
                shallow_diffusion: bool, only_diffusion: bool, f0_predictor: str, wav_format: str) -> str:
    """4.1's result file name (without the directory)."""
    key = "auto" if auto_predict_f0 else f"{tran}key"
    cluster = "" if cluster_infer_ratio == 0 else f"_{cluster_infer_ratio}"
    mode = "diff" if only_diffusion else "sovdiff" if shallow_diffusion else "sovits"
    return f"{Path(clean_name).name}_{key}_{spk}{cluster}_{mode}_{f0_predictor}.{wav_format}"


def check_wav_format(wav_format: str) -> None:
    import soundfile as sf

    formats = sf.available_formats()
    if wav_format.upper() not in formats:
        raise SvcError(f"output format {wav_format!r} is not one soundfile can write; choose one of: "
                       f"{', '.join(sorted(f.lower() for f in formats))}")


def fill_to(values: list, n: int) -> list:
    """Pad ``values`` with its first element to length ``n`` (4.1's ``fill_a_to_b``)."""
    return list(values) + [values[0]] * max(0, n - len(values))


@dataclass
class Job:
    """One conversion request: everything ``Svc.slice_inference`` needs besides the input."""

    inputs: Sequence[str]
    trans: Sequence[int]
    speakers: Sequence[Any]
    options: dict = field(default_factory=dict)
    wav_format: str = "flac"
    results_dir: Path = RESULTS_DIR
    raw_dir: Path = RAW_DIR
    use_spk_mix: bool = False


def convert_files(svc, job: Job) -> list[Path]:
    """Convert every input for every speaker; returns the written paths in order."""
    from modules.audio import load_audio, save_audio

    check_wav_format(job.wav_format)
    paths = [resolve_input(n, job.raw_dir) for n in job.inputs]  # fail fast on a typo
    trans = fill_to(list(job.trans), len(job.inputs))
    results = Path(job.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    written = []
    opts = dict(job.options)
    for name, path, tran in zip(job.inputs, paths, trans):
        y, sr = load_audio(path)
        log.info("%s: %.1f s at %d Hz", path, len(y) / sr, sr)
        for spk in job.speakers:
            audio = svc.slice_inference(y, spk, tran, sr=sr, use_spk_mix=job.use_spk_mix, **opts)
            spk_name = "spk_mix" if job.use_spk_mix else str(spk)
            out = results / output_name(
                name, tran=tran, spk=spk_name, cluster_infer_ratio=opts.get("cluster_infer_ratio", 0),
                auto_predict_f0=opts.get("auto_predict_f0", False), shallow_diffusion=svc.shallow_diffusion,
                only_diffusion=svc.only_diffusion, f0_predictor=opts.get("f0_predictor", "pm"),
                wav_format=job.wav_format)
            save_audio(out, audio, svc.target_sample, format=job.wav_format)
            log.info("wrote %s", out)
            written.append(out)
            svc.clear_empty()
    return written
