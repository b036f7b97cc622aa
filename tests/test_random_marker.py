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
