"""Writing a model file (``export_model.py``) and describing one (``export_model.py --info``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from modules.errors import SvcError
from modelfile.format import (
    FILE_SUFFIX,
    FORMAT_NAME,
    FORMAT_VERSION,
    PART_PREFIXES,
    PROJECT_VERSION,
    SAFETENSORS_SUFFIX,
    write_model_file,
)

log = logging.getLogger(__name__)


def default_output_path(model_path: str | os.PathLike) -> Path:
    """``logs/44k/G_800.pth`` → ``logs/44k/G_800.svc.safetensors``."""
    p = Path(model_path)
    return p.with_name(p.stem + FILE_SUFFIX)


def read_f0_stats(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object of per-speaker F0 statistics (stored verbatim)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SvcError(f"{path}: cannot read F0 statistics (a JSON object expected): {e}") from None
    if not isinstance(data, dict):
        raise SvcError(f"{path}: F0 statistics must be a JSON object, found {type(data).__name__}")
    return data


def encoder_description(name: str, encoder_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a model needs from its speech encoder: name, weight file, URL, SHA-256 if known.

    The SHA-256 comes from ``encoder_file`` when given (the file the model was trained with),
    else from the pretrained registry where published.
    """
    from modules.pretrained import PRETRAINED, sha256_of
    from vencoder import get_spec, list_encoders

    if name not in list_encoders():
        raise SvcError(f"unknown speech encoder '{name}' in the config; known: {', '.join(list_encoders())}")
    spec = get_spec(name)
    entry = PRETRAINED[spec.pretrained]
    desc = {"name": name, "file": entry.filename, "url": entry.url, "sha256": entry.sha256}
    if encoder_file is not None:
        if not Path(encoder_file).is_file():
            raise SvcError(f"{encoder_file}: speech encoder file not found (--encoder-file)")
        desc["sha256"] = sha256_of(encoder_file)
    return desc


def build_metadata(*, config: dict, flavour: str, notes: list[str], iteration: int | None, source_name: str,
                   half: bool, synth_tensors: list[str], encoder: dict, cluster: dict | None, diffusion: dict | None,
                   f0_stats: dict | None, author: str, license: str, description: str) -> dict[str, Any]:
    """The JSON document stored under ``__metadata__["svc_model"]``.

    Fields: ``format``/``format_version``/``project_version``; ``config`` (the 4.1 config.json,
    normalised); ``speakers`` (name → id); ``speech_encoder`` ({name, dim, file, url, sha256|null});
    ``vocoder`` ({decoder: the synthesizer's built-in decoder, external: {type, file} | null:
    the standalone vocoder the diffusion model needs}); ``sampling_rate``/``hop_length``;
    ``synthesizer`` ({dtype, tensors}); ``cluster`` (null | {kind: kmeans|index, speakers,
    tensors}); ``diffusion`` (null | {config, global_step, out_dims, tensors}); ``f0_stats``
    (null | object); ``source`` ({importer, checkpoint, iteration, notes}); ``author``,
    ``license``, ``description`` (free text).
    """
    external = None
    if diffusion is not None:
        from modules.pretrained import PRETRAINED
        from vdecoder.registry import get_vocoder_spec

        vtype = diffusion["config"]["vocoder"]["type"]
        external = {"type": vtype, "file": PRETRAINED[get_vocoder_spec(vtype).pretrained_key].filename,
                    "needed_by": "diffusion"}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "project_version": PROJECT_VERSION,
        "author": author,
        "license": license,
        "description": description,
        "sampling_rate": int(config["data"]["sampling_rate"]),
        "hop_length": int(config["data"]["hop_length"]),
        "speakers": dict(config.get("spk") or {}),
        "speech_encoder": encoder,
        "vocoder": {"decoder": config["model"].get("vocoder_name", "nsf-hifigan"), "external": external},
        "f0_stats": f0_stats,
        "synthesizer": {"dtype": "float16" if half else "float32", "tensors": synth_tensors},
        "cluster": cluster,
        "diffusion": diffusion,
        "source": {"importer": flavour, "checkpoint": source_name, "iteration": iteration, "notes": notes},
        "config": config,
    }


