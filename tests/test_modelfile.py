"""One shareable model file (``.svc.safetensors``, issue 23): round trips, audio equality, --info,
importers (4.1 / 4.0 / so-vits-svc-fork) and malformed or disguised files."""

from __future__ import annotations

import copy
import json
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import export_model
from infer_helpers import SPEAKERS, UNIT_DIM, model_config, models_in_use, write_generator
from modelfile import describe, export_model as export, is_model_file, load_model_file
from modelfile.format import METADATA_KEY
from modules.checkpoint import load_state_dict_checked, torch_load
from modules.cli import run_main
from modules.errors import CheckpointError, ConfigError, SvcError, UnsafeFileError
from synth_helpers import rel_err

# float16 export: bound on the rel. L2 difference of synthesizer audio against the float32 model
# (docs/compat/modelfile.md gives measured values).
HALF_REL_L2_BOUND = 1e-3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with models_in_use(tmp_path_factory.mktemp("modelfile")) as ms:
        yield ms


@pytest.fixture(scope="module")
def full(models):
    """A model file with every part: synthesizer, feature index, diffusion, F0 stats, free text."""
    return export(model_path=models.g, config_path=models.config, output_path=models.root / "full.svc.safetensors",
                  cluster_path=models.index, diffusion_model_path=models.diffusion,
                  diffusion_config_path=models.diffusion_config, author="A. Singer", license="CC-BY-4.0",
                  description="test voice", f0_stats={"bob": {"mean_hz": 180.0, "std_semitones": 2.5}})


@pytest.fixture(scope="module")
def plain(models):
    return export(model_path=models.g, config_path=models.config, output_path=models.root / "plain.svc.safetensors")


