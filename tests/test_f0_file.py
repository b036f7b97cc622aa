"""F0 curve files (modules.f0_file): exact round trip, row-named errors, resampling."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from modules.errors import SvcError
from modules.f0_file import F0FileError, format_f0_csv, parse_f0_csv, read_f0_csv, resample_curve, write_f0_csv
from modules.f0 import interpolate_f0

HOP, SR = 512, 44100
KW = dict(hop_length=HOP, sampling_rate=SR)


def curve(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = 110 * 2 ** rng.uniform(0, 3, n)  # awkward float64 values
    raw[rng.random(n) < 0.3] = 0.0
    return interpolate_f0(raw)


def test_round_trip_is_exact(tmp_path):
    f0, uv = curve()
    path = write_f0_csv(tmp_path / "song.f0.csv", f0, uv, **KW)
    back_f0, back_uv = read_f0_csv(path, **KW, n_frames=len(f0))
    assert back_f0.dtype == np.float64 and back_uv.dtype == np.float32
    np.testing.assert_array_equal(back_f0, f0)
    np.testing.assert_array_equal(back_uv, uv)
    lines = path.read_text().splitlines()
    assert lines[0] == "time_s,f0_hz,voiced" and len(lines) == len(f0) + 1
    assert lines[2].split(",")[0] == repr(HOP / SR)
    # transposed values (after -t) survive too, and an all-unvoiced curve
    np.testing.assert_array_equal(parse_f0_csv(format_f0_csv(f0 * 2 ** (5 / 12), uv, **KW), **KW)[0],
                                  f0 * 2 ** (5 / 12))
    # the synthesizer's float32 curve (as inference holds it) comes back bit for bit after a cast
    f32 = (f0 * 2 ** (-7 / 12)).astype(np.float32)
    np.testing.assert_array_equal(parse_f0_csv(format_f0_csv(f32, uv, **KW), **KW)[0].astype(np.float32), f32)
    z = parse_f0_csv(format_f0_csv(np.zeros(4), np.zeros(4), **KW), **KW)
    assert z[0].tolist() == [0] * 4 and z[1].tolist() == [0] * 4


def test_existing_file_is_not_overwritten_silently(tmp_path):
    f0, uv = curve(10)
    p = tmp_path / "c.csv"
    p.write_text("mine")
    with pytest.raises(SvcError, match="exists"):
        write_f0_csv(p, f0, uv, **KW)
    assert p.read_text() == "mine"
    write_f0_csv(p, f0, uv, **KW, overwrite=True)
    assert p.read_text().startswith("time_s")
    with pytest.raises(SvcError, match="NaN"):
        write_f0_csv(tmp_path / "nan.csv", np.array([np.nan]), np.array([1.0]), **KW)
    assert not (tmp_path / "nan.csv").exists()


def _csv(rows: list[str]) -> str:
    return "time_s,f0_hz,voiced\n" + "\n".join(rows) + "\n"


def _t(i: int) -> str:
    return repr(i * HOP / SR)


@pytest.mark.parametrize("bad_row,message", [
    ("{t},220", "row 4: wrong columns: expected 3"),
    ("{t},220,1,9", "row 4: wrong columns: expected 3"),
    ("{t};220;1", "row 4: wrong columns"),
    ("{t},abc,1", "row 4: f0_hz 'abc' is not a number"),
    ("{t},nan,1", "row 4: f0_hz is NaN or infinite"),
    ("{t},inf,0", "row 4: f0_hz is NaN or infinite"),
    ("{t},-220,1", "row 4: negative value (f0_hz = -220)"),
    ("{t},220,0.5", "row 4: voiced must be 0 or 1, got 0.5"),
    ("{t},9000,1", "row 4: f0_hz 9000 Hz is out of range (voiced rows need 5-8000 Hz)"),
    ("{t},0,1", "row 4: f0_hz 0 Hz is out of range"),
    ("{t},8500,0", "row 4: f0_hz 8500 Hz is out of range (unvoiced rows need 0-8000 Hz)"),
    ("9.5,220,1", "row 4: time_s 9.5 s is not frame 2's time"),
])
def test_bad_rows_are_named(bad_row, message):
    rows = [f"{_t(0)},220,1", f"{_t(1)},221,1", bad_row.format(t=_t(2)), f"{_t(3)},222,1"]
    with pytest.raises(F0FileError) as e:
        parse_f0_csv(_csv(rows), source="edited.csv", **KW)
    assert str(e.value).startswith("edited.csv: 1 bad row(s):") and message in str(e.value)


def test_many_bad_rows_are_listed_up_to_ten():
    rows = [f"{_t(i)},nan,1" for i in range(14)]
    msg = str(pytest.raises(F0FileError, parse_f0_csv, _csv(rows), **KW).value)
    assert "14 bad row(s)" in msg and "row 2:" in msg and "row 11:" in msg and "row 12:" not in msg
    assert "and 4 more" in msg


def test_other_frame_rate_is_refused():
    rows = [f"{i * 0.01!r},220,1" for i in range(50)]  # 10 ms frames, e.g. from another tool
    msg = str(pytest.raises(F0FileError, parse_f0_csv, _csv(rows), **KW).value)
    assert "other frame rate: rows are 10.000 ms apart" in msg and "11.610 ms" in msg and "86.1328" in msg
    assert "row 4:" in msg  # the first row that has drifted by more than a quarter frame
    # rounding to the millisecond is not another frame rate
    ok = [f"{round(i * HOP / SR, 3)},220,1" for i in range(50)]
    assert len(parse_f0_csv(_csv(ok), **KW)[0]) == 50


def test_header_blank_lines_and_empty_file():
    f0, uv = parse_f0_csv(f"t,hz,v\n{_t(0)},100,1\n\n{_t(1)},110,0\n\n", **KW)
    assert f0.tolist() == [100, 110] and uv.tolist() == [1, 0]
    assert parse_f0_csv(f"{_t(0)},100,1\n", **KW)[0].tolist() == [100]  # no header
    with pytest.raises(F0FileError, match="no data rows"):
        parse_f0_csv("time_s,f0_hz,voiced\n", **KW)
    with pytest.raises(F0FileError, match="row 1: wrong columns: the header"):
        parse_f0_csv("time,f0\n", **KW)


def test_missing_file(tmp_path):
    with pytest.raises(F0FileError, match="not found"):
        read_f0_csv(tmp_path / "none.csv", **KW)


def test_length_mismatch_is_resampled_with_a_warning(caplog):
    f0 = np.linspace(100.0, 200.0, 100)
    uv = np.r_[np.ones(50), np.zeros(50)].astype(np.float32)
    text = format_f0_csv(f0, uv, **KW)
    with caplog.at_level(logging.WARNING):
        g, v = parse_f0_csv(text, source="x.csv", **KW, n_frames=110)
    assert "x.csv: 100 rows for 110 frames" in caplog.text
    assert g.shape == v.shape == (110,) and v.dtype == np.float32
    assert g[0] == pytest.approx(100.0, abs=1) and g[-1] == pytest.approx(200.0, abs=1)
    assert np.all(np.diff(g) >= 0) and v[:54].all() and not v[56:].any()
    same = resample_curve(f0, uv, 100)
    np.testing.assert_array_equal(same[0], f0)
    np.testing.assert_array_equal(same[1], uv)
