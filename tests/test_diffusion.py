"""Shallow diffusion (diffusion/): golden reproduction, samplers, speaker mix, loading rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from diffusion.diffusion import GaussianDiffusion
from diffusion.samplers import SAMPLERS, get_sampler
from diffusion.unit2mel import Unit2Mel, load_model_vocoder
from diffusion_helpers import DIFFUSION_DIR, GOLDEN_DIR, VOCODER_DIR, close, detrng, single_thread
from modules.commons import repeat_expand_2d
from modules.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


def _golden_config(tmp_path, **model_overrides):
    cfg = yaml.safe_load((DIFFUSION_DIR / "config.yaml").read_text())
    cfg["vocoder"]["ckpt"] = str(VOCODER_DIR / "model")  # the golden file names a path relative to its folder
    cfg["model"].update(model_overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def golden_model(tmp_path_factory):
    cfg = _golden_config(tmp_path_factory.mktemp("cfg"))
    model, vocoder, args = load_model_vocoder(DIFFUSION_DIR / "model_0.pt", "cpu", config_path=cfg)
    return model


@pytest.fixture(scope="module")
def inputs():
    gold = np.load(DIFFUSION_DIR / "shallow_k100.npz")
    units = torch.from_numpy(np.load(DIFFUSION_DIR / "units_768.npy"))
    c = repeat_expand_2d(units, 256, "nearest")[None].transpose(1, 2)  # [1, 256, 768]
    f0 = torch.from_numpy(np.load(GOLDEN_DIR / "pm_f0.npy")).float()[None, :, None]
    return dict(units=c, f0=f0, volume=torch.from_numpy(gold["vol"]), gt=torch.from_numpy(gold["gt_mel"]))


def _shallow(model, inp, **kw):
    args = dict(spk_id=torch.tensor([[1]]), gt_spec=inp["gt"], infer=True, infer_speedup=10, method="dpm-solver++",
                k_step=100, use_tqdm=False)
    args.update(kw)
    return model(inp["units"], inp["f0"], inp["volume"], **args)


# --- golden ------------------------------------------------------------------------------------
def test_checkpoint_loads_strictly_with_4_1_keys(golden_model):
    sd = torch.load(DIFFUSION_DIR / "model_0.pt", weights_only=True)["model"]
    assert list(golden_model.state_dict()) == list(sd)
    assert golden_model.n_spk == 2 and golden_model.k_step_max == 1000 and not golden_model.training


def test_seeded_q_sample_draw_is_the_recorded_one():
    rec = np.load(DIFFUSION_DIR / "shallow_k100_rng_head.npz")["randn_head"]
    torch.manual_seed(52468)
    assert np.array_equal(torch.randn_like(torch.zeros(1, 1, 128, 256))[..., :16].numpy(), rec)


def test_shallow_k100_dpm_solver_pp_matches_golden(golden_model, inputs):
    torch.manual_seed(52468)
    mel = _shallow(golden_model, inputs)
    close(mel, np.load(DIFFUSION_DIR / "shallow_k100.npz")["mel"], rel=1e-6, max_abs=1e-4)


def test_shallow_k100_detrng_matches_golden(golden_model, inputs):
    with detrng():
        mel = _shallow(golden_model, inputs)
    close(mel, np.load(DIFFUSION_DIR / "shallow_k100_detrng.npz")["mel"], rel=1e-6, max_abs=1e-4)


# --- samplers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(SAMPLERS))
@pytest.mark.parametrize("k_step", [100, 10, 5, 1])
def test_every_sampler_runs_with_any_k_step(golden_model, inputs, method, k_step):
    """Includes k_step ≤ speedup, where 4.1's PNDM crashed and DPM-Solver/UniPC asserted."""
    torch.manual_seed(0)
    mel = _shallow(golden_model, inputs, method=method, k_step=k_step, infer_speedup=1 if method == "ddpm" else 10)
    assert mel.shape == (1, 256, 128) and torch.isfinite(mel).all()


def test_full_diffusion_without_gt(golden_model, inputs):
    torch.manual_seed(0)
    mel = _shallow(golden_model, inputs, gt_spec=None, infer_speedup=100, method="unipc")
    assert mel.shape == (1, 256, 128) and torch.isfinite(mel).all()


class AnalyticDenoiser(torch.nn.Module):
    """The exact ε-predictor for data that is a single point x0: ε = (x_t − α_t·x0)/σ_t.

    α_t at a fractional step comes from the same piecewise-linear log α the continuous-time
    solvers use, so every deterministic sampler must land exactly on α_0·x0 + σ_0·ε_init.
    """

    def __init__(self, x0: torch.Tensor, betas: torch.Tensor) -> None:
        super().__init__()
        self.x0 = x0
        self.log_alpha = 0.5 * torch.log(1 - betas.double()).cumsum(0)
        self.calls = 0

    def project_condition(self, cond):
        return None

    def forward(self, x, t, cond, projected=None):
        self.calls += 1
        t = t.double().reshape(-1)[:1]
        i0 = t.floor().clamp(0, len(self.log_alpha) - 2).long()
        la = self.log_alpha[i0] + (t - i0) * (self.log_alpha[i0 + 1] - self.log_alpha[i0])
        alpha, sigma = la.exp(), (1 - (2 * la).exp()).sqrt()
        return ((x.double() - alpha * self.x0.double()) / sigma).float()


