"""Precision names, native-support detection and ``auto`` (modules/precision.py; issue 25)."""

from __future__ import annotations

import warnings

import pytest
import torch

from modules import precision as P


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend the CPU has exactly the given flags (and no torch-side probe says otherwise)."""

    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(P, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(P, "_torch_cpu_check", lambda name: False)

    return set_flags


def test_auto_picks_bf16_on_a_cpu_with_native_bf16(cpu_with):
    cpu_with("avx2", "avx512f", "avx512_bf16")
    assert P.native_precisions("cpu") == ("fp32", "bf16")
    assert P.resolve_precision("auto", "cpu") == "bf16"


def test_auto_is_fp32_without_native_bf16(cpu_with):
    cpu_with("avx2", "avx512f")
    assert P.native_precisions("cpu") == ("fp32",)
    assert P.resolve_precision("auto", "cpu") == "fp32"


def test_amx_counts_as_native(cpu_with):
    cpu_with("amx_bf16", "amx_fp16")
    assert P.native_precisions("cpu") == ("fp32", "bf16", "fp16")


def test_bf16_without_native_support_warns_and_is_kept(cpu_with):
    cpu_with("avx2")
    with pytest.warns(P.PrecisionWarning, match="bf16.*slow"):
        assert P.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.warns(P.PrecisionWarning, match="fp16"):
        assert P.resolve_precision("fp16", "cpu") == "fp16"


def test_native_and_fp32_do_not_warn(cpu_with):
    cpu_with("avx512_bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.resolve_precision("bf16", "cpu") == "bf16"
        assert P.resolve_precision("fp32", "cpu") == "fp32"


def test_unknown_name_is_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="fp32, bf16, fp16, auto.*'half'"):
        P.resolve_precision("half")
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        P.precision_dtype("auto")


def test_dtypes():
    assert [P.precision_dtype(n) for n in ("fp32", "bf16", "fp16")] == [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_follows_bf16_support():
    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    assert P.resolve_precision("auto", "cuda") == expected
    assert "fp16" in P.native_precisions("cuda")
