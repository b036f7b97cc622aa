"""Samplers for the shallow-diffusion model: one registry, name → sampling function (spec §8.2).

Every sampler denoises ``x [B, 1, M, T]`` that carries noise of level ``t_start`` (a DDPM index
count: the noise was added at index ``t_start − 1``) down to a clean normalised mel, calling
``denoise(x, t) → ε`` with ``t`` a ``[B]`` tensor of step indices (long for the discrete samplers,
real-valued for DPM-Solver/UniPC, spec §13.37). ``speedup`` is 4.1's ``infer.speedup``.

=============  ==========================================================================
name           method
=============  ==========================================================================
ddpm           ancestral DDPM over every index (4.1 uses it whenever speedup ≤ 1)
ddim           DDIM on the grid i = the multiples of ``speedup`` below ``t_start``
pndm           PLMS (pseudo linear multistep) on the same grid
dpm-solver     multistep DPM-Solver, order 2, time-uniform, t_start // speedup steps
dpm-solver++   multistep DPM-Solver++ (data prediction), same settings
unipc          multistep UniPC, variant bh2, data prediction, same settings
=============  ==========================================================================

DPM-Solver and UniPC follow the published algorithms (Lu et al. 2022; Zhao et al. 2023) with
the discrete-time VP schedule of ``betas[:t_start]`` and 4.1's time conversion
``t_input = (t_cont − 1/N)·N``; the arithmetic is kept close to 4.1's vendored solvers so a
given model reproduces 4.1's mels to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from modules.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from diffusion.diffusion import GaussianDiffusion

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Sampler:
    name: str
    run: Callable[..., torch.Tensor]  # run(diffusion, x, *, t_start, speedup, denoise, progress) -> x0
    uses_speedup: bool
    description: str

    def num_steps(self, t_start: int, speedup: int) -> int:
        """Denoiser evaluations the sampler makes (for progress bars and benchmarks)."""
        if not self.uses_speedup or speedup <= 1:
            return t_start
        if self.name == "pndm":
            return len(range(0, t_start, speedup)) + 1
        if self.name == "ddim":
            return len(range(0, t_start, speedup))
        return _solver_steps(t_start, speedup)


def _gather(buffer: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``buffer[t]`` reshaped to broadcast against a ``[B, ...]`` tensor of ``ndim`` dims."""
    return buffer.gather(-1, t).reshape(t.shape[0], *((1,) * (ndim - 1)))


def _tick(progress) -> None:
    if progress is not None:
        progress.update(1)


# --- DDPM / DDIM / PNDM (discrete step indices) -------------------------------------------------
def sample_ddpm(diffusion: "GaussianDiffusion", x: torch.Tensor, *, t_start: int, speedup: int, denoise: Denoise,
                progress=None) -> torch.Tensor:
    """Ancestral sampling over every index t_start−1 … 0; x0 prediction clipped to [−1, 1]."""
    b = x.shape[0]
    for i in reversed(range(t_start)):
        t = torch.full((b,), i, device=x.device, dtype=torch.long)
        eps = denoise(x, t)
        x_recon = (_gather(diffusion.sqrt_recip_alphas_cumprod, t, x.dim()) * x
                   - _gather(diffusion.sqrt_recipm1_alphas_cumprod, t, x.dim()) * eps)
        x_recon.clamp_(-1.0, 1.0)
        mean = (_gather(diffusion.posterior_mean_coef1, t, x.dim()) * x_recon
                + _gather(diffusion.posterior_mean_coef2, t, x.dim()) * x)
        log_var = _gather(diffusion.posterior_log_variance_clipped, t, x.dim())
        noise = torch.randn(x.shape, device=x.device)
        nonzero = (1 - (t == 0).float()).reshape(b, *((1,) * (x.dim() - 1)))
        x = mean + nonzero * (0.5 * log_var).exp() * noise
        _tick(progress)
    return x


def sample_ddim(diffusion: "GaussianDiffusion", x: torch.Tensor, *, t_start: int, speedup: int, denoise: Denoise,
                progress=None) -> torch.Tensor:
    """Deterministic DDIM on the grid reversed(range(0, t_start, speedup))."""
    b = x.shape[0]
    for i in reversed(range(0, t_start, speedup)):
        t = torch.full((b,), i, device=x.device, dtype=torch.long)
        a_t = _gather(diffusion.alphas_cumprod, t, x.dim())
        a_prev = _gather(diffusion.alphas_cumprod, torch.clamp(t - speedup, min=0), x.dim())
        eps = denoise(x, t)
        x = a_prev.sqrt() * (x / a_t.sqrt() + (((1 - a_prev) / a_prev).sqrt() - ((1 - a_t) / a_t).sqrt()) * eps)
        _tick(progress)
    return x