@pytest.mark.parametrize("method,k_step,speedup", [
    ("ddim", 91, 10), ("pndm", 91, 10), ("pndm", 61, 20), ("dpm-solver", 100, 10), ("dpm-solver++", 100, 10),
    ("unipc", 100, 10), ("dpm-solver++", 100, 7), ("unipc", 300, 30), ("dpm-solver", 30, 20),
])
def test_deterministic_samplers_follow_the_exact_trajectory(method, k_step, speedup):
    torch.manual_seed(3)
    x0 = torch.rand(1, 1, 16, 12) * 1.6 - 0.8
    den = AnalyticDenoiser(x0, GaussianDiffusion(torch.nn.Identity(), out_dims=16).betas)
    diff = GaussianDiffusion(den, out_dims=16)
    torch.manual_seed(5)
    gt = diff.denorm_spec(x0.squeeze(1).transpose(1, 2))
    torch.manual_seed(5)
    expected_start_noise = torch.randn_like(x0)  # the draw q_sample will make
    torch.manual_seed(5)
    out = diff.sample(torch.zeros(1, 1, 12), gt_spec=gt, k_step=k_step, method=method, speedup=speedup, use_tqdm=False)
    a0 = diff.sqrt_alphas_cumprod[0]
    expected = a0 * x0 + (1 - a0**2).sqrt() * expected_start_noise  # ends at the noise level of step 0
    close(diff.norm_spec(out).transpose(1, 2)[:, None], expected.numpy(), rel=2e-4, max_abs=2e-4)
    assert den.calls == get_sampler(method, speedup).num_steps(k_step, speedup)


class GaussianDataDenoiser(AnalyticDenoiser):
    """The exact ε-predictor for Gaussian data x0 ~ N(μ, s²) (element-wise).

    Along the probability-flow ODE z = (x_t − α_t μ) / √(α_t² s² + σ_t²) stays constant, so the
    exact end point of any deterministic sampler is known in closed form.
    """

    def __init__(self, mu: torch.Tensor, s: float, betas: torch.Tensor) -> None:
        super().__init__(mu, betas)
        self.s = s

    def forward(self, x, t, cond, projected=None):
        self.calls += 1
        t = t.double().reshape(-1)[:1]
        i0 = t.floor().clamp(0, len(self.log_alpha) - 2).long()
        la = self.log_alpha[i0] + (t - i0) * (self.log_alpha[i0 + 1] - self.log_alpha[i0])
        a = la.exp()
        var = 1 - a * a
        x = x.double()
        x0_mean = self.x0.double() + a * self.s**2 / (a * a * self.s**2 + var) * (x - a * self.x0.double())
        return ((x - a * x0_mean) / var.sqrt()).float()


@pytest.mark.parametrize("method,first_order", [("ddim", True), ("pndm", False), ("dpm-solver", False),
                                                ("dpm-solver++", False), ("unipc", False)])
def test_samplers_converge_to_the_exact_ode_solution(method, first_order):
    torch.manual_seed(0)
    mu, s = torch.rand(1, 1, 16, 12) * 1.2 - 0.6, 0.3
    diff = GaussianDiffusion(GaussianDataDenoiser(mu, s, GaussianDiffusion(torch.nn.Identity(), out_dims=16).betas),
                             out_dims=16)
    k_step = 201 if method in ("ddim", "pndm") else 200  # their grid then starts at the noised index
    log_alpha = 0.5 * torch.log(1 - diff.betas.double()).cumsum(0)
    a_t, a_0 = log_alpha[k_step - 1].exp(), log_alpha[0].exp()
    errors = []
    for speedup in (10, 2):
        torch.manual_seed(1)
        x_t = diff.q_sample(mu, torch.tensor([k_step - 1]))
        z = (x_t.double() - a_t * mu) / (a_t**2 * s**2 + 1 - a_t**2).sqrt()
        exact = a_0 * mu + (a_0**2 * s**2 + 1 - a_0**2).sqrt() * z
        torch.manual_seed(1)  # the same draw inside sample()
        out = diff.sample(torch.zeros(1, 1, 12), gt_spec=diff.denorm_spec(mu.squeeze(1).transpose(1, 2)),
                          k_step=k_step, method=method, speedup=speedup, use_tqdm=False)
        errors.append(float((diff.norm_spec(out).transpose(1, 2)[:, None].double() - exact).abs().max()))
    coarse, fine = errors
    assert coarse < 5e-2 and fine < (1.5e-2 if first_order else 1.5e-3), errors
    assert coarse / fine > 4, errors  # 5× the steps: ≥ 5× (first order) or far more (higher order)


