"""The three preprocessing scripts end to end on tiny synthetic datasets (tiny random-weight ContentVec).

Runs in a temporary project folder with 4.1's default paths (dataset_raw → dataset/44k,
filelists/, configs/), the encoder file from ``vencoder.make_random_checkpoint`` found through
``SVC_PRETRAIN_DIR``, and the fast ``dio`` predictor.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import preprocess_flist_config
import preprocess_hubert_f0
import resample
from modules.cli import run_main
from preprocessing import features as F
from preprocessing.runner import worker_device
from tests.preprocess_helpers import make_bad_dataset, make_raw_dataset, voice, write

HOP = 512
ARTIFACTS_DIFF = (".wav", ".wav.soft.pt", ".wav.f0.npy", ".spec.pt", ".wav.vol.npy", ".wav.mel.npy",
                  ".wav.aug_mel.npy", ".wav.aug_vol.npy")


@pytest.fixture(scope="module")
def pretrain(tmp_path_factory):
    import vencoder

    d = tmp_path_factory.mktemp("pretrain")
    vencoder.make_random_checkpoint("vec768l12", d / "checkpoint_best_legacy_500.pt", size="tiny", seed=0)
    return d


@pytest.fixture
def project(tmp_path, monkeypatch, pretrain):
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(pretrain))
    monkeypatch.chdir(tmp_path)
    # One intra-op thread: tiny models gain nothing from more, and OpenMP spin-waiting on a busy
    # 2-core CI machine makes them 100x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


def _files_of(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _expected(stems, suffixes=ARTIFACTS_DIFF) -> set[str]:
    return {s + suf for s in stems for suf in suffixes}


def _check_artifacts(wav: Path, enc_dim: int, use_diff: bool = True) -> None:
    info = sf.info(str(wav))
    L = info.frames
    T = L // HOP
    p = F.artifact_paths(wav)
    units = torch.load(p.soft, weights_only=True)
    n16 = round(L * 16000 / 44100)
    assert units.dtype == torch.float32 and units.shape[:2] == (1, enc_dim)
    assert abs(units.shape[2] - n16 // 320) <= 1  # 50 Hz units, not stretched to frames
    arr = np.load(p.f0, allow_pickle=True)
    assert arr.dtype == object and arr.shape == (2, T) and type(arr[0, 0]) is float
    f0, uv = F.load_f0(p.f0)
    assert set(np.unique(uv)) <= {0.0, 1.0} and (f0 >= 0).all()
    spec = torch.load(p.spec, weights_only=True)
    assert spec.dtype == torch.float32 and spec.shape == (1025, T)
    if use_diff:
        vol = np.load(p.vol)
        assert vol.dtype == np.float32 and vol.shape == (T,)
        mel = np.load(p.mel)
        assert mel.dtype == np.float32 and mel.shape == (T, 128)
        aug = np.load(p.aug_mel, allow_pickle=True)
        assert aug.dtype == object and aug.shape == (2,)
        assert aug[0].dtype == np.float32 and aug[0].shape == (T, 128)
        assert type(aug[1]) is float and -5 <= aug[1] <= 5
        aug_vol = np.load(p.aug_vol)
        assert aug_vol.dtype == np.float32 and aug_vol.shape == (T,)
        # aug_vol is the volume of the audio scaled by 10^shift with shift in [-1, log10(1/peak)]
        ratio = aug_vol[vol > 1e-3] / vol[vol > 1e-3]
        assert np.allclose(ratio, ratio[0], rtol=1e-3) and 0.1 - 1e-4 <= ratio[0] <= 10


def test_three_scripts_in_order_then_resume_after_a_crash(project, caplog):
    import vencoder

    make_raw_dataset(project / "dataset_raw", clips=4, seconds=0.8)
    assert resample.main(["--num_workers", "1"]) == 0
    assert preprocess_flist_config.main([]) == 0
    cfg = json.loads(Path("configs/config.json").read_text())
    assert cfg["spk"] == {"alice": 0, "bob": 1}
    train = Path("filelists/train.txt").read_text().splitlines()
    val = Path("filelists/val.txt").read_text().splitlines()
    assert len(train) == 4 and len(val) == 4
    assert all(line.startswith("./dataset/44k/") and Path(line).is_file() for line in train + val)

    with caplog.at_level(logging.INFO):
        assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--use_diff"]) == 0
    assert "openvpi" in caplog.text  # no vocoder config on disk → published mel settings, said so
    enc_dim = vencoder.get_speech_encoder("vec768l12", device="cpu").dim
    for spk in ("alice", "bob"):
        folder = Path("dataset/44k") / spk
        stems = [f"{spk}_{i:02d}" for i in range(4)]
        assert _files_of(folder) == _expected(stems)
        for s in stems:
            _check_artifacts(folder / f"{s}.wav", enc_dim)
    from modules.f0_stats import load_f0_stats  # per-speaker statistics next to the config (issue 20)

    stats = load_f0_stats("configs/f0_stats.json")
    assert set(stats) == {"alice", "bob"} and 140 < stats["alice"].median_hz < stats["bob"].median_hz < 250

    # --- simulated crash: artifacts missing, one half-written by 4.1 (0 bytes), a stale temporary
    a = Path("dataset/44k/alice")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in a.iterdir()}
    (a / "alice_00.wav.soft.pt").unlink()
    (a / "alice_01.wav.f0.npy").unlink()
    (a / "alice_02.wav.aug_mel.npy").unlink()
    (a / "alice_03.spec.pt").write_bytes(b"")
    (a / ".alice_03.wav.mel.npy.x1y2z3w4.tmp.npy").write_bytes(b"\x93NUMPY half")
    assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--use_diff"]) == 0
    assert _files_of(a) == _expected([f"alice_{i:02d}" for i in range(4)])  # temporary removed
    redone = {"alice_00.wav.soft.pt", "alice_01.wav.f0.npy", "alice_02.wav.aug_mel.npy", "alice_03.spec.pt"}
    for name, (mtime, data) in before.items():
        p = a / name
        if name in redone:
            assert p.read_bytes() == data, name  # same models, same per-file seed → same bytes
        else:
            assert p.stat().st_mtime_ns == mtime, f"{name} was rewritten"
    # a second resume has nothing left to do and loads no model
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--use_diff"]) == 0
    assert "0 done, 8 skipped, 0 failed" in caplog.text


def test_bad_input_folder_through_all_three_scripts(project, caplog):
    expected = make_bad_dataset(project / "dataset_raw")
    with caplog.at_level(logging.INFO):
        assert resample.main(["--num_workers", "1"]) == 1
    for name in expected["failed"]:
        assert f"FAILED {Path('dataset_raw/good') / name}" in caplog.text.replace("./", "")
    assert preprocess_flist_config.main([]) == 0
    listed = Path("filelists/train.txt").read_text(encoding="utf-8") + Path("filelists/val.txt").read_text(encoding="utf-8")
    assert "tiny.wav" not in listed and "名前 with space.wav" in listed and "long.wav" in listed
    assert json.loads(Path("configs/config.json").read_text())["spk"] == {"good": 0, "other": 1}

    # files that reach dataset/44k without resample.py
    write(Path("dataset/44k/other/rate48k.wav"), voice(0.5, 48000), 48000, "PCM_16")
    Path("dataset/44k/other/zero.wav").write_bytes(b"")
    write(Path("dataset/44k/other/blip.wav"), voice(0.03, 44100), 44100, "PCM_16")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = preprocess_hubert_f0.main(["--f0_predictor", "pm", "--num_processes", "2"])
    assert code == 1
    assert "rate48k.wav: sample rate 48000 Hz, the config expects 44100 Hz" in caplog.text
    assert "zero.wav: empty file (0 bytes)" in caplog.text
    assert "blip.wav: too short" in caplog.text
    assert "10 done, 0 skipped, 3 failed" in caplog.text
    long_wav = Path("dataset/44k/good/long.wav")
    import vencoder
    _check_artifacts(long_wav, vencoder.get_speech_encoder("vec768l12", device="cpu").dim, use_diff=False)
    assert F.artifact_paths("dataset/44k/good/名前 with space.wav").spec.is_file()
    assert not F.artifact_paths("dataset/44k/good/g0.wav").vol.exists()  # no vol_embedding, no --use_diff

    # workers and the in-process run write the same bytes
    p = F.artifact_paths("dataset/44k/other/o1.wav")
    from_workers = {q: q.read_bytes() for q in (p.soft, p.f0, p.spec)}
    for q in from_workers:
        q.unlink()
    assert preprocess_hubert_f0.main(["--f0_predictor", "pm"]) == 1  # the three bad files still fail
    for q, data in from_workers.items():
        assert q.read_bytes() == data, q.name


def test_missing_models_are_one_clear_error(project, tmp_path, monkeypatch, capsys, pretrain):
    make_raw_dataset(project / "dataset_raw", clips=3, seconds=0.4)
    assert resample.main(["--num_workers", "1"]) == 0
    assert preprocess_flist_config.main([]) == 0
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path / "nowhere"))
    assert run_main(preprocess_hubert_f0.main, ["--f0_predictor", "dio"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint_best_legacy_500.pt" in err and "Download it from" in err
    assert not list(Path("dataset/44k").glob("*/*.soft.pt"))
    assert run_main(preprocess_hubert_f0.main, ["--f0_predictor", "nope"]) == 2
    assert "unknown --f0_predictor 'nope'" in capsys.readouterr().err
    # the default predictor (rmvpe) needs pretrain/rmvpe.pt: one error for the run, not one per file
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(pretrain))
    assert run_main(preprocess_hubert_f0.main, []) == 2
    err = capsys.readouterr().err
    assert "rmvpe.pt" in err and err.count("error:") == 1


def test_models_are_loaded_once_per_worker(project, monkeypatch):
    import modules.F0Predictor as registry
    import vencoder

    calls = {"f0": 0, "enc": 0}
    real_f0, real_enc = registry.get_f0_predictor, vencoder.get_speech_encoder

    def count_f0(*a, **k):
        calls["f0"] += 1
        return real_f0(*a, **k)

    def count_enc(*a, **k):
        calls["enc"] += 1
        return real_enc(*a, **k)

    monkeypatch.setattr(registry, "get_f0_predictor", count_f0)
    monkeypatch.setattr(vencoder, "get_speech_encoder", count_enc)
    make_raw_dataset(project / "dataset_raw", clips=3, seconds=0.4)
    assert resample.main(["--num_workers", "1"]) == 0
    assert preprocess_flist_config.main([]) == 0
    assert calls["f0"] <= 1 and calls["enc"] == 0  # the dataset check's predictor: at most once per process
    calls["f0"] = 0
    assert preprocess_hubert_f0.main(["--f0_predictor", "dio"]) == 0
    assert calls == {"f0": 1, "enc": 1}  # 6 files, one load each (4.1 re-created the predictor per file)


def test_golden_clip_matches_41s_artifacts(tmp_path):
    """4.1's spec and pm f0/uv for the golden training clip (tests/data/preprocess/README.md)."""
    gold = np.load(Path(__file__).parent / "data" / "preprocess" / "train_clip0.npz")
    wav = write(tmp_path / "spk0" / "clip.wav", gold["pcm16"], 44100, "PCM_16")
    settings = F.ExtractSettings(sampling_rate=44100, hop_length=512, filter_length=2048, win_length=2048,
                                 max_wav_value=32768.0, speech_encoder="vec768l12", ssl_dim=768,
                                 f0_predictor="pm", want_vol=False, use_diff=False)
    ex = F.FeatureExtractor(settings)
    p = F.artifact_paths(wav)
    F.save_soft(p.soft, torch.zeros(1, 768, 148))  # units are not part of this comparison
    assert ex.process(wav).status == "done"
    spec = torch.load(p.spec, weights_only=True).numpy()
    assert spec.shape == gold["spec"].shape
    assert np.linalg.norm(spec - gold["spec"]) / np.linalg.norm(gold["spec"]) < 1e-5
    f0, uv = F.load_f0(p.f0)
    np.testing.assert_array_equal(uv, gold["uv"])
    np.testing.assert_allclose(f0, gold["f0"], rtol=1e-4, atol=1e-3)


