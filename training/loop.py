"""The SoVITS training loop (``train.py``; spec §6.10–6.13).

One step, as 4.1 does it::

    G forward (random 20-frame slice)  ─►  D(y, ŷ.detach()) ─► LSGAN D loss ─► backward ─► AdamW(D)
                                        └► D(y, ŷ) with the *updated* D ─► adv + fm + 45·mel + KL + lf0
                                                                       ─► backward ─► AdamW(G)

Everything a run needs lives in a :class:`TrainState`; the phases are named functions:
:func:`load_config`, :func:`prepare_model_dir`, :func:`build_models`, :func:`build_optimizer`,
:func:`restore` (resume / fine-tune; :func:`create_state` does all of these), :func:`train_step`,
:func:`account_step` (NaN/inf), :func:`log_step`, :func:`evaluate`, :func:`save_checkpoints`,
:func:`train_epoch`, and :func:`run_worker` / :func:`train` around them.

Devices and processes: CPU, one GPU, one process per GPU (4.1's ``mp.spawn`` when several GPUs are
visible) or any ``torchrun`` launch (several GPUs / machines; NCCL on GPU, gloo on CPU). Only
rank 0 logs, evaluates and saves.

Differences from 4.1 are listed in docs/compat/train.md; the main ones: CPU training is allowed;
ranks split the data; resume never silently restarts from scratch and picks the newest step for
which both G and D exist; the learning rate follows the config and the epoch (closed form);
NaN/inf steps are skipped and counted, and a run that keeps producing them stops with an error;
SIGINT/SIGTERM save a checkpoint before stopping; evaluation does not disturb the training RNG.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.nn.utils import parametrize

from models import MultiPeriodDiscriminator, SynthesizerTrn
from models.train_step import discriminator_step_loss, generator_forward, generator_step_losses
from modules.checkpoint import checkpoint_step, clean_checkpoints, load_checkpoint, save_checkpoint
from modules.errors import ConfigError, SvcError

log = logging.getLogger(__name__)

ADAMW_WEIGHT_DECAY = 0.01        # PyTorch's AdamW default, which 4.1 used without configuring it
MAX_CONSECUTIVE_BAD_STEPS = 10   # non-finite steps in a row before a run is declared diverged


class TrainingError(SvcError):
    """Training cannot go on (diverged, out of memory); the message says what to try."""


# --- options and state --------------------------------------------------------------------------
@dataclass
class TrainOptions:
    """What ``train.py`` was asked to do."""

    config_path: Path
    model_name: str
    max_steps: int | None = None      # stop (and save) after the step with this number

    @property
    def model_dir(self) -> Path:
        return Path("./logs") / self.model_name


@dataclass
class Runtime:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass
class Precision:
    """Autocast settings: ``dtype`` None = float32; the grad scaler only for float16."""

    device_type: str
    dtype: torch.dtype | None = None
    use_scaler: bool = False

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> Any:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


@dataclass
class StepResult:
    """Scalars of one step (losses already weighted as 4.1 logs them) and whether it was skipped."""

    loss_disc: float
    loss_gen: float
    loss_fm: float
    loss_mel: float
    loss_kl: float
    loss_lf0: float
    loss_gen_all: float
    grad_norm_d: float
    grad_norm_g: float
    skipped: bool = False
    reason: str = ""
    outputs: Any = None              # the GeneratorOutputs (kept for image logging)
    batch: dict | None = None


@dataclass
class TrainState:
    """Everything a run carries from step to step."""

    hps: Any
    options: TrainOptions
    runtime: Runtime
    precision: Precision
    net_g: torch.nn.Module
    net_d: torch.nn.Module
    optim_g: torch.optim.Optimizer
    optim_d: torch.optim.Optimizer
    scaler: Any
    epoch: int = 1
    global_step: int = 0
    skipped_steps: int = 0           # updates skipped for NaN/inf losses or gradients
    consecutive_bad: int = 0
    last_save_step: int = -1
    last_save_time: float = field(default_factory=time.monotonic)
    stop_requested: str = ""         # name of the signal that asked to stop, if any
    stop_now: bool = False           # all ranks agreed (in the last step) to stop
    writer: Any = None
    writer_eval: Any = None
    step_times: list[float] = field(default_factory=list)

    @property
    def model_dir(self) -> Path:
        return self.options.model_dir


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


# --- configuration ------------------------------------------------------------------------------
def load_config(options: TrainOptions) -> Any:
    """Read and check the config: keys (strict), speaker ids, segment size."""
    from modules.hparams import get_hparams_from_file

    hps = get_hparams_from_file(options.config_path)
    path = options.config_path
    hop = int(hps.data.hop_length)
    if int(hps.train.segment_size) % hop or int(hps.train.segment_size) < hop:
        raise ConfigError(f"{path}: train.segment_size {hps.train.segment_size} must be a positive multiple of "
                          f"data.hop_length {hop}")
    n_spk = int(hps.model.n_speakers)
    bad = {k: v for k, v in dict(hps.spk).items() if not 0 <= int(v) < n_spk}
    if bad:
        raise ConfigError(f"{path}: speaker ids {bad} are outside 0..{n_spk - 1} (model.n_speakers = {n_spk}); "
                          "run preprocess_flist_config.py again or raise model.n_speakers")
    for key in ("batch_size", "epochs", "log_interval", "eval_interval"):
        if int(hps.train[key]) < 1:
            raise ConfigError(f"{path}: train.{key} must be at least 1, found {hps.train[key]}")
    return hps


def prepare_model_dir(options: TrainOptions) -> None:
    """Create ``logs/<model>`` and copy the config there verbatim (as 4.1 does on every start)."""
    from modules.io_utils import atomic_write_bytes

    options.model_dir.mkdir(parents=True, exist_ok=True)
    target = options.model_dir / "config.json"
    data = Path(options.config_path).read_bytes()
    if not (target.exists() and target.read_bytes() == data):
        atomic_write_bytes(target, data)


def resolve_precision(train_hps: Any, device: torch.device) -> Precision:
    """``fp16_run`` + ``half_type`` → autocast dtype; mixed precision is a GPU option."""
    if not train_hps.get("fp16_run", False):
        return Precision(device.type)
    want = torch.bfloat16 if train_hps.get("half_type", "fp16") == "bf16" else torch.float16
    if device.type != "cuda":
        log.warning("train.fp16_run is set, but mixed precision is a GPU option: training in float32 on %s", device)
        return Precision(device.type)
    if want == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.half_type is 'bf16' but this GPU has no bfloat16 support; set half_type to "
                          "'fp16' or fp16_run to false")
    # 4.1 also enabled the scaler for bf16; bf16 has float32's range and needs none.
    return Precision(device.type, want, use_scaler=want == torch.float16)


def lr_at_epoch(epoch: int, train_hps: Any) -> float:
    """Learning rate of ``epoch`` (1-based) as 4.1's schedule gives it in an uninterrupted run.

    Warm-up: ``learning_rate / warmup_epochs · epoch`` for epoch ≤ warmup_epochs. After it,
    ExponentialLR (stepped once per epoch, chaining from the last warm-up value):
    ``learning_rate · lr_decay ** (epoch − max(warmup_epochs, 1))``.
    """
    base = float(train_hps.learning_rate)
    warmup = int(train_hps.get("warmup_epochs", 0) or 0)
    if epoch <= warmup:
        return base / warmup * epoch
    return base * float(train_hps.lr_decay) ** (epoch - max(warmup, 1))


# --- models and optimisers ----------------------------------------------------------------------
def build_models(hps: Any, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``SynthesizerTrn(filter_length/2+1, segment_size/hop, **model)`` and the discriminator."""
    net_g = SynthesizerTrn(int(hps.data.filter_length) // 2 + 1, int(hps.train.segment_size) // int(hps.data.hop_length),
                           **hps.model)
    net_d = MultiPeriodDiscriminator(bool(hps.model.get("use_spectral_norm", False)))
    return net_g.to(device), net_d.to(device)


