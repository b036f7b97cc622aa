"""Speech encoders: registry, golden features of 4.1, published formats, frame counts, long inputs."""

from __future__ import annotations

import argparse
import zipfile

import numpy as np
import pytest
import torch

import vencoder
from modules.checkpoint import RANDOM_WEIGHTS_KEY, torch_load
from modules.errors import AudioError, ConfigError, SvcError
from modules.pretrained import PRETRAINED
from vencoder.files import FAIRSEQ_STAND_INS, FairseqDictionaryStandIn, parse_conv_layers

from encoders_helpers import DATA, GOLDEN, noise, rel_err, speech16k, tiny_ckpts  # noqa: F401 (fixture)

ALL_NAMES = ["vec768l12", "vec256l9", "vec256l9-onnx", "vec256l12-onnx", "vec768l9-onnx", "vec768l12-onnx",
             "hubertsoft-onnx", "hubertsoft", "whisper-ppg", "whisper-ppg-large", "cnhubertlarge", "dphubert",
             "wavlmbase+"]
PUBLISHED_DIM = {"vec768l12": 768, "vec256l9": 256, "vec256l9-onnx": 256, "vec256l12-onnx": 256, "vec768l9-onnx": 768,
                 "vec768l12-onnx": 768, "hubertsoft-onnx": 256, "hubertsoft": 256, "whisper-ppg": 1024,
                 "whisper-ppg-large": 1280, "cnhubertlarge": 1024, "dphubert": 768, "wavlmbase+": 768}
# width of the tiny checkpoints written by make_random_checkpoint(size="tiny")
TINY_DIM = {"vec768l12": 32, "vec256l9": 16, "vec256l9-onnx": 16, "vec256l12-onnx": 16, "vec768l9-onnx": 32,
            "vec768l12-onnx": 32, "hubertsoft-onnx": 16, "hubertsoft": 16, "whisper-ppg": 32, "whisper-ppg-large": 32,
            "cnhubertlarge": 48, "dphubert": 32, "wavlmbase+": 32}


def _load(name, path, **kw):
    return vencoder.get_speech_encoder(name, device="cpu", path=path, **kw)


# --- registry --------------------------------------------------------------------------------------
def test_registry_lists_every_41_name_with_dim_rate_hop_and_file():
    assert vencoder.list_encoders() == ALL_NAMES
    for name in ALL_NAMES:
        spec = vencoder.ENCODERS[name]
        assert spec.name == name
        assert vencoder.encoder_dim(name) == spec.dim == PUBLISHED_DIM[name]
        assert (spec.sample_rate, spec.hop) == (16000, 320)
        assert spec.filename == PRETRAINED[spec.pretrained].filename
    assert vencoder.ENCODERS["vec768l12"].filename == "checkpoint_best_legacy_500.pt"
    assert vencoder.ENCODERS["whisper-ppg-large"].filename == "large-v2.pt"


def test_unknown_encoder_name_lists_valid_names():
    with pytest.raises(SvcError) as e:
        vencoder.encoder_dim("vec999")
    assert "vec999" in str(e.value) and "vec768l12" in str(e.value) and "wavlmbase+" in str(e.value)
    with pytest.raises(SvcError):
        vencoder.get_speech_encoder("contentvec", device="cpu")


def test_conv_layer_spec_is_parsed_without_eval():
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    with pytest.raises(SvcError):
        parse_conv_layers("__import__('os').system('true')")


# --- golden features of the original code ---------------------------------------------------------------
@pytest.mark.parametrize("name", list(GOLDEN))
def test_matches_41_golden_features(name):
    enc = _load(name, DATA / "pretrain" / GOLDEN[name])
    units = enc.encoder(speech16k())
    ref = np.load(DATA / f"{name}.output.npz")["units"]
    assert tuple(units.shape) == ref.shape
    assert units.dtype == torch.float32
    rel, mx = rel_err(units.numpy(), ref)
    assert rel <= 1e-5 and mx <= 1e-4, (rel, mx)


def test_dphubert_is_deterministic_unlike_41():
    enc = _load("dphubert", DATA / "pretrain" / GOLDEN["dphubert"])
    wav = speech16k()
    assert torch.equal(enc.encoder(wav), enc.encoder(wav))


# --- every name from a tiny checkpoint in its published format ---------------------------------------------
@pytest.mark.parametrize("name", ALL_NAMES)
def test_tiny_checkpoint_shapes_and_frame_counts(name, tiny_ckpts):
    enc = _load(name, tiny_ckpts[name])
    spec = vencoder.ENCODERS[name]
    assert (enc.name, enc.dim) == (name, TINY_DIM[name])
    for n in (150, 719, 720, 16321):
        units = enc.encoder(noise(n))
        assert tuple(units.shape) == (1, enc.dim, spec.n_frames(n)), n
        assert units.dtype == torch.float32 and bool(torch.isfinite(units).all())
        assert not units.is_inference()


