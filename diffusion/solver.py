"""Training loop of the shallow-diffusion model (``train_diff.py``, spec §8.4).

Split into named parts: :func:`prepare` (device, vocoder, model, optimiser, resume, scheduler),
:func:`train_step`, :func:`validate`, :class:`Saver` (checkpoints, ``log_info.txt``,
TensorBoard) and :func:`train` (the loop). Checkpoints keep 4.1's format, ``model_<step>.pt`` =
``{"global_step", "model"[, "optimizer"]}``, written atomically, and 4.1's retention rule.

Unlike 4.1: a NaN/inf loss skips the step (no update) and is counted; too many in a row stop
training with an error, and any skipped step makes the run end with an error (non-zero exit)
after the last checkpoint is saved. CPU training works; ``device: cuda`` without CUDA is an error.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusion.data_loaders import get_data_loaders
from diffusion.unit2mel import Unit2Mel, build_model, read_checkpoint
from modules.checkpoint import atomic_torch_save, checkpoint_step, latest_checkpoint_path, load_state_dict_checked
from modules.device import resolve_device
from modules.errors import ConfigError, SvcError

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_NAN = 20  # this many non-finite losses in a row: the run has diverged
AMP_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
VALIDATION_REPEATS = 4  # diffusion losses per validation file (4.1 used train.batch_size, i.e. 48)
VALIDATION_SEED = 1234  # fixed draws, so validation losses of different steps are comparable


class TrainingError(SvcError):
    """Training cannot continue (diverged) or ended with skipped non-finite steps."""


# --- set-up ---------------------------------------------------------------------------------------
@dataclass
class TrainState:
    args: Any
    device: torch.device
    model: Unit2Mel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    vocoder: Any
    global_step: int
    resumed_from: Path | None = None


def _load_for_resume(model: Unit2Mel, state: dict, source: str) -> None:
    """4.1 resumed with ``strict=False``; here only the optional layers may be absent or refitted.

    A base model for another speaker count (``spk_embed``) or without pitch augmentation
    (``aug_shift_embed``) starts those layers fresh, with a warning; anything else must fit.
    """
    own = model.state_dict()
    optional = ("spk_embed.", "aug_shift_embed.")
    unexpected = [k for k in state if k not in own]
    if unexpected:
        bad = [k for k in unexpected if not k.startswith(optional)]
        if bad:
            raise ConfigError(f"{source} does not fit the model of this config: unexpected keys {', '.join(bad[:6])}. "
                              "Check model.n_layers / n_chans / n_hidden / encoder_out_channels")
        log.warning("%s: ignoring %s (not used by this config)", source, ", ".join(unexpected))
        state = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in state and k.startswith(optional)]
    if missing:
        log.warning("%s: %s not in the file; starting them fresh", source, ", ".join(missing))
    load_state_dict_checked(model, state, source=source, allow_missing=optional,
                            reinit_on_mismatch=("spk_embed.weight",))


def prepare(args, *, device: str | None = None) -> TrainState:
    """Build everything the loop needs; resume from the newest ``model_<N>.pt`` in ``env.expdir``."""
    from vdecoder.vocoder import Vocoder

    dev = resolve_device(device if device is not None else args.get("device"))
    if dev.type == "cuda" and dev.index is None:  # 4.1: torch.cuda.set_device(env.gpu_id)
        dev = torch.device("cuda", int(args.env.get("gpu_id", 0) or 0))
    if str(args.train.amp_dtype) not in AMP_DTYPES:
        raise ConfigError(f"train.amp_dtype '{args.train.amp_dtype}' unknown; use one of {', '.join(AMP_DTYPES)}")
    if int(args.data.block_size) <= 0 or float(args.data.duration) <= 0:
        raise ConfigError("data.block_size and data.duration must be positive")
    vocoder = Vocoder(args.vocoder.type, args.vocoder.ckpt, device=dev)
    if vocoder.vocoder_hop_size * int(args.data.sampling_rate) != int(args.data.block_size) * vocoder.vocoder_sample_rate:
        raise ConfigError(f"data.block_size {args.data.block_size} at {args.data.sampling_rate} Hz does not match the "
                          f"vocoder's hop {vocoder.vocoder_hop_size} at {vocoder.vocoder_sample_rate} Hz")
    model = build_model(args, vocoder.dimension)
    log.info("diffusion model: %d parameters, timesteps %d, k_step_max %d", sum(p.numel() for p in model.parameters()),
             model.timesteps, model.k_step_max)
    optimizer = torch.optim.AdamW(model.parameters())

    expdir = Path(args.env.expdir)
    global_step, resumed = 0, None
    latest = latest_checkpoint_path(expdir, "model_*.pt") if expdir.is_dir() else None
    if latest is not None:
        ckpt = read_checkpoint(latest)
        _load_for_resume(model, ckpt["model"], latest)
        global_step = int(ckpt.get("global_step", checkpoint_step(latest) or 0))
        if ckpt.get("optimizer") is not None:
            try:
                optimizer.load_state_dict(ckpt["optimizer"])
            except (ValueError, KeyError) as e:
                log.warning("%s: optimizer state not restored (%s); continuing with a fresh optimizer", latest, e)
        resumed = Path(latest)
        log.info("resuming from %s (step %d)", latest, global_step)

    lr, gamma, decay = float(args.train.lr), float(args.train.gamma), int(args.train.decay_step)
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * gamma ** max((global_step - 2) // decay, 0)
        group["weight_decay"] = float(args.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=decay, gamma=gamma, last_epoch=global_step - 2)
    model.to(dev)
    for st in optimizer.state.values():
        for k, v in st.items():
            if torch.is_tensor(v) and k != "step":
                st[k] = v.to(dev)
    return TrainState(args, dev, model, optimizer, scheduler, vocoder, global_step, resumed)


# --- logging and checkpoints ---------------------------------------------------------------------
class Saver:
    """``env.expdir``: ``config.yaml``, ``log_info.txt``, ``model_<step>.pt``, TensorBoard in ``logs/``."""

    def __init__(self, args, *, tensorboard: bool = True) -> None:
        from modules.hparams import save_config

        self.expdir = Path(args.env.expdir)
        self.expdir.mkdir(parents=True, exist_ok=True)
        self.sample_rate = int(args.data.sampling_rate)
        save_config(args, self.expdir / "config.yaml")
        self.path_log_info = self.expdir / "log_info.txt"
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.expdir / "logs"))

    def log_info(self, msg: str) -> None:
        log.info("%s", msg)
        with open(self.path_log_info, "a", encoding="utf-8") as f:
            f.write(msg + "\n")

    def log_value(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def log_spec(self, name: str, gt: torch.Tensor, pred: torch.Tensor, step: int, vmin: float = -14,
                 vmax: float = 3.5) -> None:
        """Difference | target | prediction mels side by side as one TensorBoard image.

        Log mels are mapped from [vmin, vmax] to [0, 1]; low frequencies at the bottom.
        """
        if self.writer is None:
            return
        gt, pred = gt[0].float().cpu(), pred[0].float().cpu()  # [T, M]
        spec = torch.cat([gt - pred + (vmin + vmax) / 2, gt, pred], dim=0)  # difference centred mid-scale
        img = ((spec - vmin) / (vmax - vmin)).clamp(0, 1).T.flip(0)  # [M, 3T]
        self.writer.add_image(name, img[None], step)

    def log_audio(self, clips: dict[str, torch.Tensor], step: int) -> None:
        if self.writer is not None:
            for k, v in clips.items():
                self.writer.add_audio(k, v.reshape(-1).float().cpu(), step, sample_rate=self.sample_rate)

    def save_model(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, step: int) -> Path:
        path = self.expdir / f"model_{step}.pt"
        obj = {"global_step": int(step), "model": model.state_dict()}
        if optimizer is not None:
            obj["optimizer"] = optimizer.state_dict()
        atomic_torch_save(obj, path)
        self.log_info(f"model checkpoint saved: {path}")
        return path

    def delete_model(self, step: int) -> None:
        path = self.expdir / f"model_{step}.pt"
        if path.exists():
            path.unlink()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --- one step, validation --------------------------------------------------------------------------
def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def train_step(state: TrainState, batch: dict, scaler, amp_dtype: torch.dtype) -> float:
    """One optimisation step; returns the loss, or NaN (without updating) for a non-finite loss."""
    model, optimizer = state.model, state.optimizer
    optimizer.zero_grad(set_to_none=True)
    data = _to_device(batch, state.device)
    kwargs = dict(aug_shift=data["aug_shift"], infer=False, k_step=model.k_step_max)
    if amp_dtype == torch.float32:
        loss = model(data["units"].float(), data["f0"], data["volume"], data["spk_id"],
                     gt_spec=data["mel"].float(), **kwargs)
    else:
        with torch.autocast(device_type=state.device.type, dtype=amp_dtype):
            loss = model(data["units"], data["f0"], data["volume"], data["spk_id"], gt_spec=data["mel"], **kwargs)
    if not torch.isfinite(loss):
        return float("nan")
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    state.scheduler.step()
    return float(loss.item())


def validate(state: TrainState, loader, saver: Saver | None, step: int) -> float:
    """Full-file synthesis (logged to TensorBoard with the vocoder) and the mean diffusion loss."""
    args, model = state.args, state.model
    model.eval()
    total, n = 0.0, 0
    rtfs = []
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(VALIDATION_SEED)
    try:
        with torch.no_grad():
            for data in loader:
                name = Path(data["name_ext"][0])
                data = _to_device(data, state.device)
                units, f0, vol, spk = data["units"].float(), data["f0"], data["volume"], data["spk_id"]
                mel_gt = data["mel"].float()
                t0 = time.perf_counter()
                mel = model(units, f0, vol, spk, gt_spec=None if model.k_step_max == model.timesteps else mel_gt,
                            infer=True, infer_speedup=int(args.infer.speedup), method=args.infer.method,
                            k_step=model.k_step_max, use_tqdm=False)
                signal = state.vocoder.infer(mel, f0)
                rtfs.append((time.perf_counter() - t0) / max(signal.shape[-1] / state.vocoder.vocoder_sample_rate, 1e-9))
                for _ in range(VALIDATION_REPEATS):
                    total += float(model.decoder.training_loss(mel_gt, model.condition(units, f0, vol, spk).transpose(1, 2)))
                    n += 1
                if saver is not None:
                    key = f"{name.parent.name}_{name.name}"
                    saver.log_spec(key, mel_gt, mel, step)
                    gt_audio = _gt_audio(name, state.vocoder.vocoder_sample_rate)
                    clips = {f"{key}_pred.wav": signal}
                    if gt_audio is not None:
                        clips[f"{key}_gt.wav"] = gt_audio
                    saver.log_audio(clips, step)
    finally:
        torch.random.set_rng_state(rng_state)
        model.train()
    if rtfs:
        log.info("validation real-time factor %.3f", float(np.mean(rtfs)))
    return total / max(n, 1)


def _gt_audio(path: Path, sample_rate: int) -> torch.Tensor | None:
    from modules.audio import load_audio

    try:
        y, _ = load_audio(path, sr=sample_rate)
    except SvcError:
        return None
    return torch.from_numpy(y)


# --- the loop ----------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    global_step: int
    losses: list[float] = field(default_factory=list)   # finite training losses, in order
    nan_steps: int = 0
    checkpoints: list[Path] = field(default_factory=list)
    validation_losses: list[float] = field(default_factory=list)
    resumed_from: Path | None = None


def train(args, *, device: str | None = None, tensorboard: bool = True, max_steps: int | None = None) -> TrainResult:
    """Train until ``train.epochs`` (or ``max_steps`` optimiser steps in this run)."""
    state = prepare(args, device=device)
    loader_train, loader_valid = get_data_loaders(args, n_mels=state.vocoder.dimension)
    saver = Saver(args, tensorboard=tensorboard)
    amp_dtype = AMP_DTYPES[str(args.train.amp_dtype)]
    scaler = torch.amp.GradScaler(state.device.type) if amp_dtype == torch.float16 else None
    result = TrainResult(global_step=state.global_step, resumed_from=state.resumed_from)
    num_batches = len(loader_train)
    start_epoch = state.global_step // num_batches
    interval_log, interval_val = int(args.train.interval_log), int(args.train.interval_val)
    force_save = int(args.train.interval_force_save)
    save_opt = bool(args.train.save_opt)
    saver.log_info(f"training on {state.device}: {len(loader_train.dataset)} files, {num_batches} batches per epoch, "
                   f"epochs {start_epoch}…{int(args.train.epochs)}, step {state.global_step}")
    state.model.train()
    consecutive_nan, last_saved, steps_this_run = 0, None, 0
    t_start = time.time()
    try:
        for epoch in range(start_epoch, int(args.train.epochs)):
            for batch_idx, batch in enumerate(loader_train):
                state.global_step += 1
                step = state.global_step
                loss = train_step(state, batch, scaler, amp_dtype)
                steps_this_run += 1
                if math.isnan(loss):
                    result.nan_steps += 1
                    consecutive_nan += 1
                    log.warning("step %d: non-finite loss; step skipped (%d so far)", step, result.nan_steps)
                    if consecutive_nan >= MAX_CONSECUTIVE_NAN:
                        raise TrainingError(
                            f"training diverged: {consecutive_nan} consecutive steps with NaN/inf loss at step {step}. "
                            "Check the data (NaN in .mel/.vol/.f0 files), lower train.lr, or use amp_dtype fp32")
                else:
                    consecutive_nan = 0
                    result.losses.append(loss)
                if step % interval_log == 0:
                    lr = state.optimizer.param_groups[0]["lr"]
                    saver.log_info(f"epoch: {epoch} | {batch_idx:3d}/{num_batches:3d} | lr: {lr:.6} | loss: {loss:.3f} "
                                   f"| time: {time.time() - t_start:.1f}s | step: {step}")
                    if not math.isnan(loss):
                        saver.log_value({"train/loss": loss, "train/lr": lr}, step)
                if step % interval_val == 0:
                    result.checkpoints.append(saver.save_model(state.model, state.optimizer if save_opt else None, step))
                    last_saved = step
                    previous = step - interval_val
                    if previous % force_save != 0:
                        saver.delete_model(previous)
                    val_loss = validate(state, loader_valid, saver, step)
                    result.validation_losses.append(val_loss)
                    saver.log_info(f"--- <validation> --- loss: {val_loss:.3f}")
                    saver.log_value({"validation/loss": val_loss}, step)
                if max_steps is not None and steps_this_run >= max_steps:
                    break
            else:
                continue
            break
        if last_saved != state.global_step and steps_this_run > 0:
            # 4.1 lost everything since the last interval when training ended; keep it.
            result.checkpoints.append(saver.save_model(state.model, state.optimizer if save_opt else None,
                                                       state.global_step))
    finally:
        saver.close()
    result.global_step = state.global_step
    if result.nan_steps:
        raise TrainingError(f"{result.nan_steps} of {steps_this_run} training steps had a NaN/inf loss and were skipped "
                            f"(last checkpoint: {result.checkpoints[-1] if result.checkpoints else 'none'}). "
                            "Check the data and the learning rate")
    return result