def _optimizer_impl(device: torch.device) -> dict[str, bool]:
    """The fastest AdamW kernel for ``device`` (fused on CPU and CUDA in current PyTorch)."""
    probe = torch.nn.Parameter(torch.zeros(1, device=device))
    try:
        torch.optim.AdamW([probe], fused=True)
        return {"fused": True}
    except (RuntimeError, TypeError, ValueError):
        return {"foreach": True}


def build_optimizer(model: torch.nn.Module, train_hps: Any) -> torch.optim.Optimizer:
    """AdamW(lr, betas, eps from the config, weight decay 0.01) over ``model.parameters()`` in 4.1's order."""
    device = next(model.parameters()).device
    return torch.optim.AdamW(model.parameters(), float(train_hps.learning_rate), betas=tuple(train_hps.betas),
                             eps=float(train_hps.eps), weight_decay=ADAMW_WEIGHT_DECAY, **_optimizer_impl(device))


def apply_optimizer_settings(optim: torch.optim.Optimizer, train_hps: Any, lr: float) -> None:
    """Set lr / betas / eps from the config (and our kernel choice) on every param group.

    Loading a 4.1 optimizer state replaces the groups with the file's; the config stays the
    source of truth (4.1 kept the file's values, so a changed learning_rate had no effect).
    """
    device = optim.param_groups[0]["params"][0].device
    impl = _optimizer_impl(device)
    for g in optim.param_groups:
        g["lr"] = lr
        g["betas"] = tuple(train_hps.betas)
        g["eps"] = float(train_hps.eps)
        g["fused"] = impl.get("fused", None)
        g["foreach"] = impl.get("foreach", None)
        if g["fused"]:  # the fused kernel wants float32 step counters on the parameter's device
            for p in g["params"]:
                st = optim.state.get(p, {})
                if isinstance(st.get("step"), torch.Tensor):
                    st["step"] = st["step"].to(device=p.device, dtype=torch.float32)


