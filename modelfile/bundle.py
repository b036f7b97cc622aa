"""Loading a ``.svc.safetensors`` model file: :func:`load_model_file` → :class:`ModelBundle`.

Loading parses JSON and copies tensor bytes (``safetensors``); no pickle is read, so a crafted
file cannot run code. Everything is checked before tensors are read (see
:func:`modelfile.format.read_header`), and the speech encoder named in the file must be one
this project knows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modules.errors import CheckpointError, ConfigError
from modelfile.format import (
    METADATA_KEY,
    PART_PREFIXES,
    SAFETENSORS_SUFFIX,
    Header,
    check_manifest,
    read_header,
    read_tensors,
)

log = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    """Everything a model file holds, ready for the inference code.

    Attributes:
        path: the file.
        metadata: the whole JSON metadata (see :func:`modelfile.export.build_metadata`).
        config: the SoVITS config as :class:`modules.hparams.HParams` (what
            ``get_hparams_from_file(config.json, infer_mode=True)`` returns for the original).
        spk2id: speaker name → id (the config's ``spk``).
        state_dict: ``SynthesizerTrn`` weights without ``enc_q`` (keys as in a 4.1 ``G_*.pth``),
            in ``dtype`` (float32 by default, whatever the file stores).
        stored_dtype: the dtype the file stores the synthesizer in (float32 or float16).
        cluster: ``cluster.KMeansClusters`` (keyed by speaker name) or ``cluster.FeatureIndex``
            (keyed by speaker id, faiss index rebuilt), or None. Both have
            ``.mix(units [C, T], speaker, ratio, spk2id=...)`` as ``ClusterMixer.model`` does.
        diffusion_state: ``Unit2Mel`` state dict, or None.
        diffusion_config: the diffusion YAML as ``HParams`` (non-strict, as 4.1), or None.
    """

    path: Path
    metadata: dict[str, Any]
    config: Any
    spk2id: dict[str, int]
    state_dict: dict[str, torch.Tensor]
    stored_dtype: torch.dtype
    cluster: Any = None
    diffusion_state: dict[str, torch.Tensor] | None = None
    diffusion_config: Any = None
    notes: list[str] = field(default_factory=list)

    # -- what the file says ------------------------------------------------------------------
    @property
    def speech_encoder(self) -> str:
        return self.metadata["speech_encoder"]["name"]

    @property
    def encoder_sha256(self) -> str | None:
        """SHA-256 of the encoder weight file the model expects, when known."""
        return self.metadata["speech_encoder"].get("sha256")

    @property
    def f0_stats(self) -> dict | None:
        return self.metadata.get("f0_stats")

    @property
    def feature_retrieval(self) -> bool:
        """True when :attr:`cluster` is a retrieval index (4.1's ``-fr``), False for k-means or none."""
        return bool(self.metadata.get("cluster") and self.metadata["cluster"].get("kind") == "index")

    @property
    def sampling_rate(self) -> int:
        return int(self.config.data.sampling_rate)

    @property
    def hop_length(self) -> int:
        return int(self.config.data.hop_length)

    @property
    def author(self) -> str:
        return self.metadata.get("author", "")

    @property
    def license(self) -> str:
        return self.metadata.get("license", "")

    @property
    def description(self) -> str:
        return self.metadata.get("description", "")

    def summary(self) -> list[str]:
        """Short lines on what the file says about itself (logged on load; the web UI shows them)."""
        cl = self.metadata.get("cluster")
        lines = [f"Model file {self.path.name}: speech encoder {self.speech_encoder}, {self.sampling_rate} Hz, "
                 f"{len(self.spk2id)} speaker(s), weights stored as {self.metadata['synthesizer']['dtype']}",
                 "Parts: synthesizer" + (", " + ("feature index" if cl["kind"] == "index" else "k-means") if cl else "")
                 + (", diffusion model" if self.metadata.get("diffusion") else "")]
        for key, value in (("Author", self.author), ("License", self.license), ("Description", self.description)):
            lines.append(f"{key}: {value or '-'}")
        return lines

    # -- building ----------------------------------------------------------------------------
    def build_synthesizer(self, device: str | torch.device = "cpu"):
        """A ``SynthesizerTrn`` with the file's weights (strict: every key must fit), on ``device``.

        Exactly what 4.1's path builds from ``G_*.pth`` + ``config.json``; not yet prepared for
        inference (``Svc.load_model`` makes the inference-ready copy with ``net.for_inference(...)``).
        """
        from modelfile.importers import TRAINING_ONLY_PREFIX, build_synthesizer_for
        from modules.checkpoint import load_state_dict_checked

        net = build_synthesizer_for(self.config.to_dict())
        load_state_dict_checked(net, self.state_dict, source=str(self.path), allow_missing=(TRAINING_ONLY_PREFIX,),
                                reinit_on_mismatch=())
        return net.to(device).eval()

    def build_diffusion(self, device: str | torch.device = "cpu", vocoder_path: str | os.PathLike | None = None):
        """``(Unit2Mel, Vocoder, args)`` as ``diffusion.unit2mel.load_model_vocoder`` returns.

        The vocoder file: ``vocoder_path``, else the config's ``vocoder.ckpt`` when that file
        exists, else the registry's default (``pretrain/nsf_hifigan/model``).
        """
        if self.diffusion_state is None:
            raise CheckpointError(f"{self.path}: this model file has no diffusion model (export it with -dm/-dc)")
        from diffusion.unit2mel import build_model_vocoder

        if vocoder_path is None and not Path(str(self.diffusion_config["vocoder"]["ckpt"])).is_file():
            from modules.pretrained import expected_path
            from vdecoder.registry import get_vocoder_spec

            vocoder_path = expected_path(get_vocoder_spec(self.diffusion_config["vocoder"]["type"]).pretrained_key)
        return build_model_vocoder(self.diffusion_config, self.diffusion_state, device, source=f"{self.path} (diffusion)",
                                   vocoder_path=vocoder_path, global_step=self.metadata["diffusion"].get("global_step"))

    def cluster_mixer(self) -> "BundleClusterMixer | None":
        """The stored k-means / index as a drop-in for ``inference.components.ClusterMixer``
        (``.mix(units, speaker_name, speaker_id, ratio)``), or None when the file has neither."""
        if self.cluster is None:
            return None
        return BundleClusterMixer(self.cluster, feature_retrieval=self.feature_retrieval, spk2id=self.spk2id,
                                  path=self.path)

    def check_encoder_file(self, path: str | os.PathLike) -> None:
        """Raise when the file recorded a SHA-256 for its speech encoder and ``path`` differs."""
        want = self.encoder_sha256
        if not want:
            return
        from modules.pretrained import sha256_of

        got = sha256_of(path)
        if got != want:
            raise CheckpointError(f"{path}: speech encoder file SHA-256 {got} differs from {want}, which {self.path} "
                                  f"was made with ('{self.speech_encoder}'); use the file the model expects")


class BundleClusterMixer:
    """Same interface as ``inference.components.ClusterMixer``, over a cluster object already in
    memory: ``mix(units [C, T], speaker_name, speaker_id, ratio) → [C, T]``; k-means is keyed by
    speaker name, an index by speaker id (4.1's formats)."""

    def __init__(self, model: Any, *, feature_retrieval: bool, spk2id: dict[str, int], path: Path) -> None:
        self.model = model
        self.feature_retrieval = feature_retrieval
        self.spk2id = dict(spk2id)
        self.path = path

    def mix(self, units: torch.Tensor, speaker_name: str, speaker_id: int, ratio: float) -> torch.Tensor:
        key = speaker_id if self.feature_retrieval else speaker_name
        return self.model.mix(units, key, ratio, spk2id=self.spk2id).to(units.dtype)


def is_model_file(path: str | os.PathLike) -> bool:
    """Should ``path`` be opened with :func:`load_model_file` (rather than as ``G_*.pth`` + config)?

    True for any name ending in ``.safetensors`` (so a damaged or disguised file reaches
    :func:`load_model_file` and gets its specific error), and for a file of any name whose
    header carries this project's metadata. A routing test, not validation; never raises.
    """
    p = Path(path)
    if p.name.lower().endswith(SAFETENSORS_SUFFIX):
        return True
    try:
        read_header(p)
    except (CheckpointError, OSError):
        return False
    return True


def read_info(path: str | os.PathLike) -> Header:
    """The checked header and metadata of a model file, without reading tensor data."""
    header = read_header(path)
    check_manifest(header)
    _check_metadata(header)
    return header


def _check_metadata(header: Header) -> None:
    from vencoder import list_encoders

    meta, path = header.metadata, header.path
    for key in ("config", "speakers", "speech_encoder", "synthesizer"):
        if key not in meta:
            raise CheckpointError(f"{path}: metadata lacks '{key}'")
    enc = meta["speech_encoder"]
    name = enc.get("name") if isinstance(enc, dict) else None
    if name not in list_encoders():
        raise CheckpointError(f"{path}: the model needs speech encoder {name!r}, which this version does not know "
                              f"(known: {', '.join(list_encoders())}); update this project or re-export the model")
    spk = meta["speakers"]
    if not isinstance(spk, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in spk.items()):
        raise CheckpointError(f"{path}: metadata 'speakers' must map names to integer ids")
    dtype = meta["synthesizer"].get("dtype")
    if dtype not in ("float32", "float16"):
        raise CheckpointError(f"{path}: synthesizer dtype {dtype!r} is not float32 or float16")


def load_model_file(path: str | os.PathLike, *, dtype: torch.dtype | None = torch.float32, load_cluster: bool = True,
                    load_diffusion: bool = True) -> ModelBundle:
    """Load a ``.svc.safetensors`` model file → :class:`ModelBundle` (no pickle is read).

    ``dtype``: the synthesizer weights come back in it (default float32, what CPU inference
    needs; float16 files are widened exactly); None keeps the stored dtype. ``load_cluster`` /
    ``load_diffusion`` skip those parts (faiss indexes are rebuilt, which takes a moment).
    Raises :class:`CheckpointError` (a :class:`~modules.errors.SvcError`) naming what is wrong.
    """
    from modules.hparams import hparams_from_dict

    header = read_info(path)
    meta, path = header.metadata, header.path
    try:
        config = hparams_from_dict(meta["config"], source=f"{path} ({METADATA_KEY}.config)", infer_mode=True)
    except ConfigError as e:
        raise CheckpointError(f"the config stored in the model file is invalid: {e}") from None
    if config["model"].get("speech_encoder") != meta["speech_encoder"]["name"]:
        raise CheckpointError(f"{path}: metadata speech encoder '{meta['speech_encoder']['name']}' differs from the "
                              f"stored config's '{config['model'].get('speech_encoder')}'")
    prefix = PART_PREFIXES["synthesizer"]
    names = meta["synthesizer"]["tensors"]
    raw = read_tensors(header, names)
    state = {}
    for name, t in raw.items():
        if not name.startswith(prefix):
            raise CheckpointError(f"{path}: synthesizer tensor '{name}' lacks the '{prefix}' prefix")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        state[name[len(prefix):]] = t
    bundle = ModelBundle(path=path, metadata=meta, config=config, spk2id=dict(meta["speakers"]), state_dict=state,
                         stored_dtype=torch.float16 if meta["synthesizer"]["dtype"] == "float16" else torch.float32,
                         notes=list(meta.get("source", {}).get("notes", [])))
    if load_cluster and meta.get("cluster"):
        from modelfile.parts import unpack_cluster

        tensors = read_tensors(header, meta["cluster"]["tensors"])
        bundle.cluster = unpack_cluster(meta["cluster"], tensors.__getitem__, source=str(path))
    if load_diffusion and meta.get("diffusion"):
        prefix = PART_PREFIXES["diffusion"]
        tensors = read_tensors(header, meta["diffusion"]["tensors"])
        bundle.diffusion_state = {k[len(prefix):]: v for k, v in tensors.items()}
        bundle.diffusion_config = hparams_from_dict(meta["diffusion"]["config"], source=f"{path} (diffusion config)",
                                                    strict=False)
    log.info("Loaded model file %s (%d speakers, encoder %s, %s%s%s)", path, len(bundle.spk2id), bundle.speech_encoder,
             meta["synthesizer"]["dtype"], ", " + meta["cluster"]["kind"] if meta.get("cluster") else "",
             ", diffusion" if meta.get("diffusion") else "")
    return bundle
