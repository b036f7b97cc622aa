"""Speaker encoder: our module against the resemblyzer package, speaker discrimination, weights handling."""

from __future__ import annotations

import importlib
import logging
import sys
import types

import numpy as np
import pytest
import torch

from eval_helpers import espeak, needs_espeak, needs_speaker_weights, sung
from evaluation import speaker
from evaluation.analysis import load_for_analysis
from evaluation.speaker_encoder import HOP_SAMPLES, PARTIAL_FRAMES, SpeakerEncoder, partial_starts
from modules.audio import resample
from modules.errors import AudioError, CheckpointError, MissingPretrainedError


@pytest.fixture(scope="module")
def package_encoder():
    """The package's own VoiceEncoder on the wheel's weights.

    resemblyzer imports webrtcvad at import time only for its VAD preprocessing, which the
    comparison does not use (both sides get the same, already preprocessed audio); webrtcvad is a
    native extension we do not install, so an empty stand-in module satisfies the import.
    """
    if speaker.resemblyzer_weights() is None:
        pytest.skip("resemblyzer wheel not installed")
    stub = "webrtcvad" not in sys.modules and importlib.util.find_spec("webrtcvad") is None
    if stub:
        sys.modules["webrtcvad"] = types.ModuleType("webrtcvad")
    try:
        from resemblyzer.voice_encoder import VoiceEncoder
    except ImportError as e:  # e.g. a librosa/scipy without the names it imports
        pytest.skip(f"the resemblyzer package does not import with the installed dependencies: {e}")
    finally:
        if stub:
            del sys.modules["webrtcvad"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield VoiceEncoder("cpu", verbose=False)
    torch.set_num_threads(threads)


@needs_speaker_weights
@pytest.mark.parametrize("seconds, voice", [(0.6, "alto"), (1.7, "baritone"), (4.3, "alto")])
def test_embedding_matches_the_package(package_encoder, seconds, voice):
    wav = speaker.preprocess_for_speaker(resample(sung(seconds, voice=voice, seed=7), 32000, 16000))
    ours = speaker.embed_preprocessed(speaker.load_speaker_encoder(device="cpu"), wav)
    theirs = package_encoder.embed_utterance(wav)
    assert ours.shape == (256,) and np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


@needs_speaker_weights
@pytest.mark.parametrize("n_samples", [1, 5000, 25600, 25601, 38000, 41000, 160000, 160123])
def test_partials_match_the_package(package_encoder, n_samples):
    _, mel_slices = package_encoder.compute_partial_slices(n_samples, rate=1.3, min_coverage=0.75)
    starts, padded = partial_starts(n_samples)
    assert starts == [s.start for s in mel_slices]
    assert padded == mel_slices[-1].stop * HOP_SAMPLES


@needs_speaker_weights
@needs_espeak
def test_two_espeak_voices_differ(tmp_path):
    enc = speaker.load_speaker_encoder(device="cpu")
    texts = ["The quick brown fox jumps over the lazy dog near the river bank.",
             "Every morning she walks to the market to buy fresh bread and fruit."]

    def emb(voice, i):
        return speaker.embed_utterance(enc, load_for_analysis(espeak(tmp_path / f"{voice}{i}.wav", texts[i], voice)))

    a0, a1, b0, b1 = emb("en-us+m3", 0), emb("en-us+m3", 1), emb("en-us+f4", 0), emb("en-us+f4", 1)
    same = min(speaker.cosine(a0, a1), speaker.cosine(b0, b1))
    different = max(speaker.cosine(a0, b1), speaker.cosine(b0, a1))
    assert same > different + 0.15, (same, different)


def test_preprocessing_levels_and_silences():
    rng = np.random.default_rng(0)
    tone = (0.001 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32)
    quiet = speaker.preprocess_for_speaker(tone)
    rms_db = 20 * np.log10(np.sqrt(np.mean(quiet.astype(np.float64) ** 2)))
    assert rms_db == pytest.approx(speaker.TARGET_DBFS, abs=0.1)               # raised
    loud = 0.5 * tone / 0.001
    assert np.array_equal(speaker.preprocess_for_speaker(loud), loud[: len(loud) // 480 * 480])   # never lowered
    gap = np.concatenate([loud, 1e-5 * rng.standard_normal(32000).astype(np.float32), loud])
    trimmed = speaker.preprocess_for_speaker(gap)
    # 2 s of near-silence between two sounds: at most ~ 2 × 6 widening windows of 30 ms are kept
    assert 2 * 16000 - 480 <= len(trimmed) <= 2 * 16000 + 14 * 480
    with pytest.raises(AudioError, match="silent"):
        speaker.preprocess_for_speaker(np.zeros(16000, np.float32))


def _write_checkpoint(path, state):
    torch.save({"step": 1, "model_state": state, "optimizer_state": {}}, path)
    return path


def test_random_checkpoint_in_the_released_format(tmp_path, caplog):
    torch.manual_seed(0)
    model = SpeakerEncoder()
    state = {"similarity_weight": torch.tensor([10.0]), "similarity_bias": torch.tensor([-5.0]), **model.state_dict()}
    path = _write_checkpoint(tmp_path / "enc.pt", state)
    with caplog.at_level(logging.WARNING):
        loaded = speaker.read_encoder(path)
    assert "not the released Resemblyzer" in caplog.text
    mels = torch.rand(2, PARTIAL_FRAMES, 40)
    torch.testing.assert_close(loaded(mels), model(mels))
    emb = loaded(mels)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2)) and bool((emb >= 0).all())
    del state["linear.bias"]
    with pytest.raises(CheckpointError, match="linear.bias"):
        speaker.read_encoder(_write_checkpoint(tmp_path / "broken.pt", state))
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a Resemblyzer encoder checkpoint"):
        speaker.read_encoder(tmp_path / "other.pt")


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(MissingPretrainedError, match="speaker-encoder weights not found"):
        speaker.resolve_weights(tmp_path / "none.pt")
    monkeypatch.setattr(speaker, "resemblyzer_weights", lambda: None)
    with pytest.raises(MissingPretrainedError, match=r"pip install --no-deps resemblyzer==0\.1\.4"):
        speaker.resolve_weights()
