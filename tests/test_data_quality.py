"""Dataset quality report (issue 22): every planted problem flagged exactly, clean data not,
bad input reported by name, the input folder never changes."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from data_helpers import SR, make_quality_dataset, speech
from preprocess_helpers import make_bad_dataset, write
from preprocessing.report import DatasetError
from preprocessing.quality import ERRORS, Issue, QualityOptions, check_dataset, find_duplicates


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    expected = make_quality_dataset(root)
    before = _snapshot(root)
    report = check_dataset(root, num_workers=1, progress=False)
    return root, expected, before, report


def test_each_planted_problem_is_flagged_exactly_and_clean_clips_are_not(planted):
    root, expected, _, report = planted
    found = {Path(p): {k.value for k in kinds} for p, kinds in report.kinds().items()}
    assert found == {root / "bad" / name: {kind} for name, kind in expected.items()}
    # the kept original of the duplicate pair and the four clean clips have no problem
    assert all(not f.problems for f in report.files if Path(f.path).parent.name == "clean")
    assert not next(f for f in report.files if f.path.endswith("a_original.wav")).problems
    assert [p.kind for p in report.errors] == [Issue.TOO_SHORT]


def test_problems_name_file_value_threshold_and_advice(planted):
    _, _, _, report = planted
    by_kind = {p.kind: p for p in report.problems}
    up = by_kind[Issue.UPSAMPLED]
    assert "16 kHz" in up.value and up.threshold and "original" in up.advice
    assert "a_original.wav" in by_kind[Issue.DUPLICATE].value
    assert "40.0 s" in by_kind[Issue.TOO_LONG].value and by_kind[Issue.TOO_LONG].threshold == "30 s"
    assert "0.20 s" in by_kind[Issue.TOO_SHORT].value
    for p in report.problems:
        text = str(p)
        assert text.startswith(p.path) and p.kind.value in text and p.advice in text and p.value


def test_measurements_of_a_clean_clip(planted):
    _, _, _, report = planted
    c1 = next(f for f in report.files if f.path.endswith("c1.wav"))   # 6 s, F0 180 Hz ± 2 % vibrato
    assert c1.seconds == pytest.approx(6.0) and c1.samplerate == SR and c1.channels == 1
    assert c1.original_rate == SR and c1.bandwidth_hz == SR / 2
    assert abs(c1.dc_offset) < 1e-3 and c1.clipped_share == 0 and c1.snr_db > 30
    assert 170 < c1.f0_low < c1.f0_median < c1.f0_high < 190 and c1.voiced_share > 0.5
    spk = report.speakers["clean"]
    assert spk.files == spk.usable == 4 and spk.seconds == pytest.approx(5 + 6 + 7 + 8)
    assert 140 < spk.f0_low < 160 and 230 < spk.f0_high < 250


def test_input_folder_is_unchanged(planted):
    root, _, before, _ = planted
    assert _snapshot(root) == before


def test_upsampling_estimate_follows_the_original_rate(tmp_path):
    from modules.audio import resample

    for rate in (16000, 22050, 32000):
        write(tmp_path / "s" / f"r{rate}.wav", resample(speech(4.0, rate, seed=rate), rate, SR), SR, "PCM_16")
    write(tmp_path / "s" / "full.wav", speech(4.0, 48000, seed=1), 48000, "PCM_16")  # full band at 48 kHz
    report = check_dataset(tmp_path, num_workers=1, progress=False)
    made_at = {Path(f.path).stem: f.original_rate for f in report.files}
    assert made_at == {"r16000": 16000, "r22050": 22050, "r32000": 32000, "full": 48000}


def test_near_duplicate_in_another_level_is_found(tmp_path):
    y = speech(5.0, seed=5)
    write(tmp_path / "s" / "a.wav", y, SR, "PCM_16")
    write(tmp_path / "s" / "b.flac", 0.5 * y, SR)                          # same take, other level/format
    write(tmp_path / "s" / "c.wav", speech(5.0, f0=260, seed=6), SR, "PCM_16")  # same length, other take
    report = check_dataset(tmp_path, num_workers=1, progress=False)
    dups = [p for p in report.problems if p.kind is Issue.DUPLICATE]
    assert [(Path(p.path).name, "a.wav" in p.value) for p in dups] == [("b.flac", True)]
    assert find_duplicates([]) == []


def test_bad_input_is_reported_by_name_without_traceback(tmp_path):
    raw = tmp_path / "raw"
    make_bad_dataset(raw)
    write(raw / "other" / "stereo 22k.wav", np.stack([speech(2.0, 22050)] * 2, 1), 22050, "FLOAT")
    before = _snapshot(raw)
    report = check_dataset(raw, num_workers=1, progress=False)
    kinds = {Path(p).name: {k.value for k in v} for p, v in report.kinds().items()}
    assert kinds["zero.wav"] == {"unreadable"} and kinds["fake.wav"] == {"unreadable"}
    assert kinds["cut.wav"] == {"truncated"} and kinds["silent.wav"] == {"silent"} and kinds["tiny.wav"] == {"too_short"}
    assert "stereo 22k.wav" not in kinds and "名前 with space.wav" not in kinds
    left = {Path(o.path).name for o in report.left_out}
    assert {".DS_Store", "notes.txt", "readme.txt"} <= left
    assert {p.kind for p in report.errors} <= ERRORS
    assert _snapshot(raw) == before
    # the resampled set: a wrong rate or channel count is an error there
    strict = check_dataset(raw, QualityOptions(sampling_rate=SR), num_workers=1, progress=False)
    assert {k.value for k in strict.kinds()[str(raw / "other" / "stereo 22k.wav")]} == {"wrong_format"}


def test_check_dataset_cli_and_html(tmp_path, caplog):
    import check_dataset as cli

    from modules.cli import run_main

    make_quality_dataset(tmp_path / "ds", planted=False)
    with caplog.at_level(logging.INFO):
        assert run_main(cli.main, ["--in_dir", str(tmp_path / "ds"), "--html", str(tmp_path / "r.html")]) == 0
    assert "no problems found" in caplog.text
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "No problems found" in page
    # a second run may replace its own report, never another file; the input folder is refused
    assert run_main(cli.main, ["--in_dir", str(tmp_path / "ds"), "--html", str(tmp_path / "r.html")]) == 0
    (tmp_path / "notes.html").write_text("<p>mine</p>")
    assert run_main(cli.main, ["--in_dir", str(tmp_path / "ds"), "--html", str(tmp_path / "notes.html")]) == 2
    assert (tmp_path / "notes.html").read_text() == "<p>mine</p>"
    assert run_main(cli.main, ["--in_dir", str(tmp_path / "ds"), "--html", str(tmp_path / "ds" / "r.html")]) == 2
    assert run_main(cli.main, ["--in_dir", str(tmp_path / "missing")]) == 2
    write(tmp_path / "ds" / "clean" / "blip.wav", speech(0.1), SR, "PCM_16")
    assert run_main(cli.main, ["--in_dir", str(tmp_path / "ds")]) == 1  # an error: exit 1


def test_preprocess_flist_config_summarises_and_strict_stops(tmp_path, monkeypatch, caplog):
    import preprocess_flist_config

    ds = tmp_path / "dataset" / "44k"
    for spk in ("a", "b"):
        for i in range(3):
            write(ds / spk / f"{spk}{i}.wav", speech(2.0, f0=150 + 20 * i, seed=10 * i + ord(spk)), SR, "PCM_16")
    write(ds / "a" / "clipped.wav", np.clip(4 * speech(2.0, seed=40), -1, 1), SR, "PCM_16")
    (ds / "a" / "broken.wav").write_text("not audio")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO):
        assert preprocess_flist_config.main(["--config_dir", "cfg"]) == 1  # as before: broken.wav left out
    assert "1 clipped" in caplog.text and "clipped.wav: clipped" in caplog.text
    assert Path("cfg/config.json").exists()
    Path("cfg/config.json").unlink()
    with pytest.raises(DatasetError, match=r"(?s)1 clip\(s\) cannot be trained on.*broken.wav: unreadable.*Nothing was written"):
        preprocess_flist_config.main(["--config_dir", "cfg", "--strict"])
    assert not Path("cfg/config.json").exists()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert preprocess_flist_config.main(["--config_dir", "cfg", "--skip_check"]) == 1
    assert "dataset check" not in caplog.text


def test_an_unsliced_recording_is_reported_without_loading_it(tmp_path, monkeypatch):
    import soundfile as sf

    import preprocessing.quality as q

    write(tmp_path / "s" / "whole album.wav", np.zeros(601 * 8000, np.int16), 8000, "PCM_16")
    monkeypatch.setattr(sf, "read", lambda *a, **k: pytest.fail("the samples were read"))
    report = q.check_dataset(tmp_path, num_workers=1, progress=False)
    (p,) = report.problems
    assert p.kind is Issue.TOO_LONG and "10.0 min" in p.value and "slice_audio.py" in p.advice
    assert report.speakers["s"].seconds == pytest.approx(601)