def test_frame_rules_of_spec_4_2():
    conv, soft, whisper = (vencoder.ENCODERS[n] for n in ("vec768l12", "hubertsoft", "whisper-ppg"))
    assert [conv.n_frames(n) for n in (400, 719, 720, 32000)] == [1, 1, 2, 99]
    assert [soft.n_frames(n) for n in (320, 639, 640, 32000)] == [1, 1, 2, 100]
    assert [whisper.n_frames(n) for n in (319, 320, 32000, 32319)] == [0, 1, 100, 100]


def _top_keys_and_shapes(obj):
    return {k: (tuple(v.shape), v.dtype) for k, v in obj.items()}


@pytest.mark.parametrize("name, key", [("vec768l12", "model"), ("cnhubertlarge", "model"), ("whisper-ppg", "model_state_dict"),
                                       ("wavlmbase+", "model"), ("dphubert", "state_dict")])
def test_random_checkpoints_have_the_published_layout(name, key, tiny_ckpts):
    """Same top-level keys, config fields, tensor names, shapes and dtypes as the files the original reads."""
    ours = torch_load(tiny_ckpts[name], stand_ins=FAIRSEQ_STAND_INS)
    ref = torch_load(DATA / "pretrain" / GOLDEN[name], stand_ins=FAIRSEQ_STAND_INS)
    # plus the random-weight marker (modules.checkpoint.RANDOM_WEIGHTS_KEY), which loaders strip
    assert list(ours) == list(ref) + [RANDOM_WEIGHTS_KEY] and ours[RANDOM_WEIGHTS_KEY] is True
    assert _top_keys_and_shapes(ours[key]) == _top_keys_and_shapes(ref[key])
    assert list(ours[key]) == list(ref[key])  # key order too
    for cfg_key in ("cfg", "dims", "config"):
        if cfg_key in ref:
            ref_cfg, our_cfg = ref[cfg_key], ours[cfg_key]
            if cfg_key == "cfg" and "model" in ref_cfg:  # fairseq
                assert our_cfg["model"] == ref_cfg["model"] | {"feature_grad_mult": our_cfg["model"]["feature_grad_mult"],
                                                               "dropout": our_cfg["model"]["dropout"],
                                                               "attention_dropout": our_cfg["model"]["attention_dropout"],
                                                               "encoder_layerdrop": our_cfg["model"]["encoder_layerdrop"],
                                                               "dropout_input": our_cfg["model"]["dropout_input"],
                                                               "dropout_features": our_cfg["model"]["dropout_features"]}
                assert our_cfg["task"].keys() == ref_cfg["task"].keys()
                assert set(our_cfg) == set(ref_cfg)
            else:
                assert our_cfg == ref_cfg
    if "task_state" in ref:
        d = ours["task_state"]["dictionaries"][0]
        assert isinstance(d, FairseqDictionaryStandIn) and len(d.symbols) == 504 and d.symbols[4] == "0"


def test_fairseq_file_names_fairseq_dictionary_like_the_original(tiny_ckpts):
    with zipfile.ZipFile(tiny_ckpts["vec768l12"]) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"fairseq.data.dictionary\nDictionary" in pkl


def test_random_checkpoints_are_deterministic_per_seed(tmp_path):
    a = vencoder.make_random_checkpoint("wavlmbase+", tmp_path / "a.pt", seed=3)
    b = vencoder.make_random_checkpoint("wavlmbase+", tmp_path / "b.pt", seed=3)
    c = vencoder.make_random_checkpoint("wavlmbase+", tmp_path / "c.pt", seed=4)
    sa, sb, sc = (torch_load(p)["model"] for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["encoder.layers.0.fc1.weight"], sc["encoder.layers.0.fc1.weight"])
    with pytest.raises(SvcError):
        vencoder.make_random_checkpoint("wavlmbase+", tmp_path / "d.pt", size="huge")


def test_onnx_graph_equals_the_torch_model_it_was_exported_from(tiny_ckpts):
    """vec256l9-onnx from seed 0 is ContentVec layer 9 + final_proj of the seed-0 fairseq file."""
    wav = noise(16000, seed=1)
    ref = _load("vec256l9", tiny_ckpts["vec256l9"]).encoder(wav)
    out = _load("vec256l9-onnx", tiny_ckpts["vec256l9-onnx"]).encoder(wav)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_onnx_model_accepts_to_dtype_as_svc_calls_it(tiny_ckpts):
    """4.1 crashes here (spec §13.27): Svc calls .to(dtype) on the encoder's model."""
    enc = _load("hubertsoft-onnx", tiny_ckpts["hubertsoft-onnx"])
    assert enc.model.to(torch.float16) is enc.model
    assert enc.encoder(noise(3200)).shape == (1, 16, 10)


