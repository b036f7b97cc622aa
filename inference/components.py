"""The parts the inference pipeline plugs together, each behind one small function.

Svc talks to the speech encoders, F0 predictors, clustering / feature retrieval, shallow
diffusion and the enhancer only through these functions, so the pipeline does not depend on
their internals (and tests can stand a part in with a fake).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from modules.errors import CheckpointError

log = logging.getLogger(__name__)

# --- F0 predictors -------------------------------------------------------------------------------
def f0_predictor_names() -> list[str]:
    """Names accepted by ``-f0p``: ``ConversionOptions.choices("f0_predictor")`` (the registry).
    Kept for callers that list names; validation belongs to :class:`inference.options.ConversionOptions`."""
    from inference.options import f0_predictor_choices

    return f0_predictor_choices()


def get_f0_predictor(name: str, *, hop_length: int, sampling_rate: int, device: torch.device, threshold: float,
                     **kwargs):
    """``kwargs``: ``f0_min`` / ``f0_max`` / ``f0_repair`` (see ``modules.F0Predictor.get_f0_predictor``)."""
    from modules.F0Predictor import get_f0_predictor as make

    return make(name, hop_length=hop_length, sampling_rate=sampling_rate, device=device, threshold=threshold, **kwargs)


# --- speech encoders -----------------------------------------------------------------------------
def get_speech_encoder(name: str, *, device: torch.device, path: str | os.PathLike | None = None,
                       dtype: torch.dtype | None = None):
    """The encoder object (``.encoder(wav16k [N16]) → [1, C, N]``), loaded once per process."""
    from vencoder import get_speech_encoder as load

    return load(name, device=device, path=path, dtype=dtype)


# --- clustering / feature retrieval --------------------------------------------------------------
class ClusterMixer:
    """Mixes stretched units with their k-means centres or retrieved neighbours (spec §9).

    ``mix(units [C, T] float32 tensor, speaker_name, speaker_id, ratio) → [C, T]``:
    ``ratio · target + (1 − ratio) · units``. K-means files are keyed by speaker *name*, index files
    by speaker *id* (4.1's formats); the cluster package resolves either from the config's map.
    """

    def __init__(self, path: str | os.PathLike, feature_retrieval: bool, spk2id: dict[str, int] | None = None) -> None:
        self.path = Path(path)
        self.feature_retrieval = feature_retrieval
        self.spk2id = dict(spk2id or {})
        if not self.path.is_file():
            what = "feature index (train it with train_index.py)" if feature_retrieval else \
                "k-means model (train it with cluster/train_cluster.py)"
            raise CheckpointError(f"{self.path}: {what} not found; give the right file with -cm, or set -cr 0")
        import cluster

        self.model = cluster.load_cluster_model(self.path, feature_retrieval=feature_retrieval)

    def mix(self, units: torch.Tensor, speaker_name: str, speaker_id: int, ratio: float) -> torch.Tensor:
        key = speaker_id if self.feature_retrieval else speaker_name
        return self.model.mix(units, key, ratio, spk2id=self.spk2id).to(units.dtype)


# --- shallow diffusion ---------------------------------------------------------------------------
def load_diffusion(model_path: str | os.PathLike, config_path: str | os.PathLike, device: torch.device):
    """``(Unit2Mel model, Vocoder, diffusion config)`` as 4.1's ``load_model_vocoder``."""
    for p, what in ((model_path, "diffusion model"), (config_path, "diffusion config")):
        if not Path(p).is_file():
            raise CheckpointError(f"{p}: {what} not found (train one with train_diff.py, or pass its path with "
                                  f"{'-dm' if what == 'diffusion model' else '-dc'})")
    from diffusion.unit2mel import load_model_vocoder

    return load_model_vocoder(str(model_path), device, config_path=str(config_path))


# --- NSF-HiFiGAN enhancer -----------------------------------------------------------------------
def load_enhancer(device: torch.device, path: str | os.PathLike | None = None):
    """4.1's ``Enhancer('nsf-hifigan', 'pretrain/nsf_hifigan/model')``."""
    from modules.enhancer import Enhancer
    from modules.pretrained import require

    ckpt = require("nsf-hifigan", path)
    return Enhancer("nsf-hifigan", str(ckpt), device=device)
