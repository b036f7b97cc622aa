"""Unit2Mel: content units + f0 + volume (+ speaker) → mel by shallow diffusion (spec §8.1).

State-dict keys are 4.1's (spec §7.6), so ``model_*.pt`` files from 4.1, DDSP-SVC and
Diffusion-SVC load unchanged; :func:`load_model_vocoder` loads one strictly with its
``config.yaml``.

Speaker mixing works (4.1 crashed, spec §13.30): pass ``spk_mix_dict={id: weight}`` for a
fixed blend, or ``spk_id`` as per-frame weights ``[T, n_spk]`` (4.1's ``-usm`` layout).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from diffusion.diffusion import GaussianDiffusion
from diffusion.wavenet import WaveNet
from modules.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

AUG_SHIFT_SCALE = 5.0  # key-shift augmentation input = semitones / 5


class Unit2Mel(nn.Module):
    """``forward(units [B, T, C], f0 [B, T, 1] Hz, volume [B, T, 1], ...)``.

    Training (``infer=False``): returns the diffusion loss. Inference: returns the mel
    ``[B, T, out_dims]`` (natural log), shallow from ``gt_spec`` with ``k_step`` or, when
    ``gt_spec`` is None, full diffusion (only for models with ``k_step_max == timesteps``).
    """

    def __init__(self, input_channel: int, n_spk: int | None, use_pitch_aug: bool = False, out_dims: int = 128,
                 n_layers: int = 20, n_chans: int = 384, n_hidden: int = 256, timesteps: int | None = 1000,
                 k_step_max: int | None = 1000) -> None:
        super().__init__()
        self.unit_embed = nn.Linear(input_channel, n_hidden)
        self.f0_embed = nn.Linear(1, n_hidden)
        self.volume_embed = nn.Linear(1, n_hidden)
        self.aug_shift_embed = nn.Linear(1, n_hidden, bias=False) if use_pitch_aug else None
        self.n_spk = n_spk
        if n_spk is not None and n_spk > 1:
            self.spk_embed = nn.Embedding(n_spk, n_hidden)
        self.timesteps = timesteps if timesteps is not None else 1000
        self.k_step_max = (k_step_max if k_step_max is not None and 0 < k_step_max < self.timesteps
                           else self.timesteps)
        self.n_hidden = n_hidden
        self.input_channel = input_channel
        self.decoder = GaussianDiffusion(WaveNet(out_dims, n_layers, n_chans, n_hidden), timesteps=self.timesteps,
                                         k_step=self.k_step_max, out_dims=out_dims)

    @property
    def multi_speaker(self) -> bool:
        return self.n_spk is not None and self.n_spk > 1

    def speaker_embedding(self, spk_id: torch.Tensor | None = None, spk_mix_dict: dict | None = None) -> torch.Tensor | None:
        """The speaker term added to the condition: ``[B or 1, 1 or T, H]``, or None.

        * ``spk_mix_dict`` ``{id: weight}``: Σ weight·embed(id) (a fixed blend);
        * ``spk_id`` long ``[B, 1]``: embed(id) (0-based ids);
        * ``spk_id`` float ``[T, n_spk]``: per-frame blend, frame t = Σ_s w[t, s]·embed(s).
        """
        if not self.multi_speaker:
            return None
        table = self.spk_embed.weight
        if spk_mix_dict is not None:
            mix = None
            for k, v in spk_mix_dict.items():
                k = int(k)
                if not 0 <= k < self.n_spk:
                    raise ValueError(f"speaker id {k} in the mix is outside 0…{self.n_spk - 1}")
                term = float(v) * table[k]
                mix = term if mix is None else mix + term
            return None if mix is None else mix.reshape(1, 1, -1)
        if spk_id is None:
            raise ValueError("this diffusion model has several speakers: pass spk_id or spk_mix_dict")
        if spk_id.dim() == 2 and spk_id.shape[1] > 1:
            if spk_id.shape[1] > self.n_spk:
                raise ValueError(f"speaker-mix weights have {spk_id.shape[1]} columns but the model has {self.n_spk} speakers")
            weights = spk_id.to(table.dtype)  # [T, S]: column s weighs speaker id s
            return (weights @ table[: weights.shape[1]])[None]  # [1, T, H]
        ids = spk_id.long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.n_spk):
            raise ValueError(f"speaker id {ids.flatten().tolist()} outside 0…{self.n_spk - 1}")
        return self.spk_embed(ids.reshape(ids.shape[0], -1)[:, :1])  # [B, 1, H]

    def condition(self, units: torch.Tensor, f0: torch.Tensor, volume: torch.Tensor, spk_id: torch.Tensor | None = None,
                  spk_mix_dict: dict | None = None, aug_shift: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser's condition ``[B, T, H]`` (4.1's embedding sum, spec §8.1)."""
        x = self.unit_embed(units) + self.f0_embed((1 + f0 / 700).log()) + self.volume_embed(volume)
        spk = self.speaker_embedding(spk_id, spk_mix_dict)
        if spk is not None:
            x = x + spk
        if self.aug_shift_embed is not None and aug_shift is not None:
            x = x + self.aug_shift_embed(aug_shift / AUG_SHIFT_SCALE)
        return x

    def init_spkmix(self, n_spk: int) -> None:
        """4.1 API kept for callers; mixing needs no preparation here (4.1's version crashed)."""
        if self.multi_speaker and n_spk > self.n_spk:
            raise ValueError(f"speaker mix over {n_spk} speakers, but the diffusion model has {self.n_spk}")

    def forward(self, units: torch.Tensor, f0: torch.Tensor, volume: torch.Tensor, spk_id: torch.Tensor | None = None,
                spk_mix_dict: dict | None = None, aug_shift: torch.Tensor | None = None,
                gt_spec: torch.Tensor | None = None, infer: bool = True, infer_speedup: int = 10,
                method: str = "dpm-solver", k_step: int = 300, use_tqdm: bool = True) -> torch.Tensor:
        if not self.training and infer:
            if gt_spec is not None and k_step > self.k_step_max:
                raise ValueError(f"shallow diffusion k_step {k_step} is greater than this model's k_step_max "
                                 f"{self.k_step_max}; use k_step ≤ {self.k_step_max}")
            if gt_spec is None and self.k_step_max != self.timesteps:
                raise ValueError(f"this diffusion model was trained to k_step_max {self.k_step_max} < {self.timesteps} "
                                 "steps and can only be used for shallow diffusion, not on its own")
        x = self.condition(units, f0, volume, spk_id, spk_mix_dict, aug_shift)
        return self.decoder(x, gt_spec=gt_spec, infer=infer, infer_speedup=infer_speedup, method=method,
                            k_step=k_step, use_tqdm=use_tqdm)


