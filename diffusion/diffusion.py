"""Gaussian diffusion over normalised log-mels (spec §8.2, 4.1 ``diffusion/diffusion.py``).

Buffers (the DDPM schedule and the mel normalisation range) have 4.1's names and values, so
they load from and save to ``model_*.pt`` unchanged. Sampling is delegated to the sampler
registry in :mod:`diffusion.samplers`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from diffusion.samplers import get_sampler

SPEC_MIN, SPEC_MAX = -12.0, 2.0  # natural-log mel range mapped to [−1, 1]
MAX_BETA = 0.02


def linear_beta_schedule(timesteps: int, max_beta: float = MAX_BETA) -> np.ndarray:
    """β_1…β_N linearly spaced from 1e-4 to ``max_beta`` (float64, as 4.1 computes it)."""
    return np.linspace(1e-4, max_beta, timesteps)


class GaussianDiffusion(nn.Module):
    """DDPM with a noise-predicting ``denoise_fn`` (the :class:`~diffusion.wavenet.WaveNet`).

    Mels are ``[B, T, M]`` (frames first) at the interface; the denoiser works on
    ``[B, 1, M, T]``. ``k_step`` is the deepest trained step count (``k_step_max``).
    """

    def __init__(self, denoise_fn: nn.Module, out_dims: int = 128, timesteps: int = 1000, k_step: int = 1000,
                 max_beta: float = MAX_BETA, spec_min: float = SPEC_MIN, spec_max: float = SPEC_MAX) -> None:
        super().__init__()
        self.denoise_fn = denoise_fn
        self.out_dims = out_dims
        betas = linear_beta_schedule(timesteps, max_beta=max_beta)
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas, axis=0)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        self.num_timesteps = int(betas.shape[0])
        self.k_step = k_step if 0 < k_step < self.num_timesteps else self.num_timesteps

        def buf(name: str, value: np.ndarray) -> None:
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32))

        buf("betas", betas)
        buf("alphas_cumprod", alphas_cumprod)
        buf("alphas_cumprod_prev", alphas_cumprod_prev)
        buf("sqrt_alphas_cumprod", np.sqrt(alphas_cumprod))
        buf("sqrt_one_minus_alphas_cumprod", np.sqrt(1.0 - alphas_cumprod))
        buf("log_one_minus_alphas_cumprod", np.log(1.0 - alphas_cumprod))
        buf("sqrt_recip_alphas_cumprod", np.sqrt(1.0 / alphas_cumprod))
        buf("sqrt_recipm1_alphas_cumprod", np.sqrt(1.0 / alphas_cumprod - 1))
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        buf("posterior_variance", posterior_variance)
        # Clipped because the posterior variance is 0 at the start of the chain.
        buf("posterior_log_variance_clipped", np.log(np.maximum(posterior_variance, 1e-20)))
        buf("posterior_mean_coef1", betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod))
        buf("posterior_mean_coef2", (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod))
        self.register_buffer("spec_min", torch.FloatTensor([spec_min])[None, None, :out_dims])
        self.register_buffer("spec_max", torch.FloatTensor([spec_max])[None, None, :out_dims])

    # --- normalisation ------------------------------------------------------------------------
    def norm_spec(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.spec_min) / (self.spec_max - self.spec_min) * 2 - 1

    def denorm_spec(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2 * (self.spec_max - self.spec_min) + self.spec_min

    # --- forward process ----------------------------------------------------------------------
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε for step indices ``t [B]`` (draws ε if not given)."""
        if noise is None:
            noise = torch.randn_like(x_start)
        shape = (t.shape[0],) + (1,) * (x_start.dim() - 1)
        return (self.sqrt_alphas_cumprod.gather(-1, t).reshape(shape) * x_start
                + self.sqrt_one_minus_alphas_cumprod.gather(-1, t).reshape(shape) * noise)

    def training_loss(self, gt_spec: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """MSE between drawn and predicted noise at t ~ U{0 … k_step−1} (spec §8.2).

        ``gt_spec [B, T, M]`` natural-log mel, ``cond [B, H, T]``. Draws t, then ε (4.1's order).
        """
        b = cond.shape[0]
        t = torch.randint(0, self.k_step, (b,), device=cond.device).long()
        x_start = self.norm_spec(gt_spec).transpose(1, 2)[:, None, :, :]
        noise = torch.randn_like(x_start)
        x_noisy = self.q_sample(x_start, t, noise)
        return F.mse_loss(noise, self.denoise_fn(x_noisy, t, cond))

    # --- reverse process ----------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, cond: torch.Tensor, *, gt_spec: torch.Tensor | None = None, k_step: int | None = None,
               method: str | None = "dpm-solver++", speedup: int = 10, use_tqdm: bool = True) -> torch.Tensor:
        """Denoise to a mel ``[B, T, M]`` for ``cond [B, H, T]``.

        Shallow (``gt_spec`` given): start from ``gt_spec`` noised at index ``k_step − 1``.
        Full (no ``gt_spec``): start from N(0, I) at ``k_step_max``.
        """
        b, _, frames = cond.shape
        if gt_spec is None or k_step is None:
            t_start = self.k_step
            x = torch.randn((b, 1, self.out_dims, frames), device=cond.device)
        else:
            t_start = int(k_step)
            if not 0 < t_start <= self.num_timesteps:
                raise ValueError(f"k_step must be in 1…{self.num_timesteps}, got {t_start}")
            x_start = self.norm_spec(gt_spec).transpose(1, 2)[:, None, :, :]
            x = self.q_sample(x_start, torch.tensor([t_start - 1], device=cond.device).long())
        sampler = get_sampler(method, speedup)
        projected = self.denoise_fn.project_condition(cond)  # once per run, not per step

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.denoise_fn(x_t, t, cond, projected)

        with tqdm(total=sampler.num_steps(t_start, speedup), desc="sample time step", disable=not use_tqdm,
                  leave=False) as bar:
            x = sampler.run(self, x, t_start=t_start, speedup=speedup, denoise=denoise, progress=bar)
        return self.denorm_spec(x.squeeze(1).transpose(1, 2))

    def forward(self, condition: torch.Tensor, gt_spec: torch.Tensor | None = None, infer: bool = True,
                infer_speedup: int = 10, method: str = "dpm-solver", k_step: int | None = 300,
                use_tqdm: bool = True) -> torch.Tensor:
        """4.1's entry point: ``condition [B, T, H]``; training loss if not ``infer``, else a mel."""
        cond = condition.transpose(1, 2)
        if not infer:
            return self.training_loss(gt_spec, cond)
        return self.sample(cond, gt_spec=gt_spec, k_step=k_step, method=method, speedup=infer_speedup,
                           use_tqdm=use_tqdm)
