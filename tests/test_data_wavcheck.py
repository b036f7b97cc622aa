"""modules.wavcheck: the one "usable training WAV?" check, one typed problem per kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modules.errors import AudioError
from modules.wavcheck import WavProblem, WavRequirements, check_wav
from preprocess_helpers import voice, write

SR = 44100
REQ = WavRequirements(sampling_rate=SR, min_samples=SR // 2, max_samples=3 * SR, reject_silent=True)


@pytest.fixture()
def files(tmp_path):
    good = write(tmp_path / "good.wav", voice(1.0, SR), SR, "PCM_16")
    full = good.read_bytes()
    (tmp_path / "cut.wav").write_bytes(full[: len(full) // 2])
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "fake.wav").write_text("not audio\n")
    write(tmp_path / "rate.wav", voice(1.0, 48000), 48000, "PCM_16")
    write(tmp_path / "stereo.wav", np.stack([voice(1.0, SR)] * 2, 1), SR, "PCM_16")
    write(tmp_path / "float.wav", voice(1.0, SR), SR, "FLOAT")
    write(tmp_path / "short.wav", voice(0.2, SR), SR, "PCM_16")
    write(tmp_path / "long.wav", voice(4.0, SR), SR, "PCM_16")
    write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR, "PCM_16")
    write(tmp_path / "名前 space.wav", voice(1.0, SR, seed=3), SR, "PCM_16")
    return tmp_path


@pytest.mark.parametrize("name, problem, words", [
    ("good.wav", None, ""),
    ("名前 space.wav", None, ""),
    ("cut.wav", WavProblem.TRUNCATED, "truncated"),
    ("zero.wav", WavProblem.UNREADABLE, "0 bytes"),
    ("fake.wav", WavProblem.UNREADABLE, "not a readable WAV"),
    ("missing.wav", WavProblem.UNREADABLE, "cannot read"),
    ("rate.wav", WavProblem.WRONG_FORMAT, "48000 Hz"),
    ("stereo.wav", WavProblem.WRONG_FORMAT, "2 channels"),
    ("float.wav", WavProblem.WRONG_FORMAT, "16-bit PCM"),
    ("short.wav", WavProblem.TOO_SHORT, "0.2 s"),
    ("long.wav", WavProblem.TOO_LONG, "4.0 s"),
    ("silent.wav", WavProblem.SILENT, "silent"),
])
def test_each_problem_is_typed_and_explained(files, name, problem, words):
    check = check_wav(files / name, REQ)
    assert check.problem is problem and words in check.reason
    assert check.ok is (problem is None)
    if problem is None:
        check.raise_if_bad()
        assert check.frames == SR and check.samplerate == SR and check.seconds == 1.0
    else:
        with pytest.raises(AudioError, match=words):
            check.raise_if_bad()


def test_requirements_are_opt_in(files):
    # no rate / length / silence requirement: only readability and the training format count
    loose = WavRequirements()
    assert check_wav(files / "rate.wav", loose).ok and check_wav(files / "silent.wav", loose).ok
    assert check_wav(files / "long.wav", loose).ok and check_wav(files / "short.wav", loose).ok
    assert check_wav(files / "stereo.wav", WavRequirements(mono=False)).ok
    assert check_wav(files / "float.wav", WavRequirements(subtype=None)).ok


def test_training_loader_and_feature_extractor_use_the_check(tmp_path, monkeypatch):
    """The loader names a listed clip that is truncated / stereo (the check's reason) and leaves
    a too-short one out; the feature extractor fails a too-short clip with the check's words."""
    import soundfile as sf

    from modules.hparams import get_hparams_from_file
    from preprocessing.features import ExtractSettings, FeatureExtractor
    from preprocessing.report import DatasetError
    from train_helpers import make_dataset, write_config
    from training.data import TextAudioSpeakerLoader

    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path, clips_per_speaker=2)
    hps = get_hparams_from_file(write_config(tmp_path))
    wav = Path("dataset/44k/spk0/spk0_0.wav")
    full = wav.read_bytes()
    wav.write_bytes(full[: len(full) - 400])
    with pytest.raises(DatasetError, match=r"spk0_0.wav: truncated: the WAV header declares"):
        TextAudioSpeakerLoader([str(wav)], hps)
    wav.write_bytes(full)
    sf.write(str(wav), np.stack([sf.read(str(wav), dtype="int16")[0]] * 2, 1), SR, subtype="PCM_16")
    with pytest.raises(DatasetError, match=r"spk0_0.wav: 2 channels, training reads mono"):
        TextAudioSpeakerLoader([str(wav), "dataset/44k/spk0/spk0_1.wav"], hps)

    settings = ExtractSettings(sampling_rate=SR, hop_length=512, filter_length=2048, win_length=2048,
                               max_wav_value=32768.0, speech_encoder="vec768l12", ssl_dim=768, f0_predictor="pm",
                               want_vol=False, use_diff=False)
    short = write(tmp_path / "short.wav", voice(0.03, SR), SR, "PCM_16")
    with pytest.raises(AudioError, match=r"too short: 1323 samples \(0.03 s\); at least 2048 samples"):
        FeatureExtractor(settings, device="cpu").load_wav(short)
    assert FeatureExtractor(settings, device="cpu").load_wav(Path("dataset/44k/spk0/spk0_1.wav")).dtype == np.float32
