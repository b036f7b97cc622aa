"""SoVITS training (``train.py``; spec §6.10–6.13): the model-specific half on :mod:`training.runner`.

One step, as 4.1 does it::

    G forward (random 20-frame slice)  ─►  D(y, ŷ.detach()) ─► LSGAN D loss ─► backward ─► AdamW(D)
                                        └► D(y, ŷ) with the *updated* D ─► adv + fm + 45·mel + KL + lf0
                                                                       ─► backward ─► AdamW(G)

The runner (:mod:`training.runner`) owns the step loop, save cadence (steps and minutes), NaN/Inf
guard with rollback, signal-safe stop, progress bar and DDP/torchrun set-up. This file keeps the
SoVITS parts, as named phases: :func:`load_config`, :func:`prepare_model_dir`,
:func:`build_models`, :func:`build_optimizer`, :func:`restore` (resume / fine-tune;
:func:`create_state` does all of these), :func:`train_step`, :func:`log_step`, :func:`evaluate`,
:func:`save_checkpoints`, and :func:`run_worker` / :func:`train` around them. :class:`TrainState`
is the :class:`~training.runner.TrainJob` the runner drives.

Differences from 4.1 are listed in docs/compat/train.md; the main ones: CPU training is allowed;
ranks split the data; resume never silently restarts from scratch and picks the newest step for
which both G and D exist, restoring the RNG and grad-scaler states too; the learning rate follows
the config and the epoch (closed form); NaN/inf steps are skipped, roll back and finally stop with
exit status 2; SIGINT/SIGTERM save a checkpoint before stopping; evaluation does not disturb the
training RNG; checkpoints carry their config (extra key ``config``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch.nn.utils import parametrize

from models import MultiPeriodDiscriminator, SynthesizerTrn
from models.train_step import discriminator_step_loss, generator_forward, generator_step_losses
from modules.checkpoint import (CONFIG_KEY, checkpoint_step, clean_checkpoints, load_checkpoint, remove_interrupted_saves,
                                save_checkpoint, torch_load)
from modules.config_types import SovitsConfig
from modules.errors import ConfigError, SvcError
from training import runner
from training.runner import (DivergedError, GuardPolicy, Precision, Progress, Runtime, StepReport,  # noqa: F401
                             TrainingError, any_rank)

log = logging.getLogger(__name__)

ADAMW_WEIGHT_DECAY = 0.01        # PyTorch's AdamW default, which 4.1 used without configuring it
GUARD = GuardPolicy()            # NaN/Inf: skip, roll back after 10 in a row (lr × 0.5), stop after 3 rollbacks
BAR_LOSSES = ("loss_disc", "loss_gen_all", "loss_mel")


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

    def report(self) -> StepReport:
        names = ("loss_disc", "loss_gen", "loss_fm", "loss_mel", "loss_kl", "loss_lf0", "loss_gen_all")
        return StepReport({n: getattr(self, n) for n in names}, self.skipped, self.reason)


@dataclass
class TrainState:
    """Everything a run carries from step to step; the :class:`~training.runner.TrainJob` of SoVITS."""

    hps: Any
    options: TrainOptions
    runtime: Runtime
    precision: Precision
    net_g: torch.nn.Module
    net_d: torch.nn.Module
    optim_g: torch.optim.Optimizer
    optim_d: torch.optim.Optimizer
    scaler: Any
    progress: Progress = field(default_factory=Progress)
    config: SovitsConfig | None = None
    writer: Any = None
    writer_eval: Any = None
    loader: Any = None
    sampler: Any = None
    eval_loader: Any = None
    validation: Any = None   # evaluation.training.ValidationHook (rank 0, train.val_scores)
    last_result: StepResult | None = None

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = SovitsConfig.from_hparams(self.hps)

    @property
    def model_dir(self) -> Path:
        return self.options.model_dir

    # the runner's counters under their 4.1 names
    @property
    def global_step(self) -> int:
        return self.progress.step

    @global_step.setter
    def global_step(self, value: int) -> None:
        self.progress.step = value

    @property
    def epoch(self) -> int:
        return self.progress.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.progress.epoch = value

    @property
    def stop_requested(self) -> str:
        return self.progress.stop_requested

    # --- TrainJob ---
    def begin_epoch(self) -> Iterable:
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
        set_learning_rate(self, lr_at_epoch(self.epoch, self.hps.train) * self.progress.lr_scale)
        return self.loader

    def train_step(self, batch: Any) -> StepReport:
        result = train_step(self, batch)  # the module function (tests replace it)
        self.last_result = result
        return result.report()

    def after_step(self, report: StepReport, batch_index: int, n_batches: int) -> None:
        cfg = self.config.train
        if self.global_step % cfg.log_interval == 0:
            log_step(self, self.last_result, batch_index, n_batches)
        if self.global_step % cfg.eval_interval == 0:
            evaluate(self, self.eval_loader)
        self.last_result = None

    def save(self) -> None:
        save_checkpoints(self)

    def rollback(self) -> bool:
        point = find_resume_point(self.model_dir)
        if point is None:
            set_learning_rate(self, lr_at_epoch(self.epoch, self.hps.train) * self.progress.lr_scale)
            return False
        scale, rollbacks = self.progress.lr_scale, self.progress.rollbacks
        restore(self, point, rng=False)
        self.progress.lr_scale, self.progress.rollbacks = scale, rollbacks
        set_learning_rate(self, lr_at_epoch(self.epoch, self.hps.train) * scale)
        return True

    def memory_advice(self, where: str) -> str:
        return _oom_advice(self, where)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def set_learning_rate(state: TrainState, lr: float) -> None:
    for optim in (state.optim_g, state.optim_d):
        for g in optim.param_groups:
            g["lr"] = lr


# --- configuration ------------------------------------------------------------------------------
def load_config(options: TrainOptions) -> Any:
    """Read and check the config: keys (strict), speaker ids, segment size."""
    from modules.hparams import get_hparams_from_file

    hps = get_hparams_from_file(options.config_path)
    path = options.config_path
    try:
        SovitsConfig.from_hparams(hps)  # value kinds checked before anything slow happens
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
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
    """``fp16_run`` + ``half_type`` (``fp16`` / ``bf16`` / ``auto``) → autocast dtype on ``device``.

    Mixed precision is a GPU option. 4.1 also enabled the grad scaler for bf16; bf16 has float32's
    range and needs none. ``auto``: bf16 where the GPU supports it, else float32.
    """
    name = "fp32"
    if train_hps.get("fp16_run", False):
        name = {"bf16": "bf16", "auto": "auto"}.get(str(train_hps.get("half_type", "fp16")).lower(), "fp16")
    return runner.resolve_precision(name, device, what="train.fp16_run/half_type")


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


def restore(state: TrainState, point: ResumePoint | None, *, rng: bool = True) -> None:
    """Load G/D weights and optimiser moments of ``point`` → epoch = max(iteration, 1), next step =
    saved step + 1 (4.1's rule), plus our ``train_state`` (grad scaler, lr scale after rollbacks,
    and with ``rng`` the random generators). Errors are raised, never turned into a silent fresh start."""
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
    extra = torch_load(point.g_path, what="so-vits-svc checkpoint", mmap=zipfile.is_zipfile(point.g_path)).get("train_state")
    if extra:
        runner.restore_progress_state(state.progress, extra, rng=rng)
        if extra.get("scaler") and state.scaler.is_enabled():
            state.scaler.load_state_dict(extra["scaler"])
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
    return any_rank(state.runtime, *flags)


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
    state.progress.stop_now = stop  # decided together, so every rank leaves after the same step
    if stop and not state.progress.stop_requested:
        state.progress.stop_requested = "a signal on another rank"

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


# --- logging, evaluation, checkpoints -----------------------------------------------------------
def log_step(state: TrainState, result: StepResult, batch_idx: int, n_batches: int) -> None:
    """Rank 0 at ``log_interval``: the 4.1 log lines and TensorBoard scalars / images."""
    from modules.mel_processing import spec_to_mel_torch
    from training.summaries import plot_data_to_numpy, plot_spectrogram_to_numpy, summarize

    lr = state.optim_g.param_groups[0]["lr"]
    secs = sorted(state.progress.step_times)[len(state.progress.step_times) // 2] if state.progress.step_times else float("nan")
    state.progress.step_times.clear()
    log.info("Train Epoch: %d [%.0f%%]", state.epoch, 100.0 * batch_idx / max(n_batches, 1))
    log.info("step %d: loss_disc %.3f, loss_gen %.3f, loss_fm %.3f, loss_mel %.3f, loss_kl %.3f, loss_lf0 %.4f, "
             "lr %.6g, grad_norm d/g %.3g/%.3g, %.2f s/step%s", state.global_step, result.loss_disc, result.loss_gen,
             result.loss_fm, result.loss_mel, result.loss_kl, result.loss_lf0, lr, result.grad_norm_d,
             result.grad_norm_g, secs, f", {state.progress.skipped_steps} skipped" if state.progress.skipped_steps else "")
    if state.writer is None:
        return
    scalars = {"loss/g/total": result.loss_gen_all, "loss/d/total": result.loss_disc, "learning_rate": lr,
               "grad_norm_d": result.grad_norm_d, "grad_norm_g": result.grad_norm_g, "loss/g/fm": result.loss_fm,
               "loss/g/mel": result.loss_mel, "loss/g/kl": result.loss_kl, "loss/g/lf0": result.loss_lf0,
               "misc/skipped_steps": state.progress.skipped_steps}
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
    audio and mels to ``logs/<m>/eval``; then ``state.validation`` scores the items (``val/*``
    scalars, ``best.json``; :mod:`evaluation.training`). ``infer`` reseeds the RNG and the scorer's
    first pass builds models; the training RNG is restored."""
    from modules.mel_processing import mel_spectrogram_torch, spec_to_mel_torch
    from training.summaries import plot_spectrogram_to_numpy, summarize

    if state.writer_eval is None or eval_loader is None:
        return
    data = state.hps.data
    dev = state.runtime.device
    generator = unwrap(state.net_g)
    generator.eval()
    audios: dict[str, torch.Tensor] = {}
    items: list[tuple[torch.Tensor, torch.Tensor, int]] = []   # (y [L], ŷ [L], speaker id) for the scores
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
                items.append((y[0, 0], y_hat[0, 0].float(), int(g.reshape(-1)[0])))
            if state.validation is not None and items:
                state.validation(items, state.global_step, writer=state.writer_eval,
                                 checkpoint=f"G_{state.global_step}.pth")
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


