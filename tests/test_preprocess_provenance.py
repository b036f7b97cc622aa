"""Provenance of preprocessing artifacts: a re-run with other models recomputes what they made.

Same temporary project as test_preprocess_e2e (tiny random ContentVec through SVC_PRETRAIN_DIR).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import preprocess_flist_config
import preprocess_hubert_f0
import resample
from modules.cli import run_main
from preprocessing import features as F
from preprocessing.provenance import MANIFEST_NAME
from tests.preprocess_helpers import make_raw_dataset


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
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    make_raw_dataset(tmp_path / "dataset_raw", clips=3, seconds=0.4)
    assert resample.main(["--num_workers", "1"]) == 0
    assert preprocess_flist_config.main([]) == 0
    yield tmp_path
    torch.set_num_threads(threads)


def _f0_files() -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(Path("dataset/44k").glob("*/*.wav.f0.npy"))}


def _other_files() -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(Path("dataset/44k").glob("*/*"))
            if p.name.endswith((".soft.pt", ".spec.pt"))}


def _manifest() -> dict:
    return json.loads((Path("dataset/44k") / MANIFEST_NAME).read_text())


def test_rerun_with_another_predictor_recomputes_f0_only(project, caplog):
    assert preprocess_hubert_f0.main(["--f0_predictor", "fcpe"]) == 0
    fcpe_f0, others = _f0_files(), _other_files()
    assert len(fcpe_f0) == 6
    m = _manifest()
    key = "alice/" + next(p.name for p in fcpe_f0 if p.parent.name == "alice")
    producer = m["producers"][m["artifacts"][key]]
    assert producer["f0_predictor"] == "fcpe" and len(producer["sha256"]) == 64
    soft = m["producers"][m["artifacts"][key.replace(".f0.npy", ".soft.pt")]]
    assert soft["speech_encoder"] == "vec768l12" and len(soft["sha256"]) == 64

    caplog.set_level(logging.INFO)
    assert preprocess_hubert_f0.main(["--f0_predictor", "dio"]) == 0
    assert "f0 of 6 file(s) was made by f0 predictor fcpe" in caplog.text
    dio_f0 = _f0_files()
    assert dio_f0.keys() == fcpe_f0.keys()
    assert all(dio_f0[p] != fcpe_f0[p] for p in dio_f0)          # really recomputed
    assert _other_files() == others                               # encoder units and specs untouched
    m = _manifest()
    assert m["producers"][m["artifacts"][key]]["f0_predictor"] == "dio"

    # the same settings again: nothing to do, nothing rewritten
    caplog.clear()
    stamps = {p: p.stat().st_mtime_ns for p in dio_f0}
    assert preprocess_hubert_f0.main(["--f0_predictor", "dio"]) == 0
    assert "recomputing" not in caplog.text
    assert {p: p.stat().st_mtime_ns for p in dio_f0} == stamps


def test_other_encoder_weights_recompute_units(project, pretrain, tmp_path, monkeypatch):
    import vencoder

    assert preprocess_hubert_f0.main(["--f0_predictor", "dio"]) == 0
    units = {p: p.read_bytes() for p in Path("dataset/44k").glob("*/*.soft.pt")}
    other = tmp_path / "other_pretrain"
    other.mkdir()
    vencoder.make_random_checkpoint("vec768l12", other / "checkpoint_best_legacy_500.pt", size="tiny", seed=1)
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(other))
    f0 = _f0_files()
    assert preprocess_hubert_f0.main(["--f0_predictor", "dio"]) == 0
    assert all(p.read_bytes() != data for p, data in units.items())
    assert _f0_files() == f0


def test_missing_weight_file_is_reported_before_any_skipping(project, tmp_path, monkeypatch, capsys):
    assert preprocess_hubert_f0.main(["--f0_predictor", "dio"]) == 0
    before = _f0_files()
    # every artifact exists, but rmvpe.pt does not: an error, not "skipped 6"
    assert run_main(preprocess_hubert_f0.main, ["--f0_predictor", "rmvpe"]) == 2
    err = capsys.readouterr().err
    assert "rmvpe.pt" in err and "download_pretrain.py rmvpe" in err
    assert _f0_files() == before                                  # nothing deleted on the way


def test_unrecorded_artifacts_are_kept_unless_forced(project, caplog):
    assert preprocess_hubert_f0.main(["--f0_predictor", "dio"]) == 0
    (Path("dataset/44k") / MANIFEST_NAME).unlink()               # as if written by 4.1
    before = _f0_files()
    caplog.set_level(logging.INFO)
    assert preprocess_hubert_f0.main(["--f0_predictor", "pm"]) == 0
    assert _f0_files() == before and "no provenance record" in caplog.text and "--force" in caplog.text
    assert preprocess_hubert_f0.main(["--f0_predictor", "pm", "--force"]) == 0
    after = _f0_files()
    assert all(after[p] != before[p] for p in before)
    m = _manifest()
    assert {m["producers"][m["artifacts"][str(p.relative_to("dataset/44k"))]]["f0_predictor"] for p in after} == {"pm"}


def test_changed_f0_range_recomputes_f0_and_default_runs_keep_matching(project, caplog):
    """The f0 search range is part of the f0 record only when set: a default run after a default
    run recomputes nothing; a run with --f0_min recomputes the f0 (and only the f0)."""
    assert preprocess_hubert_f0.main(["--f0_predictor", "dio"]) == 0
    before, others = _f0_files(), _other_files()
    m = _manifest()
    key = "alice/" + next(p.name for p in before if p.parent.name == "alice")
    assert "f0_options" not in m["producers"][m["artifacts"][key]]
    caplog.set_level(logging.INFO)
    assert preprocess_hubert_f0.main(["--f0_predictor", "dio", "--f0_min", "300"]) == 0
    assert "recomputing" in caplog.text
    m = _manifest()
    assert m["producers"][m["artifacts"][key]]["f0_options"]["f0_min"] == 300.0
    assert _other_files() == others
    assert _f0_files() != before