def _pndm_transfer(diffusion: "GaussianDiffusion", x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                   interval: int) -> torch.Tensor:
    """PNDM's transfer x_t → x_{t−interval} for a given ε (Liu et al. 2022, eq. 11)."""
    a_t = _gather(diffusion.alphas_cumprod, t, x.dim())
    a_prev = _gather(diffusion.alphas_cumprod, torch.clamp(t - interval, min=0), x.dim())
    a_t_sq, a_prev_sq = a_t.sqrt(), a_prev.sqrt()
    x_delta = (a_prev - a_t) * ((1 / (a_t_sq * (a_t_sq + a_prev_sq))) * x - 1 / (
        a_t_sq * (((1 - a_prev) * a_t).sqrt() + ((1 - a_t) * a_prev).sqrt())) * eps)
    return x + x_delta


def sample_pndm(diffusion: "GaussianDiffusion", x: torch.Tensor, *, t_start: int, speedup: int, denoise: Denoise,
                progress=None) -> torch.Tensor:
    """PLMS: a Heun-like first step, then the 2-, 3- and 4-step Adams–Bashforth combinations."""
    b = x.shape[0]
    history: list[torch.Tensor] = []  # last three ε, newest last
    for i in reversed(range(0, t_start, speedup)):
        t = torch.full((b,), i, device=x.device, dtype=torch.long)
        eps = denoise(x, t)
        if not history:
            x_pred = _pndm_transfer(diffusion, x, eps, t, speedup)
            # 4.1 passed max(t − interval, 0), which became the int 0 (and crashed) when
            # t_start ≤ speedup; a clamped tensor gives the same index without the crash.
            eps_next = denoise(x_pred, torch.clamp(t - speedup, min=0))
            _tick(progress)
            eps_prime = (eps + eps_next) / 2
        elif len(history) == 1:
            eps_prime = (3 * eps - history[-1]) / 2
        elif len(history) == 2:
            eps_prime = (23 * eps - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            eps_prime = (55 * eps - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        x = _pndm_transfer(diffusion, x, eps_prime, t, speedup)
        history = (history + [eps])[-3:]
        _tick(progress)
    return x


# --- continuous-time solvers (DPM-Solver, UniPC) ------------------------------------------------
class DiscreteVPSchedule:
    """Discrete-time VP schedule as a piecewise-linear function of t ∈ [1/N, 1] (DPM-Solver).

    Step n (0-based) of the DDPM chain sits at t = (n + 1)/N with log α_t = ½·Σ_{k≤n} log(1 − β_k).
    All quantities are float32, as in 4.1.
    """

    CLIPPED_LAMBDA = -5.1  # log-SNR floor of DPM-Solver's discrete schedule (inactive for 4.1's betas)

    def __init__(self, betas: torch.Tensor) -> None:
        log_alphas = 0.5 * torch.log(1 - betas).cumsum(dim=0)
        log_sigmas = 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alphas))
        lambdas = log_alphas - log_sigmas
        n_clip = int(torch.searchsorted(torch.flip(lambdas, [0]), self.CLIPPED_LAMBDA))
        if n_clip > 0:
            log_alphas = log_alphas[:-n_clip]
        self.log_alpha_array = log_alphas.reshape(-1).to(torch.float32)
        self.total_N = self.log_alpha_array.shape[0]
        self.t_array = torch.linspace(0.0, 1.0, self.total_N + 1)[1:].to(torch.float32).to(betas.device)
        self.T = 1.0

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Piecewise-linear log α_t (linear extrapolation outside the grid)."""
        xp, yp = self.t_array, self.log_alpha_array
        t = t.reshape(-1)
        k = xp.shape[0]
        idx = torch.searchsorted(xp, t).clamp(1, k - 1)  # segment [idx−1, idx]
        x0, x1 = xp[idx - 1], xp[idx]
        y0, y1 = yp[idx - 1], yp[idx]
        return y0 + (t - x0) * (y1 - y0) / (x1 - x0)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lambda_(self, t: torch.Tensor) -> torch.Tensor:
        """Half log-SNR λ_t = log α_t − log σ_t."""
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(1.0 - torch.exp(2.0 * la))

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """Continuous t → the denoiser's step input (t − 1/N)·N ∈ [0, N − 1] (spec §13.37)."""
        return (t - 1.0 / self.total_N) * self.total_N


