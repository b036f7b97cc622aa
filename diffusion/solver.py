"""Training of the shallow-diffusion model (``train_diff.py``, spec §8.4) on :mod:`training.runner`.

The runner owns the step loop, save cadence (``interval_val`` steps and ``save_every_minutes``),
NaN/Inf guard with rollback, signal-safe stop and progress; here are the diffusion parts:
:func:`prepare` (device, vocoder, model, optimiser, resume, scheduler), :func:`train_step`,
:func:`validate`, :class:`Saver` (checkpoints, ``log_info.txt``, TensorBoard) and
:class:`DiffusionJob` (the :class:`~training.runner.TrainJob`). Checkpoints keep 4.1's format,
``model_<step>.pt`` = ``{"global_step", "model"[, "optimizer"]}``, written atomically, with 4.1's
retention rule, plus our extra keys ``config`` and ``train_state``.

Unlike 4.1: a NaN/inf loss skips the step (no update) and is counted; a streak of them rolls back
to the newest checkpoint with a lower learning rate, and after the allowed rollbacks training
stops with an error (exit status 2). CPU training works; ``device: cuda`` without CUDA is an error.
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
from modules.checkpoint import (CONFIG_KEY, atomic_torch_save, checkpoint_step, latest_checkpoint_path,
                                load_state_dict_checked, remove_interrupted_saves)
from modules.device import resolve_device
from modules.errors import ConfigError, SvcError
from training import runner
from training.runner import GuardPolicy, Precision, Progress, Runtime, StepReport, TrainingError  # noqa: F401

log = logging.getLogger(__name__)

GUARD = GuardPolicy(max_consecutive_bad=20)  # 20 NaN steps in a row: roll back (lr × 0.5); 3 rollbacks: stop
AMP_DTYPES = ("fp32", "fp16", "bf16", "auto")
VALIDATION_REPEATS = 4  # diffusion losses per validation file (4.1 used train.batch_size, i.e. 48)
VALIDATION_SEED = 1234  # fixed draws, so validation losses of different steps are comparable


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
    train_state: dict | None = None   # the runner's entry of the resumed checkpoint


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
    from modules.config_types import DiffusionConfig
    from vdecoder.vocoder import Vocoder

    cfg = DiffusionConfig.from_hparams(args)
    dev = resolve_device(device if device is not None else cfg.device)
    if dev.type == "cuda" and dev.index is None:  # 4.1: torch.cuda.set_device(env.gpu_id)
        dev = resolve_device(f"cuda:{cfg.gpu_id}")
    if str(cfg.train.amp_dtype) not in AMP_DTYPES:
        raise ConfigError(f"train.amp_dtype '{cfg.train.amp_dtype}' unknown; use one of {', '.join(AMP_DTYPES)}")
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
    state = TrainState(args, dev, model, optimizer, None, vocoder, 0)
    expdir = Path(cfg.expdir)
    if expdir.is_dir():
        remove_interrupted_saves(expdir, ("model_*",))
    latest = latest_checkpoint_path(expdir, "model_*.pt") if expdir.is_dir() else None
    if latest is not None:
        load_resume_point(state, Path(latest))
        log.info("resuming from %s (step %d)", latest, state.global_step)
    set_schedule(state, lr_scale=float((state.train_state or {}).get("lr_scale", 1.0)))
    return state


def load_resume_point(state: TrainState, path: Path) -> None:
    """Weights, optimizer (when the file has one), step and our ``train_state`` of ``path``."""
    ckpt = read_checkpoint(path)
    _load_for_resume(state.model, ckpt["model"], path)
    state.global_step = int(ckpt.get("global_step", checkpoint_step(path) or 0))
    if ckpt.get("optimizer") is not None:
        try:
            state.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            log.warning("%s: optimizer state not restored (%s); continuing with a fresh optimizer", path, e)
    state.model.to(state.device)
    for st in state.optimizer.state.values():
        for k, v in st.items():
            if torch.is_tensor(v) and k != "step":
                st[k] = v.to(state.device)
    state.resumed_from = Path(path)
    state.train_state = ckpt.get("train_state")


def set_schedule(state: TrainState, lr_scale: float = 1.0) -> None:
    """4.1's StepLR at ``global_step`` (closed form: ``lr · gamma^⌊(step−2)/decay_step⌋``) × ``lr_scale``."""
    train = state.args.train
    lr, gamma, decay = float(train.lr) * lr_scale, float(train.gamma), int(train.decay_step)
    step = state.global_step
    for group in state.optimizer.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * gamma ** max((step - 2) // decay, 0)
        group["weight_decay"] = float(train.weight_decay)
    state.scheduler = torch.optim.lr_scheduler.StepLR(state.optimizer, step_size=decay, gamma=gamma,
                                                      last_epoch=step - 2)


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

    def save_model(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, step: int,
                   **extra: Any) -> Path:
        """``model_<step>.pt``: 4.1's keys, then ``extra`` (our ``config``, ``train_state``)."""
        path = self.expdir / f"model_{step}.pt"
        obj = {"global_step": int(step), "model": model.state_dict()}
        if optimizer is not None:
            obj["optimizer"] = optimizer.state_dict()
        obj.update(extra)
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


def train_step(state: TrainState, batch: dict, scaler, precision: Precision) -> float:
    """One optimisation step; returns the loss, or NaN (without updating) for a non-finite loss."""
    model, optimizer = state.model, state.optimizer
    optimizer.zero_grad(set_to_none=True)
    data = _to_device(batch, state.device)
    kwargs = dict(aug_shift=data["aug_shift"], infer=False, k_step=model.k_step_max)
    if not precision.enabled:
        loss = model(data["units"].float(), data["f0"], data["volume"], data["spk_id"],
                     gt_spec=data["mel"].float(), **kwargs)
    else:
        with precision.autocast():
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
    exit_code: int = 0                                   # 130 after SIGINT/SIGTERM (a checkpoint was saved)


class DiffusionJob:
    """The :class:`~training.runner.TrainJob` of diffusion training (``progress.step`` = 4.1's
    ``global_step`` of the step being run; the first step of a fresh run is 1)."""

    def __init__(self, state: TrainState, saver: Saver, loaders: tuple[Any, Any], precision: Precision,
                 result: TrainResult) -> None:
        self.state, self.saver, self.precision, self.result = state, saver, precision, result
        self.loader_train, self.loader_valid = loaders
        self.runtime = Runtime(state.device)
        self.scaler = torch.amp.GradScaler(state.device.type) if precision.use_scaler else None
        n = max(len(self.loader_train), 1)
        self.progress = Progress(step=state.global_step + 1, epoch=state.global_step // n)
        runner.restore_progress_state(self.progress, state.train_state)
        if self.scaler is not None and (state.train_state or {}).get("scaler"):
            self.scaler.load_state_dict(state.train_state["scaler"])
        self.progress.last_save_step = state.global_step
        self.last_loss = float("nan")
        self.t_start = time.time()
        train = state.args.train
        self.interval_log, self.interval_val = int(train.interval_log), int(train.interval_val)
        self.force_save, self.save_opt = int(train.interval_force_save), bool(train.save_opt)
        self.timed_save: int | None = None    # step of this run's last off-cadence save

    def begin_epoch(self) -> Any:
        return self.loader_train

    def train_step(self, batch: Any) -> StepReport:
        self.state.global_step = self.progress.step
        loss = train_step(self.state, batch, self.scaler, self.precision)
        if math.isnan(loss):
            self.result.nan_steps += 1
            return StepReport({"loss": loss}, skipped=True, reason="non-finite loss")
        self.result.losses.append(loss)
        self.last_loss = loss
        return StepReport({"loss": loss})

    def after_step(self, report: StepReport, batch_index: int, n_batches: int) -> None:
        step, loss = self.progress.step, report.losses["loss"]
        if step % self.interval_log == 0:
            lr = self.state.optimizer.param_groups[0]["lr"]
            self.saver.log_info(f"epoch: {self.progress.epoch} | {batch_index:3d}/{n_batches:3d} | lr: {lr:.6} | "
                                f"loss: {loss:.3f} | time: {time.time() - self.t_start:.1f}s | step: {step}")
            if not math.isnan(loss):
                self.saver.log_value({"train/loss": loss, "train/lr": lr}, step)
        if step % self.interval_val == 0:
            val_loss = validate(self.state, self.loader_valid, self.saver, step)
            self.result.validation_losses.append(val_loss)
            self.saver.log_info(f"--- <validation> --- loss: {val_loss:.3f}")
            self.saver.log_value({"validation/loss": val_loss}, step)

    def save(self) -> None:
        """``model_<step>.pt``, then 4.1's retention: at a validation step the previous validation
        checkpoint goes unless it is a multiple of ``interval_force_save``."""
        step = self.progress.step
        extra = {CONFIG_KEY: self.state.args.to_dict(),
                 "train_state": runner.progress_state_dict(
                     self.progress, scaler=self.scaler.state_dict() if self.scaler is not None else None)}
        self.result.checkpoints.append(self.saver.save_model(
            self.state.model, self.state.optimizer if self.save_opt else None, step, **extra))
        if step % self.interval_val == 0:
            previous = step - self.interval_val
            if previous % self.force_save != 0:
                self.saver.delete_model(previous)
        # a save off the validation cadence (timer) is only kept until the next save of this run
        if self.timed_save is not None and self.timed_save != step:
            self.saver.delete_model(self.timed_save)
        self.timed_save = step if step % self.interval_val and step % self.force_save else None

    def rollback(self) -> bool:
        latest = latest_checkpoint_path(self.saver.expdir, "model_*.pt")
        if latest is None:
            set_schedule(self.state, lr_scale=self.progress.lr_scale)
            return False
        load_resume_point(self.state, Path(latest))
        set_schedule(self.state, lr_scale=self.progress.lr_scale)
        n = max(len(self.loader_train), 1)
        self.progress.step = self.state.global_step + 1
        self.progress.epoch = self.state.global_step // n
        return True

    def memory_advice(self, where: str) -> str:
        return (f"out of {where} memory at step {self.progress.step} (batch_size {self.state.args.train.batch_size}). "
                "Try a smaller train.batch_size, data.duration, train.cache_all_data false or cache_device cpu, "
                "and amp_dtype bf16 / auto on a GPU.")


def train(args, *, device: str | None = None, tensorboard: bool = True, max_steps: int | None = None) -> TrainResult:
    """Train until ``train.epochs`` (or ``max_steps`` optimiser steps in this run)."""
    state = prepare(args, device=device)
    precision = runner.resolve_precision(str(args.train.amp_dtype), state.device, what="train.amp_dtype")
    loader_train, loader_valid = get_data_loaders(args, n_mels=state.vocoder.dimension)
    saver = Saver(args, tensorboard=tensorboard)
    result = TrainResult(global_step=state.global_step, resumed_from=state.resumed_from)
    job = DiffusionJob(state, saver, (loader_train, loader_valid), precision, result)
    epochs, n_batches = int(args.train.epochs), len(loader_train)
    first = job.progress.step
    plan = runner.RunPlan(
        last_epoch=epochs - 1, stop_after_step=first + max_steps - 1 if max_steps is not None else None,
        save_every_steps=int(args.train.interval_val), save_every_minutes=args.train.get("save_every_minutes"),
        guard=GUARD, bar_losses=("loss",),
        total_steps=max_steps if max_steps is not None else max(epochs * n_batches - state.global_step, 0) or None)
    saver.log_info(f"{len(loader_train.dataset)} files, {n_batches} batches per epoch, epochs "
                   f"{job.progress.epoch}…{epochs}")
    runner.log_start(job, precision, int(args.train.batch_size),
                     resumed_step=state.global_step if state.resumed_from else None, what="diffusion training")
    state.model.train()
    try:
        code = runner.run(job, plan)
    finally:
        saver.close()
    result.global_step = job.progress.step - 1
    result.exit_code = code
    return result
