"""Helpers for the synthesizer tests: golden data paths, the detrng patch, a draw recorder and
small random-weight model configs."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data" / "synth"

# Every torch function 4.1's synthesizer draws random numbers with (golden README, "Random draws").
_DRAW_FUNCS = [(torch, "rand"), (torch, "randn"), (torch, "rand_like"), (torch, "randn_like"),
               (torch.Tensor, "uniform_"), (torch.Tensor, "normal_")]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run a test module with one intra-op thread (restored afterwards): these models are small,
    and on a busy machine spinning OpenMP threads cost several times more than they save."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def rel_err(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def max_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@contextlib.contextmanager
def detrng():
    """Replace every random draw by its distribution's mean (golden README, "detrng")."""

    def const(value):
        def draw(*size, dtype=None, device=None, generator=None, **kwargs):
            if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
                size = tuple(size[0])
            return torch.full(size, value, dtype=dtype or torch.get_default_dtype(), device=device)
        return draw

    def const_like(value):
        return lambda x, **kwargs: torch.full_like(x, value, dtype=kwargs.get("dtype") or x.dtype)

    patch = {
        (torch, "rand"): const(0.5), (torch, "randn"): const(0.0),
        (torch, "rand_like"): const_like(0.5), (torch, "randn_like"): const_like(0.0),
        (torch.Tensor, "uniform_"): lambda self, a=0.0, b=1.0, **kw: self.fill_((a + b) / 2),
        (torch.Tensor, "normal_"): lambda self, mean=0.0, std=1.0, **kw: self.fill_(mean),
    }
    saved = {key: getattr(*key) for key in patch}
    for (owner, name), fn in patch.items():
        setattr(owner, name, fn)
    try:
        yield
    finally:
        for (owner, name), fn in saved.items():
            setattr(owner, name, fn)


@contextlib.contextmanager
def record_draws():
    """Record ``(function name, drawn tensor)`` for every draw made through the 4.1 draw functions."""
    draws: list[tuple[str, torch.Tensor]] = []
    saved = {key: getattr(*key) for key in _DRAW_FUNCS}

    def wrap(name, fn):
        def recorded(*args, **kwargs):
            out = fn(*args, **kwargs)
            draws.append((name, out.detach().clone()))
            return out
        return recorded

    for (owner, name), fn in saved.items():
        setattr(owner, name, wrap(name, fn))
    try:
        yield draws
    finally:
        for (owner, name), fn in saved.items():
            setattr(owner, name, fn)


def golden_hps():
    from modules.hparams import get_hparams_from_file

    return get_hparams_from_file(DATA / "config.json")


def build_synth(hps, **overrides):
    from models import SynthesizerTrn

    model = dict(hps.model)
    model.update(overrides)
    return SynthesizerTrn(hps.data.filter_length // 2 + 1, hps.train.segment_size // hps.data.hop_length, **model)


# A very small synthesizer (seconds to build and run) with every switch settable.
MINI_MODEL = {
    "inter_channels": 8, "hidden_channels": 8, "filter_channels": 16, "n_heads": 2, "n_layers": 2,
    "kernel_size": 3, "p_dropout": 0.1, "resblock": "1", "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "upsample_rates": [8, 8, 2, 2, 2],
    "upsample_initial_channel": 32, "upsample_kernel_sizes": [16, 16, 4, 4, 4], "n_layers_q": 3,
    "n_layers_trans_flow": 3, "n_flow_layer": 4, "use_spectral_norm": False, "gin_channels": 16,
    "ssl_dim": 16, "n_speakers": 3, "vocoder_name": "nsf-hifigan", "speech_encoder": "vec768l12",
    "speaker_embedding": False, "vol_embedding": False, "use_depthwise_conv": False,
    "flow_share_parameter": False, "use_automatic_f0_prediction": True, "use_transformer_flow": False,
}
MINI_SPEC_CHANNELS = 33
MINI_SEGMENT = 4  # frames


def build_mini(**overrides):
    from models import SynthesizerTrn

    model = copy.deepcopy(MINI_MODEL)
    model.update(overrides)
    torch.manual_seed(0)
    net = SynthesizerTrn(MINI_SPEC_CHANNELS, MINI_SEGMENT, **model)
    with torch.no_grad():  # make the zero-initialised flow outputs do something
        for name, p in net.named_parameters():
            if name.endswith(("post.weight", "post.bias")) and "flow" in name:
                p.normal_(0, 0.1)
    return net


def mini_batch(net, frames: int = 12, batch: int = 2):
    g = torch.Generator().manual_seed(5)
    c = torch.randn(batch, net.ssl_dim, frames, generator=g)
    f0 = 150 + 100 * torch.rand(batch, frames, generator=g)
    uv = (torch.rand(batch, frames, generator=g) > 0.2).float()
    spec = torch.rand(batch, net.spec_channels, frames, generator=g)
    lengths = torch.tensor([frames] + [frames - 2] * (batch - 1))
    sid = torch.randint(0, net.n_speakers, (batch, 1), generator=g)
    vol = torch.rand(batch, frames, generator=g)
    return {"c": c, "f0": f0, "uv": uv, "spec": spec, "lengths": lengths, "sid": sid, "vol": vol}