def _solver_steps(t_start: int, speedup: int) -> int:
    # 4.1 asserted steps ≥ order (2) and so crashed for k_step < 2·speedup; one step at least.
    return max(1, t_start // speedup)


class _ContinuousSolver:
    """Shared set-up of DPM-Solver and UniPC: schedule, time grid, ε and x0 predictions."""

    def __init__(self, diffusion: "GaussianDiffusion", t_start: int, denoise: Denoise, progress) -> None:
        self.ns = DiscreteVPSchedule(diffusion.betas[:t_start])
        self.denoise = denoise
        self.progress = progress

    def time_grid(self, steps: int, device: torch.device) -> torch.Tensor:
        """Uniform grid from t = 1 to t = 1/N (``steps + 1`` points)."""
        return torch.linspace(self.ns.T, 1.0 / self.ns.total_N, steps + 1).to(device)

    def noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t_in = self.ns.model_time(t).expand(x.shape[0])
        eps = self.denoise(x, t_in)
        _tick(self.progress)
        return eps

    def data(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = self.noise(x, t)
        return (x - self.ns.sigma(t) * eps) / self.ns.alpha(t)


class DPMSolverMultistep(_ContinuousSolver):
    """Multistep DPM-Solver (``data_prediction=False``) / DPM-Solver++ (``True``), order ≤ 2."""

    def __init__(self, diffusion, t_start, denoise, progress, *, data_prediction: bool) -> None:
        super().__init__(diffusion, t_start, denoise, progress)
        self.data_prediction = data_prediction

    def model(self, x, t):
        return self.data(x, t) if self.data_prediction else self.noise(x, t)

    def first_order(self, x, s, t, model_s):
        ns = self.ns
        h = ns.lambda_(t) - ns.lambda_(s)
        if self.data_prediction:
            return ns.sigma(t) / ns.sigma(s) * x - ns.alpha(t) * torch.expm1(-h) * model_s
        return torch.exp(ns.log_alpha(t) - ns.log_alpha(s)) * x - (ns.sigma(t) * torch.expm1(h)) * model_s

    def second_order(self, x, models, times, t):
        ns = self.ns
        (m1, m0), (t1, t0) = models, times
        lam1, lam0, lam_t = ns.lambda_(t1), ns.lambda_(t0), ns.lambda_(t)
        h0, h = lam0 - lam1, lam_t - lam0
        d1 = (1.0 / (h0 / h)) * (m0 - m1)
        if self.data_prediction:
            phi = torch.expm1(-h)
            a = ns.alpha(t) * phi
            return (ns.sigma(t) / ns.sigma(t0)) * x - a * m0 - 0.5 * a * d1
        phi = torch.expm1(h)
        s = ns.sigma(t) * phi
        return torch.exp(ns.log_alpha(t) - ns.log_alpha(t0)) * x - s * m0 - 0.5 * s * d1

    def sample(self, x: torch.Tensor, steps: int, order: int = 2) -> torch.Tensor:
        order = min(order, steps)
        grid = self.time_grid(steps, x.device)
        times, models = [grid[0]], [self.model(x, grid[0])]
        for step in range(1, steps + 1):
            t = grid[step]
            # The solver's published rule: lower orders only while warming up, and for the last
            # steps when there are fewer than 10 in all.
            step_order = min(order, step, steps + 1 - step) if steps < 10 else min(order, step)
            if step_order == 1:
                x = self.first_order(x, times[-1], t, models[-1])
            else:
                x = self.second_order(x, models[-2:], times[-2:], t)
            times = (times + [t])[-order:]
            if step < steps:
                models = (models + [self.model(x, t)])[-order:]
        return x


class UniPCMultistep(_ContinuousSolver):
    """Multistep UniPC with B(h) = e^h − 1 ("bh2"), data prediction, order ≤ 2."""

    def update(self, x, models, times, t, order, use_corrector):
        ns = self.ns
        t0, m0 = times[-1], models[-1]
        lam0, lam_t = ns.lambda_(t0), ns.lambda_(t)
        sigma0, sigma_t, alpha_t = ns.sigma(t0), ns.sigma(t), ns.alpha(t)
        h = lam_t - lam0
        rks, d1s = [], []
        for i in range(1, order):
            rk = (ns.lambda_(times[-(i + 1)]) - lam0) / h
            rks.append(rk.reshape(()))
            d1s.append((models[-(i + 1)] - m0) / rk)
        rks.append(torch.ones((), device=x.device))
        rks = torch.stack(rks)
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = torch.expm1(hh)
        factorial = 1
        rows, b = [], []
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        r_mat, b = torch.stack(rows), torch.cat(b)

        x_t_ = sigma_t / sigma0 * x - alpha_t * h_phi_1 * m0
        if d1s:
            d1 = torch.stack(d1s, dim=1)  # [B, K, ...]
            rhos_p = (torch.tensor([0.5], device=x.device) if order == 2
                      else torch.linalg.solve(r_mat[:-1, :-1], b[:-1]))
            pred_res = torch.einsum("k,bk...->b...", rhos_p, d1)
            x_t = x_t_ - alpha_t * b_h * pred_res
        else:
            d1 = None
            x_t = x_t_ - alpha_t * b_h * 0
        model_t = None
        if use_corrector:
            rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(r_mat, b)
            model_t = self.data(x_t, t)
            corr_res = torch.einsum("k,bk...->b...", rhos_c[:-1], d1) if d1 is not None else 0
            x_t = x_t_ - alpha_t * b_h * (corr_res + rhos_c[-1] * (model_t - m0))
        return x_t, model_t

    def sample(self, x: torch.Tensor, steps: int, order: int = 2) -> torch.Tensor:
        order = min(order, steps)
        grid = self.time_grid(steps, x.device)
        times, models = [grid[0]], [self.data(x, grid[0])]
        for step in range(1, steps + 1):
            t = grid[step]
            step_order = min(order, step, steps + 1 - step)
            x, model_x = self.update(x, models, times, t, step_order, use_corrector=step < steps)
            times = (times + [t])[-order:]
            if step < steps:
                models = (models + [model_x if model_x is not None else self.data(x, t)])[-order:]
        return x


# A continuous schedule needs two DDPM steps at least. With k_step 1 the input already sits at
# the noise level of step 0, where every sampler here ends; DDIM's single step leaves it there.
def sample_dpm_solver(diffusion, x, *, t_start, speedup, denoise, progress=None):
    if t_start < 2:
        return sample_ddim(diffusion, x, t_start=t_start, speedup=speedup, denoise=denoise, progress=progress)
    return DPMSolverMultistep(diffusion, t_start, denoise, progress, data_prediction=False).sample(
        x, _solver_steps(t_start, speedup))


def sample_dpm_solver_pp(diffusion, x, *, t_start, speedup, denoise, progress=None):
    if t_start < 2:
        return sample_ddim(diffusion, x, t_start=t_start, speedup=speedup, denoise=denoise, progress=progress)
    return DPMSolverMultistep(diffusion, t_start, denoise, progress, data_prediction=True).sample(
        x, _solver_steps(t_start, speedup))


def sample_unipc(diffusion, x, *, t_start, speedup, denoise, progress=None):
    if t_start < 2:
        return sample_ddim(diffusion, x, t_start=t_start, speedup=speedup, denoise=denoise, progress=progress)
    return UniPCMultistep(diffusion, t_start, denoise, progress).sample(x, _solver_steps(t_start, speedup))


SAMPLERS: dict[str, Sampler] = {s.name: s for s in [
    Sampler("ddpm", sample_ddpm, False, "ancestral DDPM, every step (slow; used when speedup ≤ 1)"),
    Sampler("ddim", sample_ddim, True, "DDIM"),
    Sampler("pndm", sample_pndm, True, "PNDM / PLMS"),
    Sampler("dpm-solver", sample_dpm_solver, True, "multistep DPM-Solver, order 2"),
    Sampler("dpm-solver++", sample_dpm_solver_pp, True, "multistep DPM-Solver++, order 2 (4.1 default)"),
    Sampler("unipc", sample_unipc, True, "multistep UniPC (bh2), order 2"),
]}


def get_sampler(method: str | None, speedup: int) -> Sampler:
    """The sampler 4.1 would run for ``infer.method`` / ``infer.speedup``.

    As in 4.1, ``speedup ≤ 1`` (or no method) means plain DDPM over every step.
    """
    if method is None or speedup <= 1:
        return SAMPLERS["ddpm"]
    try:
        return SAMPLERS[method]
    except KeyError:
        raise ConfigError(f"unknown diffusion sampler '{method}' (infer.method); choose one of: "
                          f"{', '.join(SAMPLERS)}") from None