# --- formats users have -------------------------------------------------------------------------------
def test_half_precision_fairseq_file_like_rvc_hubert_base(tmp_path, tiny_ckpts):
    ckpt = torch_load(tiny_ckpts["vec768l12"], stand_ins=FAIRSEQ_STAND_INS)
    half = {k: v.half() for k, v in ckpt["model"].items()}
    torch.save({"args": None, "cfg": ckpt["cfg"], "model": half, "task_state": {}}, tmp_path / "hubert_base.pt")
    wav = noise(8000)
    ref = _load("vec768l12", tiny_ckpts["vec768l12"]).encoder(wav)
    out = _load("vec768l12", tmp_path / "hubert_base.pt").encoder(wav)
    assert out.dtype == torch.float32
    assert rel_err(out.numpy(), ref.numpy())[0] < 2e-2  # only the fp16 rounding of the weights differs


def test_old_fairseq_file_with_argparse_namespace(tmp_path, tiny_ckpts):
    ckpt = torch_load(tiny_ckpts["vec256l9"], stand_ins=FAIRSEQ_STAND_INS)
    args = argparse.Namespace(arch="hubert", task="hubert_pretraining", **ckpt["cfg"]["model"])
    torch.save({"args": args, "model": ckpt["model"], "task_state": {}}, tmp_path / "old.pt")
    wav = noise(8000)
    ref = _load("vec256l9", tiny_ckpts["vec256l9"]).encoder(wav)
    assert torch.equal(_load("vec256l9", tmp_path / "old.pt").encoder(wav), ref)


class _OmegaDictConfig:
    pass


class _OmegaListConfig:
    pass


class _OmegaAnyNode:
    pass


class _OmegaPickler(vencoder.files._ForeignNamePickler):
    _names = {**vencoder.files._ForeignNamePickler._names,
              _OmegaDictConfig: b"omegaconf.dictconfig\nDictConfig\n",
              _OmegaListConfig: b"omegaconf.listconfig\nListConfig\n",
              _OmegaAnyNode: b"omegaconf.nodes\nAnyNode\n"}


class _OmegaPickleModule:
    Pickler = _OmegaPickler


def _omega(value):
    """An object graph shaped like a pickled omegaconf container (state in ``__dict__``)."""
    import collections
    import typing

    meta = {"ref_type": typing.Any, "object_type": dict, "resolver_cache": collections.defaultdict(dict)}
    if isinstance(value, dict):
        node = _OmegaDictConfig()
        node.__dict__.update(_metadata=meta, _parent=None, _content={k: _omega(v) for k, v in value.items()})
    elif isinstance(value, list):
        node = _OmegaListConfig()
        node.__dict__.update(_metadata=meta, _parent=None, _content=[_omega(v) for v in value])
    else:
        node = _OmegaAnyNode()
        node.__dict__.update(_metadata=meta, _parent=None, _val=value)
    return node


def test_fairseq_file_with_omegaconf_config(tmp_path, tiny_ckpts):
    ckpt = torch_load(tiny_ckpts["vec256l9"], stand_ins=FAIRSEQ_STAND_INS)
    cfg = {"model": ckpt["cfg"]["model"], "task": ckpt["cfg"]["task"]}
    torch.save({"args": None, "cfg": _omega(cfg), "model": ckpt["model"], "task_state": {}}, tmp_path / "omega.pt",
               pickle_module=_OmegaPickleModule)
    wav = noise(8000)
    ref = _load("vec256l9", tiny_ckpts["vec256l9"]).encoder(wav)
    assert torch.equal(_load("vec256l9", tmp_path / "omega.pt").encoder(wav), ref)


def test_hubert_soft_without_ddp_prefix(tmp_path, tiny_ckpts):
    sd = torch_load(tiny_ckpts["hubertsoft"])
    assert sd.pop(RANDOM_WEIGHTS_KEY) is True  # the random-weight marker beside the tensors
    assert all(k.startswith("module.") for k in sd)
    torch.save({k[len("module."):]: v for k, v in sd.items()}, tmp_path / "soft.pt")
    wav = noise(6400)
    ref = _load("hubertsoft", tiny_ckpts["hubertsoft"]).encoder(wav)
    assert torch.equal(_load("hubertsoft", tmp_path / "soft.pt").encoder(wav), ref)