def test_workers_spread_over_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [worker_device(None, k) for k in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_device("cuda", 3) == "cuda:1"
    assert worker_device("cpu", 3) == "cpu" and worker_device("cuda:1", 0) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert worker_device(None, 1) == "cpu"


def _diff_settings(mel: F.MelSettings) -> F.ExtractSettings:
    return F.ExtractSettings(sampling_rate=44100, hop_length=512, filter_length=2048, win_length=2048,
                             max_wav_value=32768.0, speech_encoder="vec768l12", ssl_dim=768, f0_predictor="dio",
                             want_vol=True, use_diff=True, mel=mel)


def test_diffusion_mel_matches_41s_vocoder_front_end():
    gold_dir = Path(__file__).parent / "data" / "golden"
    clip = torch.from_numpy(np.load(gold_dir / "clip.npy"))[None]
    gold = np.load(gold_dir / "mel_outputs.npz")
    ex = F.FeatureExtractor(_diff_settings(F.MelSettings(**F.OPENVPI_MEL)))
    for key, shift in (("nvstft_mel", 0.0), ("nvstft_mel_keyshift_m3", -3.0)):
        mel = ex.vocoder_mel(clip, keyshift=shift)
        want = gold[key][0].T  # Vocoder.extract returns frames first: [T, 128]
        assert mel.dtype == np.float32 and mel.shape == want.shape == (256, 128)
        assert np.linalg.norm(mel - want) / np.linalg.norm(want) < 1e-5, key


def test_vocoder_mel_settings_come_from_the_vocoder_config(tmp_path):
    from modules.errors import ConfigError
    from modules.hparams import HParams
    from preprocessing.flist import build_configs

    cfg = {**F.OPENVPI_MEL, "num_mels": 80, "resblock": "1"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    mel = F.MelSettings.for_vocoder(tmp_path / "model")
    assert mel.num_mels == 80 and mel.source.endswith("config.json")
    sovits, diff = build_configs({"a": 0}, "vec768l12")
    diff["vocoder"]["ckpt"] = str(tmp_path / "model")
    s = F.ExtractSettings.from_configs(HParams(**sovits), HParams(**diff), f0_predictor="dio", use_diff=True)
    assert s.mel == mel and s.want_vol
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hop_size": 256}))
    with pytest.raises(ConfigError, match="hop 256"):
        F.ExtractSettings.from_configs(HParams(**sovits), HParams(**diff), f0_predictor="dio", use_diff=True)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a usable NSF-HiFiGAN config"):
        F.MelSettings.for_vocoder(tmp_path / "model")


def test_augmentation_draws_follow_41s_ranges_and_are_reproducible(tmp_path):
    ex = F.FeatureExtractor(_diff_settings(F.MelSettings(**F.OPENVPI_MEL)))
    audio = voice(0.5, 44100, peak=0.25)
    draws = [ex.augmentation_draws(Path(f"ds/spk/c{i}.wav"), audio) for i in range(200)]
    vol, key = np.array(draws).T
    max_shift = min(1.0, np.log10(1 / (0.25 + 1e-5)))
    assert vol.min() >= -1 and vol.max() <= max_shift and vol.max() > max_shift - 0.1
    assert key.min() >= -5 and key.max() <= 5 and key.min() < -4 and key.max() > 4
    assert ex.augmentation_draws(Path("ds/spk/c3.wav"), audio) == draws[3]  # per-file seed
    other = F.FeatureExtractor(_diff_settings(F.MelSettings(**F.OPENVPI_MEL)).__class__(
        **{**ex.settings.__dict__, "seed": 99}))
    assert other.augmentation_draws(Path("ds/spk/c3.wav"), audio) != draws[3]