def check_output_path(output: Path, inputs: list[Path], overwrite: bool) -> None:
    if not output.name.lower().endswith(SAFETENSORS_SUFFIX):
        raise SvcError(f"{output}: a model file name must end in {FILE_SUFFIX}")
    for p in inputs:
        if p.exists() and output.exists() and output.resolve() == p.resolve():
            raise SvcError(f"{output}: the output would overwrite an input file; choose another -o")
    if output.exists() and not overwrite:
        raise SvcError(f"{output} exists; choose another -o or pass --overwrite")


def export_model(*, model_path: str | os.PathLike, config_path: str | os.PathLike | None,
                 output_path: str | os.PathLike | None = None, cluster_path: str | os.PathLike | None = None,
                 diffusion_model_path: str | os.PathLike | None = None,
                 diffusion_config_path: str | os.PathLike | None = None, half: bool = False,
                 author: str = "", license: str = "", description: str = "",
                 f0_stats: Mapping[str, Any] | None = None, encoder_file: str | os.PathLike | None = None,
                 overwrite: bool = False) -> Path:
    """Write ``<name>.svc.safetensors`` from a G checkpoint + config and the optional parts.

    ``config_path`` None: the checkpoint's own ``"config"`` entry is used (if it has one).
    ``half`` stores the synthesizer in float16 (the other parts stay as they are). Every input
    is checked against the model before anything is written; the output is written atomically.
    Returns the output path.
    """
    from modelfile.importers import import_generator
    from modelfile.parts import load_cluster_source, pack_cluster, pack_diffusion
    from training.compress import to_half

    model_path = Path(model_path)
    config_path = Path(config_path) if config_path is not None else None
    output = Path(output_path) if output_path else default_output_path(model_path)
    if (diffusion_model_path is None) != (diffusion_config_path is None):
        raise SvcError("a diffusion model needs both -dm (model_*.pt) and -dc (its diffusion.yaml)")
    inputs = [Path(p) for p in (model_path, config_path, cluster_path, diffusion_model_path, diffusion_config_path) if p]
    check_output_path(output, inputs, overwrite)
    for p in inputs:
        if not p.is_file():
            raise SvcError(f"{p}: file not found")

    imported = import_generator(model_path, config_path)
    config = imported.config
    unit_dim = int(config["model"]["ssl_dim"])
    encoder = encoder_description(config["model"]["speech_encoder"], encoder_file)
    encoder["dim"] = unit_dim  # the unit width the model reads (model.ssl_dim)
    spk2id = dict(config.get("spk") or {})
    if not spk2id:
        log.warning("%s: the config has no 'spk' speaker map; the model file will list no speaker names",
                    config_path or model_path)

    prefix = PART_PREFIXES["synthesizer"]
    state = to_half(imported.state) if half else dict(imported.state)
    tensors: dict[str, torch.Tensor] = {prefix + k: v for k, v in state.items()}
    synth_names = list(tensors)

    cluster_desc = None
    if cluster_path is not None:
        c_tensors, cluster_desc = pack_cluster(load_cluster_source(cluster_path), spk2id=spk2id, unit_dim=unit_dim,
                                               source=str(cluster_path))
        tensors.update(c_tensors)
    diffusion_desc = None
    if diffusion_model_path is not None:
        d_tensors, diffusion_desc = pack_diffusion(diffusion_model_path, diffusion_config_path, unit_dim=unit_dim)
        tensors.update(d_tensors)
    if f0_stats is not None:
        unknown = [k for k in f0_stats if k not in spk2id and k != "speakers"]
        if unknown and spk2id:
            log.warning("F0 statistics name speakers not in the model: %s (stored anyway)", ", ".join(unknown[:8]))

    metadata = build_metadata(config=config, flavour=imported.flavour, notes=imported.notes,
                              iteration=imported.iteration, source_name=model_path.name, half=half,
                              synth_tensors=synth_names, encoder=encoder, cluster=cluster_desc, diffusion=diffusion_desc,
                              f0_stats=dict(f0_stats) if f0_stats is not None else None,
                              author=author, license=license, description=description)
    write_model_file(tensors, metadata, output)
    log.info("Wrote %s: synthesizer (%d tensors, %s)%s%s, %.1f MB", output, len(synth_names),
             "float16" if half else "float32", f", {cluster_desc['kind']}" if cluster_desc else "",
             ", diffusion" if diffusion_desc else "", output.stat().st_size / 1e6)
    return output


