"""evaluate.py end to end on synthetic singing: identical files, transposition, rates, bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from eval_helpers import SR, needs_speaker_weights, sung, write
from modules.audio import resample
from modules.cli import run_main

pytestmark = needs_speaker_weights

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import evaluate  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_cli")
    src = sung(3.0, seed=0)
    f = {
        "src": write(d / "src.wav", src),
        "up2": write(d / "up2.wav", sung(3.0, seed=0, semitones=2)),
        "src44k": write(d / "src44k.flac", resample(src, SR, 44100), 44100),
        "silence": write(d / "silence.wav", np.zeros(SR, np.float32)),
        "alto_refs": d / "alto_refs",
        "bari_refs": d / "bari_refs",
    }
    for name, voice in (("alto_refs", "alto"), ("bari_refs", "baritone")):
        f[name].mkdir()
        for seed in (10, 11):
            write(f[name] / f"{seed}.wav", sung(3.0, voice=voice, seed=seed))
    return f


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setattr("modules.cli.setup_logging", lambda *a, **k: None)
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path / "no_pretrain"))   # FCPE from the torchfcpe wheel
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(argv, capsys, tmp_path):
    out = tmp_path / "report.json"
    code = run_main(evaluate.main, [*map(str, argv), "--json", str(out), "-d", "cpu"])
    cap = capsys.readouterr()
    return code, (json.loads(out.read_text()) if code == 0 else None), cap.out, cap.err


def test_identical_files(files, capsys, tmp_path):
    code, rep, out, _ = run(["--source", files["src"], "--converted", files["src"]], capsys, tmp_path)
    assert code == 0
    assert set(rep) >= {"f0_rmse_cents", "f0_corr", "vuv_f1", "loudness_corr", "spk_sim_target", "spk_sim_source",
                        "duration_ratio", "pairs"}
    assert rep["f0_rmse_cents"] == 0.0 and rep["vuv_f1"] == 1.0 and rep["duration_ratio"] == 1.0
    assert rep["f0_corr"] == pytest.approx(1.0) and rep["loudness_corr"] == pytest.approx(1.0)
    assert rep["spk_sim_source"] == pytest.approx(1.0, abs=1e-5)
    assert rep["spk_sim_target"] is None                     # no --target_refs
    assert out.splitlines()[0].startswith("| converted | t | F0 RMSE (cents) |")
    assert "| src.wav | 0 | 0.0 | 1.000 | 1.000 | 1.000 | – | 1.000 | 1.000 |" in out


def test_transposed_copy(files, capsys, tmp_path):
    code, rep, _, _ = run(["--source", files["src"], "--converted", files["up2"], "--transpose", "2"], capsys, tmp_path)
    assert code == 0 and rep["f0_rmse_cents"] < 20
    assert rep["pairs"][0]["transpose"] == 2.0
    code, rep, _, _ = run(["--source", files["src"], "--converted", files["up2"]], capsys, tmp_path)
    assert code == 0 and rep["f0_rmse_cents"] == pytest.approx(200, abs=20)
    assert rep["f0_corr"] > 0.99 and rep["vuv_f1"] > 0.95   # same melody and phrasing, only higher


def test_other_sample_rate_is_resampled(files, capsys, tmp_path):
    code, rep, _, _ = run(["--source", files["src"], "--converted", files["src44k"]], capsys, tmp_path)
    assert code == 0
    assert rep["f0_rmse_cents"] < 5 and rep["vuv_f1"] > 0.98 and rep["spk_sim_source"] > 0.99
    assert rep["duration_ratio"] == pytest.approx(1.0, abs=1e-3)


def test_target_refs_similarity(files, capsys, tmp_path):
    _, same, _, _ = run(["--source", files["up2"], "--converted", files["src"], "--target_refs", files["alto_refs"]],
                        capsys, tmp_path)
    _, other, _, _ = run(["--source", files["up2"], "--converted", files["src"], "--target_refs",
                          *sorted(files["bari_refs"].iterdir())], capsys, tmp_path)
    assert same["spk_sim_target"] > other["spk_sim_target"] + 0.05
    assert len(other["target_refs"]) == 2


def test_list_file_several_pairs(files, capsys, tmp_path):
    lst = tmp_path / "pairs.txt"
    lst.write_text(f"{files['src']}|{files['src']}\n{files['src']}|{files['up2']}|2\n", encoding="utf-8")
    code, rep, out, _ = run(["--list", lst], capsys, tmp_path)
    assert code == 0 and len(rep["pairs"]) == 2
    assert [p["transpose"] for p in rep["pairs"]] == [0.0, 2.0]
    assert rep["f0_rmse_cents"] == pytest.approx(np.mean([p["f0_rmse_cents"] for p in rep["pairs"]]))
    assert "| **mean** |" in out


@pytest.mark.parametrize("which", ["source", "converted"])
def test_silence_only_is_refused(files, capsys, tmp_path, which):
    argv = {"source": files["src"], "converted": files["src"], which: files["silence"]}
    code, _, out, err = run(["--source", argv["source"], "--converted", argv["converted"]], capsys, tmp_path)
    assert code == 2 and out == ""
    assert f"silence.wav ({which}): silent" in err and "every sample is zero" in err


def test_missing_files_fail_before_loading_models(files, capsys, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("models loaded before the inputs were checked")

    monkeypatch.setattr("evaluation.analysis.Analyzer.__init__", boom)
    cases = [(["--source", tmp_path / "nope.wav", "--converted", files["src"]], "nope.wav: source file not found"),
             (["--source", files["src"], "--converted", tmp_path / "gone.wav"], "gone.wav: converted file not found"),
             (["--source", files["src"], "--converted", files["src"], "--target_refs", tmp_path / "refs"],
              "target reference not found"),
             (["--source", files["src"], "--converted", files["src"], "-f0p", "yin"], "unknown f0 predictor 'yin'")]
    cases.append((["--source", files["src"], "--converted", files["src"], "--speaker_encoder", tmp_path / "enc.pt"],
                  "enc.pt: speaker-encoder weights not found"))
    (tmp_path / "empty").mkdir()
    cases.append((["--source", files["src"], "--converted", files["src"], "--target_refs", tmp_path / "empty"],
                  "no audio files"))
    for argv, message in cases:
        code, _, _, err = run(argv, capsys, tmp_path)
        assert code == 2 and message in err, (argv, err)


def test_silent_reference_is_named(files, capsys, tmp_path):
    code, _, _, err = run(["--source", files["src"], "--converted", files["src"], "--target_refs", files["silence"]],
                          capsys, tmp_path)
    assert code == 2 and "silence.wav (target reference): silent" in err


def test_not_audio(files, capsys, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    code, _, _, err = run(["--source", files["src"], "--converted", bad], capsys, tmp_path)
    assert code == 2 and "bad.wav: not a readable audio file" in err


def test_flag_combinations(capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--source", "a.wav"])
    assert e.value.code == 2 and "give --source and --converted" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--list", "l.txt", "--source", "a.wav"])
    assert "not both" in capsys.readouterr().err


def test_help_is_light():
    import subprocess

    code = ("import sys; sys.argv = ['evaluate.py', '--help']; import evaluate\n"
            "try:\n    evaluate.main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'evaluate.py --help imported torch'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for flag in ("--source", "--converted", "--list", "--transpose", "--target_refs", "--json", "--f0_predictor"):
        assert flag in out