def checkpoint_config(state: TrainState) -> dict:
    """The ``config`` key of our checkpoints: the whole config (model, data, train, speaker map)."""
    hps = state.hps
    return hps.to_dict() if hasattr(hps, "to_dict") else dict(hps)


def save_checkpoints(state: TrainState) -> None:
    """Write ``G_<step>.pth`` then ``D_<step>.pth`` atomically, then apply ``keep_ckpts``.

    4.1's keys (``model``, ``iteration`` = epoch, ``optimizer``, ``learning_rate``) as 4.1 writes
    them, plus ``step``, ``config`` (so the model loads without a side file) and, in G,
    ``train_state`` (RNG, grad scaler, lr scale; see :mod:`training.runner`). Refuses to save
    NaN/inf weights.
    """
    step = state.global_step
    for net, name in ((state.net_g, "G"), (state.net_d, "D")):
        if not _params_finite(net):
            raise TrainingError(f"step {step}: the {name} weights contain NaN/inf, so no checkpoint was written. "
                                f"Resume from the last good checkpoint in {state.model_dir} and lower "
                                "train.learning_rate (or turn off fp16_run)")
    lr = float(state.hps.train.learning_rate)
    config = checkpoint_config(state)
    scaler = state.scaler.state_dict() if state.scaler.is_enabled() else None
    train_state = runner.progress_state_dict(state.progress, scaler=scaler)
    for net, optim, name in ((state.net_g, state.optim_g, "G"), (state.net_d, state.optim_d, "D")):
        extra = {"step": step, CONFIG_KEY: config}
        if name == "G":
            extra["train_state"] = train_state
        with _portable(optim):
            save_checkpoint(net, optim, lr, state.epoch, state.model_dir / f"{name}_{step}.pth", **extra)
    keep = int(state.config.train.keep_ckpts or 0)
    if keep > 0:
        clean_checkpoints(state.model_dir, n_ckpts_to_keep=keep)


