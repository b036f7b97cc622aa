"""Offline voice conversion: the ``Svc`` pipeline (spec §10).

``Svc`` loads a SoVITS model (and optionally a shallow-diffusion model, the NSF-HiFiGAN enhancer,
a k-means / feature-index file) once, then converts:

* :meth:`Svc.infer` — one segment (spec §10.2): f0 at the model rate → transposition; units at
  16 kHz → stretched to frames → optional k-means / retrieval mix; synthesizer (with per-frame
  speaker mix); optional shallow diffusion (or diffusion only), enhancer, loudness envelope.
* :meth:`Svc.convert` — a whole recording (spec §10.3): silence slicing, zero padding,
  optional forced clipping with a linear crossfade, assembly to exactly the input's length. Its
  knobs are one :class:`~inference.options.ConversionOptions`; :meth:`Svc.slice_inference`
  (4.1's keywords) and :meth:`Svc.infer` build one and call the same path.

The library never changes process-wide state (allocator, threads): scripts apply
``modules.runtime`` and may pass ``on_slice_done`` (e.g. a heap release) to :meth:`Svc.convert`.

Differences from 4.1 that cannot change a trained model's output are listed in
``docs/compatibility.md`` (the whole input is resampled once and never round-tripped through a
16-bit WAV; pad / crossfade sizes are counted at the model rate; the speaker-mix frame budget
counts model-rate samples; ``-p 0`` works; unknown speakers and missing files are errors).
"""

from __future__ import annotations

import gc
import inspect
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from modules import rng
from modules.audio import check_finite, sinc_resample
from modules.commons import repeat_expand_2d
from modules.errors import AudioError, CheckpointError, ConfigError, SvcError
from modules.volume import VolumeExtractor

from inference import components
from inference.loudness import change_rms
from inference.options import SEED, ConversionOptions  # noqa: F401 (SEED: the name 4.1 code imports here)
from inference.slicer import Chunk, slice_audio
from inference.spk_mix import check_spk_mix_map, mix_weights

log = logging.getLogger(__name__)

ENCODER_RATE = 16000         # Hz: every speech encoder reads 16 kHz audio
SLICER_MIN_LEN_MS = 5000     # 4.1's slicer min_length at inference
MIN_SEGMENT_SECONDS = 0.1    # shortest padded segment sent to the models (see _pad_amounts)
# 4.1's default locations of the optional parts. With a .svc.safetensors model file these mean
# "not given": the file's own cluster / diffusion part is used when it has one.
DEFAULT_CLUSTER_MODEL_PATH = "logs/44k/kmeans_10000.pt"
DEFAULT_DIFFUSION_MODEL_PATH = "logs/44k/diffusion/model_0.pt"


class F0FilterException(SvcError):
    """``f0_filter`` is on and the f0 predictor found no voiced frame (4.1 name)."""


def pad_array(arr: np.ndarray, target_length: int) -> np.ndarray:
    """Centre-pad ``arr`` with zeros to ``target_length`` (never truncates), as 4.1."""
    n = arr.shape[0]
    if n >= target_length:
        return arr
    left = (target_length - n) // 2
    return np.pad(arr, (left, target_length - n - left))


def split_list_by_n(seq: Sequence, n: int, pre: int = 0):
    """Consecutive pieces of ``n`` items; every piece after the first also starts ``pre`` items
    earlier (the crossfade overlap), as 4.1."""
    for i in range(0, len(seq), n):
        yield seq[i - pre if i - pre >= 0 else i: i + n]


def _resolve_device(device: Any) -> torch.device:
    from modules.device import resolve_device

    return resolve_device(device)


# --- config ↔ checkpoint diagnosis ---------------------------------------------------------------
def describe_mismatch(state: Mapping[str, torch.Tensor], model_cfg: Mapping[str, Any]) -> list[str]:
    """Name the config fields that disagree with a generator state dict (spec §7.2 shapes)."""
    problems: list[str] = []

    def shape(key: str) -> tuple[int, ...] | None:
        t = state.get(key)
        return tuple(t.shape) if isinstance(t, torch.Tensor) else None

    def check(key: str, dim: int, field: str, hint: str = "") -> None:
        s = shape(key)
        want = model_cfg.get(field)
        if s is not None and want is not None and len(s) > dim and s[dim] != want:
            problems.append(f"{field}: config says {want}, checkpoint has {s[dim]} ({key} {s}){hint}")

    check("pre.weight", 1, "ssl_dim", " - set model.ssl_dim (and speech_encoder) to match the encoder the model "
          "was trained with")
    check("emb_g.weight", 0, "n_speakers")
    check("emb_g.weight", 1, "gin_channels")
    check("pre.weight", 0, "hidden_channels")
    check("enc_p.enc_.ffn_layers.0.conv_1.weight", 0, "filter_channels")
    check("dec.conv_pre.weight_v", 0, "upsample_initial_channel")
    flags = [
        ("vol_embedding", "emb_vol.weight"),
        ("use_automatic_f0_prediction", "f0_decoder.proj.weight"),
        ("flow_share_parameter", "flow.wn.cond_layer.bias"),
    ]
    for field, key in flags:
        has = key in state or (field == "flow_share_parameter" and any(k.startswith("flow.wn.") for k in state))
        want = bool(model_cfg.get(field, False))
        if has != want:
            problems.append(f"{field}: config says {str(want).lower()}, but the checkpoint "
                            f"{'has' if has else 'has no'} {key.rsplit('.', 1)[0]} layers")
    depthwise = any(".depth_conv." in k for k in state)
    if any(k.startswith("flow.") and ".in_layers." in k for k in state) and depthwise != bool(model_cfg.get("use_depthwise_conv", False)):
        problems.append(f"use_depthwise_conv: config says {str(bool(model_cfg.get('use_depthwise_conv', False))).lower()}, "
                        f"checkpoint {'uses' if depthwise else 'does not use'} depthwise convolutions")
    n_layers = len({k.split(".")[3] for k in state if k.startswith("enc_p.enc_.attn_layers.")})
    if n_layers and model_cfg.get("n_layers") not in (None, n_layers):
        problems.append(f"n_layers: config says {model_cfg.get('n_layers')}, checkpoint has {n_layers} prior-encoder layers")
    return problems


@dataclass
class _Piece:
    """One unit of work of :meth:`Svc.slice_inference`, in model-rate samples of the resampled input."""

    start: int
    end: int
    silent: bool
    k: int            # index of the piece inside its voiced chunk (0 = first; crossfade only for k > 0)

    @property
    def length(self) -> int:
        return self.end - self.start


def config_carried_by(net_g_path: str | os.PathLike) -> Any:
    """The inference config stored inside a G checkpoint written by this project's trainer (key
    ``config``); a 4.1 checkpoint carries none, so it needs its ``config.json``."""
    from modules.checkpoint import config_from_checkpoint
    from modules.hparams import hparams_from_dict

    config = config_from_checkpoint(net_g_path)
    if config is None:
        raise SvcError(f"{net_g_path} carries no config (a 4.1 checkpoint or one from another tool): "
                       "pass its config.json with -c / config_path")
    return hparams_from_dict(config, source=f"{net_g_path} (stored config)", infer_mode=True)