def _reference_net(g_path, config_path):
    """The generator as the existing path loads it (Svc.load_model: config → SynthesizerTrn → checked load)."""
    from models import SynthesizerTrn
    from modules.hparams import get_hparams_from_file

    hps = get_hparams_from_file(config_path, infer_mode=True)
    net = SynthesizerTrn(hps.data.filter_length // 2 + 1, hps.train.segment_size // hps.data.hop_length, **hps.model)
    state = torch_load(g_path)["model"]
    load_state_dict_checked(net, state, allow_missing=("enc_q",), reinit_on_mismatch=())
    return net.eval()


def _infer(net, frames=40, sid=1, seed=3):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(1, net.ssl_dim, frames, generator=g)
    f0 = 150 + 80 * torch.rand(1, frames, generator=g)
    uv = (torch.rand(1, frames, generator=g) > 0.2).float()
    with torch.no_grad():
        audio, _ = net.infer(c, f0, uv, g=torch.LongTensor([[sid]]), noice_scale=0.4, seed=52468)
    return audio.numpy()


# --- round trips and audio equality ----------------------------------------------------------------
def test_synthesizer_from_file_gives_the_same_audio_bit_for_bit(models, plain):
    bundle = load_model_file(plain)
    ref = _reference_net(models.g, models.config)
    net = bundle.build_synthesizer()
    np.testing.assert_array_equal(_infer(net), _infer(ref))
    np.testing.assert_array_equal(_infer(net, sid=2, seed=9), _infer(ref, sid=2, seed=9))
    # and after the inference preparation Svc applies
    np.testing.assert_array_equal(_infer(net.prepare_for_inference()), _infer(ref.prepare_for_inference()))


def test_same_audio_as_svc_loading_the_checkpoint(models, plain):
    from inference.infer_tool import Svc

    svc = Svc(models.g, models.config, device="cpu", cluster_model_path=None)
    net = load_model_file(plain).build_synthesizer().prepare_for_inference()
    np.testing.assert_array_equal(_infer(net), _infer(svc.net_g_ms))


def test_file_holds_inference_weights_and_self_description(models, full):
    bundle = load_model_file(full)
    saved = torch_load(models.g)["model"]
    assert not any(k.startswith("enc_q") for k in bundle.state_dict)
    assert set(bundle.state_dict) == {k for k in saved if not k.startswith("enc_q")}
    for k, v in bundle.state_dict.items():
        assert v.dtype == torch.float32 and torch.equal(v, saved[k]), k
    assert bundle.spk2id == SPEAKERS
    assert bundle.speech_encoder == "vec768l12" and bundle.config.model.ssl_dim == UNIT_DIM
    assert bundle.sampling_rate == 44100 and bundle.hop_length == 512
    assert (bundle.author, bundle.license, bundle.description) == ("A. Singer", "CC-BY-4.0", "test voice")
    assert bundle.f0_stats == {"bob": {"mean_hz": 180.0, "std_semitones": 2.5}}
    assert bundle.metadata["source"]["importer"] == "4.1" and bundle.metadata["project_version"]
    cfg = json.loads(models.config.read_text())
    assert bundle.config.model.to_dict() == cfg["model"]
    assert bundle.metadata["vocoder"] == {"decoder": "nsf-hifigan", "external": {
        "type": "nsf-hifigan", "file": "nsf_hifigan/model", "needed_by": "diffusion"}}


def test_index_round_trip_retrieves_exactly_the_same(models, full):
    import cluster

    original = cluster.load_cluster_model(models.index)
    bundle = load_model_file(full)
    assert bundle.feature_retrieval and isinstance(bundle.cluster, cluster.FeatureIndex)
    assert sorted(bundle.cluster) == sorted(original)
    q = np.random.default_rng(1).standard_normal((300, UNIT_DIM)).astype(np.float32)
    for sid in original:
        d0, i0 = original[sid].search(q, 8)
        d1, i1 = bundle.cluster[sid].search(q, 8)
        np.testing.assert_array_equal(i0, i1)
        np.testing.assert_array_equal(d0, d1)
        assert bundle.cluster[sid].nprobe == original[sid].nprobe
    units = torch.from_numpy(q.T.copy())
    for name, sid in SPEAKERS.items():
        a = original.mix(units, sid, 0.7, spk2id=SPEAKERS)
        b = bundle.cluster.mix(units, name, 0.7, spk2id=bundle.spk2id)
        assert torch.equal(a, b)


def test_kmeans_round_trip_gives_the_same_centres(models):
    import cluster

    out = export(model_path=models.g, config_path=models.config, output_path=models.root / "km.svc.safetensors",
                 cluster_path=models.kmeans)
    bundle = load_model_file(out)
    original = cluster.load_cluster_model(models.kmeans)
    assert not bundle.feature_retrieval and isinstance(bundle.cluster, cluster.KMeansClusters)
    assert list(bundle.cluster) == list(original)
    units = torch.randn(UNIT_DIM, 50, generator=torch.Generator().manual_seed(2))
    for name in SPEAKERS:
        np.testing.assert_array_equal(bundle.cluster[name].cluster_centers_, original[name].cluster_centers_)
        assert bundle.cluster[name]._n_threads == original[name]._n_threads
        assert torch.equal(bundle.cluster.mix(units, name, 0.5), original.mix(units, name, 0.5))
    assert load_model_file(out, load_cluster=False).cluster is None


def test_diffusion_round_trip(models, full, plain):
    from diffusion.unit2mel import load_model_vocoder

    bundle = load_model_file(full)
    ref_model, _, ref_args = load_model_vocoder(models.diffusion, "cpu", config_path=models.diffusion_config)
    model, vocoder, args = bundle.build_diffusion()
    assert args.to_dict() == ref_args.to_dict()
    ref_state, state = ref_model.state_dict(), model.state_dict()
    assert set(ref_state) == set(state)
    for k in state:
        assert torch.equal(state[k], ref_state[k]), k
    assert vocoder.dimension == 128
    assert load_model_file(full, load_diffusion=False).diffusion_state is None
    with pytest.raises(CheckpointError, match="no diffusion model"):
        load_model_file(plain).build_diffusion()


def test_half_export_is_smaller_and_close(models, plain):
    half = export(model_path=models.g, config_path=models.config, output_path=models.root / "half.svc.safetensors",
                  half=True)
    assert half.stat().st_size < 0.6 * plain.stat().st_size
    bundle = load_model_file(half)
    assert bundle.stored_dtype == torch.float16
    assert all(v.dtype == torch.float32 for v in bundle.state_dict.values())  # widened for CPU by default
    assert next(iter(load_model_file(half, dtype=None).state_dict.values())).dtype == torch.float16
    ref = _reference_net(models.g, models.config)
    saved = torch_load(models.g)["model"]
    for k, v in bundle.state_dict.items():  # exactly the float16 rounding of each weight
        assert torch.equal(v, saved[k].half().float()), k
    err = rel_err(_infer(bundle.build_synthesizer()), _infer(ref))
    assert 0 < err < HALF_REL_L2_BOUND


def test_shared_flow_parameters_round_trip(tmp_path, models):
    cfg = model_config(flow_share_parameter=True)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    g = write_generator(tmp_path / "G_1.pth", cfg, seed=7)
    out = export(model_path=g, config_path=tmp_path / "config.json", output_path=tmp_path / "s.svc.safetensors")
    net = load_model_file(out).build_synthesizer()
    np.testing.assert_array_equal(_infer(net), _infer(_reference_net(g, tmp_path / "config.json")))


# --- importers ---------------------------------------------------------------------------------------
def _write_model(tmp_path, cfg, state_transform=None, seed=0):
    """A G checkpoint for ``cfg`` (4.1 layout) and a config.json; returns (G path, config path, net)."""
    from models import SynthesizerTrn
    from modules.hparams import HParams

    h = HParams(**copy.deepcopy(cfg))
    model_cfg = dict(h.model)
    for k in ("type_", "gen_istft_n_fft", "gen_istft_hop_size", "subbands"):
        model_cfg.pop(k, None)
    model_cfg.setdefault("speech_encoder", "vec768l12")
    torch.manual_seed(seed)
    net = SynthesizerTrn(h.data.filter_length // 2 + 1, h.train.segment_size // h.data.hop_length, **model_cfg)
    state = net.state_dict()
    if state_transform:
        state = state_transform(state)
    g = tmp_path / "G_9.pth"
    torch.save({"model": state, "iteration": 9, "optimizer": None, "learning_rate": 1e-4}, g)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return g, tmp_path / "config.json", net


def _config_40(ssl_dim=256, **data):
    cfg = model_config(ssl_dim=ssl_dim)
    del cfg["model"]["speech_encoder"]
    for k in ("vol_embedding", "use_depthwise_conv", "flow_share_parameter", "use_automatic_f0_prediction",
              "use_transformer_flow", "speaker_embedding", "vocoder_name", "n_layers_trans_flow", "n_flow_layer"):
        cfg["model"].pop(k, None)
    cfg["data"].pop("unit_interpolate_mode", None)
    cfg["data"].update(data)
    return cfg


def test_40_checkpoint_gets_its_encoder_from_ssl_dim(tmp_path):
    g, c, net = _write_model(tmp_path, _config_40(256))
    out = export(model_path=g, config_path=c, output_path=tmp_path / "m.svc.safetensors")
    bundle = load_model_file(out)
    assert bundle.speech_encoder == "vec256l9" and bundle.metadata["source"]["importer"] == "4.0"
    assert bundle.config.data.unit_interpolate_mode == "left"  # 4.1's inference default, made explicit
    assert any("derived" in n for n in bundle.metadata["source"]["notes"])
    np.testing.assert_array_equal(_infer(bundle.build_synthesizer()), _infer(net.eval()))


def test_40_vec768_layer12_branch(tmp_path):
    g, c, _ = _write_model(tmp_path, _config_40(768, contentvec_final_proj=False))
    bundle = load_model_file(export(model_path=g, config_path=c, output_path=tmp_path / "m.svc.safetensors"))
    assert bundle.speech_encoder == "vec768l12"


def test_40_config_with_unknown_unit_width_is_refused(tmp_path):
    g, c, _ = _write_model(tmp_path, _config_40(100))
    with pytest.raises(ConfigError, match="add model.speech_encoder"):
        export(model_path=g, config_path=c, output_path=tmp_path / "m.svc.safetensors")


def test_fork_checkpoint_with_ddp_prefix_converts(tmp_path):
    cfg = _config_40(768, contentvec_final_proj=False)
    cfg["model"].update(type_="hifi-gan", gen_istft_n_fft=16, gen_istft_hop_size=4, subbands=4)
    g, c, net = _write_model(tmp_path, cfg, state_transform=lambda s: {"module." + k: v for k, v in s.items()})
    bundle = load_model_file(export(model_path=g, config_path=c, output_path=tmp_path / "m.svc.safetensors"))
    assert bundle.metadata["source"]["importer"] == "so-vits-svc-fork"
    assert "type_" not in bundle.config.model and bundle.speech_encoder == "vec768l12"
    np.testing.assert_array_equal(_infer(bundle.build_synthesizer()), _infer(net.eval()))


def test_fork_istft_decoder_cannot_convert(tmp_path):
    cfg = _config_40(256)
    cfg["model"]["type_"] = "mb-istft"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    g = write_generator(tmp_path / "G_1.pth", model_config())
    with pytest.raises(CheckpointError, match="decoder type 'mb-istft' cannot be converted"):
        export(model_path=g, config_path=tmp_path / "config.json", output_path=tmp_path / "m.svc.safetensors")


def test_mismatched_checkpoint_and_config_are_refused_before_writing(tmp_path, models):
    cfg = model_config(ssl_dim=48)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "m.svc.safetensors"
    with pytest.raises(CheckpointError, match="pre.weight"):
        export(model_path=models.g, config_path=tmp_path / "config.json", output_path=out)
    assert not out.exists()


def test_cluster_of_another_model_is_refused(tmp_path, models):
    from cluster import save_kmeans

    km = tmp_path / "kmeans_10000.pt"
    save_kmeans({"bob": {"cluster_centers_": np.zeros((4, 7), np.float32)}}, km)
    with pytest.raises(CheckpointError, match="7-channel centres"):
        export(model_path=models.g, config_path=models.config, output_path=tmp_path / "m.svc.safetensors",
               cluster_path=km)


# --- CLI ----------------------------------------------------------------------------------------------
def test_export_cli_and_info(models, tmp_path, capsys):
    out = tmp_path / "voice.svc.safetensors"
    argv = ["-m", str(models.g), "-c", str(models.config), "-cm", str(models.kmeans), "-o", str(out),
            "--author", "Ann", "--license", "CC0", "--description", "a test"]
    assert run_main(export_model.main, argv) == 0
    assert out.is_file()
    capsys.readouterr()
    assert run_main(export_model.main, argv) == 2  # never overwrite silently
    assert "exists" in capsys.readouterr().err
    assert run_main(export_model.main, argv + ["--overwrite"]) == 0
    capsys.readouterr()
    assert run_main(export_model.main, ["--info", str(out)]) == 0
    text = capsys.readouterr().out
    for expected in ("author:          Ann", "license:         CC0", "0: alice, 1: bob, 2: carol", "vec768l12",
                     "k-means, alice (16 centres)", "diffusion:       none", "float32", "G_0.pth (4.1 checkpoint"):
        assert expected in text, expected
    assert run_main(export_model.main, ["--info", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["speakers"] == SPEAKERS and meta["cluster"]["kind"] == "kmeans"


def test_info_describes_every_part(full):
    text = describe(full)
    assert "feature retrieval index, 0 alice (400 frames, IVFFlat)" in text
    assert "vocoder needed:  nsf-hifigan (pretrain/nsf_hifigan/model, for diffusion)" in text
    assert "F0 statistics:   for bob" in text
    assert "diffusion:       48 tensors, step 0" in text and "encoder vec768l12" in text
    assert "author:          A. Singer" in text and "description:     test voice" in text


def test_export_cli_errors(models, tmp_path, capsys):
    assert run_main(export_model.main, ["-m", str(models.g), "-c", str(models.config), "-o",
                                        str(tmp_path / "x.pth")]) == 2
    assert ".svc.safetensors" in capsys.readouterr().err
    assert run_main(export_model.main, ["-m", str(models.g), "-c", str(models.config), "-dm", str(models.diffusion),
                                        "-o", str(tmp_path / "x.svc.safetensors")]) == 2
    assert "-dc" in capsys.readouterr().err
    assert run_main(export_model.main, ["-m", str(tmp_path / "nope.pth"), "-c", str(models.config),
                                        "-o", str(tmp_path / "x.svc.safetensors")]) == 2
    assert "nope.pth: file not found" in capsys.readouterr().err


def test_is_model_file(models, plain, tmp_path):
    assert is_model_file(plain)
    assert not is_model_file(models.g) and not is_model_file(models.config)
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(plain.read_bytes())
    assert is_model_file(renamed)
    assert is_model_file(tmp_path / "broken.safetensors")  # routed to the loader, which explains


# --- malformed and disguised files ----------------------------------------------------------------------
def _rewrite(src, dst, *, drop=None, meta_text=None, meta_edit=None, plain_metadata=None):
    from safetensors import safe_open

    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as f:
        block = dict(f.metadata())
    if drop:
        del tensors[drop]
    if meta_edit:
        meta = json.loads(block[METADATA_KEY])
        meta_edit(meta)
        block[METADATA_KEY] = json.dumps(meta)
    if meta_text is not None:
        block[METADATA_KEY] = meta_text
    save_file(tensors, str(dst), metadata=plain_metadata if plain_metadata is not None else block)
    return dst


@pytest.mark.parametrize("case, message", [
    ("empty", "truncated model file"),
    ("truncated", "truncated model file: tensor"),
    ("header_too_long", "wrong header length"),
    ("header_too_short", "header is not valid JSON"),
    ("tensor_missing", "tensors of part 'synthesizer' are missing from the file: synthesizer.emb_g.weight"),
    ("metadata_not_json", "'svc_model' metadata is not valid JSON"),
    ("unknown_version", "format version 99 is not supported .*newer version"),
    ("unknown_encoder", "speech encoder 'hubert-xxl', which this version does not know"),
    ("no_svc_metadata", "without so-vits-svc metadata"),
    ("bad_config", "unknown config key 'model.ssl_dimm'"),
])
def test_malformed_files_are_refused_with_what_is_wrong(plain, tmp_path, case, message):
    bad = tmp_path / f"{case}.svc.safetensors"
    data = plain.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "truncated":
        bad.write_bytes(data[:-100])
    elif case == "header_too_long":
        bad.write_bytes(struct.pack("<Q", len(data)) + data[8:])
    elif case == "header_too_short":
        bad.write_bytes(struct.pack("<Q", n - 10) + data[8:])
    elif case == "tensor_missing":
        _rewrite(plain, bad, drop="synthesizer.emb_g.weight")
    elif case == "metadata_not_json":
        _rewrite(plain, bad, meta_text="{not json")
    elif case == "unknown_version":
        _rewrite(plain, bad, meta_edit=lambda m: m.update(format_version=99))
    elif case == "unknown_encoder":
        _rewrite(plain, bad, meta_edit=lambda m: m["speech_encoder"].update(name="hubert-xxl"))
    elif case == "no_svc_metadata":
        _rewrite(plain, bad, plain_metadata={"format": "pt"})
    elif case == "bad_config":
        _rewrite(plain, bad, meta_edit=lambda m: m["config"]["model"].update(ssl_dimm=1))
    with pytest.raises(CheckpointError, match=message) as info:
        load_model_file(bad)
    assert str(bad) in str(info.value) or case == "bad_config"


class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: proof that a loader executed the pickle."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("kind", ["pickle", "torch_zip"])
def test_pickle_renamed_to_safetensors_is_refused_and_not_executed(tmp_path, kind, capsys):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.svc.safetensors"
    if kind == "pickle":
        evil.write_bytes(pickle.dumps({"model": _CreatesFile(marker)}, protocol=4))
    else:
        torch.save({"model": _CreatesFile(marker)}, evil)
    # the payload really executes when unpickled the unsafe way
    probe = tmp_path / "probe.txt"
    pickle.loads(pickle.dumps(_CreatesFile(probe))).close()
    assert probe.exists()
    with pytest.raises(UnsafeFileError, match="nothing in it was executed"):
        load_model_file(evil)
    assert run_main(export_model.main, ["--info", str(evil)]) == 2
    assert "not loaded" in capsys.readouterr().err or kind == "pickle"
    assert not marker.exists()


def test_errors_are_user_errors(plain, tmp_path):
    assert issubclass(UnsafeFileError, SvcError) and issubclass(CheckpointError, SvcError)
    with pytest.raises(CheckpointError, match="not found"):
        load_model_file(tmp_path / "missing.svc.safetensors")


def test_original_41_checkpoint_exports_to_the_same_audio(tmp_path):
    """G_0.pth written by the original 4.1 code (golden data): the file gives its audio bit for bit."""
    from synth_helpers import DATA

    out = export(model_path=DATA / "G_0.pth", config_path=DATA / "config.json", output_path=tmp_path / "g.svc.safetensors")
    d = np.load(DATA / "svc_tiny_inputs.npz")
    inputs = {k: torch.from_numpy(d[k]) for k in ("c", "f0", "uv", "sid")}

    def run(net):
        with torch.no_grad():
            return net.infer(inputs["c"], f0=inputs["f0"], g=inputs["sid"], uv=inputs["uv"], noice_scale=0.4)[0].numpy()

    audio = run(load_model_file(out).build_synthesizer())
    np.testing.assert_array_equal(audio, run(_reference_net(DATA / "G_0.pth", DATA / "config.json")))
    assert rel_err(audio, np.load(DATA / "golden_infer.npz")["ns0.4_audio"]) < 1.5e-7


def test_checkpoint_carrying_its_config_needs_no_c(tmp_path, models):
    ckpt = torch_load(models.g)
    ckpt["config"] = json.loads(models.config.read_text())
    g = tmp_path / "G_1.pth"
    torch.save(ckpt, g)
    out = export(model_path=g, config_path=None, output_path=tmp_path / "m.svc.safetensors")
    bundle = load_model_file(out)
    assert bundle.spk2id == SPEAKERS and "config taken from the checkpoint" in bundle.metadata["source"]["notes"]
    np.testing.assert_array_equal(_infer(bundle.build_synthesizer()), _infer(_reference_net(models.g, models.config)))
    with pytest.raises(ConfigError, match="carries no config; pass its config.json with -c"):
        export(model_path=models.g, config_path=None, output_path=tmp_path / "n.svc.safetensors")


@pytest.mark.parametrize("which", ["kmeans", "index"])
def test_cluster_mixer_matches_the_file_based_mixer(models, plain, tmp_path, which):
    from inference.components import ClusterMixer

    src = models.kmeans if which == "kmeans" else models.index
    out = export(model_path=models.g, config_path=models.config, output_path=tmp_path / "m.svc.safetensors",
                 cluster_path=src)
    mixer = load_model_file(out).cluster_mixer()
    ref = ClusterMixer(src, which == "index", SPEAKERS)
    assert mixer.feature_retrieval == ref.feature_retrieval
    units = torch.randn(UNIT_DIM, 64, generator=torch.Generator().manual_seed(4))
    for name, sid in SPEAKERS.items():
        assert torch.equal(mixer.mix(units, name, sid, 0.6), ref.mix(units, name, sid, 0.6))
    assert load_model_file(plain).cluster_mixer() is None
