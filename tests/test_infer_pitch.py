"""Pitch in the conversion path (issue 20): range/repair options, F0 files, key suggestion."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from infer_helpers import models_in_use, song, voice
from inference.infer_tool import Svc
from inference.options import ConversionOptions, OptionError
from modules.f0_file import read_f0_csv, write_f0_csv
from modules.f0_stats import SpeakerF0Stats, save_f0_stats

SR = 44100


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with models_in_use(tmp_path_factory.mktemp("pitch_models")) as ms:
        # bob sings one octave below the 220 Hz test voice; alice has no statistics
        bob = SpeakerF0Stats(frames=1000, voiced_seconds=11.6, median_hz=110.0, p5_hz=90.0, p95_hz=140.0)
        # carol's range holds the 220 Hz part of song() but not its 300 Hz tail
        carol = SpeakerF0Stats(frames=1000, voiced_seconds=11.6, median_hz=220.0, p5_hz=200.0, p95_hz=245.0)
        save_f0_stats(ms.config.parent / "f0_stats.json", {"bob": bob, "carol": carol})
        yield ms


@pytest.fixture(scope="module")
def svc(models):
    return Svc(models.g, models.config, device="cpu", cluster_model_path="")


def test_pitch_options_are_validated():
    with pytest.raises(OptionError, match=r"f0_min = 900 Hz, f0_max = 80 Hz"):
        ConversionOptions(f0_min=900, f0_max=80)
    with pytest.raises(OptionError, match="f0_min"):
        ConversionOptions(f0_min=-5)
    with pytest.raises(OptionError, match="f0_repair"):
        ConversionOptions(f0_repair="yes")
    o = ConversionOptions.from_mapping({"f0_min": "", "f0_max": "700", "f0_repair": "true", "auto_key": "1"})
    assert (o.f0_min, o.f0_max, o.f0_repair, o.auto_key) == (None, 700, True, True)
    assert ConversionOptions(f0_predictor="hybrid:pm+dio").f0_predictor == "hybrid:pm+dio"
    assert "hybrid:rmvpe+fcpe+crepe" in ConversionOptions.choices("f0_predictor")
    with pytest.raises(OptionError, match="hybrid:pm"):
        ConversionOptions(f0_predictor="hybrid:pm")
    d = ConversionOptions()
    assert (d.f0_min, d.f0_max, d.f0_repair, d.auto_key) == (None, None, False, False)


def test_range_and_repair_reach_the_predictor(svc):
    plain = svc.f0_predictor("dio", 0.05)
    ranged = svc.f0_predictor("dio", 0.05, f0_min=100.0, f0_max=400.0, f0_repair=True)
    assert ranged is not plain and svc.f0_predictor("dio", 0.05) is plain
    assert (ranged.f0_min, ranged.f0_max) == (100.0, 400.0) and ranged.repair is not None
    # a 220 Hz voice converted with a range that excludes it comes out differently
    y = voice(0.8, SR, 220.0, seed=1)
    opts = ConversionOptions(f0_predictor="dio")
    a = svc.convert(y, SR, "bob", opts, progress=False)
    b = svc.convert(y, SR, "bob", opts.replace(f0_min=300, f0_max=1000), progress=False)
    assert not np.array_equal(a, b)


def test_f0_out_then_f0_file_gives_the_same_audio(svc, tmp_path):
    y, _ = song(SR)  # two voiced pieces around a silence
    opts = ConversionOptions(transpose=3)
    curves = []
    a = svc.convert(y, SR, "alice", opts, progress=False, on_f0=curves.append)
    (curve,) = curves
    assert curve.transpose == 3 and len(curve) == len(curve.uv) == len(curve.time_s)
    v = curve.voiced()
    assert v.sum() > 100
    np.testing.assert_allclose(np.median(curve.source_f0[v]), 220.0, rtol=0.03)
    np.testing.assert_allclose(np.median(curve.f0[v]) / np.median(curve.source_f0[v]), 2 ** 0.25, rtol=1e-6)
    assert curve.time_s[v].max() < len(y) / SR
    path = write_f0_csv(tmp_path / "used.csv", curve.f0, curve.uv, hop_length=svc.hop_size,
                        sampling_rate=svc.target_sample)
    f0, uv = read_f0_csv(path, hop_length=svc.hop_size, sampling_rate=svc.target_sample)
    again = []
    b = svc.convert(y, SR, "alice", opts, progress=False, f0_curve=(f0, uv), on_f0=again.append)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again[0].f0, curve.f0)
    assert again[0].transpose == 0
    # an edited curve changes the audio
    c = svc.convert(y, SR, "alice", opts, progress=False, f0_curve=(f0 * 1.5, uv))
    assert not np.array_equal(a, c)


def test_given_curve_of_another_length_is_resampled(svc, caplog):
    y = voice(0.8, SR, 220.0, seed=1)
    with caplog.at_level(logging.WARNING):
        out = svc.convert(y, SR, "alice", ConversionOptions(), progress=False,
                          f0_curve=(np.full(10, 200.0), np.ones(10, np.float32)))
    assert out.shape == y.shape and "resampling it" in caplog.text


def test_key_suggestion_one_octave_below_is_minus_12(svc, caplog):
    y = voice(1.5, SR, 220.0, seed=4)
    with caplog.at_level(logging.INFO):
        plain = svc.convert(y, SR, "bob", ConversionOptions(), progress=False)
    assert "suggested key for speaker bob: -12 semitones" in caplog.text
    # untransposed, the song lies an octave above bob's 90-140 Hz: the warning names the seconds
    assert "outside speaker bob's 5-95 % range (90-140 Hz)" in caplog.text
    caplog.clear()
    curves = []
    with caplog.at_level(logging.INFO):
        auto = svc.convert(y, SR, "bob", ConversionOptions(auto_key=True), progress=False, on_f0=curves.append)
    assert curves[0].transpose == -12 and "--auto_key applies it" in caplog.text
    assert "outside speaker bob's" not in caplog.text  # transposed, the song sits in bob's range
    manual = svc.convert(y, SR, "bob", ConversionOptions(transpose=-12), progress=False)
    np.testing.assert_array_equal(auto, manual)
    assert not np.array_equal(auto, plain)


def test_out_of_range_spans_are_song_seconds(svc):
    from inference.pitch import key_report

    y, (gap_start, gap_end) = song(SR)  # 220 Hz for 5.4 s, silence, 300 Hz for 1 s
    curves = []
    svc.convert(y, SR, "carol", ConversionOptions(), progress=False, on_f0=curves.append)
    report = key_report(curves[0], svc.speaker_f0_stats("carol"), "carol")
    assert report.suggested == 0
    (start, end), = report.out_of_range
    assert abs(start - gap_end / SR) < 0.1 and abs(end - len(y) / SR) < 0.1


def test_auto_key_without_statistics_names_the_fix(svc):
    from modules.errors import SvcError

    with pytest.raises(SvcError, match="f0 statistics of speaker 'alice'"):
        svc.convert(voice(0.5, SR), SR, "alice", ConversionOptions(auto_key=True), progress=False)


# --- inference_main.py ---------------------------------------------------------------------------
@pytest.fixture
def cli(models, tmp_path, monkeypatch):
    import soundfile as sf

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("modules.cli.setup_logging", lambda *a, **k: None)
    (tmp_path / "raw").mkdir()
    y, _ = song(SR)
    sf.write(tmp_path / "raw" / "song.wav", y, SR)
    return tmp_path


def _main(argv):
    import inference_main
    from modules.cli import run_main

    return run_main(inference_main.main, argv)


def test_cli_f0_out_then_f0_file_gives_the_same_audio(models, cli, capsys):
    import soundfile as sf

    base = ["-m", str(models.g), "-c", str(models.config), "-n", "song.wav", "-s", "alice", "-wf", "wav"]
    assert _main(base + ["-t", "2", "--f0_out"]) == 0, capsys.readouterr().err
    result = cli / "results" / "song.wav_2key_alice_sovits_pm.wav"
    csv = cli / "results" / "song.wav_2key_alice_sovits_pm.f0.csv"
    assert result.is_file() and csv.read_text().startswith("time_s,f0_hz,voiced\n")
    assert _main(base + ["--f0_file", str(csv)]) == 0, capsys.readouterr().err
    again = cli / "results" / "song.wav_0key_alice_sovits_pm.wav"
    np.testing.assert_array_equal(sf.read(result, dtype="int16")[0], sf.read(again, dtype="int16")[0])
    # a bad row is named before any conversion
    csv.write_text(csv.read_text().replace("\n0.0,", "\nnan,", 1))
    assert _main(base + ["--f0_file", str(csv)]) != 0
    assert "row 2" in capsys.readouterr().err


def test_cli_f0_file_count_must_match_inputs(models, cli, capsys):
    argv = ["-m", str(models.g), "-c", str(models.config), "-n", "song.wav", "-s", "alice", "--f0_file", "a.csv", "b.csv"]
    assert _main(argv) != 0 and "2 file(s) for 1 input(s)" in capsys.readouterr().err


def test_cli_reports_and_applies_the_key_suggestion(models, cli, capsys, caplog):
    argv = ["-m", str(models.g), "-c", str(models.config), "-n", "song.wav", "-s", "bob", "-wf", "wav"]
    with caplog.at_level(logging.INFO):
        assert _main(argv + ["--auto_key"]) == 0, capsys.readouterr().err
    assert "suggested key for speaker bob: -12 semitones" in caplog.text
    # the result's name carries the key that was used
    assert (cli / "results" / "song.wav_-12key_bob_sovits_pm.wav").is_file()


def test_model_file_statistics_are_read(models, tmp_path):
    import json

    from inference.pitch import model_f0_stats
    from modelfile import export_model

    doc = json.loads((models.config.parent / "f0_stats.json").read_text())
    path = export_model(model_path=models.g, config_path=models.config, output_path=tmp_path / "v.svc.safetensors",
                        f0_stats=doc)
    assert model_f0_stats(path)["bob"].median_hz == 110.0
    svc = Svc(path, None, device="cpu", cluster_model_path="")
    assert svc.speaker_f0_stats("bob").median_hz == 110.0 and svc.speaker_f0_stats("alice") is None


def test_cli_auto_key_without_statistics_is_refused_before_loading(models, cli, capsys, monkeypatch):
    monkeypatch.setattr(Svc, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    argv = ["-m", str(models.g), "-c", str(models.config), "-n", "song.wav", "-s", "alice", "--auto_key"]
    assert _main(argv) != 0
    assert "f0 statistics of speaker(s) alice; this model has them for bob, carol" in capsys.readouterr().err
