"""Decoding only the kept frames (issue 25): ``SynthesizerTrn.decode_range`` / ``infer(decode_frames=)``
and ``Svc``'s slices, which no longer decode their padding beyond the decoder's receptive radius.

The kept samples must equal a whole-slice decode up to float rounding (rel L2 ≤ 1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth_helpers import build_mini
from vdecoder.hifigan.models import receptive_radius_frames


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def inputs(net, frames: int):
    g = torch.Generator().manual_seed(3)
    c = torch.randn(1, net.ssl_dim, frames, generator=g)
    f0 = 180 + 60 * torch.rand(1, frames, generator=g)
    return c, f0, torch.ones(1, frames), torch.LongTensor([[0]])


@pytest.mark.parametrize("vocoder", ["nsf-hifigan", "nsf-snake-hifigan"])
def test_receptive_radius_covers_the_measured_reach(vocoder):
    dec = build_mini(vocoder_name=vocoder).for_inference().dec
    T = 80
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, dec.h["inter_channels"], T, generator=g)
    f0 = torch.full((1, T), 200.0)
    spk = torch.randn(1, dec.h["gin_channels"], 1, generator=g)
    torch.manual_seed(0)
    y0 = dec(z, f0, spk)
    z[..., T // 2] += 1.0
    torch.manual_seed(0)
    y1 = dec(z, f0, spk)
    changed = ((y1 - y0).abs() > 0).flatten().nonzero().flatten()
    reach = max(T // 2 - int(changed.min()) // dec.upp, int(changed.max()) // dec.upp - T // 2)
    assert 0 < reach <= receptive_radius_frames(dec)


def test_decode_frames_gives_the_whole_decode_in_the_kept_range():
    net = build_mini().for_inference()
    T, hop = 150, net.dec.upp
    c, f0, uv, sid = inputs(net, T)
    whole = net.infer(c, f0, uv, g=sid)[0]
    part = net.infer(c, f0, uv, g=sid, decode_frames=(50, 90))[0]
    assert part.shape == whole.shape
    kept = slice(50 * hop, 90 * hop)
    assert rel_l2(part[..., kept], whole[..., kept]) <= 1e-6
    radius = receptive_radius_frames(net.dec)
    assert float(part[..., :(50 - radius) * hop].abs().max()) == 0.0  # not decoded
    assert float(part[..., (90 + radius) * hop:].abs().max()) == 0.0
    # a range reaching both ends (within the radius) is the whole decode
    torch.testing.assert_close(net.infer(c, f0, uv, g=sid, decode_frames=(3, T - 3))[0], whole, rtol=0, atol=0)


def test_snake_decoder_decodes_whole():
    net = build_mini(vocoder_name="nsf-snake-hifigan").for_inference()
    c, f0, uv, sid = inputs(net, 120)
    torch.testing.assert_close(net.infer(c, f0, uv, g=sid, decode_frames=(40, 60))[0],
                               net.infer(c, f0, uv, g=sid)[0], rtol=0, atol=0)


def test_svc_slices_skip_their_padding_with_the_same_audio(tmp_path, monkeypatch):
    from infer_helpers import build_model_set, song
    from inference.infer_tool import Svc
    from inference.options import ConversionOptions
    from models import SynthesizerTrn

    torch.set_num_threads(1)
    ms = build_model_set(tmp_path)
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(ms.pretrain))
    svc = Svc(ms.g, ms.config, device="cpu", cluster_model_path=None)
    y, _ = song()
    calls = []
    real = SynthesizerTrn.decode_range

    def counting(self, *a):
        calls.append(a[-2:])
        return real(self, *a)

    monkeypatch.setattr(SynthesizerTrn, "decode_range", counting)
    out = svc.convert(y, 44100, "bob", ConversionOptions(), progress=False)
    assert len(calls) >= 2 and all(start > 0 for start, _ in calls)  # the 0.5 s padding is skipped
    monkeypatch.setattr(SynthesizerTrn, "decode_range", lambda self, z, f0, g, a, b: self.decode(z, f0, g))
    ref = svc.convert(y, 44100, "bob", ConversionOptions(), progress=False)
    assert rel_l2(out, ref) <= 1e-6
    # loudness matching needs the whole segment: decoded whole
    calls.clear()
    monkeypatch.setattr(SynthesizerTrn, "decode_range", counting)
    svc.convert(y, 44100, "bob", ConversionOptions(loudness_envelope_adjustment=0.5), progress=False)
    assert calls == []


@pytest.mark.parametrize("conv2d", [False, True])
def test_decoder_keep_computes_only_what_the_kept_frames_need(conv2d):
    # Generator.forward(keep=(a, b)): each stage is cut to what frames [a, b) still depend on;
    # those frames equal the full decode, the rest is zero
    dec = build_mini(vocoder_name="nsf-hifigan").for_inference(conv2d=conv2d).dec
    T, upp = 90, dec.upp
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, dec.h["inter_channels"], T, generator=g)
    f0 = 150 + 100 * torch.rand(1, T, generator=g)
    spk = torch.randn(1, dec.h["gin_channels"], 1, generator=g)
    reach = dec._stage_reach()
    assert reach[0] < receptive_radius_frames(dec) and all(r > 0 for r in reach)
    cropped = []
    real = dec._crop

    def spy(x, start, a, b, rate, r):
        out, lo = real(x, start, a, b, rate, r)
        cropped.append(out.shape[-1] < x.shape[-1])
        return out, lo

    dec._crop = spy
    with torch.inference_mode():
        torch.manual_seed(0)
        ref = dec(z, f0, spk)
        for a, b in ((30, 90), (0, 40), (17, 61), (44, 45)):
            cropped.clear()
            torch.manual_seed(0)
            y = dec(z, f0, spk, keep=(a, b))
            assert y.shape == ref.shape and any(cropped)
            assert rel_l2(y[..., a * upp:b * upp], ref[..., a * upp:b * upp]) < 1e-6
            assert not y[..., :a * upp].any() and not y[..., b * upp:].any()


def test_snake_decoder_keep_decodes_whole():
    dec = build_mini(vocoder_name="nsf-snake-hifigan").for_inference().dec
    assert not dec.supports_keep
    T, upp = 40, dec.upp
    z = torch.randn(1, dec.h["inter_channels"], T)
    f0 = torch.full((1, T), 200.0)
    spk = torch.randn(1, dec.h["gin_channels"], 1)
    with torch.inference_mode():
        torch.manual_seed(0)
        ref = dec(z, f0, spk)
        torch.manual_seed(0)
        y = dec(z, f0, spk, keep=(10, 30))
    assert torch.equal(y[..., 10 * upp:30 * upp], ref[..., 10 * upp:30 * upp]) and not y[..., :10 * upp].any()
