"""Files in, files out: what ``inference_main.py`` does after parsing its flags (spec §1.8, §10.5).

Each input (a name inside ``raw/`` or any path, any soundfile format) is converted for every
speaker and written to ``results/`` under 4.1's name::

    results/<clean_name>_<key>_<spk><cluster>_<mode>_<f0p>.<wav_format>

key = ``auto`` with automatic f0 else ``<tran>key``; cluster = ``""`` or, when a ratio is used,
``_kmeans<ratio>`` / ``_index<ratio>`` (4.1: ``_<ratio>``, which let k-means and index results
overwrite each other); mode = ``sovits`` / ``sovdiff`` (shallow diffusion) / ``diff`` (diffusion
only); spk = ``spk_mix`` when mixing. An existing file is never replaced: the new result gets a
numeric suffix (``..._pm_1.flac``) and the log says so. Audio is written at the model rate with
soundfile's default subtype for the format (PCM_16 for wav/flac), through a temporary name.

:func:`preflight` checks everything a request names (inputs, output format, speakers against
the config and the checkpoint's speaker table) by reading only file headers, the config and
the checkpoint's tensor shapes, so mistakes are reported before the 6-9 s of model loading.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from inference.options import ConversionOptions
from modules.errors import AudioError, CheckpointError, ConfigError, SvcError

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


def check_audio_header(path: Path) -> None:
    """The file's header is readable audio with samples (nothing is decoded)."""
    import soundfile as sf

    if path.stat().st_size == 0:
        raise AudioError(f"{path}: audio file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AudioError(f"{path}: not a readable audio file ({msg})") from None
    if info.frames == 0:
        raise AudioError(f"{path}: audio file holds no samples")


def cluster_tag(cluster_infer_ratio: float, feature_retrieval: bool) -> str:
    """``""`` without clustering, else ``_kmeans<ratio>`` / ``_index<ratio>``."""
    if cluster_infer_ratio == 0:
        return ""
    return f"_{'index' if feature_retrieval else 'kmeans'}{cluster_infer_ratio}"


def output_name(clean_name: str, *, tran: int | float, spk: str, cluster_infer_ratio: float, auto_predict_f0: bool,
                shallow_diffusion: bool, only_diffusion: bool, f0_predictor: str, wav_format: str,
                feature_retrieval: bool = False) -> str:
    """The result file name (without the directory): 4.1's, plus the cluster mode when a ratio is used."""
    key = "auto" if auto_predict_f0 else f"{tran}key"
    cluster = cluster_tag(cluster_infer_ratio, feature_retrieval)
    mode = "diff" if only_diffusion else "sovdiff" if shallow_diffusion else "sovits"
    return f"{Path(clean_name).name}_{key}_{spk}{cluster}_{mode}_{f0_predictor}.{wav_format}"


def unique_path(path: str | os.PathLike) -> Path:
    """``path`` if no file is there, else the first free ``<stem>_<n><suffix>`` (n = 1, 2, ...), logged."""
    path = Path(path)
    if not path.exists():
        return path
    n = 1
    while (candidate := path.with_name(f"{path.stem}_{n}{path.suffix}")).exists():
        n += 1
    log.warning("%s exists and is kept; writing %s instead", path, candidate)
    return candidate


def check_wav_format(wav_format: str) -> None:
    import soundfile as sf

    formats = sf.available_formats()
    if wav_format.upper() not in formats:
        raise SvcError(f"output format {wav_format!r} is not one soundfile can write; choose one of: "
                       f"{', '.join(sorted(f.lower() for f in formats))}")


def fill_to(values: list, n: int) -> list:
    """Pad ``values`` with its first element to length ``n`` (4.1's ``fill_a_to_b``)."""
    return list(values) + [values[0]] * max(0, n - len(values))


# --- the fast path: speakers from the config and the checkpoint's shapes --------------------------
@dataclass(frozen=True)
class ModelSpeakers:
    """A model's speaker table as its files describe it, read without building the model.

    ``spk2id`` is the config's ``spk`` map; ``n_speakers`` the rows of the checkpoint's
    speaker embedding (None when the file has none, e.g. diffusion only)."""

    spk2id: dict[str, int]
    n_speakers: int | None
    source: str

    def check(self, speaker: Any) -> None:
        """An unknown name (or id) raises listing the valid names."""
        if isinstance(speaker, str) and speaker in self.spk2id:
            return
        limit = self.n_speakers if self.n_speakers is not None else len(self.spk2id)
        if isinstance(speaker, int) and not isinstance(speaker, bool) and 0 <= speaker < limit:
            return
        raise SvcError(f"speaker {speaker!r} is not in this model's speaker list: "
                       f"{', '.join(self.spk2id) or '(none)'} ({self.source})")


def read_model_speakers(model_path: str | os.PathLike, config_path: str | os.PathLike | None) -> ModelSpeakers:
    """The speaker table of a SoVITS model from its config and the checkpoint's tensor shapes.

    The checkpoint is memory-mapped and only ``emb_g.weight``'s shape (and a ``spk`` map, where
    the file carries one) is read. Raises when the config maps a speaker to an id the checkpoint
    has no embedding for, or when the file's own speaker map disagrees with the config's.
    """
    from modules.checkpoint import torch_load
    from modules.hparams import get_hparams_from_file

    if config_path is None:  # the config stored inside the checkpoint (our trainer writes one)
        from inference.infer_tool import config_carried_by

        hps = config_carried_by(model_path)
        config_path = f"{model_path} (stored config)"
    else:
        hps = get_hparams_from_file(config_path, infer_mode=True)
    spk2id = dict(hps.get("spk") or {})
    try:
        ckpt = torch_load(model_path, what="so-vits-svc checkpoint", mmap=True)
    except CheckpointError:
        ckpt = torch_load(model_path, what="so-vits-svc checkpoint")  # legacy (non-zip) files
    state = ckpt.get("model") if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{model_path}: not a so-vits-svc G checkpoint (expected a dict with a 'model' "
                              "state dict); D_*.pth, diffusion model_*.pt or encoder files are not SoVITS models")
    emb = state.get("emb_g.weight")
    n = int(emb.shape[0]) if emb is not None else None
    bad = {k: v for k, v in spk2id.items() if not isinstance(v, int) or (n is not None and not 0 <= v < n)}
    if bad:
        raise ConfigError(f"{config_path}: 'spk' maps {bad} to ids outside 0..{(n or 1) - 1}, but {model_path} has "
                          f"{n} speaker embeddings; use the config.json the model was trained with")
    file_map = ckpt.get("spk")
    if file_map is None and isinstance(ckpt.get("config"), Mapping):
        file_map = ckpt["config"].get("spk")
    if isinstance(file_map, Mapping) and dict(file_map) != spk2id:
        raise ConfigError(f"{config_path}: speaker map {spk2id} differs from the one stored in {model_path} "
                          f"({dict(file_map)}); use the config.json the model was trained with")
    return ModelSpeakers(spk2id, n, str(config_path))


def model_file_metadata(model_path: str | os.PathLike, config_path: str | os.PathLike | None, *,
                        diffusion_model_path: str | os.PathLike | None, diffusion: bool,
                        only_diffusion: bool = False) -> dict[str, Any] | None:
    """The checked metadata when ``model_path`` is a ``.svc.safetensors`` model file (header only,
    nothing unpickled), else None. Raises when a config is given with it, or when diffusion is
    asked for (``diffusion``) with no ``-dm`` and the file holds no diffusion model."""
    from modelfile import is_model_file, read_info

    if not is_model_file(model_path) or (only_diffusion and diffusion_model_path):
        return None
    meta = read_info(model_path).metadata
    if config_path is not None and not only_diffusion:
        raise SvcError(f"{model_path} is a model file that carries its own config; drop -c {config_path}")
    if diffusion and diffusion_model_path is None and not meta.get("diffusion"):
        raise SvcError(f"{model_path} holds no diffusion model; pass one with -dm and -dc")
    return meta


def read_model_file_speakers(path: str | os.PathLike, *, diffusion: bool = False) -> ModelSpeakers:
    """The speaker table of a ``.svc.safetensors`` model file from its header alone (no tensor
    data, no pickle): the metadata's speaker map and the rows of the stored speaker embedding
    (``diffusion``: the stored diffusion config's map). Malformed or disguised files raise here,
    before any model loads."""
    from modelfile import read_info
    from modelfile.format import PART_PREFIXES

    header = read_info(path)
    meta = header.metadata
    if diffusion:
        d = meta.get("diffusion")
        if not d:
            raise CheckpointError(f"{path}: this model file holds no diffusion model; pass one with -dm/-dc")
        n = (d["config"].get("model") or {}).get("n_spk")
        return ModelSpeakers(dict(d["config"].get("spk") or {}), int(n) if n else None, f"{path} (diffusion)")
    emb = header.tensors.get(PART_PREFIXES["synthesizer"] + "emb_g.weight")
    return ModelSpeakers(dict(meta["speakers"]), int(emb["shape"][0]) if emb else None, str(path))


def read_diffusion_speakers(config_path: str | os.PathLike) -> ModelSpeakers:
    """Speakers of a diffusion-only model (its YAML's ``spk`` map, read without the model)."""
    import yaml

    path = Path(config_path)
    if not path.is_file():
        raise CheckpointError(f"{path}: diffusion config not found (pass its path with -dc)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    spk = data.get("spk") or {}
    n = (data.get("model") or {}).get("n_spk")
    return ModelSpeakers(dict(spk), int(n) if n else None, str(path))


# --- the job --------------------------------------------------------------------------------------
@dataclass
class Job:
    """One conversion request: inputs × speakers, the options, where results go.

    ``trans`` holds one transposition per input (padded with the first); it overrides
    ``options.transpose``. With ``options.use_spk_mix`` each speaker is a ``spk_mix_map``.
    ``f0_out``: write the f0 curve each result used beside it (``<result stem>.f0.csv``);
    ``f0_files``: one F0 CSV per input to use instead of predicting (``modules.f0_file``).
    """

    inputs: Sequence[str]
    trans: Sequence[float]
    speakers: Sequence[Any]
    options: ConversionOptions = field(default_factory=ConversionOptions)
    wav_format: str = "flac"
    results_dir: Path = RESULTS_DIR
    raw_dir: Path = RAW_DIR
    f0_out: bool = False
    f0_files: Sequence[str | os.PathLike] | None = None


def preflight(job: Job, speakers: ModelSpeakers | None = None) -> list[Path]:
    """Check a job without any model: inputs exist and are audio, the format is writable, and
    (given the model's table) every speaker exists. Returns the resolved input paths."""
    check_wav_format(job.wav_format)
    paths = [resolve_input(n, job.raw_dir) for n in job.inputs]
    for p in paths:
        check_audio_header(p)
    if job.f0_files:
        if len(job.f0_files) != len(paths):
            raise SvcError(f"--f0_file: {len(job.f0_files)} file(s) for {len(paths)} input(s); give one F0 CSV per "
                           "input (-n), in the same order")
        for f in job.f0_files:
            if not Path(f).is_file():
                raise SvcError(f"{f}: f0 file not found (--f0_file)")
    if speakers is not None and not job.options.use_spk_mix:
        for spk in job.speakers:
            speakers.check(spk)
    return paths


def convert_files(svc, job: Job, *, on_slice_done: Callable[[], None] | None = None, workers: int = 1,
                  set_threads: Callable[[int], int] | None = None, slice_threads: int = 1) -> list[Path]:
    """Convert every input for every speaker; returns the written paths in order.

    ``on_slice_done``, ``workers``, ``set_threads`` and ``slice_threads`` go to :meth:`Svc.convert` (the script's
    runtime profile: heap release, parallel slices)."""
    from modules.audio import load_audio, save_audio

    from modules.f0_file import read_f0_csv, write_f0_csv

    paths = preflight(job)  # fail fast on a typo
    trans = fill_to(list(job.trans), len(job.inputs))
    # every F0 file is read (and its rows checked) before anything is converted
    curves = [read_f0_csv(f, hop_length=svc.hop_size, sampling_rate=svc.target_sample) for f in job.f0_files] \
        if job.f0_files else [None] * len(paths)
    results = Path(job.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    svc.prepare(job.options, f0=not job.f0_files)  # the precision's models (and f0 predictor), before the first file
    written = []
    for name, path, tran, given in zip(job.inputs, paths, trans, curves):
        opts = job.options.replace(transpose=tran)
        y, sr = load_audio(path)
        log.info("%s: %.1f s at %d Hz", path, len(y) / sr, sr)
        for spk in job.speakers:
            used = []
            audio = svc.convert(y, sr, spk, opts, on_slice_done=on_slice_done, f0_curve=given,
                                on_f0=used.append if job.f0_out or opts.auto_key else None, workers=workers,
                                set_threads=set_threads, slice_threads=slice_threads)
            spk_name = "spk_mix" if opts.use_spk_mix else str(spk)
            key = used[0].transpose if opts.auto_key and used else tran  # the key --auto_key chose
            key = int(key) if float(key).is_integer() else key
            out = unique_path(results / output_name(
                name, tran=key, spk=spk_name, cluster_infer_ratio=opts.cluster_infer_ratio,
                auto_predict_f0=opts.auto_predict_f0, shallow_diffusion=svc.shallow_diffusion,
                only_diffusion=svc.only_diffusion, f0_predictor=opts.f0_predictor, wav_format=job.wav_format,
                feature_retrieval=svc.feature_retrieval))
            save_audio(out, audio, svc.target_sample, format=job.wav_format)
            log.info("wrote %s", out)
            written.append(out)
            if used and job.f0_out:
                csv_path = unique_path(out.with_name(out.name[:-len(out.suffix)] + ".f0.csv"))
                write_f0_csv(csv_path, used[0].f0, used[0].uv, hop_length=svc.hop_size,
                             sampling_rate=svc.target_sample)
                log.info("wrote %s (the f0 curve used; --f0_file takes it back)", csv_path)
            svc.clear_empty()
    return written
