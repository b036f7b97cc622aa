"""Speech-encoder files are untrusted: unsafe pickles are refused unexecuted, wrong files say what they are."""

from __future__ import annotations

import os
import pickle
import re
import sys
from pathlib import Path

import pytest
import torch

import vencoder
from vencoder import files
from modules.checkpoint import save_checkpoint, torch_load
from modules.errors import CheckpointError, MissingPretrainedError, UnsafeFileError

from encoders_helpers import DATA, GOLDEN, tiny_ckpts  # noqa: F401 (fixture)


class _Exploit:
    """Pickles as a call to os.system: loading it with a plain unpickler would run the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["vec768l12", "hubertsoft", "whisper-ppg", "wavlmbase+", "dphubert", "cnhubertlarge"])
def test_malicious_zip_checkpoint_is_refused_and_never_executed(tmp_path, name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"cfg": {}, "model": {"w": torch.zeros(1)}, "task_state": _Exploit(marker)}, path)
    with pytest.raises(UnsafeFileError) as e:
        vencoder.get_speech_encoder(name, device="cpu", path=path)
    assert "system" in str(e.value) and str(path) in str(e.value)
    assert not marker.exists()


def test_malicious_legacy_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint_best_legacy_500.pt"
    with open(path, "wb") as f:  # a pre-zip (legacy) torch file is a bare pickle stream
        pickle.dump({"args": None, "model": _Exploit(marker)}, f, protocol=2)
    with pytest.raises(CheckpointError):
        vencoder.get_speech_encoder("vec768l12", device="cpu", path=path)
    assert not marker.exists()


class _ForeignModel:
    """Pickled under the name of a fairseq model class (as an unsafe fairseq file might)."""


class _ForeignPickler(files._ForeignNamePickler):
    _names = {**files._ForeignNamePickler._names, _ForeignModel: b"fairseq.models.hubert.hubert\nHubertModel\n"}


class _ForeignPickleModule:
    Pickler = _ForeignPickler


def test_fairseq_file_naming_a_class_outside_the_allow_list_is_refused(tmp_path, tiny_ckpts):
    """Only the stand-ins are allowed: a file naming e.g. a fairseq model class is refused by name."""
    ckpt = torch_load(tiny_ckpts["vec768l12"], stand_ins=files.FAIRSEQ_STAND_INS)
    ckpt["task_state"] = {"dictionaries": [files.fairseq_dictionary(500)], "model": _ForeignModel()}
    path = tmp_path / "checkpoint_best_legacy_500.pt"
    torch.save(ckpt, path, pickle_module=_ForeignPickleModule)
    with pytest.raises(UnsafeFileError, match="fairseq.models.hubert.hubert.HubertModel"):
        vencoder.get_speech_encoder("vec768l12", device="cpu", path=path)


def test_sovits_checkpoint_given_as_encoder_says_what_it_is(tmp_path):
    path = tmp_path / "G_800.pth"
    save_checkpoint(torch.nn.Linear(2, 2), None, 1e-4, 3, path)
    for name in ("vec768l12", "whisper-ppg", "wavlmbase+", "dphubert", "hubertsoft"):
        with pytest.raises(CheckpointError) as e:
            vencoder.get_speech_encoder(name, device="cpu", path=path)
        msg = str(e.value)
        assert "so-vits-svc model checkpoint" in msg and str(path) in msg, msg
        assert vencoder.ENCODERS[name].filename in msg


def test_encoder_file_of_another_family_names_the_right_encoder(tmp_path):
    with pytest.raises(CheckpointError, match="Whisper.*whisper-ppg"):
        vencoder.get_speech_encoder("vec768l12", device="cpu", path=DATA / "pretrain" / "medium.pt")
    with pytest.raises(CheckpointError, match="fairseq"):
        vencoder.get_speech_encoder("wavlmbase+", device="cpu", path=DATA / "pretrain" / GOLDEN["vec768l12"])
    with pytest.raises(CheckpointError, match="PyTorch checkpoint, not an ONNX graph"):
        vencoder.get_speech_encoder("vec768l12-onnx", device="cpu", path=DATA / "pretrain" / GOLDEN["vec768l12"])


@pytest.mark.parametrize("name", ["vec256l9", "vec256l9-onnx"])
def test_garbage_and_truncated_files(tmp_path, name, tiny_ckpts):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all" * 10)
    with pytest.raises(CheckpointError):
        vencoder.get_speech_encoder(name, device="cpu", path=junk)
    cut = tmp_path / "cut.bin"
    cut.write_bytes(Path(tiny_ckpts[name]).read_bytes()[:5000])
    with pytest.raises(CheckpointError):
        vencoder.get_speech_encoder(name, device="cpu", path=cut)


def test_missing_file_names_path_and_download_url(tmp_path, monkeypatch):
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path / "pretrain"))
    with pytest.raises(MissingPretrainedError) as e:
        vencoder.get_speech_encoder("whisper-ppg-large", device="cpu")
    msg = str(e.value)
    assert str(tmp_path / "pretrain" / "large-v2.pt") in msg and "https://openaipublic.azureedge.net" in msg
    with pytest.raises(MissingPretrainedError, match="nowhere.pt"):
        vencoder.get_speech_encoder("vec768l12", device="cpu", path=tmp_path / "nowhere.pt")


def test_neither_fairseq_nor_torchaudio_is_imported():
    for name, file in GOLDEN.items():
        vencoder.get_speech_encoder(name, device="cpu", path=DATA / "pretrain" / file).encoder(torch.zeros(800))
    assert not [m for m in sys.modules if m.split(".")[0] in ("fairseq", "torchaudio")]
    src = Path(vencoder.__file__).parent
    for f in src.rglob("*.py"):
        text = f.read_text()
        assert not re.search(r"^\s*(import|from)\s+(fairseq|torchaudio)\b", text, re.M), f
