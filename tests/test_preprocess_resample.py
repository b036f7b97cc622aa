"""resample.py: signal chain, formats, folder mirroring, bad input, exit codes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

import resample as resample_script
from modules.errors import ConfigError
from preprocessing.resample import ResampleOptions, process_audio, resample_dataset, to_pcm16
from tests.preprocess_helpers import make_bad_dataset, make_raw_dataset, voice, write


def test_pcm16_truncates_like_41_but_clips_instead_of_wrapping():
    y = np.array([0.5, -0.5, 0.99999, 1.0, 1.2, -1.3, -1.0], dtype=np.float32)
    out = to_pcm16(y)
    assert out.dtype == np.int16
    # in range: 4.1's (y * 32767).astype(int16), i.e. truncation toward zero
    np.testing.assert_array_equal(out[:4], (y[:4] * 32767).astype(np.int16))
    # out of range: clipped (4.1 wrapped 1.2 to a large negative value)
    np.testing.assert_array_equal(out[4:], [32767, -32767, -32767])


def test_chain_trims_resamples_and_peak_normalises():
    sr = 48000
    y = voice(1.0, sr, pad=0.5)  # 0.5 s of silence on each side
    out = process_audio(y, sr, ResampleOptions(sr=44100))
    assert out.dtype == np.float32
    assert np.abs(out).max() == pytest.approx(1.0, abs=1e-6)
    # trimmed to roughly the 1 s of sound (librosa trim works in 512-sample frames)
    assert 0.95 * 44100 < len(out) < 1.15 * 44100


def test_peak_guard_and_skip_loudnorm_keep_level():
    sr = 44100
    y = voice(0.5, sr, peak=0.3)
    out = process_audio(y, sr, ResampleOptions(sr=sr, skip_loudnorm=True))
    assert np.abs(out).max() == pytest.approx(0.3, rel=1e-3)
    hot = voice(0.5, sr, peak=1.7)  # a float file over full scale
    out = process_audio(hot, sr, ResampleOptions(sr=sr, skip_loudnorm=True))
    assert np.abs(out).max() == pytest.approx(0.98, rel=1e-3)


def test_lufs_normalisation_hits_target_without_clipping():
    import pyloudnorm

    sr = 44100
    y = voice(2.0, sr, peak=0.05)
    out = process_audio(y, sr, ResampleOptions(sr=sr, loudnorm_lufs=-23.0))
    assert pyloudnorm.Meter(sr).integrated_loudness(out.astype(np.float64)) == pytest.approx(-23.0, abs=0.2)
    assert np.abs(out).max() <= 0.99
    # a target that would clip is lowered until the peak fits
    loud = process_audio(y, sr, ResampleOptions(sr=sr, loudnorm_lufs=-1.0))
    assert np.abs(loud).max() == pytest.approx(0.99, rel=1e-4)


def test_contradicting_or_bad_options_are_errors():
    with pytest.raises(ConfigError, match="contradict"):
        ResampleOptions(skip_loudnorm=True, loudnorm_lufs=-23)
    with pytest.raises(ConfigError, match="loudnorm_lufs"):
        ResampleOptions(loudnorm_lufs=5)


def test_dataset_mixed_formats_mirrored_as_mono_pcm16(tmp_path):
    raw = make_raw_dataset(tmp_path / "raw", clips=3)
    write(raw / "alice" / "extra.mp3", voice(0.6, 44100, seed=3), 44100)
    out = tmp_path / "out"
    assert resample_script.main(["--in_dir", str(raw), "--out_dir2", str(out), "--num_workers", "1"]) == 0
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {"alice/alice_00.wav", "alice/alice_01.flac".replace(".flac", ".wav"), "alice/alice_02.wav",
                     "alice/extra.wav", "bob/bob_00.wav", "bob/bob_01.wav", "bob/bob_02.wav"}
    for p in out.rglob("*.wav"):
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")
        data, _ = sf.read(str(p), dtype="int16")
        assert np.abs(data.astype(np.int32)).max() == 32767  # peak-normalised, truncated like 4.1
        assert oct(p.stat().st_mode & 0o777) != oct(0o600)  # not the temp file's private mode


def test_bad_input_reported_not_crashing(tmp_path, caplog):
    raw = tmp_path / "raw"
    expected = make_bad_dataset(raw)
    summary = resample_dataset(raw, tmp_path / "out", ResampleOptions(), num_workers=1, progress=False)
    by_name = {o.path.rsplit("/", 1)[-1]: o for o in summary.outcomes}
    assert {n for n, o in by_name.items() if o.status == "failed"} == expected["failed"]
    assert {n for n, o in by_name.items() if o.status == "done"} == expected["done"]
    assert expected["ignored"] <= {n for n, o in by_name.items() if o.status == "skipped"}
    assert "0 bytes" in by_name["zero.wav"].reason
    assert "truncated" in by_name["cut.wav"].reason
    assert "silent" in by_name["silent.wav"].reason
    assert "not a readable audio file" in by_name["fake.wav"].reason
    assert (tmp_path / "out" / "good" / "名前 with space.wav").is_file()
    assert not (tmp_path / "out" / "empty").exists()
    assert summary.exit_code == 1
    # and the script says so with its exit status
    assert resample_script.main(["--in_dir", str(raw), "--out_dir2", str(tmp_path / "o2"), "--num_workers", "1"]) == 1


def test_two_workers_and_skip_existing(tmp_path):
    raw = make_raw_dataset(tmp_path / "raw", clips=2, seconds=0.4)
    out = tmp_path / "out"
    s = resample_dataset(raw, out, ResampleOptions(), num_workers=2, progress=False)
    assert len(s.done) == 4 and not s.failed
    first = (out / "bob" / "bob_01.wav").read_bytes()
    (out / "alice" / "alice_00.wav").unlink()
    s = resample_dataset(raw, out, ResampleOptions(), num_workers=1, skip_existing=True, progress=False)
    assert [o.path.rsplit("/", 1)[-1] for o in s.done] == ["alice_00.wav"]
    assert len(s.skipped) == 3
    assert (out / "bob" / "bob_01.wav").read_bytes() == first  # workers and in-process agree


def test_refuses_to_overwrite_the_input(tmp_path):
    raw = make_raw_dataset(tmp_path / "raw", clips=1, seconds=0.3)
    with pytest.raises(ConfigError, match="overwrite the raw"):
        resample_dataset(raw, raw, ResampleOptions(), num_workers=1, progress=False)
