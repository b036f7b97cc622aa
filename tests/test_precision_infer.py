"""The ``precision`` option end to end (issue 25): the inference-ready synthesizer's precision,
Svc conversions in bf16 next to fp32, the warning for non-native hardware, the realtime setting.

bfloat16 runs on every CPU (emulated where AVX512-BF16/AMX is missing, which is only slower), so
these run everywhere; the GPU paths (CUDA fp16 / bf16) are behind the CUDA skip at the end.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from infer_helpers import models_in_use, voice
from inference.infer_tool import Svc
from inference.options import ConversionOptions, OptionError
from modules.errors import SvcError

SR = 44100


def snr_db(y: np.ndarray, ref: np.ndarray) -> float:
    err = float(np.linalg.norm(np.asarray(y, np.float64) - ref))
    return math.inf if err == 0 else 20 * math.log10(float(np.linalg.norm(ref)) / err)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with models_in_use(tmp_path_factory.mktemp("precision_models")) as ms:
        yield ms


@pytest.fixture(scope="module")
def svc(models):
    return Svc(models.g, models.config, device="cpu", cluster_model_path=None)


@pytest.fixture(scope="module")
def clip():
    return voice(1.2, SR, 220.0, seed=3)


def test_inference_ready_model_carries_its_precision(svc):
    from synth_helpers import build_mini

    net = build_mini()
    fp32 = net.for_inference()
    assert fp32.precision == "fp32"
    bf16 = net.for_inference(precision="bf16")
    assert bf16.precision == "bf16" and bf16.pre.weight.dtype == torch.bfloat16
    assert net.pre.weight.dtype == torch.float32 and fp32.pre.weight.dtype == torch.float32  # sources unchanged
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        net.for_inference(precision="auto")
    with pytest.raises(ValueError, match="contradicts"):
        net.for_inference(precision="bf16", dtype=torch.float16)
    # fp32 as a precision is exactly the default path
    g = torch.Generator().manual_seed(0)
    c, f0 = torch.randn(1, net.ssl_dim, 40, generator=g), torch.full((1, 40), 220.0)
    uv, sid = torch.ones(1, 40), torch.LongTensor([[0]])
    a = fp32.infer(c, f0, uv, g=sid)[0]
    b = net.for_inference(precision="fp32").infer(c, f0, uv, g=sid)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    y = bf16.infer(c, f0, uv, g=sid)[0]
    assert y.dtype == torch.float32
    assert snr_db(y.numpy(), a.numpy()) > 20


def test_bf16_conversion_is_close_to_fp32_and_leaves_fp32_unchanged(svc, clip):
    ref = svc.convert(clip, SR, "bob", ConversionOptions(), progress=False)
    out = svc.convert(clip, SR, "bob", ConversionOptions(precision="bf16"), progress=False)
    assert out.shape == ref.shape and np.isfinite(out).all()
    assert not np.array_equal(out, ref)
    assert snr_db(out, ref) > 15, snr_db(out, ref)
    assert svc.model_for("bf16").precision == "bf16" and svc.model_for("bf16") is svc.model_for("bf16")
    assert svc.model_for("fp32") is svc.net_g_ms and svc.net_g_ms.precision == "fp32"
    # an fp32 conversion after a bf16 one is the same as before, bit for bit
    np.testing.assert_array_equal(svc.convert(clip, SR, "bob", ConversionOptions(precision="fp32"), progress=False),
                                  ref)


def test_auto_and_the_warning_for_non_native_hardware(svc, monkeypatch, caplog):
    import modules.precision as P

    monkeypatch.setattr(P, "native_precisions", lambda device="cpu": ("fp32",))
    assert svc.resolve_precision("auto") == "fp32"
    svc._precision_warned.discard("bf16")
    with caplog.at_level(logging.WARNING):
        assert svc.resolve_precision("bf16") == "bf16"
        svc.resolve_precision("bf16")
    slow = [r for r in caplog.records if "slow" in r.getMessage()]
    assert len(slow) == 1 and "bf16" in slow[0].getMessage()  # once, not per slice
    monkeypatch.setattr(P, "native_precisions", lambda device="cpu": ("fp32", "bf16"))
    assert svc.resolve_precision("auto") == "bf16"


def test_option_is_checked_and_half_excludes_it(models):
    with pytest.raises(OptionError, match=r"precision \(--precision\) must be one of fp32, bf16, fp16, auto"):
        ConversionOptions(precision="half")
    assert ConversionOptions.from_mapping({"precision": "bf16"}).precision == "bf16"
    s = Svc(models.g, models.config, device="cpu", cluster_model_path=None)
    s.half = True  # as --half would on CUDA (CPU refuses --half itself)
    with pytest.raises(SvcError, match="--half"):
        s.resolve_precision("bf16")


def test_cli_has_the_precision_flag():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "inference_main.py", "--help"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0 and "--precision" in out.stdout


def test_realtime_engine_in_bf16(svc):
    from inference.realtime import RealtimeConverter, RealtimeSettings

    with pytest.raises(Exception, match="precision"):
        RealtimeSettings(precision="fast").validate()
    y = voice(1.5, SR, 220.0, seed=5)
    outs = {}
    for p in ("fp32", "bf16"):
        conv = RealtimeConverter(svc, RealtimeSettings(block_time=0.3, f0_predictor="pm", precision=p))
        assert conv.engine.net.precision == p
        B = conv.block_size
        outs[p] = np.concatenate([conv.process(y[i:i + B]) for i in range(0, len(y) - B + 1, B)])
    assert np.isfinite(outs["bf16"]).all() and np.abs(outs["fp32"]).max() > 1e-3
    assert snr_db(outs["bf16"], outs["fp32"]) > 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU paths are untested without one)")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_reduced_precision(models, clip, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    s = Svc(models.g, models.config, device="cuda", cluster_model_path=None)
    ref = s.convert(clip, SR, "bob", ConversionOptions(), progress=False)
    out = s.convert(clip, SR, "bob", ConversionOptions(precision=precision), progress=False)
    assert s.model_for(precision).precision == precision
    assert np.isfinite(out).all() and snr_db(out, ref) > 15
