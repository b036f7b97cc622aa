"""The one training runner: what SoVITS (``train.py``) and diffusion (``train_diff.py``) training share.

A model family plugs in a :class:`TrainJob` (its step, its checkpoint files, its logging); the
runner owns the rest::

    set-up ─ Runtime (device, rank, world size; DDP/torchrun)  ─ Precision (fp32 / fp16 / bf16 / auto)
    loop   ─ for each epoch: job.begin_epoch ─ for each batch:
                 job.train_step ─► StepReport ─► NaN/Inf guard (skip · roll back · give up)
                 job.after_step (logs, evaluation) ─► save when due (every N steps and/or M minutes)
                 progress bar (steps/s, ETA, losses) and a log line at least once a minute
    end    ─ a final save of unsaved steps; SIGINT/SIGTERM finish the step, save and stop (130)

Resumable state (:class:`Progress`: step, epoch, lr scale after rollbacks, counters) plus the RNG
states travel in each checkpoint under the extra key ``train_state``
(:func:`progress_state_dict` / :func:`restore_progress_state`); the family adds optimizer,
scheduler and grad-scaler states there too.

NaN/Inf policy (:class:`GuardPolicy`, defaults): a step with a non-finite loss or gradient is
skipped (no update) and counted; after ``max_consecutive_bad`` (10) such steps in a row the job
rolls back to its newest checkpoint and the learning rate is multiplied by ``lr_factor`` (0.5);
after ``max_rollbacks`` (3) rollbacks training stops with :class:`DivergedError` (exit status 2)
and a message naming the likely causes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol

import numpy as np
import torch

from modules.errors import ConfigError, SvcError

log = logging.getLogger(__name__)

PROGRESS_LOG_SECONDS = 60.0  # a progress line at least this often, whatever log_interval says


class TrainingError(SvcError):
    """Training cannot go on (diverged, out of memory); the message says what to try."""


class DivergedError(TrainingError):
    """NaN/Inf kept coming after the allowed rollbacks (exit status 2)."""


LIKELY_NAN_CAUSES = (
    "Likely causes: float16 on a GPU without fast float16 (set train.fp16_run false, or half_type 'bf16' / "
    "'auto'; diffusion: amp_dtype fp32), clipped, silent or empty-band clips in the dataset (check the "
    "preprocessing warnings and re-run preprocess_hubert_f0.py), or a learning rate too high for this "
    "data (lower it).")


# --- where and how -----------------------------------------------------------------------------
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

    @property
    def name(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.dtype, str(self.dtype))

    def autocast(self) -> Any:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


PRECISION_NAMES = ("fp32", "fp16", "bf16", "auto")


def _bf16_ok(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def resolve_precision(name: str, device: torch.device, *, what: str = "precision") -> Precision:
    """``fp32`` / ``fp16`` / ``bf16`` / ``auto`` → :class:`Precision` on ``device``.

    ``auto``: bf16 on a GPU that supports it, else float32 (never float16: that is the usual
    cause of NaN on GPUs without fast float16). Mixed precision is a GPU option: on the CPU every
    choice trains in float32 (with a warning for an explicit half type).
    """
    name = str(name).lower()
    if name not in PRECISION_NAMES:
        raise ConfigError(f"{what} '{name}' unknown; use one of {', '.join(PRECISION_NAMES)}")
    if name == "auto":
        return Precision(device.type, torch.bfloat16) if _bf16_ok(device) else Precision(device.type)
    if name == "fp32":
        return Precision(device.type)
    if device.type != "cuda":
        log.warning("%s %s: mixed precision is a GPU option: training in float32 on %s", what, name, device)
        return Precision(device.type)
    if name == "bf16" and not _bf16_ok(device):
        raise ConfigError(f"{what} is 'bf16' but this GPU has no bfloat16 support; use 'fp16', 'auto' or 'fp32'")
    dtype = torch.bfloat16 if name == "bf16" else torch.float16
    return Precision(device.type, dtype, use_scaler=dtype == torch.float16)


# --- distributed set-up ------------------------------------------------------------------------
def torchrun_runtime() -> Runtime | None:
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


def init_distributed(runtime: Runtime) -> None:
    """Join the process group (NCCL on GPU, gloo on CPU) described by the environment."""
    import torch.distributed as dist

    backend = "nccl" if runtime.device.type == "cuda" else "gloo"
    if runtime.device.type == "cuda":
        torch.cuda.set_device(runtime.device)
    dist.init_process_group(backend=backend, init_method="env://", rank=runtime.rank, world_size=runtime.world_size)
    log.info("rank %d of %d on %s (%s)", runtime.rank, runtime.world_size, runtime.device, backend)


def wrap_ddp(model: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    if runtime.device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[runtime.device.index])
    return DistributedDataParallel(model)


def any_rank(runtime: Runtime, *flags: bool) -> list[bool]:
    """OR of each flag over all processes (one small all-reduce), so every rank takes the same branch."""
    if not runtime.distributed:
        return list(flags)
    import torch.distributed as dist

    t = torch.tensor([float(f) for f in flags], device=runtime.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


# --- state ------------------------------------------------------------------------------------------
@dataclass
class GuardPolicy:
    """NaN/Inf handling (see the module docstring for the defaults' meaning)."""

    max_consecutive_bad: int = 10
    max_rollbacks: int = 3
    lr_factor: float = 0.5


@dataclass
class Progress:
    """The runner's part of a run's state. ``step`` is the number of the step about to run
    (after it, the number of the step just run until the runner moves on)."""

    step: int = 0
    epoch: int = 1
    lr_scale: float = 1.0            # product of the rollback factors so far
    rollbacks: int = 0
    skipped_steps: int = 0           # updates skipped for NaN/inf losses or gradients
    consecutive_bad: int = 0
    last_save_step: int = -1
    last_save_time: float = field(default_factory=time.monotonic)
    last_log_time: float = field(default_factory=time.monotonic)
    stop_requested: str = ""         # name of the signal that asked to stop, if any
    stop_now: bool = False           # all ranks agreed (in the last step) to stop
    step_times: deque[float] = field(default_factory=lambda: deque(maxlen=1000))  # seconds of recent steps


@dataclass
class StepReport:
    """What one step reports: named scalar losses, and whether its update was skipped (and why)."""

    losses: dict[str, float]
    skipped: bool = False
    reason: str = ""


@dataclass
class RunPlan:
    """How long and how often: epochs ``..last_epoch`` (inclusive), ``stop_after_step`` (absolute
    step number), checkpoint cadence by steps and/or minutes, NaN policy, the bar's loss keys."""

    last_epoch: int
    stop_after_step: int | None = None
    save_every_steps: int | None = None
    save_every_minutes: float | None = None
    guard: GuardPolicy = field(default_factory=GuardPolicy)
    bar_losses: tuple[str, ...] = ()
    total_steps: int | None = None   # steps this run will take at most (for the bar's ETA)


class TrainJob(Protocol):
    """The model-specific half of a training run."""

    progress: Progress
    runtime: Runtime

    def begin_epoch(self) -> Iterable:
        """Prepare epoch ``progress.epoch`` (learning rate, sampler) and return its batches."""

    def train_step(self, batch: Any) -> StepReport:
        """One update (skipped, with a reason, when a loss or gradient is not finite)."""

    def after_step(self, report: StepReport, batch_index: int, n_batches: int) -> None:
        """Main rank only: logging and evaluation of step ``progress.step``."""

    def save(self) -> None:
        """Main rank only: write the checkpoint of step ``progress.step`` (atomically, with retention)."""

    def rollback(self) -> bool:
        """Load the newest checkpoint (weights, optimizer, step, epoch; not the RNG) and apply
        ``progress.lr_scale``. False when there is none (then training goes on from here)."""

    def memory_advice(self, where: str) -> str:
        """Out-of-memory message for ``where`` ("GPU"/"CPU")."""


# --- resumable state ---------------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), Python and numpy RNG states, in types ``weights_only`` loads."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {"torch": torch.random.get_rng_state(), "python": [version, list(internal), gauss],
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def progress_state_dict(progress: Progress, **extra: Any) -> dict[str, Any]:
    """The ``train_state`` checkpoint entry: step and epoch, lr scale and rollbacks, RNG states and
    whatever the job adds (optimizer-independent: ``scaler``, ``scheduler``)."""
    return {"step": int(progress.step), "epoch": int(progress.epoch), "lr_scale": float(progress.lr_scale),
            "rollbacks": int(progress.rollbacks), "rng": capture_rng_state(), **extra}


def restore_progress_state(progress: Progress, state: dict[str, Any] | None, *, rng: bool = True) -> None:
    """Take lr scale and rollback count (and, on resume, the RNG states) from a ``train_state``."""
    if not state:
        return
    progress.lr_scale = float(state.get("lr_scale", 1.0))
    progress.rollbacks = int(state.get("rollbacks", 0))
    if rng and "rng" in state:
        try:
            restore_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            log.warning("random generator states not restored (%s); continuing with fresh ones", e)


# --- signals ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def stop_on_signals(progress: Progress, runtime: Runtime) -> Iterator[None]:
    """First SIGINT/SIGTERM: finish the step, save, stop. A second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if progress.stop_requested:
            raise KeyboardInterrupt
        progress.stop_requested = name
        if runtime.is_main:
            log.warning("%s received: finishing step %d, saving a checkpoint, then stopping (send it again to stop "
                        "at once)", name, progress.step)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --- the loop ---------------------------------------------------------------------------------------
def log_start(job: TrainJob, precision: Precision, batch_size: int, *, resumed_step: int | None, what: str) -> None:
    """The first line of every run: device, precision, world size, batch, resume point."""
    rt = job.runtime
    where = (f"{rt.device} ({torch.get_num_threads()} threads; a GPU is much faster)" if rt.device.type == "cpu"
             else str(rt.device))
    start = f"resuming from step {resumed_step}" if resumed_step is not None else "starting fresh"
    log.info("%s: device %s, precision %s, world size %d, batch %d per process; %s", what, where, precision.name,
             rt.world_size, batch_size, start)


def _reached(plan: RunPlan, progress: Progress) -> bool:
    return plan.stop_after_step is not None and progress.step > plan.stop_after_step


def _save_due(plan: RunPlan, progress: Progress) -> bool:
    if plan.save_every_steps and progress.step % plan.save_every_steps == 0:
        return True
    minutes = plan.save_every_minutes
    return bool(minutes) and time.monotonic() - progress.last_save_time >= 60.0 * float(minutes)


def save_now(job: TrainJob) -> None:
    """Save step ``progress.step`` and remember when."""
    job.save()
    job.progress.last_save_step = job.progress.step
    job.progress.last_save_time = time.monotonic()


def _guard(job: TrainJob, plan: RunPlan, report: StepReport) -> bool:
    """Count a skipped step; True when the run must roll back now. Raises after the last rollback."""
    p, policy = job.progress, plan.guard
    if not report.skipped:
        p.consecutive_bad = 0
        return False
    p.skipped_steps += 1
    p.consecutive_bad += 1
    if job.runtime.is_main:
        log.warning("step %d: %s; update skipped (%d skipped so far)", p.step, report.reason, p.skipped_steps)
    if p.consecutive_bad < policy.max_consecutive_bad:
        return False
    first = p.step - p.consecutive_bad + 1
    if p.rollbacks >= policy.max_rollbacks:
        raise DivergedError(
            f"training diverged: steps {first}–{p.step} all had NaN/inf losses or gradients (last: {report.reason}), "
            f"after {p.rollbacks} rollback(s) with the learning rate lowered to {p.lr_scale:g}× the configured one. "
            f"Nothing was saved after step {p.last_save_step}. {LIKELY_NAN_CAUSES}")
    return True


def _roll_back(job: TrainJob, plan: RunPlan) -> bool:
    p = job.progress
    bad_from, bad_to = p.step - p.consecutive_bad + 1, p.step
    p.rollbacks += 1
    p.lr_scale *= plan.guard.lr_factor
    p.consecutive_bad = 0
    restored = job.rollback()
    if job.runtime.is_main:
        where = f"back to step {p.step - 1}'s checkpoint" if restored else "on from the current weights (no checkpoint yet)"
        log.warning("steps %d–%d had NaN/inf losses or gradients: rollback %d of %d, going %s with the learning rate "
                    "× %g (now %g× the configured one)", bad_from, bad_to, p.rollbacks, plan.guard.max_rollbacks,
                    where, plan.guard.lr_factor, p.lr_scale)
    return restored


def _postfix(report: StepReport, keys: tuple[str, ...]) -> dict[str, str]:
    return {k: f"{report.losses[k]:.3g}" for k in keys if k in report.losses}


def _progress_line(job: TrainJob, plan: RunPlan, report: StepReport, done: int, started: float) -> None:
    """``step N (epoch E): losses, s/step, ETA`` (the bar's figures, for log files)."""
    p = job.progress
    secs = (time.monotonic() - started) / done if done else float("nan")
    eta = ""
    if plan.total_steps and done and math.isfinite(secs):
        left = max(plan.total_steps - done, 0) * secs
        eta = f", ETA {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"
    rate = f", {secs:.2f} s/step" if math.isfinite(secs) else ""
    losses = ", ".join(f"{k} {v:.3f}" for k, v in report.losses.items() if math.isfinite(v))
    log.info("step %d (epoch %d): %s%s%s", p.step, p.epoch, losses, rate, eta)


@dataclass
class _Clock:
    """Steps and seconds of this run, for the minute lines' rate and ETA."""

    started: float = field(default_factory=time.monotonic)
    done: int = 0


def _run_epoch(job: TrainJob, plan: RunPlan, bar: Any, clock: _Clock) -> str:
    """One epoch → "done", "stop" (max steps / signal) or "rolled back" (epoch starts again)."""
    p, main = job.progress, job.runtime.is_main
    batches = job.begin_epoch()
    n_batches = len(batches) if hasattr(batches, "__len__") else 0
    for batch_index, batch in enumerate(batches):
        if _reached(plan, p):
            return "stop"
        t0 = time.perf_counter()
        try:
            report = job.train_step(batch)
        except torch.cuda.OutOfMemoryError:
            raise TrainingError(job.memory_advice("GPU")) from None
        except RuntimeError as e:
            if "can't allocate memory" in str(e) or "out of memory" in str(e).lower():
                raise TrainingError(job.memory_advice("CPU")) from None
            raise
        p.step_times.append(time.perf_counter() - t0)
        clock.done += 1
        if not job.runtime.distributed and p.stop_requested:
            p.stop_now = True
        if _guard(job, plan, report) and _roll_back(job, plan):
            return "rolled back"  # step and epoch are the checkpoint's now: that epoch starts again
        if main:
            job.after_step(report, batch_index, n_batches)
            if p.consecutive_bad == 0 and _save_due(plan, p):  # never save inside a NaN streak
                save_now(job)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(_postfix(report, plan.bar_losses) | {"step": p.step}, refresh=False)
            if time.monotonic() - p.last_log_time >= PROGRESS_LOG_SECONDS:
                _progress_line(job, plan, report, clock.done, clock.started)
                p.last_log_time = time.monotonic()
        p.step += 1
        if p.stop_now or _reached(plan, p):
            return "stop"
    return "done"


def run(job: TrainJob, plan: RunPlan) -> int:
    """Train ``job`` as ``plan`` says. Returns 0, or 130 after SIGINT/SIGTERM (a checkpoint was
    saved); raises :class:`TrainingError` / :class:`DivergedError` (exit status 2)."""
    from tqdm import tqdm

    p, main = job.progress, job.runtime.is_main
    if p.epoch > plan.last_epoch:
        log.info("Training already reached its last epoch (%d); raise the epoch count to train further", plan.last_epoch)
        return 0
    if _reached(plan, p):
        log.info("Already past the requested last step %d (next step is %d)", plan.stop_after_step, p.step)
        return 0
    # disable=None: a bar on a terminal, nothing in a log file (the minute lines stand in there)
    bar = tqdm(total=plan.total_steps, initial=0, desc="training", unit="step", dynamic_ncols=True,
               disable=None if main else True, leave=False) if main else None
    p.last_log_time = time.monotonic() - PROGRESS_LOG_SECONDS  # the first step is logged at once
    clock = _Clock()
    try:
        with stop_on_signals(p, job.runtime):
            while p.epoch <= plan.last_epoch:
                outcome = _run_epoch(job, plan, bar, clock)
                if outcome == "stop":
                    break
                if outcome == "done":
                    p.epoch += 1
            else:
                p.epoch = plan.last_epoch  # the last epoch ran to its end
            last = p.step - 1
            if main and last >= 0 and p.last_save_step != last:
                p.step = last
                save_now(job)
                p.step = last + 1
    finally:
        if bar is not None:
            bar.close()
    if p.skipped_steps and main:
        log.warning("%d update(s) were skipped for NaN/inf values during this run (%d rollback(s))", p.skipped_steps,
                    p.rollbacks)
    if p.stop_requested:
        log.info("Stopped after step %d (%s)", p.step - 1, p.stop_requested)
        return 130
    log.info("Finished at step %d, epoch %d", p.step - 1, p.epoch)
    return 0