def _oom_advice(state: TrainState, where: str) -> str:
    return (f"out of {where} memory at step {state.global_step} (batch_size {state.hps.train.batch_size}). Try a "
            "smaller train.batch_size, shorter clips (long clips are cut to 790 frames), train.fp16_run with "
            "half_type 'bf16' or 'fp16' on a GPU, and train.all_in_mem false.")


def create_state(hps: Any, options: TrainOptions, runtime: Runtime, precision: Precision) -> TrainState:
    """Models, optimisers and grad scaler on ``runtime.device``, restored from ``logs/<model>``
    (resume or fine-tune), wrapped for DDP when several processes train."""
    net_g, net_d = build_models(hps, runtime.device)
    optim_g, optim_d = build_optimizer(net_g, hps.train), build_optimizer(net_d, hps.train)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=precision.use_scaler)
    state = TrainState(hps, options, runtime, precision, net_g, net_d, optim_g, optim_d, scaler)
    restore(state, find_resume_point(options.model_dir))
    for optim in (optim_g, optim_d):
        apply_optimizer_settings(optim, hps.train, lr_at_epoch(state.epoch, hps.train) * state.progress.lr_scale)
    if runtime.distributed:
        state.net_g = runner.wrap_ddp(net_g, runtime)
        state.net_d = runner.wrap_ddp(net_d, runtime)
    return state