# --- input handling, dtype, caching ----------------------------------------------------------------------
def test_input_rules(tiny_ckpts):
    enc = _load("vec768l12", tiny_ckpts["vec768l12"])
    stereo = torch.stack([noise(4000, 1), noise(4000, 2)], dim=-1)  # [N, 2] → mean over the last dim (4.1)
    assert torch.equal(enc.encoder(stereo), enc.encoder(stereo.mean(-1)))
    assert torch.equal(enc.encoder(noise(4000).numpy()), enc.encoder(noise(4000)))
    bad = noise(4000)
    bad[10] = float("nan")
    for wav in (bad, torch.zeros(0), torch.zeros(1, 2, 400), torch.zeros(400, dtype=torch.int16)):
        with pytest.raises(AudioError):
            enc.encoder(wav)


def test_dtype_and_device_options(tiny_ckpts):
    path = tiny_ckpts["wavlmbase+"]
    with pytest.raises(ConfigError, match="CUDA"):
        vencoder.get_speech_encoder("wavlmbase+", device="cpu", path=path, dtype=torch.float16)
    with pytest.raises(ConfigError):
        vencoder.get_speech_encoder("wavlmbase+", device="cpu", path=path, dtype="int8")
    # bfloat16 runs on CPU (precision bf16 / auto); units close to float32's
    wav = torch.sin(torch.arange(16000) / 16000 * 2 * torch.pi * 220) * 0.3
    u32 = vencoder.get_speech_encoder("wavlmbase+", device="cpu", path=path).encoder(wav)
    bf = vencoder.get_speech_encoder("wavlmbase+", device="cpu", path=path, dtype="bfloat16")
    assert bf.dtype == torch.bfloat16
    u16 = bf.encoder(wav).float()
    assert u16.shape == u32.shape
    assert float((u16 - u32).norm() / u32.norm()) < 0.1
    with pytest.raises(ConfigError):
        vencoder.get_speech_encoder("wavlmbase+", device="gpu-please", path=path)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            vencoder.get_speech_encoder("wavlmbase+", device="cuda:0", path=path)
    wav = noise(8000)
    f32 = _load("wavlmbase+", path).encoder(wav)
    f64 = _load("wavlmbase+", path, dtype="float64").encoder(wav)
    assert f64.dtype == torch.float64
    assert rel_err(f64.float().numpy(), f32.numpy())[0] < 1e-5


def test_loaded_once_per_process_and_reloaded_when_the_file_changes(tmp_path):
    p = vencoder.make_random_checkpoint("dphubert", tmp_path / "DPHuBERT-sp0.75.pth", seed=0)
    a = _load("dphubert", p)
    assert _load("dphubert", p) is a
    assert _load("dphubert", p, dtype=torch.float64) is not a
    import os
    vencoder.make_random_checkpoint("dphubert", p, seed=1)
    os.utime(p, ns=(a.path.stat().st_atime_ns, a.path.stat().st_mtime_ns + 10**9))
    b = _load("dphubert", p)
    assert b is not a and not torch.equal(a.encoder(noise(4000)), b.encoder(noise(4000)))


def test_default_path_comes_from_the_pretrain_dir(tmp_path, monkeypatch, tiny_ckpts):
    import shutil

    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path))
    shutil.copy(tiny_ckpts["cnhubertlarge"], tmp_path / "chinese-hubert-large-fairseq-ckpt.pt")
    enc = vencoder.get_speech_encoder("cnhubertlarge", device="cpu")
    assert enc.path == tmp_path / "chinese-hubert-large-fairseq-ckpt.pt" and enc.dim == 48


# --- whisper beyond 30 s (spec §13.29) ---------------------------------------------------------------------
def test_whisper_encodes_long_input_window_by_window(tiny_ckpts):
    enc = _load("whisper-ppg", tiny_ckpts["whisper-ppg"])
    wav = noise(61 * 16000 + 123, seed=5)
    units = enc.encoder(wav)
    assert units.shape == (1, 32, wav.numel() // 320)
    w = 480000
    first = enc.encoder(wav[:w])  # ≤ 30 s: exactly what 4.1 computes
    second = enc.encoder(wav[w:2 * w])
    last = enc.encoder(wav[2 * w:])
    assert torch.allclose(units[..., :1500], first, atol=1e-5)
    assert torch.allclose(units[..., 1500:3000], second, atol=1e-5)
    assert torch.allclose(units[..., 3000:], last, atol=1e-5)
    assert not torch.allclose(units[..., 1500:1600], units[..., :100])
