"""Random-weight files mark themselves inside the file; every loader warns loudly, once per file."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

import vencoder
from modules.checkpoint import RANDOM_WEIGHTS_KEY, torch_load, warn_random_weights
from modules.errors import MissingPretrainedError
from vencoder.files import FAIRSEQ_STAND_INS


def _random_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "HAS RANDOM WEIGHTS" in r.getMessage()]


@pytest.mark.parametrize("name", ["vec768l12", "hubertsoft", "whisper-ppg"])
def test_marker_survives_copy_and_rename_and_warns_once(name, tmp_path, caplog):
    demo_file = vencoder.make_random_checkpoint(name, tmp_path / "demo_out" / "random.pt", size="tiny")
    # what a user without internet might do: copy the demo's file under the real name
    real_name = tmp_path / "pretrain" / vencoder.get_spec(name).filename
    real_name.parent.mkdir()
    shutil.copyfile(demo_file, real_name)
    raw = torch_load(real_name, stand_ins=FAIRSEQ_STAND_INS)
    assert raw[RANDOM_WEIGHTS_KEY] is True
    caplog.set_level(logging.WARNING)
    enc = vencoder.get_speech_encoder(name, device="cpu", path=real_name)
    warnings = _random_warnings(caplog)
    assert len(warnings) == 1 and str(real_name) in warnings[0]
    # the marker does not disturb the published layout: the encoder runs
    assert enc.encoder(torch.zeros(16000)).shape[1] == enc.dim
    vencoder.clear_cache()
    vencoder.get_speech_encoder(name, device="cpu", path=real_name)   # loaded again: not said twice
    assert len(_random_warnings(caplog)) == 1
    vencoder.clear_cache()


def test_real_layout_files_without_marker_do_not_warn(tmp_path, caplog):
    from modules.checkpoint import atomic_torch_save

    path = vencoder.make_random_checkpoint("whisper-ppg", tmp_path / "c.pt", size="tiny")
    ckpt = torch_load(path)
    del ckpt[RANDOM_WEIGHTS_KEY]
    atomic_torch_save(ckpt, tmp_path / "unmarked.pt")
    caplog.set_level(logging.WARNING)
    vencoder.get_speech_encoder("whisper-ppg", device="cpu", path=tmp_path / "unmarked.pt")
    vencoder.clear_cache()
    assert _random_warnings(caplog) == []


def test_warning_is_once_per_file(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    assert warn_random_weights(tmp_path / "a.pt", "thing") is True
    assert warn_random_weights(tmp_path / "a.pt", "thing") is False
    assert warn_random_weights(tmp_path / "b.pt", "thing") is True
    assert len(_random_warnings(caplog)) == 2


def test_missing_encoder_names_the_offline_option(tmp_path):
    with pytest.raises(MissingPretrainedError) as e:
        vencoder.get_speech_encoder("vec768l12", device="cpu", path=tmp_path / "checkpoint_best_legacy_500.pt")
    msg = str(e.value)
    assert "download_pretrain.py vec768l12" in msg and "make demo" in msg and "random" in msg
    from modules.pretrained import missing_message
    assert "make demo" not in missing_message("rmvpe")   # only the encoders have the demo as a way on


def test_onnx_graph_carries_the_marker(tmp_path, caplog):
    import onnx

    path = vencoder.make_random_checkpoint("vec768l12-onnx", tmp_path / "random.onnx", size="tiny")
    renamed = tmp_path / "vec-768-layer-12.onnx"
    shutil.copyfile(path, renamed)
    props = {p.key: p.value for p in onnx.load(str(renamed)).metadata_props}
    assert props[RANDOM_WEIGHTS_KEY] == "true"
    caplog.set_level(logging.WARNING)
    vencoder.get_speech_encoder("vec768l12-onnx", device="cpu", path=renamed)
    vencoder.clear_cache()
    assert [w for w in _random_warnings(caplog) if str(renamed) in w]


# --- F0 predictors -------------------------------------------------------------------------------
def test_random_fcpe_checkpoint_is_marked_and_warns_once(tmp_path, caplog):
    from modules.F0Predictor import get_f0_predictor, make_random_checkpoint

    path = make_random_checkpoint("fcpe", tmp_path / "random.pt", seed=3)
    renamed = tmp_path / "fcpe.pt"
    shutil.copyfile(path, renamed)
    assert torch_load(renamed)[RANDOM_WEIGHTS_KEY] is True
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        f0, _uv = get_f0_predictor("fcpe", 512, 44100, device="cpu", model_path=renamed).compute_f0_uv(
            0.3 * torch.sin(torch.arange(22050) * 0.03).numpy())
        assert f0.shape == (22050 // 512,)
    warnings = [w for w in _random_warnings(caplog) if str(renamed) in w]
    assert len(warnings) == 1 and "FCPE" in warnings[0]


# --- training on a random encoder's units and loading what it wrote --------------------------------
def _marked_encoder(directory):
    path = directory / vencoder.get_spec("vec768l12").filename
    vencoder.make_random_checkpoint("vec768l12", path, size="tiny")
    return path


def test_provenance_says_when_units_come_from_a_random_encoder(tmp_path, monkeypatch):
    from preprocessing.features import soft_path
    from preprocessing.provenance import Manifest, random_encoder_evidence
    from vencoder.files import is_random_weight_file

    root = tmp_path / "dataset" / "44k"
    wavs = [root / "alice" / f"a{i}.wav" for i in range(2)]
    encoder = _marked_encoder(tmp_path / "enc")
    assert is_random_weight_file(encoder) and not is_random_weight_file(tmp_path / "missing.pt")
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path / "empty_pretrain"))
    assert random_encoder_evidence(wavs, "vec768l12") is None  # no record, no encoder file: nothing known

    # recorded: the flag preprocessing writes for a marked file
    manifest = Manifest(root)
    producer = {"kind": "soft", "speech_encoder": "vec768l12", "sha256": manifest.sha256(encoder),
                "file": str(encoder), "random_weights": True}
    manifest.record(soft_path(wavs[0]), producer)
    manifest.save()
    reason = random_encoder_evidence(wavs, "vec768l12")
    assert reason and ".svc_provenance.json" in reason and "random-weight" in reason
    # an older record without the flag: the recorded file (same bytes) carries the marker
    del producer["random_weights"]
    manifest = Manifest(root)
    manifest.record(soft_path(wavs[0]), producer)
    manifest.save()
    assert str(encoder) in random_encoder_evidence(wavs, "vec768l12")
    # a real encoder recorded: no reason, whatever lies in pretrain/
    clean = tmp_path / "clean.pt"
    raw = torch_load(encoder, stand_ins=FAIRSEQ_STAND_INS)
    del raw[RANDOM_WEIGHTS_KEY]
    vencoder.files.save_fairseq_checkpoint(raw, clean)
    manifest = Manifest(root)
    manifest.record(soft_path(wavs[0]), {**producer, "file": str(clean), "sha256": manifest.sha256(clean)})
    manifest.save()
    assert random_encoder_evidence(wavs, "vec768l12") is None
    # no record at all: the encoder file the config names decides
    (root / ".svc_provenance.json").unlink()
    _marked_encoder(tmp_path / "pretrain")
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path / "pretrain"))
    assert "has random weights" in random_encoder_evidence(wavs, "vec768l12")


def test_training_on_random_units_marks_checkpoints_and_inference_warns_once(tmp_path, monkeypatch, caplog):
    import json

    from modules.checkpoint import has_random_weights
    from tests.train_helpers import TinyMultiPeriodDiscriminator, make_dataset, run_train, write_config
    import training.loop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training.loop, "MultiPeriodDiscriminator", TinyMultiPeriodDiscriminator)
    make_dataset(tmp_path, clips_per_speaker=2)
    cfg = write_config(tmp_path)
    _marked_encoder(tmp_path / "pretrain")
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path / "pretrain"))
    caplog.set_level(logging.INFO)
    threads = torch.get_num_threads()
    try:
        assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "1", "--threads", "1") == 0
    finally:
        torch.set_num_threads(threads)
    saved = sorted((tmp_path / "logs" / "44k").glob("[GD]_*.pth"))
    assert {p.name[0] for p in saved} == {"G", "D"}
    assert all(has_random_weights(torch_load(p)) for p in saved)
    assert "RANDOM SPEECH ENCODER" in (tmp_path / "logs" / "44k" / "train.log").read_text()



def test_inference_warns_once_on_a_marked_model(tmp_path, monkeypatch, caplog):
    import json

    from inference.infer_tool import Svc
    from modules.checkpoint import mark_random_weights
    from tests.infer_helpers import model_config, write_generator

    _marked_encoder(tmp_path / "pretrain")
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path / "pretrain"))
    cfg = model_config()
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg))
    g = write_generator(tmp_path / "G_1.pth", cfg)
    torch.save(mark_random_weights(torch_load(g)), g)
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        Svc(str(g), str(config), device="cpu", cluster_model_path=None).unload_model()
    warnings = [w for w in _random_warnings(caplog) if str(g) in w]
    assert len(warnings) == 1 and "trained on features" in warnings[0]
    vencoder.clear_cache()