@contextlib.contextmanager
def _portable(optim: torch.optim.Optimizer) -> Iterator[None]:
    """Save optimizer states without our kernel choice (``fused``/``foreach`` as PyTorch's
    defaults), so 4.1 on another PyTorch version and device picks its own when it resumes."""
    saved = [(g.get("fused"), g.get("foreach")) for g in optim.param_groups]
    for g in optim.param_groups:
        g["fused"] = None
        g["foreach"] = None
    try:
        yield
    finally:
        for g, (fused, foreach) in zip(optim.param_groups, saved):
            g["fused"] = fused
            g["foreach"] = foreach


def _drop_misfit_optimizer_state(optim: torch.optim.Optimizer, model: torch.nn.Module, source: str) -> None:
    """Forget moments whose shape differs from their parameter (``emb_g`` when fine-tuning a base
    model with another speaker count); ``load_state_dict`` does not check shapes."""
    names = {id(p): n for n, p in unwrap(model).named_parameters()}
    dropped = []
    for group in optim.param_groups:
        for p in group["params"]:
            st = optim.state.get(p)
            if st and any(isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape for v in st.values()):
                del optim.state[p]
                dropped.append(names.get(id(p), "?"))
    if dropped:
        log.warning("%s: optimizer moments of %s do not fit the model and start fresh", source, ", ".join(dropped))


# --- resume ---------------------------------------------------------------------------------------
@dataclass
class ResumePoint:
    step: int
    g_path: Path
    d_path: Path | None


def _checkpoints(model_dir: Path, prefix: str) -> dict[int, Path]:
    out = {}
    for p in model_dir.glob(f"{prefix}_*.pth"):
        if re.fullmatch(rf"{prefix}_\d+\.pth", p.name):
            out[checkpoint_step(p)] = p
    return out


def find_resume_point(model_dir: Path) -> ResumePoint | None:
    """The newest step with both ``G_<n>.pth`` and ``D_<n>.pth``; a lone G (e.g. a G-only base
    model) is used with a fresh discriminator. Interrupted saves never leave partial files
    (atomic writes), but a kill between the G and the D save leaves an unmatched G, skipped here."""
    gs, ds = _checkpoints(model_dir, "G"), _checkpoints(model_dir, "D")
    common = set(gs) & set(ds)
    if common:
        step = max(common)
        newer = sorted(s for s in set(gs) | set(ds) if s > step)
        if newer:
            log.warning("%s: checkpoints of step(s) %s have no G/D partner (interrupted save?); resuming from "
                        "step %d instead", model_dir, newer, step)
        return ResumePoint(step, gs[step], ds[step])
    if gs:
        step = max(gs)
        log.warning("%s: %s has no matching D_%d.pth; the discriminator starts from scratch", model_dir,
                    gs[step].name, step)
        return ResumePoint(step, gs[step], None)
    if ds:
        log.warning("%s: found D_*.pth but no G_*.pth; ignoring them and training from scratch", model_dir)
    return None


def restore(state: TrainState, point: ResumePoint | None) -> None:
    """Load G/D weights and optimiser moments of ``point`` → epoch = max(iteration, 1), next step =
    saved step + 1 (4.1's rule). Errors are raised, never turned into a silent fresh start."""
    if point is None:
        log.info("No checkpoint in %s: training from scratch (put G_0.pth and D_0.pth there to fine-tune "
                 "a base model)", state.model_dir)
        return
    if point.step == 0:
        log.info("Fine-tuning from the base model %s%s", point.g_path.name,
                 f" and {point.d_path.name}" if point.d_path else "")
    else:
        log.info("resuming from step %d (%s%s)", point.step, point.g_path.name,
                 f", {point.d_path.name}" if point.d_path else "")
    _, _, _, epoch = load_checkpoint(point.g_path, state.net_g, state.optim_g)
    _drop_misfit_optimizer_state(state.optim_g, state.net_g, str(point.g_path))
    if point.d_path is not None:
        _, _, _, epoch = load_checkpoint(point.d_path, state.net_d, state.optim_d)
        _drop_misfit_optimizer_state(state.optim_d, state.net_d, str(point.d_path))
    # a half-precision file casts the model to float16 on load; training keeps float32 weights
    for net, optim in ((state.net_g, state.optim_g), (state.net_d, state.optim_d)):
        net.float()
        for st in optim.state.values():
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() > 0:
                    st[k] = v.float()
    state.epoch = max(int(epoch), 1)
    state.global_step = point.step + 1
    log.info("Next step %d, epoch %d", state.global_step, state.epoch)


