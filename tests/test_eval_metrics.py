"""evaluation.metrics and the report helpers: exact values on hand-made tracks, list parsing, table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import METRIC_KEYS, f0_metrics, loudness_corr, mean_metrics
from evaluation.runner import EvalPair, expand_refs, markdown_table, read_pair_list
from modules.errors import SvcError


def _track(n=200, seed=0):
    rng = np.random.default_rng(seed)
    f0 = 220.0 * 2 ** (np.cumsum(rng.normal(0, 0.01, n)))
    voiced = np.ones(n, bool)
    voiced[50:70] = False
    return f0, voiced


def test_identical_tracks():
    f0, v = _track()
    m = f0_metrics(f0, v, f0, v)
    assert m["f0_rmse_cents"] == 0.0
    assert m["f0_corr"] == pytest.approx(1.0)
    assert m["vuv_f1"] == 1.0


def test_transpose_and_constant_offset():
    f0, v = _track()
    up = f0 * 2 ** (3 / 12)
    assert f0_metrics(f0, v, up, v)["f0_rmse_cents"] == pytest.approx(300.0)
    assert f0_metrics(f0, v, up, v, transpose=3)["f0_rmse_cents"] == pytest.approx(0.0, abs=1e-9)
    # a 50-cent error on a quarter of the voiced frames → RMS = 50·sqrt(1/4)
    off = f0.copy()
    idx = np.flatnonzero(v)[::4]
    off[idx] *= 2 ** (50 / 1200)
    expected = 50 * math.sqrt(len(idx) / v.sum())
    assert f0_metrics(f0, v, off, v)["f0_rmse_cents"] == pytest.approx(expected)


def test_vuv_f1_counts_and_only_both_voiced_frames_count_for_pitch():
    f0, v = _track(100)
    conv_v = v.copy()
    conv_v[:10] = False          # 10 false negatives
    conv_v[55:60] = True         # 5 false positives (source unvoiced at 50..69)
    conv = f0.copy()
    conv[:10] = 1000.0           # wrong pitch, but unvoiced in the conversion: not counted
    m = f0_metrics(f0, v, conv, conv_v)
    tp = int((v & conv_v).sum())
    assert m["vuv_f1"] == pytest.approx(2 * tp / (2 * tp + 5 + 10))
    assert m["f0_rmse_cents"] == pytest.approx(0.0, abs=1e-9)


def test_undefined_metrics_are_none():
    f0, v = _track(50)
    none = np.zeros(50, bool)
    m = f0_metrics(f0, v, f0, none)
    assert m["f0_rmse_cents"] is None and m["f0_corr"] is None and m["vuv_f1"] == 0.0
    assert f0_metrics(f0, none, f0, none)["vuv_f1"] is None
    flat = np.full(50, 200.0)
    assert f0_metrics(flat, v, flat, v)["f0_corr"] is None   # constant pitch: correlation undefined


def test_lengths_compared_over_the_shorter():
    f0, v = _track(100)
    assert f0_metrics(f0, v, f0[:80], v[:80])["f0_rmse_cents"] == 0.0


def test_loudness_corr():
    rng = np.random.default_rng(1)
    rms = np.abs(rng.normal(0.1, 0.05, 300)) + 1e-3
    assert loudness_corr(rms, rms * 0.5) == pytest.approx(1.0)   # a gain is a dB offset: still 1
    assert loudness_corr(rms, rms[::-1].copy()) < 0.5


def test_mean_metrics_ignores_none():
    rows = [dict.fromkeys(METRIC_KEYS, None) | {"f0_rmse_cents": 10.0}, dict.fromkeys(METRIC_KEYS, None)
            | {"f0_rmse_cents": 30.0, "vuv_f1": 0.5}]
    m = mean_metrics(rows)
    assert m["f0_rmse_cents"] == 20.0 and m["vuv_f1"] == 0.5 and m["spk_sim_target"] is None


def test_list_file(tmp_path):
    (tmp_path / "l.txt").write_text("# comment\n\na.wav|b.wav\nc.wav | d.wav | -2.5\n", encoding="utf-8")
    pairs = read_pair_list(tmp_path / "l.txt", transpose=1)
    assert pairs == [EvalPair(tmp_path / "a.wav", tmp_path / "b.wav", 1), EvalPair(tmp_path / "c.wav", tmp_path / "d.wav", -2.5)]


@pytest.mark.parametrize("text, message", [("a.wav\n", ":1: expected"), ("a|b|x\n", "transpose must be a number"),
                                           ("# nothing\n", "holds no pairs")])
def test_bad_list_file(tmp_path, text, message):
    (tmp_path / "l.txt").write_text(text, encoding="utf-8")
    with pytest.raises(SvcError, match=message):
        read_pair_list(tmp_path / "l.txt")
    with pytest.raises(SvcError, match="list file not found"):
        read_pair_list(tmp_path / "missing.txt")


def test_expand_refs(tmp_path):
    (tmp_path / "refs").mkdir()
    for n in ("b.wav", "a.flac", "notes.txt"):
        (tmp_path / "refs" / n).write_bytes(b"x")
    assert [p.name for p in expand_refs([tmp_path / "refs"])] == ["a.flac", "b.wav"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SvcError, match="no audio files"):
        expand_refs([tmp_path / "empty"])
    with pytest.raises(SvcError, match="target reference not found"):
        expand_refs([tmp_path / "nope.wav"])


def test_markdown_table():
    row = {"source": "s.wav", "converted": "x|y.wav", "transpose": 2.0, **dict.fromkeys(METRIC_KEYS, 0.5)}
    row["spk_sim_target"] = None
    report = {"pairs": [row, row], **mean_metrics([row, row])}
    lines = markdown_table(report).splitlines()
    assert len(lines) == 5 and lines[2].startswith("| x\\|y.wav | 2 | 0.5 | 0.500")
    assert "| – |" in lines[2] and lines[4].startswith("| **mean** |")
