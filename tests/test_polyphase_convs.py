"""Strided convolutions of the inference layout in polyphase form (issue 25, ``Conv1dAs2d``).

oneDNN's strided kernels cost far more to *create* for a new input length than to run on a
short one, so the inference copies run the decoder's upsampling (transposed, stride ``u``) and
source-downsampling (one input channel, stride ``s``) convolutions as stride-1 convolutions on
rearranged weights. The results must equal the 1-D modules up to float summation order.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules.modules import Conv1dAs2d, convs_to_2d
from synth_helpers import build_mini

CL = torch.channels_last


def as_2d(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(2).contiguous(memory_format=CL)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("cin,cout,k,u,pad", [
    (512, 256, 16, 8, 4),   # 4.1's first upsampling (44.1 kHz config)
    (64, 32, 4, 2, 1),      # its later stages
    (8, 4, 6, 3, 2),        # any kernel that is a multiple of the stride
    (8, 4, 10, 5, 0),
])
@pytest.mark.parametrize("length", [1, 2, 9, 130])
def test_transposed_polyphase_equals_conv_transpose1d(cin, cout, k, u, pad, length):
    torch.manual_seed(0)
    conv = nn.ConvTranspose1d(cin, cout, k, u, padding=pad).eval()
    poly = Conv1dAs2d(conv)
    assert poly.mode == "transposed"
    x = torch.randn(2, cin, length)
    with torch.no_grad():
        ref = conv(x)
        y = poly(as_2d(x))
    assert y.is_contiguous(memory_format=CL)
    assert y.squeeze(2).shape == ref.shape
    assert rel(y.squeeze(2), ref) < 1e-6


@pytest.mark.parametrize("cout,k,s,pad", [
    (256, 128, 64, 32),     # 4.1's source downsampling, (s + 1) // 2 padding
    (128, 16, 8, 4),
    (32, 4, 2, 1),
    (16, 16, 8, 8),         # nsf_hifigan vocoder: padding s // 2 ... or any other
    (16, 5, 3, 2),          # kernel not a multiple of the stride
    (16, 4, 2, 0),
])
@pytest.mark.parametrize("length", [1, 3, 64, 1000])
def test_strided_polyphase_equals_conv1d(cout, k, s, pad, length):
    torch.manual_seed(1)
    conv = nn.Conv1d(1, cout, k, s, padding=pad).eval()
    poly = Conv1dAs2d(conv)
    assert poly.mode == "strided"
    samples = length * s + 3  # not a whole number of strides
    if samples + 2 * pad < k:
        pytest.skip("input shorter than the kernel")
    x = torch.randn(2, 1, samples)
    with torch.no_grad():
        ref = conv(x)
        y = poly(as_2d(x))
    assert y.squeeze(2).shape == ref.shape
    assert rel(y.squeeze(2), ref) < 1e-6


def test_other_convolutions_stay_plain():
    for conv in (nn.Conv1d(4, 4, 3, 1, padding=1), nn.Conv1d(4, 4, 3, 2),           # stride 1 / several inputs
                 nn.Conv1d(1, 4, 3, 2, dilation=2), nn.ConvTranspose1d(4, 4, 7, 3),  # dilated / k not a multiple
                 nn.ConvTranspose1d(4, 4, 4, 2, groups=2), nn.ConvTranspose1d(4, 4, 4, 2, output_padding=1)):
        assert Conv1dAs2d(conv).mode == "plain"
    assert Conv1dAs2d(nn.ConvTranspose1d(4, 4, 4, 2), polyphase=False).mode == "plain"


def test_inference_decoder_uses_polyphase_and_matches_the_1d_decoder():
    # (the snake variant has no 2-D layout: supports_conv2d is False)
    net = build_mini(vocoder_name="nsf-hifigan")
    dec = net.for_inference(conv2d=True).dec
    modes = {m.mode for m in dec.modules() if isinstance(m, Conv1dAs2d)}
    assert {"transposed", "strided"} <= modes
    plain = net.for_inference(conv2d=False).dec
    T = 37
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, dec.h["inter_channels"], T, generator=g)
    f0 = 150 + 100 * torch.rand(1, T, generator=g)
    spk = torch.randn(1, dec.h["gin_channels"], 1, generator=g)
    with torch.inference_mode():
        torch.manual_seed(0)
        ref = plain(z, f0, spk)
        torch.manual_seed(0)
        y = dec(z, f0, spk)
    assert y.shape == ref.shape
    assert rel(y, ref) < 1e-5


def test_convs_to_2d_converts_in_polyphase_form():
    root = nn.Sequential(nn.ConvTranspose1d(4, 2, 4, 2, padding=1), nn.Conv1d(1, 3, 4, 2, padding=1))
    convs_to_2d(root)
    assert [m.mode for m in root] == ["transposed", "strided"]