class Svc:
    """The offline conversion pipeline (4.1 ``inference.infer_tool.Svc``).

    Args:
        net_g_path: SoVITS generator checkpoint (``G_*.pth``, also compressed / mixed files), or a
            ``.svc.safetensors`` model file (see :mod:`modelfile`), which carries its config,
            speakers and optionally a cluster / index and a diffusion model.
        config_path: the checkpoint's ``config.json``; None with a model file.
        device: ``None``/"auto" (CUDA if available), "cpu", "cuda", "cuda:N".
        cluster_model_path: k-means file (``kmeans_10000.pt``) or, with ``feature_retrieval``,
            the feature index (``feature_and_index.pkl``); loaded if it exists. With a model file
            holding a cluster part, the default / None / "" mean "the file's part".
        nsf_hifigan_enhance: run the NSF-HiFiGAN enhancer after the synthesizer (not with diffusion).
        diffusion_model_path, diffusion_config_path: shallow-diffusion model and its YAML (with a
            model file holding a diffusion part, the default / None mean "the file's part").
        shallow_diffusion: refine the SoVITS output with the diffusion model.
        only_diffusion: no SoVITS model; the diffusion model converts the input directly.
        spk_mix_enable: allow per-frame speaker mixing (``slice_inference(use_spk_mix=True)``).
        feature_retrieval: treat ``cluster_model_path`` as a feature index.
        half: run the synthesizer in float16 (CUDA only; CPU always runs float32).
        encoder_path: speech-encoder weights (default ``pretrain/<published name>``).
        enhancer_path: NSF-HiFiGAN weights (default ``pretrain/nsf_hifigan/model``).
        mrf_chunk: the decoder's residual-block chunking (``0``, a sample count or ``"auto"``;
            see :meth:`vdecoder.hifigan.models.Generator.for_inference`). Scripts pass their
            runtime profile's choice (``Profile.decoder_mrf_chunk()``); None decides from
            PyTorch's current thread count and ``OMP_WAIT_POLICY``.
    """

    def __init__(self, net_g_path: str | os.PathLike | None = None, config_path: str | os.PathLike | None = None, *,
                 device: Any = None,
                 cluster_model_path: str | os.PathLike | None = DEFAULT_CLUSTER_MODEL_PATH,
                 nsf_hifigan_enhance: bool = False,
                 diffusion_model_path: str | os.PathLike | None = DEFAULT_DIFFUSION_MODEL_PATH,
                 diffusion_config_path: str | os.PathLike = "configs/diffusion.yaml",
                 shallow_diffusion: bool = False,
                 only_diffusion: bool = False,
                 spk_mix_enable: bool = False,
                 feature_retrieval: bool = False,
                 half: bool = False,
                 encoder_path: str | os.PathLike | None = None,
                 enhancer_path: str | os.PathLike | None = None,
                 mrf_chunk: Any = None) -> None:
        self.net_g_path = str(net_g_path) if net_g_path is not None else None
        self.only_diffusion = bool(only_diffusion)
        self.shallow_diffusion = bool(shallow_diffusion) and not self.only_diffusion
        self.feature_retrieval = bool(feature_retrieval)
        self.spk_mix_enable = bool(spk_mix_enable)
        self.dev = _resolve_device(device)
        self.half = bool(half)
        self._mrf_chunk = mrf_chunk
        if self.half and self.dev.type != "cuda":
            raise SvcError("half precision is a GPU option; on CPU inference runs in float32 (drop --half or use -d cuda)")
        self.net_g_ms = None
        self.dtype = torch.float16 if self.half else torch.float32
        self._f0_predictors: dict[tuple, Any] = {}
        self._encoder_path = encoder_path
        # precision name → inference-ready synthesizer / speech encoder in that precision (the
        # loaded ones under their own precision; reduced-precision copies made on first use)
        self._models_by_precision: dict[str, Any] = {}
        self._encoders_by_precision: dict[str, Any] = {}
        self._precision_warned: set[str] = set()
        # A .svc.safetensors model file (modelfile.ModelBundle) or None for G_*.pth + config.json.
        self.model_file = self._open_model_file(net_g_path, config_path, cluster_model_path, diffusion_model_path)

        if not self.only_diffusion:
            if self.model_file is None and net_g_path is None:
                raise SvcError("a SoVITS model is needed (net_g_path), unless only_diffusion is set")
            from modules.hparams import get_hparams_from_file

            if self.model_file is not None:
                self.hps_ms = self.model_file.config
            elif config_path is not None:  # a side config.json wins over the one a checkpoint carries
                self.hps_ms = get_hparams_from_file(config_path, infer_mode=True)
            else:
                self.hps_ms = config_carried_by(net_g_path)
            self.target_sample = int(self.hps_ms.data.sampling_rate)
            self.hop_size = int(self.hps_ms.data.hop_length)
            self.spk2id = dict(self.hps_ms.spk) if "spk" in self.hps_ms else {}
            self.unit_interpolate_mode = self.hps_ms.data.get("unit_interpolate_mode") or "left"
            self.vol_embedding = bool(self.hps_ms.model.get("vol_embedding") or False)
            self.speech_encoder = self.hps_ms.model.get("speech_encoder") or "vec768l12"

        self.nsf_hifigan_enhance = bool(nsf_hifigan_enhance)
        self.diffusion_model = self.vocoder = self.diffusion_args = None
        if self.shallow_diffusion or self.only_diffusion:
            if self.model_file is not None and self.model_file.diffusion_state is not None:
                self.diffusion_model, self.vocoder, self.diffusion_args = self._diffusion_from_model_file()
            else:
                self.diffusion_model, self.vocoder, self.diffusion_args = components.load_diffusion(
                    diffusion_model_path or DEFAULT_DIFFUSION_MODEL_PATH, diffusion_config_path, self.dev)
            if self.only_diffusion:
                args = self.diffusion_args
                self.target_sample = int(args.data.sampling_rate)
                self.hop_size = int(args.data.block_size)
                self.spk2id = dict(args.spk) if "spk" in args else {}
                self.speech_encoder = args.data.encoder
                self.unit_interpolate_mode = args.data.get("unit_interpolate_mode") or "left"
                self.vol_embedding = False
            if self.spk_mix_enable and hasattr(self.diffusion_model, "init_spkmix"):
                self.diffusion_model.init_spkmix(len(self.spk2id))

        if not self.only_diffusion:
            self.load_model(spk_mix_enable)
            self.volume_extractor = VolumeExtractor(self.hop_size)
        else:
            self.volume_extractor = VolumeExtractor(int(self.diffusion_args.data.block_size))
        self.n_speakers = int(self.net_g_ms.n_speakers) if self.net_g_ms is not None else max(len(self.spk2id), 1)
        # Per-speaker f0 statistics (key suggestion); None when the model has none.
        from inference.pitch import load_speaker_stats

        # f0_stats.json sits beside the config (for a checkpoint carrying its config: beside the
        # checkpoint, where inference_main looks too)
        self.f0_stats = load_speaker_stats(config_path if config_path is not None else net_g_path, self.model_file)
        self._check_speaker_map()
        self.hubert_model = components.get_speech_encoder(
            self.speech_encoder, device=self.dev, path=encoder_path, dtype=self.dtype if self.half else None)
        self._check_encoder_dim()
        if self.model_file is not None and not self.only_diffusion:
            self._check_model_file_encoder()

        self.cluster_model = None
        self.cluster_model_path = str(cluster_model_path) if cluster_model_path else ""
        if self.model_file is not None and self.model_file.cluster is not None:
            self._cluster_from_model_file()
        elif self.cluster_model_path and Path(self.cluster_model_path).is_file():
            self.cluster_model = components.ClusterMixer(self.cluster_model_path, self.feature_retrieval, self.spk2id)
        else:
            self.feature_retrieval = False  # as 4.1; asking for a ratio later says the file is missing

        if self.nsf_hifigan_enhance and (self.shallow_diffusion or self.only_diffusion):
            log.info("the NSF-HiFiGAN enhancer is not used together with diffusion; it is switched off")
            self.nsf_hifigan_enhance = False
        self.enhancer = components.load_enhancer(self.dev, enhancer_path) if self.nsf_hifigan_enhance else None

    # ------------------------------------------------------------------ loading
    def load_model(self, spk_mix_enable: bool = False) -> None:
        """Build the synthesizer from the config, load the checkpoint, prepare it for inference."""
        if self.model_file is not None:
            return self._load_from_bundle(spk_mix_enable)
        from models import SynthesizerTrn
        from modules.checkpoint import (TRAINED_ON_RANDOM, has_random_weights, load_state_dict_checked, torch_load,
                                        warn_random_weights)

        hps = self.hps_ms
        try:
            # mapped, not read: a training checkpoint's optimizer state (2x the model) never loads
            ckpt = torch_load(self.net_g_path, what="so-vits-svc checkpoint", mmap=True)
        except CheckpointError:
            ckpt = torch_load(self.net_g_path, what="so-vits-svc checkpoint")  # legacy (non-zip) files
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), Mapping):
            raise CheckpointError(f"{self.net_g_path}: not a so-vits-svc G checkpoint (expected a dict with a 'model' "
                                  "state dict); D_*.pth, diffusion model_*.pt or encoder files are not SoVITS models")
        if has_random_weights(ckpt):  # trained on a random encoder's features (marked by training)
            warn_random_weights(self.net_g_path, "SoVITS model", TRAINED_ON_RANDOM)
        state = ckpt["model"]
        problems = describe_mismatch(state, hps.model)
        if problems:
            raise CheckpointError(f"{self.net_g_path} does not match its config: " + "; ".join(problems)
                                  + ". Use the config.json the model was trained with.")
        try:
            net = SynthesizerTrn(hps.data.filter_length // 2 + 1, hps.train.segment_size // hps.data.hop_length,
                                 **hps.model)
        except TypeError as e:
            raise ConfigError(f"model section of the config does not fit SynthesizerTrn: {e}") from None
        # At inference a speaker table of another size is an error, not a re-initialisation.
        load_state_dict_checked(net, state, source=str(self.net_g_path), allow_missing=("enc_q",),
                                reinit_on_mismatch=())
        del ckpt, state
        self._install(net.to(self.dev), spk_mix_enable)

    def _install(self, net, spk_mix_enable: bool) -> None:
        """Make the loaded synthesizer (on ``self.dev``) inference-ready and use it."""
        # The inference-ready model is a new object; the decoder's residual-block chunking is the
        # script's (its runtime profile knows the threads a slice runs on), else decided from the
        # process's current settings (the decoder reads none).
        from vdecoder.hifigan.models import chunking_pays

        chunk = self._mrf_chunk
        if chunk is None:
            chunk = "auto" if chunking_pays(torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY")) else 0
        net = net.for_inference(dtype=torch.float16 if self.half else None, mrf_chunk=chunk)
        if spk_mix_enable:
            net.EnableCharacterMix(len(self.spk2id), self.dev)
        self.net_g_ms = net
        log.info("loaded SoVITS model %s (%d speakers, %s, %s)", self.net_g_path, net.n_speakers, self.dev, self.dtype)

    # ---------------------------------------------------------- loading from a .svc.safetensors file
    def _open_model_file(self, net_g_path, config_path, cluster_model_path, diffusion_model_path):
        """The model file's bundle (no pickle read) when ``net_g_path`` is one, else None.

        Only the parts this Svc will use are read: the cluster part unless a cluster file is
        given, the diffusion part only when diffusion is asked for and no ``-dm`` is given."""
        if net_g_path is None:
            return None
        from modelfile import is_model_file, load_model_file

        if not is_model_file(net_g_path):
            return None
        if config_path is not None and not self.only_diffusion:
            raise SvcError(f"{net_g_path} is a model file that carries its own config; do not pass a config "
                           f"({config_path}) with it (drop -c)")
        own_cluster = cluster_model_path in (None, "", DEFAULT_CLUSTER_MODEL_PATH)
        own_diffusion = ((self.shallow_diffusion or self.only_diffusion)
                         and diffusion_model_path in (None, "", DEFAULT_DIFFUSION_MODEL_PATH))
        bundle = load_model_file(net_g_path, load_cluster=own_cluster,
                                 load_diffusion=own_diffusion)
        if own_diffusion and bundle.diffusion_state is None and diffusion_model_path is None:
            raise SvcError(f"{net_g_path} holds no diffusion model; pass one with -dm/-dc (diffusion_model_path) or "
                           "re-export the model file with -dm/-dc")
        for line in bundle.summary():
            log.info("%s", line)
        return bundle

    def _load_from_bundle(self, spk_mix_enable: bool = False) -> None:
        """:meth:`load_model` for a model file: the same synthesizer, built from the file's weights."""
        bundle = self.model_file
        net = bundle.build_synthesizer(self.dev)
        bundle.state_dict = {}  # the weights now live in the model; keep only the description
        self._install(net, spk_mix_enable)

    def _diffusion_from_model_file(self):
        model, vocoder, args = self.model_file.build_diffusion(self.dev)
        self.model_file.diffusion_state = None
        return model, vocoder, args

    def _cluster_from_model_file(self) -> None:
        bundle = self.model_file
        if self.feature_retrieval != bundle.feature_retrieval:
            log.warning("%s holds a %s; feature_retrieval (-fr) follows the file", bundle.path,
                        "feature index" if bundle.feature_retrieval else "k-means model")
        self.cluster_model = bundle.cluster_mixer()
        self.feature_retrieval = bundle.feature_retrieval
        self.cluster_model_path = f"{bundle.path} ({'feature index' if self.feature_retrieval else 'k-means'})"

    def _check_model_file_encoder(self) -> None:
        """A model file that recorded the SHA-256 of a specific encoder file (``export_model.py
        --encoder-file``) must run with that file; published hashes are checked when downloading."""
        from modules.pretrained import PRETRAINED
        from vencoder import get_spec

        want = self.model_file.encoder_sha256
        path = getattr(self.hubert_model, "path", None)
        if want and path and want != PRETRAINED[get_spec(self.speech_encoder).pretrained].sha256:
            self.model_file.check_encoder_file(path)

    def _check_speaker_map(self) -> None:
        bad = {name: sid for name, sid in self.spk2id.items()
               if not isinstance(sid, int) or not 0 <= sid < self.n_speakers}
        if bad and self.net_g_ms is not None:
            raise ConfigError(f"config 'spk' maps {bad} to ids outside 0..{self.n_speakers - 1} "
                              f"(the model has {self.n_speakers} speaker embeddings)")

    def _check_encoder_dim(self) -> None:
        """The encoder's unit width must be what the model (or diffusion model) reads."""
        dim = getattr(self.hubert_model, "dim", None)
        if self.net_g_ms is not None:
            want, where = int(self.net_g_ms.ssl_dim), "model.ssl_dim of the config"
        else:
            want, where = int(self.diffusion_args.data.encoder_out_channels), "data.encoder_out_channels of the diffusion config"
        if dim and dim != want:
            raise ConfigError(f"speech encoder '{self.speech_encoder}' ({getattr(self.hubert_model, 'path', '')}) gives "
                              f"{dim}-dim units but {where} is {want}; the config's speech_encoder does not match the "
                              "model (or the encoder file is another model)")

    def unload_model(self) -> None:
        """Free the models (4.1 name); the object cannot convert afterwards."""
        for attr in ("net_g_ms", "enhancer", "diffusion_model", "vocoder", "hubert_model", "cluster_model"):
            if getattr(self, attr, None) is not None:
                setattr(self, attr, None)
        self._f0_predictors.clear()
        gc.collect()
        self.clear_empty()

    def clear_empty(self) -> None:
        """Release cached GPU memory (4.1 name)."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ helpers
    @property
    def speakers(self) -> list[str]:
        return list(self.spk2id)

    def speaker_id(self, speaker: str | int) -> int:
        """Speaker name (or integer id) → id; unknown speakers raise listing the valid names."""
        if isinstance(speaker, str) and speaker in self.spk2id:
            return int(self.spk2id[speaker])
        if isinstance(speaker, (int, np.integer)) and not isinstance(speaker, bool) and 0 <= int(speaker) < self.n_speakers:
            return int(speaker)
        names = ", ".join(self.spk2id) or "(none)"
        raise SvcError(f"speaker {speaker!r} is not in this model's speaker list: {names}")

    def speaker_name(self, sid: int) -> str:
        for name, i in self.spk2id.items():
            if i == sid:
                return name
        return str(sid)

    def f0_predictor(self, name: str, threshold: float, *, f0_min: float | None = None, f0_max: float | None = None,
                     f0_repair: bool = False):
        """The predictor ``name`` (created once per name, threshold, range and repair, then reused).
        ``f0_min`` / ``f0_max`` (Hz, None = 4.1's range) and ``f0_repair`` as in
        ``modules.F0Predictor.get_f0_predictor``."""
        key = (name, float(threshold), f0_min, f0_max, bool(f0_repair))
        pred = self._f0_predictors.get(key)
        if pred is None:
            extra: dict[str, Any] = {}
            if f0_min is not None:
                extra["f0_min"] = float(f0_min)
            if f0_max is not None:
                extra["f0_max"] = float(f0_max)
            if f0_repair:
                extra["f0_repair"] = True
            pred = components.get_f0_predictor(name, hop_length=self.hop_size, sampling_rate=self.target_sample,
                                               device=self.dev, threshold=threshold, **extra)
            self._f0_predictors[key] = pred
        return pred

    # ------------------------------------------------------------------ precision (issue 25)
    def resolve_precision(self, precision: str) -> str:
        """``precision`` (``fp32``, ``bf16``, ``fp16``, ``auto``) → the concrete name on this device.

        ``auto`` → bf16 where the device runs it natively, else fp32. A reduced precision the
        device lacks natively is kept but warns once (it is emulated: slower, not faster). With
        ``half`` (4.1's ``--half``) the model is already float16: only ``fp32`` (meaning "as
        loaded") is accepted."""
        from modules.precision import PrecisionWarning, resolve_precision

        if self.half:
            if precision not in ("fp32", "fp16"):
                raise SvcError(f"precision {precision!r} together with half=True (--half): use one of them "
                               "(--half is --precision fp16 on CUDA)")
            return "fp32"
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PrecisionWarning)
            resolved = resolve_precision(precision, self.dev)
        for w in caught:
            if precision not in self._precision_warned:
                self._precision_warned.add(precision)
                log.warning("%s", w.message)
        return resolved

    def model_for(self, precision: str = "fp32"):
        """The inference-ready synthesizer for ``precision`` (see :meth:`resolve_precision`): the
        loaded model for fp32, a cast copy for bf16/fp16 (made on first use, kept; the fp32 model
        is not changed). Its ``precision`` property says which it is."""
        p = self.resolve_precision(precision)
        if p == "fp32":
            return self.net_g_ms
        net = self._models_by_precision.get(p)
        if net is None:
            base = self.net_g_ms
            net = base.for_inference(precision=p, conv2d=base.dec.conv2d, mrf_chunk=base.dec.mrf_chunk)
            self._models_by_precision[p] = net
            log.info("made a %s copy of the SoVITS model", p)
        return net

    def encoder_for(self, precision: str = "fp32"):
        """The speech encoder for ``precision``: the loaded one for fp32, a bfloat16 / float16 one
        (loaded once from the same file) otherwise; float16 on CPU stays float32 (no CPU kernels)."""
        p = self.resolve_precision(precision)
        if p == "fp32" or (p == "fp16" and self.dev.type == "cpu"):
            return self.hubert_model
        enc = self._encoders_by_precision.get(p)
        if enc is None:
            from modules.precision import precision_dtype

            enc = components.get_speech_encoder(self.speech_encoder, device=self.dev, path=self._encoder_path,
                                                dtype=precision_dtype(p))
            self._encoders_by_precision[p] = enc
        return enc

    def speaker_f0_stats(self, speaker: Any):
        """``speaker``'s :class:`~modules.f0_stats.SpeakerF0Stats` (name or id), or None."""
        if not self.f0_stats or isinstance(speaker, dict) or isinstance(speaker, torch.Tensor):
            return None
        name = speaker if isinstance(speaker, str) else self.speaker_name(int(speaker))
        return self.f0_stats.get(name)

    def _to_16k(self, wav: torch.Tensor) -> torch.Tensor:
        """``[L]`` at the model rate → ``[L16]`` (torchaudio-default sinc, as 4.1)."""
        return sinc_resample(wav[None], self.target_sample, ENCODER_RATE)[0]

    def units(self, wav: torch.Tensor, n_frames: int, precision: str = "fp32") -> torch.Tensor:
        """Encoder units of ``wav [L]`` (model rate) stretched to ``n_frames`` → ``[C, n_frames]`` float32
        (public for the realtime engine); the encoder runs in ``precision``."""
        c = self.encoder_for(precision).encoder(self._to_16k(wav))
        return repeat_expand_2d(c.squeeze(0).float(), n_frames, self.unit_interpolate_mode)

    # ------------------------------------------------------------------ per segment (spec §10.2)
    def get_unit_f0(self, wav: np.ndarray, tran: float, cluster_infer_ratio: float, speaker: str | int | None,
                    f0_filter: bool, f0_predictor: str, cr_threshold: float = 0.05, precision: str = "fp32", *,
                    f0_min: float | None = None, f0_max: float | None = None, f0_repair: bool = False,
                    f0_uv: tuple[np.ndarray, np.ndarray] | None = None):
        """``wav`` float32 ``[L]`` at the model rate → ``(c [1, C, T], f0 [1, T] Hz, uv [1, T])``.

        ``f0_uv``: a curve ``(f0 [T] Hz, uv [T])`` to use instead of predicting one (it is still
        transposed by ``tran``)."""
        if f0_uv is None:
            f0, uv = self.f0_predictor(f0_predictor, cr_threshold, f0_min=f0_min, f0_max=f0_max,
                                       f0_repair=f0_repair).compute_f0_uv(wav)
        else:
            f0, uv = f0_uv
        if f0_filter and sum(f0) == 0:
            raise F0FilterException("No voice detected")
        f0 = torch.FloatTensor(f0).to(self.dev)
        uv = torch.FloatTensor(uv).to(self.dev)
        f0 = (f0 * 2 ** (tran / 12)).unsqueeze(0)
        uv = uv.unsqueeze(0)
        c = self.units(torch.from_numpy(wav).to(self.dev), f0.shape[1], precision)
        if cluster_infer_ratio != 0:
            if self.cluster_model is None:
                raise SvcError(f"cluster/retrieval ratio {cluster_infer_ratio} requested but no k-means or index file "
                               f"was loaded ({self.cluster_model_path or 'none given'} not found)")
            sid = self.speaker_id(speaker)
            c = self.cluster_model.mix(c, self.speaker_name(sid), sid, cluster_infer_ratio)
        return c.unsqueeze(0), f0, uv

    def _load_segment(self, raw_path: Any) -> np.ndarray:
        """A path / file object (read, mixed to mono, resampled) or an array at the model rate."""
        if isinstance(raw_path, torch.Tensor):
            raw_path = raw_path.detach().cpu().numpy()
        if isinstance(raw_path, np.ndarray):
            wav = np.asarray(raw_path, dtype=np.float32).reshape(-1)
        else:
            import soundfile as sf

            try:
                data, sr = sf.read(raw_path if isinstance(raw_path, io.IOBase) else str(raw_path),
                                   dtype="float32", always_2d=True)
            except Exception as e:
                raise AudioError(f"{raw_path}: not a readable audio file ({e})") from None
            wav = data.mean(axis=1)
            wav = sinc_resample(torch.from_numpy(wav), sr, self.target_sample).numpy()
        check_finite(wav, "input audio")
        return np.ascontiguousarray(wav, dtype=np.float32)

    def infer(self, speaker: Any, tran: float, raw_path: Any, *args: Any, frame: int = 0, spk_mix: bool = False,
              vol: torch.Tensor | None = None, start_frame: int | None = None, use_tqdm: bool = False,
              options: ConversionOptions | None = None, **option_values: Any):
        """Convert one segment (spec §10.2); 4.1's signature.

        Args:
            speaker: name or id; with ``spk_mix`` the weights ``[n_speakers, frames]`` of the song
                (``frame`` is this segment's first column).
            tran: transposition in semitones. raw_path: a path or file object (any rate, mono or
                stereo), or a float array at the model rate.
            vol: per-frame loudness ``[1, T]`` to use instead of measuring it (realtime GUI).
            start_frame: drop this many leading frames before synthesis (realtime GUI).
            options: the conversion options (``tran`` and ``option_values`` are applied on top);
                ``option_values`` are 4.1's keywords (``cluster_infer_ratio``, ``noice_scale``,
                ``f0_filter``, ``f0_predictor``, ``cr_threshold``, ``k_step``, ``seed`` ...), see
                :class:`~inference.options.ConversionOptions`. ``args``: the same in 4.1's
                positional order (:data:`INFER_41_ORDER`).
        Returns:
            ``(audio [T·hop] float32 tensor on the device, its length, T)``.
        """
        positional = _positional(INFER_41_ORDER, args, option_values)
        frame = positional.pop("frame", frame)
        spk_mix = positional.pop("spk_mix", spk_mix)
        opts = (options or ConversionOptions()).replace(transpose=tran, **positional, **option_values)
        wav = self._load_segment(raw_path)
        with torch.inference_mode():
            return self._infer_wav(wav, speaker, opts, frame=frame, spk_mix=spk_mix, vol=vol,
                                   start_frame=start_frame, use_tqdm=use_tqdm)

    def _infer_wav(self, wav: np.ndarray, speaker: Any, options: ConversionOptions, *, frame: int = 0,
                   spk_mix: bool = False, vol: torch.Tensor | None = None, start_frame: int | None = None,
                   use_tqdm: bool = False, keep: tuple[int, int] | None = None,
                   f0_uv: tuple[np.ndarray, np.ndarray] | None = None,
                   on_f0: Callable[[np.ndarray, np.ndarray], None] | None = None,
                   decode_split: tuple[Any, int] | None = None):
        """One padded segment ``wav`` (float32 ``[L]``, model rate) → ``(audio, length, frames)``.

        ``keep``: the samples ``[start, stop)`` the caller keeps (the slice without its padding).
        Where nothing post-processes the whole segment (no diffusion, enhancer or loudness
        matching), the decoder then skips the padding beyond its receptive radius: the kept
        samples are the same up to float rounding, the rest of ``audio`` is zero.
        ``f0_uv``: the segment's untransposed curve to use instead of predicting it; ``on_f0``
        receives the curve fed to the synthesizer (``f0 [T]`` float64 Hz, ``uv [T]`` float32).
        ``decode_split``: ``(executor, parts)``: decode the kept frames in that many parts, the
        others on the executor's threads (parallel slices only; see :meth:`_decode_in_parts`)."""
        tran, f0_filter, f0_predictor = options.transpose, options.f0_filter, options.f0_predictor
        cr_threshold, k_step, seed = options.cr_threshold, options.k_step, options.seed
        second_encoding = options.second_encoding
        loudness_envelope_adjustment = options.loudness_envelope_adjustment
        pitch = dict(f0_min=options.f0_min, f0_max=options.f0_max, f0_repair=options.f0_repair, f0_uv=f0_uv)
        if spk_mix:
            c, f0, uv = self.get_unit_f0(wav, tran, 0, None, f0_filter, f0_predictor, cr_threshold,
                                         options.precision, **pitch)
            n_frames = f0.size(1)
            weights = speaker[:, frame:frame + n_frames]
            if weights.shape[1] < n_frames:
                raise AssertionError(f"speaker-mix weights end at frame {frame + weights.shape[1]}, need {frame + n_frames}")
            sid = weights.transpose(0, 1).to(self.dev)
        else:
            sid = torch.LongTensor([self.speaker_id(speaker)]).to(self.dev).unsqueeze(0)
            c, f0, uv = self.get_unit_f0(wav, tran, options.cluster_infer_ratio, speaker, f0_filter, f0_predictor,
                                         cr_threshold, options.precision, **pitch)
            n_frames = f0.size(1)
        if on_f0 is not None:
            on_f0(f0[0].double().cpu().numpy(), uv[0].float().cpu().numpy())
        c, f0, uv = c.to(self.dtype), f0.to(self.dtype), uv.to(self.dtype)
        if start_frame:
            c, f0, uv = c[:, :, start_frame:], f0[:, start_frame:], uv[:, start_frame:]
            if vol is not None:
                vol = vol[:, start_frame:]
        if self.only_diffusion:
            torch.manual_seed(seed)  # 4.1 left this mode unseeded; seeding keeps runs repeatable
            audio = torch.from_numpy(wav).to(self.dev)
            audio_mel = None
        else:
            if vol is None and self.vol_embedding:
                vol = self.volume_extractor.extract(torch.from_numpy(wav).to(self.dev)[None, :])[None, :]
                if start_frame:
                    vol = vol[:, start_frame:]
            decode_frames = None
            if (keep is not None and not start_frame and not self.shallow_diffusion and self.enhancer is None
                    and loudness_envelope_adjustment == 1):
                decode_frames = (keep[0] // self.hop_size, -(-keep[1] // self.hop_size))
            # f0 stays float32 whatever the precision (the model casts the units itself)
            net = self.model_for(options.precision)
            if decode_split is not None and decode_frames is not None and rng.current_generator() is not None:
                z, f0, g = net.latent(c, f0, uv, sid, predict_f0=options.auto_predict_f0,
                                      noice_scale=options.noice_scale, vol=vol, seed=seed)
                audio = self._decode_in_parts(net, z, f0, g, decode_frames, *decode_split)
            else:
                audio, f0 = net.infer(c, f0=f0, g=sid, uv=uv, predict_f0=options.auto_predict_f0,
                                      noice_scale=options.noice_scale, vol=vol, seed=seed,
                                      decode_frames=decode_frames)
            audio = audio[0, 0].float()
            audio_mel = self.vocoder.extract(audio[None, :], self.target_sample) if self.shallow_diffusion else None
        c, f0, uv = c.float(), f0.float(), uv.float()
        if self.only_diffusion or self.shallow_diffusion:
            audio = self.diffuse(audio, audio_mel, c, f0, vol, sid, k_step, second_encoding, use_tqdm,
                                 precision=options.precision)
        if self.enhancer is not None:
            audio = self.enhance(audio, f0, options.enhancer_adaptive_key)
        if loudness_envelope_adjustment != 1:
            audio = change_rms(wav, self.target_sample, audio, self.target_sample, loudness_envelope_adjustment)
        return audio, audio.shape[-1], n_frames

    @staticmethod
    def _decode_in_parts(net, z: torch.Tensor, f0: torch.Tensor, g: torch.Tensor, frames: tuple[int, int],
                         pool: Any, parts: int) -> torch.Tensor:
        """Decode frames ``[start, stop)`` of one slice as ``parts`` consecutive ranges, all but the
        first submitted to ``pool`` (so an idle worker can take them), → audio ``[1, 1, T·hop]``.

        Each range is :meth:`SynthesizerTrn.decode_range` (the same samples as one decode up to
        float rounding: measured ≤ 1e-6) with the generator restored to its state after the
        latent, so every range draws the sine phases a whole decode would. A range nobody has
        started yet is taken back and decoded here: a worker only ever waits for a range that is
        running, and ranges wait for nothing, so workers cannot wait on each other in a circle."""
        state = rng.current_generator().get_state()
        start, stop = frames
        bounds = np.linspace(start, stop, parts + 1).round().astype(int)
        ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

        def decode(a: int, b: int) -> torch.Tensor:
            with torch.inference_mode(), rng.own_generator(z.device) as gen:
                gen.set_state(state)
                return net.decode_range(z, f0, g, a, b)

        later = [pool.submit(decode, a, b) for a, b in ranges[1:]]
        audio = decode(*ranges[0])
        hop = net.dec.upp
        for (a, b), fut in zip(ranges[1:], later):
            part = decode(a, b) if fut.cancel() else fut.result()
            audio[..., a * hop:b * hop] = part[..., a * hop:b * hop]
        return audio.float()

    def diffuse(self, audio: torch.Tensor, audio_mel: torch.Tensor | None, c: torch.Tensor, f0: torch.Tensor,
                vol: torch.Tensor | None, sid: torch.Tensor, k_step: int, second_encoding: bool, use_tqdm: bool,
                *, speedup: int | None = None, method: str | None = None, precision: str = "fp32") -> torch.Tensor:
        """Shallow diffusion from the SoVITS mel, or diffusion only (spec §8.5).

        ``precision`` other than fp32: the diffusion network and the vocoder network run under
        autocast (matrix products and convolutions in bf16/fp16; the schedule, mel and f0 in fp32).

        ``audio [L]`` model rate, ``audio_mel`` its mel (shallow) or None, ``c [1, C, T]``,
        ``f0 [1, T]`` Hz, ``vol [1, T]`` or None, ``sid [1, 1]`` → ``[L]``. ``speedup`` / ``method``
        default to the diffusion config's ``infer`` section (public for the realtime engine)."""
        speedup = self.diffusion_args.infer.speedup if speedup is None else speedup
        method = self.diffusion_args.infer.method if method is None else method
        if vol is None:
            vol = self.volume_extractor.extract(audio[None, :])[None, :, None].to(self.dev)
        else:
            vol = vol.float()[:, :, None]
        if self.shallow_diffusion and second_encoding:
            c = self.units(audio, f0.shape[1], precision)[None]
        f0 = f0[:, :, None]
        kwargs = dict(spk_id=sid, spk_mix_dict=None, gt_spec=audio_mel, infer=True,
                      infer_speedup=speedup, method=method,
                      k_step=k_step)
        if "use_tqdm" in inspect.signature(self.diffusion_model.forward).parameters:
            kwargs["use_tqdm"] = use_tqdm
        from modules.precision import autocast

        p = self.resolve_precision(precision)
        with autocast(p, self.dev):
            mel = self.diffusion_model(c.transpose(-1, -2), f0, vol, **kwargs)
            return self.vocoder.infer(mel.float(), f0).squeeze().float()

    def enhance(self, audio: torch.Tensor, f0: torch.Tensor, adaptive_key: float) -> torch.Tensor:
        """NSF-HiFiGAN enhancer post-processing: ``audio [L]`` at the model rate, ``f0 [1, T]`` Hz,
        ``adaptive_key`` semitones → ``[L']`` at the model rate (public for the realtime engine)."""
        out, sr = self.enhancer.enhance(audio[None, :], self.target_sample, f0[:, :, None], self.hop_size,
                                        adaptive_key=adaptive_key)
        out = out[0] if out.dim() > 1 else out
        if sr != self.target_sample:
            # 4.1 returned 44.1 kHz audio whatever the model rate (only right for 44.1 kHz models).
            out = sinc_resample(out, sr, self.target_sample, lowpass_filter_width=128)
        return out

    # ------------------------------------------------------------------ whole file (spec §10.3)
    def slice_inference(self, raw_audio_path: Any, spk: Any, tran: float, *args: Any, progress: bool = True,
                        sr: int | None = None, on_slice_done: Callable[[], None] | None = None,
                        options: ConversionOptions | None = None, workers: int = 1,
                        set_threads: Callable[[int], int] | None = None, slice_threads: int = 1,
                        **option_values: Any) -> np.ndarray:
        """Convert a whole file → float32 audio at the model rate, as long as the input (4.1's
        signature: ``option_values`` are its keywords, e.g. ``slice_db=-40, noice_scale=0.4``;
        see :class:`~inference.options.ConversionOptions` for all of them and their units).

        ``raw_audio_path`` is a path (any soundfile format, any rate, mono or stereo) or a float
        array with its rate in ``sr``. ``spk``: speaker name/id, or (with ``use_spk_mix``) a
        ``spk_mix_map`` dict (spec §10.7). Equivalent to
        ``convert(audio, sr, spk, options.replace(transpose=tran, **option_values))``. ``args``:
        the options in 4.1's positional order (:data:`SLICE_INFERENCE_41_ORDER`; 4.1's web UI
        passed them so).
        """
        positional = _positional(SLICE_INFERENCE_41_ORDER, args, option_values)
        opts = (options or ConversionOptions()).replace(transpose=tran, **positional, **option_values)
        if isinstance(raw_audio_path, (np.ndarray, torch.Tensor)):
            if sr is None:
                raise SvcError("slice_inference on an array needs its sample rate (sr=...)")
            y, in_sr = raw_audio_path, sr
        else:
            from modules.audio import load_audio

            y, in_sr = load_audio(raw_audio_path)
        return self.convert(y, in_sr, spk, opts, progress=progress, on_slice_done=on_slice_done, workers=workers,
                            set_threads=set_threads, slice_threads=slice_threads)

    def prepare(self, options: ConversionOptions, *, f0: bool = True) -> None:
        """Make now what converting with ``options`` needs and is made on first use otherwise: the
        synthesizer and speech encoder in ``options.precision`` (a bf16 copy, a bf16 encoder) and,
        with ``f0`` (False when the f0 curves are given), the f0 predictor. Front ends call it after
        loading, so the first conversion does not pay for it (about 3 s for bf16 on a 2-core CPU);
        converting without it gives the same audio."""
        if getattr(self, "net_g_ms", None) is not None:
            self.model_for(options.precision)
        if getattr(self, "hubert_model", None) is not None:
            self.encoder_for(options.precision)
        if f0:
            self.f0_predictor(options.f0_predictor, options.cr_threshold, f0_min=options.f0_min,
                              f0_max=options.f0_max, f0_repair=options.f0_repair)

    def parallel_slices_possible(self, options: ConversionOptions) -> bool:
        """Whether slices can be converted on several threads with the same audio as one at a
        time: on the CPU, without diffusion, enhancer or speaker mixing (those draw from, or
        leave their state in, PyTorch's global generator across slices, as in 4.1)."""
        return (self.dev.type == "cpu" and not self.shallow_diffusion and not self.only_diffusion
                and self.enhancer is None and not options.use_spk_mix)

    def check_options(self, speaker: Any, options: ConversionOptions) -> None:
        """Reject options this loaded model cannot honour (the values themselves were checked by
        :class:`ConversionOptions`): a ratio without a cluster file, mixing without
        ``spk_mix_enable``, an unknown speaker."""
        ratio = options.cluster_infer_ratio
        if ratio != 0 and self.cluster_model is None and not options.use_spk_mix:
            raise SvcError(f"cluster/retrieval ratio {ratio} requested but "
                           f"{self.cluster_model_path or 'no k-means / index file'} was not found (train it, pass -cm, "
                           "or set -cr 0)")
        if options.use_spk_mix:
            if not self.spk_mix_enable:
                raise SvcError("speaker mixing needs Svc(spk_mix_enable=True) (inference_main: -usm)")
            check_spk_mix_map(speaker, len(self.spk2id))
        else:
            self.speaker_id(speaker)

    def convert(self, audio: np.ndarray | torch.Tensor, sr: int, speaker: Any, options: ConversionOptions, *,
                progress: bool = True, on_slice_done: Callable[[], None] | None = None,
                f0_curve: tuple[np.ndarray, np.ndarray] | None = None,
                on_f0: Callable[[Any], None] | None = None, workers: int = 1,
                set_threads: Callable[[int], int] | None = None, slice_threads: int = 1) -> np.ndarray:
        """Convert a whole recording: the one offline conversion path.

        Args:
            audio: float samples ``[L]`` (or ``[C, L]`` / ``[L, C]``, mixed to mono) at ``sr`` Hz.
            sr: its sample rate in Hz.
            speaker: name or id, or with ``options.use_spk_mix`` a ``spk_mix_map`` dict (spec §10.7).
            options: the conversion knobs (validated when it was built).
            progress: show a tqdm bar over the voiced slices.
            on_slice_done: called after each converted slice (scripts pass the runtime profile's
                heap release here; the library never trims the heap itself).
            f0_curve: ``(f0 [T] Hz, uv [T])`` on the conversion's frame grid (see
                :mod:`inference.pitch`; what ``on_f0`` reported, e.g. read from an F0 file) to use
                instead of predicting: not transposed again (``transpose`` / ``auto_key`` are
                ignored with a warning); another length is resampled with a warning.
            on_f0: called once at the end with the :class:`~inference.pitch.F0Curve` that was used.
            workers: voiced slices converted at the same time, each on its own thread with
                ``slice_threads`` PyTorch intra-op threads (CPU only; see
                :meth:`parallel_slices_possible`). The
                audio is the same as one at a time up to float rounding: every slice draws its
                random numbers from its own generator seeded as 4.1 seeds the global one
                (:mod:`modules.rng`). Needs ``set_threads``.
            set_threads: the script's hook that sets PyTorch's intra-op threads for the whole
                process and returns the previous number (``modules.runtime.Profile.set_threads``):
                called with ``slice_threads`` before the parallel slices and with the previous value
                after. The library never changes threads itself, so without it ``workers`` is ignored.
            slice_threads: intra-op threads per parallel slice (the profile's ``slice_threads``).
        Returns:
            float32 ``[ceil(L · model_sr / sr)]`` at the model rate, as long as the input.
        """
        y = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else audio
        y = np.asarray(y, dtype=np.float32)
        if y.ndim == 2:
            y = y.mean(axis=0 if y.shape[0] <= 8 else 1)
        if y.size == 0:
            raise AudioError("input audio holds no samples")
        check_finite(y, "input audio")
        return self._slice_convert(y, int(sr), speaker, options, progress=progress, on_slice_done=on_slice_done,
                                   f0_curve=f0_curve, on_f0=on_f0, workers=workers, set_threads=set_threads,
                                   slice_threads=slice_threads)
    def plan(self, y_t_len: int, chunks: list[Chunk], *, clip_size: int, lg_size: int,
             max_chunk: int, y_t: np.ndarray | None = None) -> tuple[list[_Piece], int]:
        """Pieces to convert, in order, and the number of chunks (model-rate samples)."""
        pieces: list[_Piece] = []
        n_chunks = 0
        for ch in chunks:
            if ch.silent:
                pieces.append(_Piece(ch.start, ch.end, True, 0))
                n_chunks += 1
                continue
            spans = [(ch.start, ch.end)]
            if clip_size == 0 and max_chunk and ch.end - ch.start > max_chunk and y_t is not None:
                spans = _split_at_quiet_points(y_t, ch.start, ch.end, max_chunk, self.target_sample)
                log.info("a voiced stretch of %.1f s without a pause was split into %d parts (max_chunk_seconds)",
                         (ch.end - ch.start) / self.target_sample, len(spans))
            for s, e in spans:
                n_chunks += 1
                if clip_size:
                    for k, start in enumerate(range(s, e, clip_size)):
                        pieces.append(_Piece(start - lg_size if start - lg_size >= s and k else start,
                                             min(start + clip_size, e), False, k))
                else:
                    pieces.append(_Piece(s, e, False, 0))
        return pieces, n_chunks

    def _pad_amounts(self, n: int, pad: int) -> tuple[int, int]:
        """Zeros before / after a voiced piece of ``n`` samples: ``pad`` each side, plus enough to
        reach :data:`MIN_SEGMENT_SECONDS` so the encoder and f0 predictors always get a frame
        (with 4.1's default 0.5 s padding this never adds anything)."""
        extra = max(0, math.ceil(MIN_SEGMENT_SECONDS * self.target_sample) - (n + 2 * pad))
        return pad + extra // 2, pad + extra - extra // 2

    def _slice_convert(self, y: np.ndarray, in_sr: int, spk: Any, options: ConversionOptions, *, progress: bool,
                       on_slice_done: Callable[[], None] | None, f0_curve: tuple[np.ndarray, np.ndarray] | None = None,
                       on_f0: Callable[[Any], None] | None = None, workers: int = 1,
                       set_threads: Callable[[int], int] | None = None, slice_threads: int = 1) -> np.ndarray:
        from tqdm import tqdm

        if options.use_spk_mix and len(self.spk2id) == 1:
            # 4.1 crashed here (spec §13.31); mixing one speaker is that speaker.
            spk, options = next(iter(self.spk2id)), options.replace(use_spk_mix=False)
            log.info("the model has one speaker; speaker mixing is not needed and is switched off")
        self.check_options(spk, options)
        use_spk_mix, tran = options.use_spk_mix, options.transpose
        slice_db, pad_seconds, clip_seconds = options.slice_db, options.pad_seconds, options.clip_seconds
        lg_num, lgr_num, max_chunk_seconds = options.lg_num, options.lgr_num, options.max_chunk_seconds
        if options.cluster_infer_ratio != 0 and use_spk_mix:
            log.info("clustering / feature retrieval is not used with speaker mixing (as in 4.1)")
        if options.auto_predict_f0 and tran != 0:
            log.warning("with automatic f0 prediction (-a) the transposition %s has almost no effect: the model's f0 "
                        "predictor sees mean-normalised pitch (4.1 behaviour)", tran)
        if options.auto_predict_f0 and self.net_g_ms is not None and not self.net_g_ms.use_automatic_f0_prediction:
            log.warning("this model has no f0 predictor (use_automatic_f0_prediction is false); -a is ignored")

        tsr, hop = self.target_sample, self.hop_size
        # 1. Slice at the file's own rate (4.1's cut points), 2. resample the whole file once,
        # 3. map the cut points to the model rate: ceil(b · tsr / in_sr), so chunk lengths sum to
        #    the resampled length exactly.
        chunks = slice_audio(y, in_sr, slice_db, SLICER_MIN_LEN_MS)
        g = math.gcd(in_sr, tsr)
        up, down = tsr // g, in_sr // g
        y_t = sinc_resample(torch.from_numpy(y), in_sr, tsr).numpy() if in_sr != tsr else y
        del y
        total = y_t.shape[0]

        def to_t(b: int) -> int:
            return min(total, -(-b * up // down))

        chunks_t = [Chunk(c.silent, to_t(c.start), to_t(c.end)) for c in chunks]
        chunks_t = [c for c in chunks_t if c.end > c.start]
        if all(c.silent for c in chunks_t):
            log.warning("no audio above the slicing threshold (-sd %s dB): the output is silent; lower -sd for quiet "
                        "recordings", slice_db)
        clip_size = int(clip_seconds * tsr)
        lg_size = int(lg_num * tsr) if clip_size else 0
        if lg_num and not clip_size:
            log.info("-lg (crossfade) only applies with forced clipping (-cl); ignored")
        max_chunk = int(max_chunk_seconds * tsr) if max_chunk_seconds else 0
        pieces, n_chunks = self.plan(total, chunks_t, clip_size=clip_size, lg_size=lg_size, max_chunk=max_chunk,
                                     y_t=y_t)
        pad = int(tsr * pad_seconds)

        if use_spk_mix:
            # Frame budget (spec §10.7), all in model-rate samples: frames of every silent chunk and
            # every padded voiced piece, plus one per chunk (4.1's slack term; keeps 4.1's curve).
            budget = n_chunks
            for p in pieces:
                budget += (p.length if p.silent else p.length + sum(self._pad_amounts(p.length, pad))) // hop
            spk = mix_weights(check_spk_mix_map(spk, len(self.spk2id)), budget, self.dev)

        lg_r = int(lg_size * lgr_num)
        lg_c_l = (lg_size - lg_r) // 2
        lg_c_r = lg_size - lg_r - lg_c_l
        ramp = np.linspace(0, 1, lg_r) if lgr_num != 1 else np.linspace(0, 1, lg_size)

        # Pitch (issue 20): the conversion's frame grid (inference.pitch), a given or pre-predicted
        # untransposed curve per voiced piece, and the transposition (auto_key).
        grid = self._frame_grid(pieces, pad)
        given: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if f0_curve is not None:
            given = self._split_curve(f0_curve, grid)
            if options.transpose != 0 or options.auto_key:
                log.warning("an f0 curve is given: it is used as it is; the transposition (-t %s%s) is not applied "
                            "again", options.transpose, ", --auto_key" if options.auto_key else "")
            options = options.replace(transpose=0, auto_key=False)
        stats = self.speaker_f0_stats(spk)
        if options.auto_key:
            if use_spk_mix:
                raise SvcError("--auto_key needs one target speaker's f0 statistics; it does not work with speaker "
                               "mixing (-usm): set -t yourself")
            if stats is None:
                raise SvcError(f"--auto_key needs the f0 statistics of speaker {spk!r}: this model has "
                               f"{'none for that speaker' if self.f0_stats else 'none'} (preprocess_hubert_f0.py writes "
                               "configs/f0_stats.json next to the config; export_model.py stores them in a model file)")
            for i, p in enumerate(pieces):
                if not p.silent:
                    wav = self._padded(y_t, p, pad)
                    given[i] = self.f0_predictor(options.f0_predictor, options.cr_threshold, f0_min=options.f0_min,
                                                 f0_max=options.f0_max, f0_repair=options.f0_repair).compute_f0_uv(wav)
            from inference.pitch import key_report

            report = key_report(self._assemble_curve(grid, given, 0.0), stats, str(spk))
            log.info("%s; --auto_key applies it", report.message())
            if options.transpose != 0:
                log.warning("--auto_key replaces -t %s by the suggested %+d semitones", options.transpose,
                            report.suggested)
            options = options.replace(transpose=report.suggested)
        used: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        out = np.zeros(total, dtype=np.float32)
        pos = 0
        frame = 0
        voiced = [p for p in pieces if not p.silent]
        n_workers = min(int(workers), len(voiced))
        parallel = n_workers > 1 and self.parallel_slices_possible(options) and set_threads is not None
        if workers > 1 and not parallel and len(voiced) > 1:
            log.debug("slices are converted one at a time (%s)", "no thread hook" if set_threads is None else
                      "diffusion, enhancer, speaker mixing or a GPU need the global random generator")

        def convert_piece(i: int, p: _Piece, frame: int, decode_split=None) -> tuple[np.ndarray, int]:
            """Voiced piece ``p`` → (its ``p.length`` output samples, its frame count)."""
            left, right = self._pad_amounts(p.length, pad)
            wav = self._padded(y_t, p, pad)
            with torch.inference_mode():
                audio, _, n_frames = self._infer_wav(
                    wav, spk, options, frame=frame, spk_mix=use_spk_mix, keep=(left, wav.shape[0] - right),
                    f0_uv=given.get(i), on_f0=lambda f0, uv, i=i: used.__setitem__(i, (f0, uv)),
                    decode_split=decode_split)
            a = audio.float().cpu().numpy()
            del audio
            if on_slice_done is not None:
                on_slice_done()
            return pad_array(a[left: max(left, a.shape[0] - right)], p.length)[:p.length], n_frames

        bar = tqdm(total=len(voiced), unit="slice", desc="converting", disable=not progress or not voiced)
        pool = futures = previous_threads = None
        try:
            if parallel:
                from concurrent.futures import ThreadPoolExecutor

                # made here, once, not by two threads on their first slice
                self.prepare(options, f0=not all(i in given for i, p in enumerate(pieces) if not p.silent))
                previous_threads = set_threads(max(1, int(slice_threads)))

                # Longest first: the last slices to start are short, so the workers finish together.
                # The very last one would still run alone while the other workers idle, so its
                # decoder (most of its work) is split in one range per worker.
                order = sorted((i for i, p in enumerate(pieces) if not p.silent), key=lambda i: -pieces[i].length)

                def run(i: int, p: _Piece) -> np.ndarray:
                    split = (pool, n_workers) if i == order[-1] else None
                    with rng.own_generator(self.dev):  # seeded by infer() as 4.1 seeds the global one
                        a, _ = convert_piece(i, p, 0, split)
                    bar.update(1)
                    return a

                pool = ThreadPoolExecutor(n_workers, thread_name_prefix="svc-slice")
                futures = {i: pool.submit(run, i, pieces[i]) for i in order}
            for i, p in enumerate(pieces):
                n = p.length
                if p.silent:
                    pos += n
                    frame += n // hop
                    continue
                if futures is not None:
                    a = futures[i].result()
                else:
                    a, n_frames = convert_piece(i, p, frame)
                    frame += n_frames
                    bar.update(1)
                if lg_size and p.k:
                    #  accumulated output  ...──────────┬──── lg_r + lg_c_r ────┤pos
                    #  this piece                       ├ lg_c_l ┼ lg_r ┼ rest ...
                    #  the lg_r samples are blended with a linear ramp; lg_c_l (piece) and
                    #  lg_c_r (accumulated) are dropped, so lg_size samples of overlap vanish.
                    if lgr_num != 1:
                        s = pos - (lg_r + lg_c_r)
                        out[s:s + lg_r] = out[s:s + lg_r] * (1 - ramp) + a[lg_c_l:lg_c_l + lg_r] * ramp
                        pos = s + lg_r
                        a = a[lg_c_l + lg_r:]
                    else:
                        s = pos - lg_size
                        out[s:pos] = out[s:pos] * (1 - ramp) + a[:lg_size] * ramp
                        a = a[lg_size:]
                out[pos:pos + a.shape[0]] = a
                pos += a.shape[0]
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if previous_threads is not None:
                set_threads(previous_threads)
            bar.close()
        if pos != total:
            raise AssertionError(f"assembled {pos} samples, expected {total}")
        if on_f0 is not None or (stats is not None and f0_curve is None):
            curve = self._assemble_curve(grid, used, options.transpose)
            if stats is not None and f0_curve is None:
                self._report_key(curve, stats, str(spk), applied=options.auto_key)
            if on_f0 is not None:
                on_f0(curve)
        return out

    # ------------------------------------------------------------------ pitch (issue 20)
    def _padded(self, y_t: np.ndarray, p: _Piece, pad: int) -> np.ndarray:
        """The padded segment of voiced piece ``p`` (float32, model rate)."""
        left, right = self._pad_amounts(p.length, pad)
        return np.concatenate([np.zeros(left, np.float32), y_t[p.start:p.end], np.zeros(right, np.float32)])

    def _frame_grid(self, pieces: list[_Piece], pad: int) -> list[tuple[int, int, int, _Piece]]:
        """``(first frame, frames, song sample of frame 0, piece)`` per piece on the conversion's frame
        grid (:mod:`inference.pitch`): a silent piece has ``n // hop`` frames, a voiced one those of
        its padded segment."""
        hop, grid, frame = self.hop_size, [], 0
        for p in pieces:
            if p.silent:
                grid.append((frame, p.length // hop, p.start, p))
            else:
                left, right = self._pad_amounts(p.length, pad)
                grid.append((frame, (p.length + left + right) // hop, p.start - left, p))
            frame += grid[-1][1]
        return grid

    def _split_curve(self, f0_curve: tuple[np.ndarray, np.ndarray], grid: list) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """A whole-song curve → the voiced pieces' parts (resampled with a warning if its length differs)."""
        from modules.f0_file import resample_curve

        f0 = np.asarray(f0_curve[0], dtype=np.float64).reshape(-1)
        uv = np.asarray(f0_curve[1], dtype=np.float32).reshape(-1)
        if f0.shape != uv.shape:
            raise SvcError(f"f0 curve: {f0.size} f0 values but {uv.size} voiced flags")
        want = grid[-1][0] + grid[-1][1] if grid else 0
        if f0.size != want:
            log.warning("the given f0 curve has %d frames, this conversion %d (another input, -sd, -p or -cl than "
                        "when it was written?); resampling it", f0.size, want)
            f0, uv = resample_curve(f0, uv, want)
        return {i: (f0[s:s + n], uv[s:s + n]) for i, (s, n, _, p) in enumerate(grid) if not p.silent}

    def _assemble_curve(self, grid: list, parts: Mapping[int, tuple[np.ndarray, np.ndarray]], transpose: float):
        """Per-piece curves → one :class:`~inference.pitch.F0Curve` on the conversion's frame grid."""
        from inference.pitch import F0Curve

        hop, tsr = self.hop_size, self.target_sample
        n_total = grid[-1][0] + grid[-1][1] if grid else 0
        f0 = np.zeros(n_total)
        uv = np.zeros(n_total, dtype=np.float32)
        time_s = np.zeros(n_total)
        in_piece = np.zeros(n_total, dtype=bool)
        for i, (s, n, origin, p) in enumerate(grid):
            pos = origin + np.arange(n) * hop  # song sample of each frame's start
            time_s[s:s + n] = pos / tsr
            if i in parts:
                pf0, puv = parts[i]
                m = min(n, len(pf0))
                f0[s:s + m], uv[s:s + m] = pf0[:m], puv[:m]
                in_piece[s:s + n] = (pos >= p.start) & (pos < p.end)
        source = f0 / 2 ** (transpose / 12) if transpose else f0.copy()
        return F0Curve(f0=f0, uv=uv, source_f0=source, time_s=time_s, in_piece=in_piece, transpose=float(transpose),
                       hop_length=hop, sampling_rate=tsr)

    def _report_key(self, curve, stats, speaker: str, *, applied: bool) -> None:
        from inference.pitch import key_report
        from modules.f0_stats import format_out_of_range

        report = key_report(curve, stats, speaker)
        if not applied:
            log.info("%s (used: %+g; --auto_key applies the suggestion)", report.message(), curve.transpose)
        warning = format_out_of_range(report.out_of_range, stats, f"speaker {speaker}")
        if warning:
            log.warning("%s", warning)


# 4.1's positional parameter order after (speaker/raw path, spk, tran)
SLICE_INFERENCE_41_ORDER = ("slice_db", "cluster_infer_ratio", "auto_predict_f0", "noice_scale", "pad_seconds",
                            "clip_seconds", "lg_num", "lgr_num", "f0_predictor", "enhancer_adaptive_key",
                            "cr_threshold", "k_step", "use_spk_mix", "second_encoding",
                            "loudness_envelope_adjustment")
INFER_41_ORDER = ("cluster_infer_ratio", "auto_predict_f0", "noice_scale", "f0_filter", "f0_predictor",
                  "enhancer_adaptive_key", "cr_threshold", "k_step", "frame", "spk_mix", "second_encoding",
                  "loudness_envelope_adjustment")


def _positional(order: tuple[str, ...], args: tuple, keywords: Mapping[str, Any]) -> dict[str, Any]:
    """4.1 positional arguments → ``{name: value}``; too many, or one also given by keyword, raise."""
    if len(args) > len(order):
        raise TypeError(f"at most {len(order)} positional options ({', '.join(order)}), got {len(args)}")
    named = dict(zip(order, args))
    both = sorted(set(named) & set(keywords))
    if both:
        raise TypeError(f"option(s) {', '.join(both)} given both by position and by keyword")
    return named


def _split_at_quiet_points(y: np.ndarray, start: int, end: int, max_len: int, sr: int) -> list[tuple[int, int]]:
    """Split ``[start, end)`` into spans of at most ``max_len`` samples, each cut at the quietest
    20 ms frame in the second half of the allowed span."""
    hop = max(1, round(sr * 0.02))
    spans = []
    while end - start > max_len:
        lo, hi = start + max_len // 2, start + max_len
        seg = y[lo:hi]
        n = seg.shape[0] // hop
        energy = np.square(seg[: n * hop].reshape(n, hop)).mean(axis=1)
        cut = lo + int(energy.argmin()) * hop + hop // 2
        spans.append((start, cut))
        start = cut
    spans.append((start, end))
    return spans
