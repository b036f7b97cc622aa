"""End-to-end conversion with tiny random-weight models in the real file formats (spec §10)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from infer_helpers import SPEAKERS, model_config, models_in_use, voice, write_generator
from inference.infer_tool import Svc
from modules.errors import AudioError, CheckpointError, ConfigError, MissingPretrainedError, SvcError

SR = 44100


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with models_in_use(tmp_path_factory.mktemp("infer_models")) as ms:
        yield ms


@pytest.fixture(scope="module")
def svc(models):
    return Svc(models.g, models.config, device="cpu", cluster_model_path=models.kmeans)


@pytest.fixture(scope="module")
def clip():
    return voice(1.2, SR, 220.0, seed=3)


def convert(svc, y, sr=SR, spk="bob", tran=0, **kw):
    return svc.slice_inference(y, spk, tran, sr=sr, progress=False, **kw)


def test_default_conversion_has_input_length_and_sound(svc, clip):
    out = convert(svc, clip)
    assert out.dtype == np.float32 and out.shape == clip.shape
    assert np.isfinite(out).all() and np.abs(out).max() > 1e-3


def test_same_seed_same_audio_other_seed_other_audio(svc, clip):
    a, b = convert(svc, clip), convert(svc, clip)
    np.testing.assert_array_equal(a, b)
    c = convert(svc, clip, seed=1)
    assert not np.array_equal(a, c)


def test_convert_is_the_path_slice_inference_takes(svc, clip):
    from inference.options import ConversionOptions

    kw = dict(clip_seconds=0.5, lg_num=0.1, noice_scale=0.3, seed=5, cluster_infer_ratio=0.5)
    ref = convert(svc, clip, tran=2, **kw)
    opts = ConversionOptions(transpose=2, **kw)
    np.testing.assert_array_equal(svc.convert(clip, SR, "bob", opts, progress=False), ref)
    # stereo [C, L] and a torch tensor go the same way; on_slice_done runs once per voiced slice
    calls = []
    out = svc.convert(torch.from_numpy(np.stack([clip, clip])), SR, "bob", opts, progress=False,
                      on_slice_done=lambda: calls.append(1))
    np.testing.assert_array_equal(out, ref)
    assert len(calls) >= 2
    with pytest.raises(SvcError, match="unknown conversion option"):
        convert(svc, clip, noise_scale=0.3)
    # 4.1's web UI passed the options positionally (slice_db, cluster_infer_ratio, auto_predict_f0, noice_scale,
    # pad_seconds, clip_seconds, lg_num, lgr_num, ...)
    pos = svc.slice_inference(clip, "bob", 2, -40, 0.5, False, 0.3, 0.5, 0.5, 0.1, sr=SR, progress=False, seed=5)
    np.testing.assert_array_equal(pos, ref)
    seg = svc.infer("bob", 0, clip[:20000], 0, False, 0.2)[0]
    torch.testing.assert_close(seg, svc.infer("bob", 0, clip[:20000], noice_scale=0.2)[0], rtol=0, atol=0)


def test_speakers_and_transposition_change_the_output(svc, clip):
    base = convert(svc, clip)
    assert not np.allclose(base, convert(svc, clip, spk="alice"))
    assert not np.allclose(base, convert(svc, clip, tran=5))
    np.testing.assert_array_equal(base, convert(svc, clip, spk=1))  # an id works like its name


@pytest.mark.parametrize("sr,channels", [(22050, 2), (48000, 1), (16000, 2)])
def test_any_rate_mono_or_stereo_file(svc, tmp_path, sr, channels):
    y = voice(0.9, sr, 200.0)
    data = np.stack([y, 0.5 * y], 1) if channels == 2 else y
    path = tmp_path / f"in_{sr}.flac"
    sf.write(path, data, sr)
    out = svc.slice_inference(path, "carol", 0, progress=False)
    assert out.shape == (int(np.ceil(len(y) * SR / sr)),)
    assert np.abs(out).max() > 1e-3


def test_trailing_silence_stays_exactly_silent(svc):
    y = np.concatenate([voice(1.0, SR), np.zeros(SR, np.float32)])
    out = convert(svc, y)
    assert out.shape == y.shape
    tail = out[int(1.3 * SR):]
    assert np.all(tail == 0)
    assert np.abs(out[: SR]).max() > 1e-3


def test_silence_only_gives_silence(svc, caplog):
    out = convert(svc, np.zeros(SR * 2, np.float32))
    assert out.shape == (SR * 2,) and np.all(out == 0)
    assert "silent" in caplog.text


def test_pad_zero_works(svc, clip):
    # 4.1 cut [pad:-pad] and so returned silence for -p 0.
    out = convert(svc, clip, pad_seconds=0)
    assert out.shape == clip.shape and np.abs(out).max() > 1e-3


@pytest.mark.parametrize("lg,lgr", [(0.0, 0.75), (0.1, 0.75), (0.1, 1.0), (0.1, 0.0)])
def test_forced_clip_with_crossfade_keeps_length(svc, clip, lg, lgr):
    out = convert(svc, clip, clip_seconds=0.4, lg_num=lg, lgr_num=lgr)
    assert out.shape == clip.shape and np.isfinite(out).all()
    if lg:
        assert not np.array_equal(out, convert(svc, clip, clip_seconds=0.4))


def test_crossfade_blends_linearly_between_pieces(svc, monkeypatch):
    # Stand in the model with "output = constant k for the k-th piece" to see the assembly.
    calls = []

    def fake(wav, *a, **k):
        calls.append(len(wav))
        return torch.full((len(wav) // 512 * 512,), float(len(calls))), 0, len(wav) // 512

    monkeypatch.setattr(svc, "_infer_wav", fake)
    n = int(1.0 * SR)
    y = voice(1.0, SR)
    out = convert(svc, y, clip_seconds=0.5, lg_num=0.1, lgr_num=1.0, pad_seconds=0.5)
    assert len(calls) == 2 and out.shape == (n,)
    lg = int(0.1 * SR)
    start = int(0.5 * SR) - lg
    ramp = np.linspace(0, 1, lg)
    seg = out[start:start + lg]
    # piece 1 outputs 1, piece 2 outputs 2 (away from the < 512 zeros of 4.1's centre padding)
    np.testing.assert_allclose(seg[300:-300], (1 - ramp[300:-300]) + 2 * ramp[300:-300], rtol=1e-6)
    assert np.all(out[2000:start - 10] == 1) and np.all(out[start + lg + 10:-2000] == 2)


def test_long_voiced_stretch_is_split(svc, monkeypatch):
    lengths = []
    orig = svc._infer_wav

    def spy(wav, *a, **k):
        lengths.append(len(wav))
        return orig(wav, *a, **k)

    monkeypatch.setattr(svc, "_infer_wav", spy)
    y = voice(2.5, SR)
    out = convert(svc, y, max_chunk_seconds=1.0)
    assert out.shape == y.shape and len(lengths) >= 3
    assert max(lengths) <= 1.0 * SR + 2 * int(0.5 * SR)


def test_auto_f0_loudness_and_filters(svc, clip):
    base = convert(svc, clip)
    for kw in (dict(auto_predict_f0=True), dict(loudness_envelope_adjustment=0.0), dict(noice_scale=0.0),
               dict(f0_predictor="dio"), dict(f0_predictor="harvest")):
        out = convert(svc, clip, **kw)
        assert out.shape == clip.shape and np.isfinite(out).all(), kw
        assert not np.array_equal(out, base), kw


def test_loudness_envelope_follows_input(svc):
    y = voice(2.0, SR) * np.linspace(0.05, 1.0, 2 * SR, dtype=np.float32)
    out = convert(svc, y, loudness_envelope_adjustment=0.0)
    q = len(y) // 4
    ratio_in = np.abs(y[3 * q:]).mean() / np.abs(y[q:2 * q]).mean()
    ratio_out = np.abs(out[3 * q:]).mean() / np.abs(out[q:2 * q]).mean()
    assert ratio_out == pytest.approx(ratio_in, rel=0.35)


def test_kmeans_and_retrieval_mixing(models, svc, clip):
    base = convert(svc, clip)
    km = convert(svc, clip, cluster_infer_ratio=0.5)
    assert km.shape == clip.shape and not np.array_equal(km, base)
    fr = Svc(models.g, models.config, device="cpu", cluster_model_path=models.index, feature_retrieval=True)
    out = convert(fr, clip, cluster_infer_ratio=0.5)
    assert out.shape == clip.shape and not np.array_equal(out, base) and not np.array_equal(out, km)


def test_enhancer(models, clip):
    svc = Svc(models.g, models.config, device="cpu", nsf_hifigan_enhance=True, cluster_model_path=None)
    a = convert(svc, clip)
    b = convert(svc, clip, enhancer_adaptive_key=3)
    assert a.shape == b.shape == clip.shape and np.abs(a).max() > 1e-3 and not np.array_equal(a, b)


def test_shallow_diffusion_second_encoding_and_only_diffusion(models, clip):
    kw = dict(diffusion_model_path=models.diffusion, diffusion_config_path=models.diffusion_config, device="cpu")
    shd = Svc(models.g, models.config, shallow_diffusion=True, nsf_hifigan_enhance=True, **kw)
    assert shd.enhancer is None  # the enhancer is off with diffusion, as in 4.1
    a = convert(shd, clip, k_step=20)
    b = convert(shd, clip, k_step=20, second_encoding=True)
    assert a.shape == b.shape == clip.shape and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, convert(shd, clip, k_step=20))  # deterministic
    od = Svc(None, None, only_diffusion=True, **kw)
    assert od.target_sample == SR and od.speakers == list(SPEAKERS)
    c = convert(od, clip, k_step=20)
    assert c.shape == clip.shape and np.abs(c).max() > 1e-3
    np.testing.assert_array_equal(c, convert(od, clip, k_step=20))
    with pytest.raises(ValueError, match="k_step"):
        convert(shd, clip, k_step=2000)


@pytest.mark.parametrize("mode,kw", [
    ("shd", dict(auto_predict_f0=True, cluster_infer_ratio=0.3, second_encoding=True, loudness_envelope_adjustment=0.5,
                 k_step=10, f0_predictor="dio")),
    ("shd", dict(use_spk_mix=True, k_step=10, clip_seconds=0.5, lg_num=0.1)),
    ("od", dict(cluster_infer_ratio=0.5, k_step=10, pad_seconds=0.2, loudness_envelope_adjustment=0.0)),
    ("eh", dict(auto_predict_f0=True, enhancer_adaptive_key=-2, clip_seconds=0.5, lg_num=0.2, lgr_num=0.5,
                cluster_infer_ratio=1.0, noice_scale=0.8)),
])
def test_flag_combinations(models, clip, mode, kw):
    opts = dict(device="cpu", cluster_model_path=models.kmeans, diffusion_model_path=models.diffusion,
                diffusion_config_path=models.diffusion_config, spk_mix_enable=kw.get("use_spk_mix", False),
                shallow_diffusion=mode == "shd", only_diffusion=mode == "od", nsf_hifigan_enhance=mode == "eh")
    svc = Svc(None if mode == "od" else models.g, models.config, **opts)
    spk = {0: [[0.0, 1.0, 1.0, 0.0]], 1: [[0.0, 1.0, 0.0, 1.0]], 2: [[0.0, 1.0, 0.0, 0.0]]} \
        if kw.get("use_spk_mix") else "alice"
    out = convert(svc, clip, spk=spk, **kw)
    assert out.shape == clip.shape and np.isfinite(out).all() and np.abs(out).max() > 1e-3


def test_volume_embedding_model(models, clip):
    svc = Svc(models.g_vol, models.config_vol, device="cpu")
    assert svc.vol_embedding
    out = convert(svc, clip)
    assert out.shape == clip.shape and np.abs(out).max() > 1e-3


def test_speaker_mix(models, svc, clip):
    mixer = Svc(models.g, models.config, device="cpu", spk_mix_enable=True)
    only_bob = {0: [[0.0, 1.0, 0.0, 0.0]], 1: [[0.0, 1.0, 1.0, 1.0]], 2: [[0.0, 1.0, 0.0, 0.0]]}
    np.testing.assert_allclose(convert(mixer, clip, spk=only_bob, use_spk_mix=True), convert(svc, clip, spk="bob"),
                               atol=1e-5)
    fade = {0: [[0.0, 1.0, 1.0, 0.0]], 1: [[0.0, 1.0, 0.0, 1.0]], 2: [[0.0, 1.0, 0.0, 0.0]]}
    out = convert(mixer, clip, spk=fade, use_spk_mix=True)
    assert out.shape == clip.shape
    alice, bob = convert(svc, clip, spk="alice"), convert(svc, clip, spk="bob")
    q = len(clip) // 4  # alice fades into bob: the start sounds like alice, the end like bob
    d = lambda a, b: float(np.abs(a - b).mean())  # noqa: E731
    assert d(out[q:2 * q], alice[q:2 * q]) < d(out[q:2 * q], bob[q:2 * q])
    assert d(out[-2 * q:-q], bob[-2 * q:-q]) < d(out[-2 * q:-q], alice[-2 * q:-q])
    with pytest.raises(SvcError, match="spk_mix_enable"):
        convert(svc, clip, spk=fade, use_spk_mix=True)


def test_infer_segment_api(svc, clip, tmp_path):
    audio, length, frames = svc.infer("bob", 0, clip)
    assert frames == len(clip) // 512 and length == frames * 512 and audio.shape == (length,)
    sf.write(tmp_path / "seg.wav", clip, SR)
    audio2, _, _ = svc.infer("bob", 0, str(tmp_path / "seg.wav"))
    torch.testing.assert_close(audio2, audio, atol=2e-3, rtol=0)  # 16-bit file vs float array
    svc.clear_empty()


# --- bad input ---------------------------------------------------------------------------------
def test_unknown_speaker_lists_valid_ones(svc, clip):
    with pytest.raises(SvcError, match="alice, bob, carol"):
        convert(svc, clip, spk="dave")
    with pytest.raises(SvcError, match="not in this model's speaker list"):
        convert(svc, clip, spk=7)


def test_bad_options_are_named(svc, clip):
    for kw, flag in [(dict(pad_seconds=-1), "-p"), (dict(clip_seconds=0.2, lg_num=0.5), "-lg"),
                     (dict(lgr_num=1.5), "-lgr"), (dict(cluster_infer_ratio=2), "-cr"),
                     (dict(f0_predictor="yin"), "-f0p"), (dict(loudness_envelope_adjustment=-1), "-lea")]:
        with pytest.raises(SvcError, match=flag):
            convert(svc, clip, **kw)


def test_cluster_ratio_without_cluster_file(models, clip):
    svc = Svc(models.g, models.config, device="cpu", cluster_model_path=str(models.root / "none.pt"))
    with pytest.raises(SvcError, match="none.pt"):
        convert(svc, clip, cluster_infer_ratio=0.5)


def test_config_checkpoint_mismatch_names_the_field(models, tmp_path):
    cfg = model_config(ssl_dim=64)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="ssl_dim: config says 64, checkpoint has 32"):
        Svc(models.g, tmp_path / "config.json", device="cpu")
    cfg = model_config(n_speakers=5)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="n_speakers: config says 5, checkpoint has 3"):
        Svc(models.g, tmp_path / "config.json", device="cpu")
    cfg = model_config(vol_embedding=True)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="vol_embedding"):
        Svc(models.g, tmp_path / "config.json", device="cpu")


def test_encoder_that_does_not_fit_the_config(models, tmp_path):
    cfg = model_config(speech_encoder="vec256l9")  # same ContentVec file, projected to another width
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="'vec256l9'.*-dim units but model.ssl_dim of the config is 32"):
        Svc(models.g, tmp_path / "config.json", device="cpu")


def test_compressed_model_without_enc_q_and_half_file_load(models, clip, tmp_path, svc):
    from modules.checkpoint import torch_load

    ck = torch_load(models.g)
    ck["model"] = {k: v.half() for k, v in ck["model"].items() if "enc_q" not in k}
    torch.save(ck, tmp_path / "G_0_release_half.pth", _use_new_zipfile_serialization=False)  # old pickle format
    small = Svc(tmp_path / "G_0_release_half.pth", models.config, device="cpu")
    assert small.dtype == torch.float32  # CPU runs float32 even for a half file
    out = convert(small, clip)
    np.testing.assert_allclose(out, convert(svc, clip), atol=5e-3)


def test_missing_files_are_named(models, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="G_9.pth"):
        Svc(tmp_path / "G_9.pth", models.config, device="cpu")
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path / "nothing"))
    from vencoder import clear_cache

    clear_cache()
    with pytest.raises(MissingPretrainedError, match="checkpoint_best_legacy_500.pt"):
        Svc(models.g, models.config, device="cpu")
    with pytest.raises(SvcError, match="half precision"):
        Svc(models.g, models.config, device="cpu", half=True)


def test_non_audio_input(svc, tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("not audio")
    with pytest.raises(AudioError, match="notes.wav"):
        svc.slice_inference(p, "bob", 0, progress=False)


def test_single_speaker_mix_falls_back_to_the_speaker(tmp_path, models, clip):
    cfg = model_config(n_speakers=1)
    cfg["spk"] = {"solo": 0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    g = write_generator(tmp_path / "G_1.pth", cfg, seed=3)
    svc = Svc(g, tmp_path / "config.json", device="cpu", spk_mix_enable=True)
    out = convert(svc, clip, spk={0: [[0.0, 1.0, 1.0, 1.0]]}, use_spk_mix=True)
    np.testing.assert_array_equal(out, convert(svc, clip, spk="solo"))