# --- --info ---------------------------------------------------------------------------------------
def describe(path: str | os.PathLike) -> str:
    """A human-readable summary of a model file (header only; no tensor data is read)."""
    from modelfile.bundle import read_info

    header = read_info(path)
    m = header.metadata
    n_params = 0
    for name in m["synthesizer"]["tensors"]:
        n = 1
        for d in header.tensors[name]["shape"]:
            n *= d
        n_params += n
    enc = m["speech_encoder"]
    lines = [
        f"file:            {header.path} ({header.file_size / 1e6:.1f} MB)",
        f"format:          {m['format']} v{m['format_version']} (written by {m.get('project_version', '?')})",
        f"author:          {m.get('author') or '-'}",
        f"license:         {m.get('license') or '-'}",
        f"description:     {m.get('description') or '-'}",
        f"sampling rate:   {m['sampling_rate']} Hz, hop {m['hop_length']}",
        "speakers:        " + (", ".join(f"{sid}: {name}" for name, sid in sorted(m["speakers"].items(), key=lambda kv: kv[1]))
                               or "-"),
        f"speech encoder:  {enc['name']} ({enc.get('dim')} channels, pretrain/{enc.get('file')}, "
        f"sha256 {enc.get('sha256') or 'unknown'})",
        f"synthesizer:     {len(m['synthesizer']['tensors'])} tensors, {n_params / 1e6:.2f} M parameters, "
        f"{m['synthesizer']['dtype']}, decoder {m['vocoder']['decoder']}",
    ]
    ext = m["vocoder"].get("external")
    lines.append(f"vocoder needed:  {ext['type']} (pretrain/{ext['file']}, for {ext['needed_by']})" if ext else
                 "vocoder needed:  none (only for the optional enhancer: nsf-hifigan)")
    cl = m.get("cluster")
    if cl and cl["kind"] == "kmeans":
        lines.append("cluster:         k-means, " + ", ".join(f"{s['name']} ({s['n_clusters']} centres)" for s in cl["speakers"]))
    elif cl:
        lines.append("cluster:         feature retrieval index, " + ", ".join(
            f"{s['id']}{' ' + s['name'] if s.get('name') else ''} ({s['ntotal']} frames, {s['type']})" for s in cl["speakers"]))
    else:
        lines.append("cluster:         none")
    d = m.get("diffusion")
    if d:
        dc = d["config"]
        lines.append(f"diffusion:       {len(d['tensors'])} tensors, step {d.get('global_step')}, k_step_max "
                     f"{dc['model'].get('k_step_max')}, encoder {dc['data'].get('encoder')}")
    else:
        lines.append("diffusion:       none")
    f0 = m.get("f0_stats")
    lines.append(f"F0 statistics:   {'for ' + ', '.join(sorted(map(str, f0.get('speakers', f0)))) if f0 else 'none'}")
    src = m.get("source", {})
    lines.append(f"made from:       {src.get('checkpoint')} ({src.get('importer')} checkpoint, iteration {src.get('iteration')})")
    for note in src.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def metadata_json(path: str | os.PathLike) -> str:
    """The checked metadata of a model file as indented JSON (``--info --json``)."""
    from modelfile.bundle import read_info

    return json.dumps(read_info(path).metadata, indent=2, ensure_ascii=False)