def test_ddpm_recovers_the_clean_point():
    torch.manual_seed(3)
    x0 = torch.rand(1, 1, 16, 12) * 1.6 - 0.8
    diff = GaussianDiffusion(AnalyticDenoiser(x0, GaussianDiffusion(torch.nn.Identity(), out_dims=16).betas), out_dims=16)
    out = diff.sample(torch.zeros(1, 1, 12), gt_spec=diff.denorm_spec(x0.squeeze(1).transpose(1, 2)), k_step=40,
                      method="ddpm", speedup=1, use_tqdm=False)
    close(diff.norm_spec(out).transpose(1, 2)[:, None], x0.numpy(), rel=1e-4, max_abs=1e-4)


def test_sampler_registry_rejects_unknown_names():
    assert set(SAMPLERS) >= {"ddim", "pndm", "dpm-solver", "dpm-solver++", "unipc"}
    assert get_sampler("pndm", 1).name == "ddpm"  # speedup ≤ 1 is plain DDPM, as in 4.1
    with pytest.raises(ConfigError, match="unknown diffusion sampler 'euler'"):
        get_sampler("euler", 10)


# --- speaker mix -------------------------------------------------------------------------------------
def test_speaker_mix_dict_and_per_frame_weights(golden_model, inputs):
    u, f0, vol = inputs["units"], inputs["f0"], inputs["volume"]
    c0 = golden_model.condition(u, f0, vol, spk_id=torch.tensor([[0]]))
    c1 = golden_model.condition(u, f0, vol, spk_id=torch.tensor([[1]]))
    half = golden_model.condition(u, f0, vol, spk_mix_dict={0: 0.5, 1: 0.5})
    assert torch.allclose(half, (c0 + c1) / 2, atol=1e-5)
    ramp = torch.linspace(0, 1, 256)[:, None]
    weights = torch.cat([1 - ramp, ramp], dim=1)  # [T, n_spk], 4.1's -usm layout
    mixed = golden_model.condition(u, f0, vol, spk_id=weights)
    assert torch.allclose(mixed[:, 0], c0[:, 0], atol=1e-5) and torch.allclose(mixed[:, -1], c1[:, -1], atol=1e-5)
    assert torch.allclose(mixed[:, 128], (1 - ramp[128]) * c0[:, 128] + ramp[128] * c1[:, 128], atol=1e-5)
    golden_model.init_spkmix(2)  # crashed in 4.1
    torch.manual_seed(0)
    mel = _shallow(golden_model, inputs, spk_id=weights, k_step=20)
    assert mel.shape == (1, 256, 128) and torch.isfinite(mel).all()


def test_speaker_id_out_of_range(golden_model, inputs):
    with pytest.raises(ValueError, match="outside 0…1"):
        golden_model.condition(inputs["units"], inputs["f0"], inputs["volume"], spk_id=torch.tensor([[2]]))


# --- limits and loading -------------------------------------------------------------------------------
def test_k_step_limits():
    torch.manual_seed(0)
    model = Unit2Mel(8, 1, True, 16, 1, 8, 8, 1000, 100).eval()
    u, f0, vol = torch.randn(1, 5, 8), torch.full((1, 5, 1), 200.0), torch.rand(1, 5, 1)
    gt = torch.randn(1, 5, 16) - 5
    with pytest.raises(ValueError, match="greater than this model's k_step_max 100"):
        model(u, f0, vol, gt_spec=gt, k_step=101, use_tqdm=False)
    with pytest.raises(ValueError, match="only be used for shallow diffusion"):
        model(u, f0, vol, gt_spec=None, use_tqdm=False)
    assert model(u, f0, vol, gt_spec=gt, k_step=100, method="ddim", use_tqdm=False).shape == (1, 5, 16)


def test_loading_is_strict(tmp_path):
    ckpt = torch.load(DIFFUSION_DIR / "model_0.pt", weights_only=True)
    ckpt["model"]["extra.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "model_1.pt")
    cfg = _golden_config(tmp_path)
    with pytest.raises(CheckpointError, match="extra.weight"):
        load_model_vocoder(tmp_path / "model_1.pt", "cpu", config_path=cfg)
    cfg = _golden_config(tmp_path, n_spk=1)  # config without the speaker table
    with pytest.raises(CheckpointError, match="spk_embed.weight"):
        load_model_vocoder(DIFFUSION_DIR / "model_0.pt", "cpu", config_path=cfg)


def test_loading_a_non_diffusion_file(tmp_path):
    torch.save({"generator": {}}, tmp_path / "model_0.pt")
    with pytest.raises(CheckpointError, match="not a diffusion model checkpoint"):
        load_model_vocoder(tmp_path / "model_0.pt", "cpu", config_path=_golden_config(tmp_path))


def test_schedule_buffers_match_the_file():
    sd = torch.load(DIFFUSION_DIR / "model_0.pt", weights_only=True)["model"]
    fresh = Unit2Mel(768, 2, True, 128, 2, 64, 64, 1000, 0).state_dict()
    for k in [k for k in sd if k.startswith("decoder.") and "denoise_fn" not in k]:
        assert torch.equal(fresh[k], sd[k]), k
    assert math.isclose(float(sd["decoder.spec_min"]), -12) and math.isclose(float(sd["decoder.spec_max"]), 2)
