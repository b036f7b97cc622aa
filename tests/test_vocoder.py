"""Standalone NSF-HiFiGAN vocoder (vdecoder/nsf_hifigan) against the golden data of 4.1."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from diffusion_helpers import VOCODER_DIR, close, detrng, golden_clip, single_thread, write_tiny_vocoder
from modules.errors import CheckpointError, ConfigError, MissingPretrainedError
from vdecoder.nsf_hifigan import Generator, clear_cache, load_config, load_model
from vdecoder.registry import VOCODERS, get_vocoder_spec
from vdecoder.vocoder import Vocoder

MODEL = VOCODER_DIR / "model"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def vocoder():
    return Vocoder("nsf-hifigan", MODEL, device="cpu")


@pytest.fixture(scope="module")
def gold():
    return np.load(VOCODER_DIR / "vocode.npz")


def test_checkpoint_keys_are_the_published_layout():
    sd = torch.load(MODEL, weights_only=True)["generator"]
    assert len(sd) == 303
    fresh = Generator(load_config(MODEL)).state_dict()
    # Same names (legacy weight_g / weight_v), same order, same shapes: files are interchangeable.
    assert list(fresh) == list(sd)
    assert all(fresh[k].shape == sd[k].shape for k in sd)
    assert "conv_pre.weight_g" in fresh and "resblocks.14.convs2.2.weight_v" in fresh


def test_loaded_model_is_folded_and_frozen():
    gen, h = load_model(MODEL)
    assert h.upsample_initial_channel == 64 and h.num_mels == 128 and h.hop_size == 512
    keys = list(gen.state_dict())
    assert gen.conv2d and "conv_pre.weight" in keys and not any("weight_g" in k or "original0" in k for k in keys)
    assert gen.conv_pre.weight.dim() == 4  # channels-last 2-D convolutions for inference
    assert not gen.training and not any(p.requires_grad for p in gen.parameters())
    assert load_model(MODEL)[0] is gen  # loaded once per process


def test_mel_extraction_matches_golden(vocoder, gold):
    mel = vocoder.extract(golden_clip(), 44100)
    assert mel.shape == (1, 256, 128)
    close(mel, gold["mel"], rel=5e-6, max_abs=5e-4)  # FFT rounding differs from the golden machine


def test_seeded_draws_are_the_recorded_ones():
    rec = np.load(VOCODER_DIR / "vocode_rng_head.npz")
    torch.manual_seed(52468)
    assert np.array_equal(torch.rand(1, 9).numpy(), rec["rand"])
    assert np.array_equal(torch.randn(1, 131072, 9)[:, :256].numpy(), rec["randn_head"])


def test_vocode_matches_golden_recorded_rng(vocoder, gold):
    vocoder.model  # load first: loading must not consume draws either
    torch.manual_seed(52468)
    audio = vocoder.infer(torch.from_numpy(gold["mel"]), torch.from_numpy(gold["f0"]))
    assert audio.shape == (1, 1, 131072)
    close(audio, gold["audio"], rel=1e-5, max_abs=1e-5)


def test_vocode_matches_golden_detrng(vocoder, gold):
    with detrng():
        audio = vocoder.infer(torch.from_numpy(gold["mel"]), torch.from_numpy(gold["f0"]))
    close(audio, np.load(VOCODER_DIR / "vocode_detrng.npz")["audio"], rel=1e-5, max_abs=1e-5)


def test_noise_differs_voiced_unvoiced(vocoder, gold):
    """The source adds noise of std 0.003 in voiced and 0.1/3 in unvoiced frames."""
    sine = vocoder.model.m_source.l_sin_gen
    f0 = torch.tensor([[200.0] * 4 + [0.0] * 4])
    with detrng():
        clean = sine(f0, 512)
    torch.manual_seed(0)
    noisy = sine(f0, 512)
    diff = (noisy - clean)[0, :, 0]  # the fundamental: its initial phase is 0 in both runs
    voiced, unvoiced = diff[: 4 * 512], diff[4 * 512:]
    assert 0.002 < float(voiced.std()) < 0.004
    assert 0.028 < float(unvoiced.std()) < 0.039
    assert float(clean[0, 4 * 512:].abs().max()) == 0.0  # unvoiced: no sine


def test_loading_does_not_move_the_global_rng(tmp_path):
    path = write_tiny_vocoder(tmp_path / "v")
    state = torch.random.get_rng_state()
    load_model(path)
    assert torch.equal(state, torch.random.get_rng_state())


def test_log10_variant_scales_the_mel(gold):
    mel, f0 = torch.from_numpy(gold["mel"])[:, :40], torch.from_numpy(gold["f0"])[:, :40]
    log10 = Vocoder("nsf-hifigan-log10", MODEL, device="cpu")
    plain = Vocoder("nsf-hifigan", MODEL, device="cpu")
    with detrng():
        a = log10.infer(mel, f0)
        b = plain.infer(0.434294 * mel, f0)
        c = plain.infer(mel, f0)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_extract_resamples_other_rates(vocoder):
    y = golden_clip()[:, :44100]
    y22 = torch.from_numpy(np.interp(np.arange(22050) * 2.0, np.arange(44100), y[0].numpy()).astype(np.float32))[None]
    mel = vocoder.extract(y22, 22050)
    assert mel.shape == (1, 44100 // 512, 128)
    # 4.1 resampled with torchaudio's Resample(lowpass_filter_width=128)
    from modules.audio import sinc_resample

    assert torch.equal(mel, vocoder.extract(sinc_resample(y22, 22050, 44100, lowpass_filter_width=128), 44100))
    ref = vocoder.extract(y, 44100)
    assert float((mel - ref)[:, 2:-2, :80].abs().mean()) < 0.3  # same content below ~8 kHz


def test_infer_rejects_short_f0(vocoder, gold):
    with pytest.raises(ValueError, match="f0 has 10 frames"):
        vocoder.infer(torch.from_numpy(gold["mel"])[:, :20], torch.from_numpy(gold["f0"])[:, :10])


def test_registry_lists_both_types_and_rejects_unknown():
    assert set(VOCODERS) == {"nsf-hifigan", "nsf-hifigan-log10"}
    assert get_vocoder_spec("nsf-hifigan-log10").mel_scale == pytest.approx(0.434294)
    with pytest.raises(ConfigError, match="nsf-hifigan, nsf-hifigan-log10"):
        Vocoder("hifigan-bogus", MODEL)


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(MissingPretrainedError, match="openvpi/vocoders"):
        Vocoder("nsf-hifigan", tmp_path / "nope" / "model")
    d = tmp_path / "noconfig"
    d.mkdir()
    shutil.copy(MODEL, d / "model")
    with pytest.raises(ConfigError, match="config.json is missing"):
        Vocoder("nsf-hifigan", d / "model")


def test_bad_config_and_checkpoint_are_refused(tmp_path):
    d = tmp_path / "v"
    path = write_tiny_vocoder(d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["hop_size"] = 256
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="must equal hop_size"):
        load_config(path)
    path = write_tiny_vocoder(tmp_path / "w")
    sd = torch.load(path, weights_only=True)
    del sd["generator"]["conv_post.bias"]
    torch.save(sd, path)
    clear_cache()
    with pytest.raises(CheckpointError, match="conv_post.bias"):
        load_model(path)
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="not an NSF-HiFiGAN checkpoint"):
        load_model(path)


def test_enhancer_key0_is_plain_revocoding(gold):
    from modules.enhancer import Enhancer

    enh = Enhancer("nsf-hifigan", MODEL, device="cpu")
    audio = golden_clip()[:, : 64 * 512]
    f0 = torch.from_numpy(gold["f0"])[:, :64]  # [1, 64, 1] at the same 44.1 kHz / 512 grid
    with detrng():
        out, sr = enh.enhance(audio, 44100, f0, 512, adaptive_key=0)
        ref = enh.vocoder.infer(enh.vocoder.extract(audio, 44100), f0)
    assert sr == 44100 and out.shape == (64 * 512,)
    assert torch.equal(out, ref.reshape(-1))


def test_enhancer_adaptive_key_shifts_rate_and_f0(gold, monkeypatch):
    from modules.enhancer import Enhancer

    enh = Enhancer("nsf-hifigan", MODEL, device="cpu")
    assert enh.adaptive_rate(12) == (88200, 0.5)
    assert enh.adaptive_rate(-12) == (22000, 44100 / 22000)  # np.round: 220.5 → 220, as 4.1
    seen = {}
    real_infer = enh.vocoder.infer

    def spy(mel, f0):
        seen["mel"], seen["f0"] = mel, f0
        return real_infer(mel, f0)

    monkeypatch.setattr(enh.vocoder, "infer", spy)
    audio = golden_clip()[:, : 40 * 512]
    f0 = torch.full((1, 40, 1), 220.0)
    out, sr = enh.enhance(audio, 44100, f0, 512, adaptive_key=12)
    assert sr == 44100 and torch.isfinite(out).all()
    assert seen["mel"].shape[1] == 80  # twice the frames: the audio was read at double rate
    assert torch.allclose(seen["f0"], torch.full_like(seen["f0"], 110.0))
    assert abs(out.shape[0] - 40 * 512) <= 512