def run_plan(state: TrainState) -> runner.RunPlan:
    """Epochs, ``--max_steps``, saves every ``eval_interval`` steps (and ``save_every_minutes``)."""
    cfg = state.config.train
    max_steps = state.options.max_steps
    n_batches = len(state.loader) if state.loader is not None else 0
    if max_steps is not None:
        total = max(max_steps - state.global_step + 1, 0)
    else:
        total = max((cfg.epochs - state.epoch + 1) * n_batches, 0) or None
    return runner.RunPlan(last_epoch=cfg.epochs, stop_after_step=max_steps, save_every_steps=cfg.eval_interval,
                          save_every_minutes=cfg.save_every_minutes, guard=GUARD, bar_losses=BAR_LOSSES,
                          total_steps=total)


def run_worker(options: TrainOptions, runtime: Runtime) -> int:
    """Train in this process (rank ``runtime.rank``). Returns the exit status (130 after a signal)."""
    import torch.distributed as dist

    from modules.logger import setup_logging
    from training.data import build_eval_loader, build_train_loader, ensure_spectrograms

    hps = load_config(options)
    if runtime.is_main:
        prepare_model_dir(options)
        setup_logging(log_file=options.model_dir / "train.log")
        remove_interrupted_saves(options.model_dir, ("G_*", "D_*"))
    else:
        logging.getLogger().setLevel(logging.WARNING)
    if runtime.distributed:
        runner.init_distributed(runtime)
    try:
        if runtime.device.type != "cpu":
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
        state.loader, state.sampler, state.eval_loader = loader, sampler, eval_loader
        if runtime.is_main:
            from training.summaries import open_writer

            resumed = state.global_step - 1 if state.global_step > 0 else None
            runner.log_start(state, precision, int(hps.train.batch_size), resumed_step=resumed, what="SoVITS training")
            state.writer = open_writer(options.model_dir)
            state.writer_eval = open_writer(options.model_dir / "eval")
            if state.config.train.val_scores:
                from evaluation.training import ValidationHook

                state.validation = ValidationHook(hps.data, options.model_dir, device=runtime.device)
        try:
            return runner.run(state, run_plan(state))
        finally:
            for w in (state.writer, state.writer_eval):
                if w is not None:
                    w.close()
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


# --- launching ----------------------------------------------------------------------------------
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
    runtime = runner.torchrun_runtime()
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