# --- building and loading -----------------------------------------------------------------------
def build_model(args, out_dims: int) -> Unit2Mel:
    """A :class:`Unit2Mel` from a diffusion config (``data``/``model`` sections) and the vocoder's mel size."""
    try:
        return Unit2Mel(
            int(args["data"]["encoder_out_channels"]), args["model"]["n_spk"], bool(args["model"]["use_pitch_aug"]),
            int(out_dims), int(args["model"]["n_layers"]), int(args["model"]["n_chans"]), int(args["model"]["n_hidden"]),
            args["model"]["timesteps"], args["model"]["k_step_max"],
        )
    except KeyError as e:
        raise ConfigError(f"diffusion config lacks {e.args[0]}") from None


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A diffusion ``model_*.pt`` → its dict (``global_step``, ``model`` and maybe ``optimizer``)."""
    from modules.checkpoint import torch_load

    ckpt = torch_load(path, what="diffusion model")
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        found = list(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a diffusion model checkpoint (expected a dict with 'model'; found {found})")
    return ckpt


def load_model_vocoder(model_path: str | os.PathLike, device: str | torch.device = "cpu",
                       config_path: str | os.PathLike | None = None):
    """Load a diffusion model with its vocoder → ``(model, vocoder, args)`` (4.1's function).

    The config defaults to ``config.yaml`` beside the model. Loading is strict: every key of
    the file must fit the model built from the config, or :class:`CheckpointError` names them.
    """
    from modules.hparams import get_hparams_from_file

    model_path = Path(model_path)
    config_file = Path(config_path) if config_path is not None else model_path.parent / "config.yaml"
    # Configs from DDSP-SVC / Diffusion-SVC carry extra keys; inference only needs known ones.
    args = get_hparams_from_file(config_file, strict=False)
    ckpt = read_checkpoint(model_path)
    return build_model_vocoder(args, ckpt["model"], device, source=str(model_path),
                               global_step=ckpt.get("global_step", "?"))


def build_model_vocoder(args, state: dict, device: str | torch.device = "cpu", *, source: str = "diffusion model",
                        vocoder_path: str | os.PathLike | None = None, global_step: object = "?"):
    """:func:`load_model_vocoder` for a config and state dict already in memory (e.g. from a
    ``.svc.safetensors`` model file) → ``(model, vocoder, args)``. ``vocoder_path`` overrides the
    config's ``vocoder.ckpt``."""
    from modules.checkpoint import load_state_dict_checked
    from vdecoder.vocoder import Vocoder

    vocoder = Vocoder(args["vocoder"]["type"], str(vocoder_path) if vocoder_path is not None else args["vocoder"]["ckpt"],
                      device=device)
    with torch.random.fork_rng(devices=[]):  # building must not move the global RNG
        model = build_model(args, vocoder.dimension)
    load_state_dict_checked(model, state, source=source, reinit_on_mismatch=())
    model.to(device).eval()
    model.requires_grad_(False)
    log.info("Loaded diffusion model %s (step %s, %d speakers, k_step_max %d)", source, global_step,
             model.n_spk or 1, model.k_step_max)
    return model, vocoder, args