# --- one step -----------------------------------------------------------------------------------
def _grad_norm(module: torch.nn.Module) -> float:
    """Total L2 norm of the gradients (what 4.1's ``clip_grad_value_(params, None)`` returns)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.nn.utils.get_total_norm(grads, 2.0, foreach=True))


@contextlib.contextmanager
def _frozen(module: torch.nn.Module) -> Iterator[None]:
    """No weight gradients for ``module`` inside (inputs still get theirs)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def _any_rank(state: TrainState, *flags: bool) -> list[bool]:
    """OR of each flag over all processes (one small all-reduce), so every rank takes the same branch."""
    if not state.runtime.distributed:
        return list(flags)
    import torch.distributed as dist

    t = torch.tensor([float(f) for f in flags], device=state.runtime.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _loss_value(x: Any) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def train_step(state: TrainState, batch: dict[str, torch.Tensor | None]) -> StepResult:
    """One GAN step on a collated batch (spec §6.10–6.11).

    D first: loss on (y, ŷ.detach()), backward, AdamW. Then G: losses through the updated D
    (whose weights get no gradient here: 4.1 computed and then discarded them), backward, AdamW.
    An update whose loss or gradient is NaN/inf is skipped on every rank (float16 overflow is
    left to the grad scaler, which skips and lowers its scale).
    """
    dev = state.runtime.device
    batch = {k: (v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    scaler = state.scaler
    # cached(): every weight-normed weight is computed once per pass instead of once per call
    # (the shared flow WaveNet runs 4 times; with spectral norm the discriminators run twice).
    with state.precision.autocast(), parametrize.cached():
        out = generator_forward(state.net_g, batch, state.hps)
        loss_disc, _, _ = discriminator_step_loss(state.net_d, out)
    state.optim_d.zero_grad(set_to_none=True)
    scaler.scale(loss_disc).backward()
    scaler.unscale_(state.optim_d)
    grad_norm_d = _grad_norm(state.net_d)
    loss_disc_v = _loss_value(loss_disc)
    (bad_d,) = _any_rank(state, not _finite(loss_disc_v) or (not scaler.is_enabled() and not _finite(grad_norm_d)))
    if not bad_d:
        scaler.step(state.optim_d)

    d_core = unwrap(state.net_d)
    with _frozen(d_core), state.precision.autocast(), parametrize.cached():
        losses = generator_step_losses(d_core, out, state.hps)
    state.optim_g.zero_grad(set_to_none=True)
    scaler.scale(losses["loss_gen_all"]).backward()
    scaler.unscale_(state.optim_g)
    grad_norm_g = _grad_norm(state.net_g)
    loss_all_v = _loss_value(losses["loss_gen_all"])
    bad_g, stop = _any_rank(state, not _finite(loss_all_v) or (not scaler.is_enabled() and not _finite(grad_norm_g)),
                            bool(state.stop_requested))
    if not bad_g:
        scaler.step(state.optim_g)
    scale = scaler.get_scale() if scaler.is_enabled() else 0.0
    scaler.update()
    state.stop_now = stop  # decided together, so every rank leaves after the same step
    if stop and not state.stop_requested:
        state.stop_requested = "a signal on another rank"

    parts = []
    if bad_d:
        parts.append(f"discriminator (loss {loss_disc_v:.4g}, grad norm {grad_norm_d:.4g})")
    if bad_g:
        parts.append(f"generator (loss {loss_all_v:.4g}, grad norm {grad_norm_g:.4g})")
    reason = "non-finite " + " and ".join(parts) if parts else ""
    # float16: the scaler skips overflowing steps and halves its scale. An overflow at a scale
    # of 1 or less is no scaling artefact: the gradients themselves are not finite.
    if scaler.is_enabled() and scale <= 1.0 and scaler.get_scale() < scale:
        reason = reason or f"float16 gradients overflow even at loss scale {scale:g}"
    return StepResult(
        loss_disc=loss_disc_v, loss_gen=_loss_value(losses["loss_gen"]), loss_fm=_loss_value(losses["loss_fm"]),
        loss_mel=_loss_value(losses["loss_mel"]), loss_kl=_loss_value(losses["loss_kl"]),
        loss_lf0=_loss_value(losses["loss_lf0"]), loss_gen_all=loss_all_v, grad_norm_d=grad_norm_d,
        grad_norm_g=grad_norm_g, skipped=bool(reason), reason=reason, outputs=out, batch=batch)


def account_step(state: TrainState, result: StepResult) -> None:
    """Count skipped updates; stop with :class:`TrainingError` when they keep coming."""
    if not result.skipped:
        state.consecutive_bad = 0
        return
    state.skipped_steps += 1
    state.consecutive_bad += 1
    if state.runtime.is_main:
        log.warning("step %d: %s; update skipped (%d skipped so far)", state.global_step, result.reason,
                    state.skipped_steps)
    if state.consecutive_bad >= MAX_CONSECUTIVE_BAD_STEPS:
        first = state.global_step - state.consecutive_bad + 1
        raise TrainingError(
            f"training diverged: steps {first}–{state.global_step} all had NaN/inf losses or gradients "
            f"(last: {result.reason}). Nothing was saved after step {state.last_save_step}. Try: resume from an "
            f"earlier checkpoint in {state.model_dir} (delete the newer G_/D_ files), lower train.learning_rate, "
            "turn off train.fp16_run or use half_type 'bf16', and check the dataset for silent, clipped or "
            "corrupt clips (re-run preprocess_hubert_f0.py).")


# --- logging, evaluation, checkpoints -----------------------------------------------------------
def log_step(state: TrainState, result: StepResult, batch_idx: int, n_batches: int) -> None:
    """Rank 0 at ``log_interval``: the 4.1 log lines and TensorBoard scalars / images."""
    from modules.mel_processing import spec_to_mel_torch
    from training.summaries import plot_data_to_numpy, plot_spectrogram_to_numpy, summarize

    lr = state.optim_g.param_groups[0]["lr"]
    secs = sorted(state.step_times)[len(state.step_times) // 2] if state.step_times else float("nan")
    state.step_times.clear()
    log.info("Train Epoch: %d [%.0f%%]", state.epoch, 100.0 * batch_idx / max(n_batches, 1))
    log.info("step %d: loss_disc %.3f, loss_gen %.3f, loss_fm %.3f, loss_mel %.3f, loss_kl %.3f, loss_lf0 %.4f, "
             "lr %.6g, grad_norm d/g %.3g/%.3g, %.2f s/step%s", state.global_step, result.loss_disc, result.loss_gen,
             result.loss_fm, result.loss_mel, result.loss_kl, result.loss_lf0, lr, result.grad_norm_d,
             result.grad_norm_g, secs, f", {state.skipped_steps} skipped" if state.skipped_steps else "")
    if state.writer is None:
        return
    scalars = {"loss/g/total": result.loss_gen_all, "loss/d/total": result.loss_disc, "learning_rate": lr,
               "grad_norm_d": result.grad_norm_d, "grad_norm_g": result.grad_norm_g, "loss/g/fm": result.loss_fm,
               "loss/g/mel": result.loss_mel, "loss/g/kl": result.loss_kl, "loss/g/lf0": result.loss_lf0,
               "misc/skipped_steps": state.skipped_steps}
    if math.isfinite(secs):
        scalars["misc/seconds_per_step"] = secs
    out, batch, data = result.outputs, result.batch, state.hps.data
    with torch.no_grad():
        mel = spec_to_mel_torch(batch["spec"][:1].float(), data.filter_length, data.n_mel_channels,
                                data.sampling_rate, data.mel_fmin, data.mel_fmax)
        images = {"slice/mel_org": plot_spectrogram_to_numpy(out.y_mel[0].float().cpu().numpy()),
                  "slice/mel_gen": plot_spectrogram_to_numpy(out.y_hat_mel[0].detach().float().cpu().numpy()),
                  "all/mel": plot_spectrogram_to_numpy(mel[0].cpu().numpy())}
        if out.use_f0_loss:
            lf0 = out.lf0[0, 0].float().cpu().numpy()
            images["all/lf0"] = plot_data_to_numpy(lf0, out.pred_lf0[0, 0].detach().float().cpu().numpy())
            images["all/norm_lf0"] = plot_data_to_numpy(lf0, out.norm_lf0[0, 0].detach().float().cpu().numpy())
    summarize(state.writer, state.global_step, scalars=scalars, images=images)


@torch.no_grad()
def evaluate(state: TrainState, eval_loader: Any) -> None:
    """Rank 0 at ``eval_interval``: ``infer`` every validation item (noise 0.35, given f0) and log
    audio and mels to ``logs/<m>/eval``. ``infer`` reseeds the RNG; the training RNG is restored."""
    from modules.mel_processing import mel_spectrogram_torch, spec_to_mel_torch
    from training.summaries import plot_spectrogram_to_numpy, summarize

    if state.writer_eval is None or eval_loader is None:
        return
    data = state.hps.data
    dev = state.runtime.device
    generator = unwrap(state.net_g)
    generator.eval()
    audios: dict[str, torch.Tensor] = {}
    mel = y_hat_mel = None
    devices = [dev] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            for i, batch in enumerate(eval_loader):
                c, f0, uv = batch["c"][:1].to(dev), batch["f0"][:1].to(dev), batch["uv"][:1].to(dev)
                spec, y, g = batch["spec"][:1].to(dev), batch["y"][:1].to(dev), batch["spk"][:1].to(dev)
                volume = batch["volume"][:1].to(dev) if batch["volume"] is not None else None
                mel = spec_to_mel_torch(spec, data.filter_length, data.n_mel_channels, data.sampling_rate,
                                        data.mel_fmin, data.mel_fmax)
                y_hat, _ = generator.infer(c, f0, uv, g=g, vol=volume)
                y_hat_mel = mel_spectrogram_torch(y_hat.squeeze(1).float(), data.filter_length, data.n_mel_channels,
                                                  data.sampling_rate, data.hop_length, data.win_length,
                                                  data.mel_fmin, data.mel_fmax)
                audios[f"gen/audio_{i}"] = y_hat[0].float().cpu()
                audios[f"gt/audio_{i}"] = y[0].cpu()
    finally:
        generator.train()
    images = {}
    if mel is not None:
        images = {"gen/mel": plot_spectrogram_to_numpy(y_hat_mel[0].cpu().numpy()),
                  "gt/mel": plot_spectrogram_to_numpy(mel[0].cpu().numpy())}
    summarize(state.writer_eval, state.global_step, images=images, audios=audios,
              audio_sampling_rate=int(data.sampling_rate))


def _params_finite(model: torch.nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def save_checkpoints(state: TrainState) -> None:
    """Write ``G_<step>.pth`` then ``D_<step>.pth`` (4.1 format, ``iteration`` = epoch, plus a
    ``step`` key) atomically, then apply ``keep_ckpts``. Refuses to save NaN/inf weights."""
    step = state.global_step
    for net, name in ((state.net_g, "G"), (state.net_d, "D")):
        if not _params_finite(net):
            raise TrainingError(f"step {step}: the {name} weights contain NaN/inf, so no checkpoint was written. "
                                f"Resume from the last good checkpoint in {state.model_dir} and lower "
                                "train.learning_rate (or turn off fp16_run)")
    lr = float(state.hps.train.learning_rate)
    for net, optim, name in ((state.net_g, state.optim_g, "G"), (state.net_d, state.optim_d, "D")):
        with _portable(optim):
            save_checkpoint(net, optim, lr, state.epoch, state.model_dir / f"{name}_{step}.pth", step=step)
    keep = int(state.hps.train.get("keep_ckpts", 0) or 0)
    if keep > 0:
        clean_checkpoints(state.model_dir, n_ckpts_to_keep=keep)
    state.last_save_step = step
    state.last_save_time = time.monotonic()


def _time_to_save(state: TrainState) -> bool:
    minutes = state.hps.train.get("save_every_minutes")
    return bool(minutes) and time.monotonic() - state.last_save_time >= 60.0 * float(minutes)


# --- epochs -------------------------------------------------------------------------------------
def _reached_max_steps(state: TrainState) -> bool:
    return state.options.max_steps is not None and state.global_step > state.options.max_steps


def train_epoch(state: TrainState, loader: Any, sampler: Any, eval_loader: Any) -> bool:
    """One pass over this rank's share of the data. Returns False when the run must stop."""
    from tqdm import tqdm

    hps = state.hps
    if sampler is not None:
        sampler.set_epoch(state.epoch)
    lr = lr_at_epoch(state.epoch, hps.train)
    for optim in (state.optim_g, state.optim_d):
        for g in optim.param_groups:
            g["lr"] = lr
    n_batches = len(loader)
    bar = tqdm(loader, desc=f"epoch {state.epoch}", disable=None if state.runtime.is_main else True,
               leave=False, dynamic_ncols=True)
    with contextlib.closing(bar):
        return _train_batches(state, bar, n_batches, eval_loader)


def _train_batches(state: TrainState, bar: Any, n_batches: int, eval_loader: Any) -> bool:
    hps = state.hps
    for batch_idx, batch in enumerate(bar):
        if _reached_max_steps(state):
            return False
        t0 = time.perf_counter()
        try:
            result = train_step(state, batch)
        except torch.cuda.OutOfMemoryError:
            raise TrainingError(_oom_advice(state, "GPU")) from None
        except RuntimeError as e:
            if "can't allocate memory" in str(e) or "out of memory" in str(e).lower():
                raise TrainingError(_oom_advice(state, "CPU")) from None
            raise
        state.step_times.append(time.perf_counter() - t0)
        account_step(state, result)
        if state.runtime.is_main:
            if state.global_step % int(hps.train.log_interval) == 0:
                log_step(state, result, batch_idx, n_batches)
            if state.global_step % int(hps.train.eval_interval) == 0:
                evaluate(state, eval_loader)
                save_checkpoints(state)
            elif _time_to_save(state):
                save_checkpoints(state)
            bar.set_postfix(step=state.global_step, mel=f"{result.loss_mel:.2f}", refresh=False)
        result = None
        state.global_step += 1
        if state.stop_now or _reached_max_steps(state):
            return False
    return True


def _oom_advice(state: TrainState, where: str) -> str:
    return (f"out of {where} memory at step {state.global_step} (batch_size {state.hps.train.batch_size}). Try a "
            "smaller train.batch_size, shorter clips (long clips are cut to 790 frames), train.fp16_run with "
            "half_type 'bf16' or 'fp16' on a GPU, and train.all_in_mem false.")


@contextlib.contextmanager
def _stop_on_signals(state: TrainState) -> Iterator[None]:
    """First SIGINT/SIGTERM: finish the step, save, stop. A second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if state.stop_requested:
            raise KeyboardInterrupt
        state.stop_requested = name
        if state.runtime.is_main:
            log.warning("%s received: finishing step %d, saving a checkpoint, then stopping (send it again to stop "
                        "at once)", name, state.global_step)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --- one process --------------------------------------------------------------------------------
def _init_distributed(runtime: Runtime) -> None:
    import torch.distributed as dist

    backend = "nccl" if runtime.device.type == "cuda" else "gloo"
    if runtime.device.type == "cuda":
        torch.cuda.set_device(runtime.device)
    dist.init_process_group(backend=backend, init_method="env://", rank=runtime.rank, world_size=runtime.world_size)
    log.info("rank %d of %d on %s (%s)", runtime.rank, runtime.world_size, runtime.device, backend)


def _wrap_ddp(model: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    if runtime.device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[runtime.device.index])
    return DistributedDataParallel(model)


def create_state(hps: Any, options: TrainOptions, runtime: Runtime, precision: Precision) -> TrainState:
    """Models, optimisers and grad scaler on ``runtime.device``, restored from ``logs/<model>``
    (resume or fine-tune), wrapped for DDP when several processes train."""
    net_g, net_d = build_models(hps, runtime.device)
    optim_g, optim_d = build_optimizer(net_g, hps.train), build_optimizer(net_d, hps.train)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=precision.use_scaler)
    state = TrainState(hps, options, runtime, precision, net_g, net_d, optim_g, optim_d, scaler)
    restore(state, find_resume_point(options.model_dir))
    for optim in (optim_g, optim_d):
        apply_optimizer_settings(optim, hps.train, lr_at_epoch(state.epoch, hps.train))
    if runtime.distributed:
        state.net_g = _wrap_ddp(net_g, runtime)
        state.net_d = _wrap_ddp(net_d, runtime)
    return state


def run_worker(options: TrainOptions, runtime: Runtime) -> int:
    """Train in this process (rank ``runtime.rank``). Returns the exit status (130 after a signal)."""
    import torch.distributed as dist

    from modules.logger import setup_logging
    from training.data import build_eval_loader, build_train_loader, ensure_spectrograms

    hps = load_config(options)
    if runtime.is_main:
        prepare_model_dir(options)
        setup_logging(log_file=options.model_dir / "train.log")
    else:
        logging.getLogger().setLevel(logging.WARNING)
    if runtime.distributed:
        _init_distributed(runtime)
    try:
        if runtime.device.type == "cpu":
            log.info("Training on the CPU (%d threads); a GPU is much faster", torch.get_num_threads())
        else:
            torch.backends.cudnn.benchmark = True
        seed = int(hps.train.seed)
        torch.manual_seed(seed + runtime.rank)
        random.seed(seed + runtime.rank)
        precision = resolve_precision(hps.train, runtime.device)

        loader, sampler = build_train_loader(hps, rank=runtime.rank, world_size=runtime.world_size,
                                             pin_memory=runtime.device.type == "cuda")
        if runtime.is_main:
            ensure_spectrograms(loader.dataset)
        if runtime.distributed:
            dist.barrier()
            log.info("DistributedSampler: each of the %d processes trains on %d of the %d files per epoch",
                     runtime.world_size, len(sampler), len(loader.dataset))
        eval_loader = build_eval_loader(hps) if runtime.is_main else None

        state = create_state(hps, options, runtime, precision)
        if runtime.is_main:
            from training.summaries import open_writer

            state.writer = open_writer(options.model_dir)
            state.writer_eval = open_writer(options.model_dir / "eval")
        return _run_epochs(state, loader, sampler, eval_loader)
    finally:
        if runtime.distributed and dist.is_initialized():
            dist.destroy_process_group()
        _close_log_file(options.model_dir / "train.log")


def _close_log_file(path: Path) -> None:
    """Detach the ``train.log`` handler again (several runs in one process, e.g. tests)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve():
            root.removeHandler(h)
            h.close()


def _run_epochs(state: TrainState, loader: Any, sampler: Any, eval_loader: Any) -> int:
    epochs = int(state.hps.train.epochs)
    if state.epoch > epochs:
        log.info("Training already reached train.epochs = %d; raise it to train further", epochs)
        return 0
    if _reached_max_steps(state):
        log.info("Already past --max_steps %d (next step is %d)", state.options.max_steps, state.global_step)
        return 0
    try:
        with _stop_on_signals(state):
            while state.epoch <= epochs:
                if not train_epoch(state, loader, sampler, eval_loader):
                    break
                state.epoch += 1
            else:
                state.epoch = epochs  # the last epoch ran to its end
            last = state.global_step - 1
            if state.runtime.is_main and last >= 0 and state.last_save_step != last:
                state.global_step = last
                save_checkpoints(state)
                state.global_step = last + 1
    finally:
        for w in (state.writer, state.writer_eval):
            if w is not None:
                w.close()
    if state.skipped_steps and state.runtime.is_main:
        log.warning("%d update(s) were skipped for NaN/inf values during this run", state.skipped_steps)
    if state.stop_requested:
        log.info("Stopped after step %d (%s)", state.global_step - 1, state.stop_requested)
        return 130
    log.info("Finished at step %d, epoch %d", state.global_step - 1, state.epoch)
    return 0


# --- launching ----------------------------------------------------------------------------------
def _torchrun_runtime() -> Runtime | None:
    """The rank/world size ``torchrun`` (or any env:// launcher) put into the environment."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        if local >= n:
            raise SvcError(f"LOCAL_RANK {local} but only {n} GPU(s) are visible; start at most {n} processes per "
                           "machine (torchrun --nproc_per_node)")
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return Runtime(device, rank=rank, local_rank=local, world_size=world)


def _spawned_worker(rank: int, options: TrainOptions, world: int) -> None:
    """Entry of one ``mp.spawn`` process (several GPUs without torchrun, as 4.1 launches)."""
    import sys

    from modules.logger import setup_logging

    setup_logging()
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    try:
        code = run_worker(options, Runtime(torch.device("cuda", rank), rank=rank, local_rank=rank, world_size=world))
    except SvcError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


def train(options: TrainOptions) -> int:
    """Launch training: under torchrun → this process is one rank; several visible GPUs → one
    process per GPU (4.1's single-machine ``mp.spawn``); otherwise one process on GPU 0 or CPU."""
    runtime = _torchrun_runtime()
    if runtime is not None:
        return run_worker(options, runtime)
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus > 1:
        import torch.multiprocessing as mp

        hps = load_config(options)
        os.environ.setdefault("MASTER_ADDR", "localhost")
        os.environ.setdefault("MASTER_PORT", str(hps.train.get("port", "8001")))
        log.info("Starting one training process per GPU (%d)", n_gpus)
        try:
            mp.spawn(_spawned_worker, args=(options, n_gpus), nprocs=n_gpus, join=True)
        except mp.ProcessExitedException as e:
            raise SvcError(f"training process {e.error_index} stopped with exit status {e.exit_code} "
                           "(its error is printed above)") from None
        return 0
    device = torch.device("cuda", 0) if n_gpus == 1 else torch.device("cpu")
    return run_worker(options, Runtime(device))
