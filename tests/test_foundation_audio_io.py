"""Audio loading, writing and resampling."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from modules.audio import load_audio, resample, save_audio, sinc_resample
from modules.errors import AudioError


def tone(sr, seconds=0.5, f=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_load_common_formats_and_downmix(tmp_path, fmt, subtype):
    y = tone(44100)
    stereo = np.stack([y, -y * 0.5], axis=1)
    p = tmp_path / f"x.{fmt.lower()}"
    sf.write(p, stereo, 44100, format=fmt, subtype=subtype)
    mono, sr = load_audio(p)
    assert sr == 44100 and mono.dtype == np.float32 and mono.ndim == 1
    both, _ = load_audio(p, mono=False)
    assert both.shape[0] == 2
    np.testing.assert_allclose(mono, both.mean(0), atol=1e-6)
    if fmt in ("WAV", "FLAC"):
        np.testing.assert_allclose(mono, (y - 0.5 * y) / 2, atol=1e-4)


def test_load_resamples_on_request(tmp_path):
    p = tmp_path / "x.wav"
    sf.write(p, tone(48000), 48000)
    y, sr = load_audio(p, sr=16000)
    assert sr == 16000 and abs(len(y) - 8000) <= 1


def test_bad_audio_files_are_named(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("hello, not audio")
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1], dtype=np.float32), 16000, subtype="FLOAT")
    for name, match in [("empty.wav", "empty"), ("text.wav", "not a readable audio file"),
                        ("nan.wav", "NaN"), ("missing.wav", "not found")]:
        with pytest.raises(AudioError, match=match) as e:
            load_audio(tmp_path / name)
        assert name in str(e.value)


def test_save_audio_is_atomic_and_round_trips(tmp_path):
    y = tone(22050)
    save_audio(tmp_path / "o.flac", y, 22050)
    back, sr = load_audio(tmp_path / "o.flac")
    assert sr == 22050 and np.abs(back - y).max() < 1e-3
    assert [p.name for p in tmp_path.iterdir()] == ["o.flac"]


def test_soxr_resample_length_and_content():
    y = tone(44100, 1.0, 1000.0)
    z = resample(y, 44100, 16000)
    assert len(z) == 16000
    ref = tone(16000, 1.0, 1000.0)
    assert np.abs(z[200:-200] - ref[200:-200]).max() < 1e-3


@pytest.mark.parametrize("orig,new,width", [(44100, 16000, 6), (16000, 44100, 6), (44100, 16000, 128), (48000, 44100, 6)])
def test_sinc_resample_matches_ideal_band_limited_resampling(orig, new, width):
    # A 440 Hz sine resampled must equal the same sine sampled at the new rate (away from edges),
    # and the length rule is ceil(new * L / orig) as torchaudio's.
    L = orig // 2
    x = torch.from_numpy(tone(orig, 0.5, 440.0))
    y = sinc_resample(x, orig, new, lowpass_filter_width=width)
    assert y.shape[-1] == math.ceil(new * L / orig)
    ref = torch.from_numpy(tone(new, y.shape[-1] / new, 440.0))[: y.shape[-1]]
    edge = new // 50
    assert (y[edge:-edge] - ref[edge:-edge]).abs().max() < 2e-3


def test_sinc_resample_batches_and_identity():
    x = torch.randn(3, 2, 1000)
    assert sinc_resample(x, 16000, 16000) is x
    y = sinc_resample(x, 32000, 16000)
    assert y.shape == (3, 2, 500)
    assert torch.allclose(y[1, 0], sinc_resample(x[1, 0], 32000, 16000), atol=1e-6)
