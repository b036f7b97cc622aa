"""onnx_export.py: the exported SoVITS graph against PyTorch and 4.1's golden audio, its interface
(spec §12.1) and the MoeVS descriptor.

The graph draws random initial phases (and, for the snake decoder, source noise) inside
onnxruntime; the tests turn those nodes into inputs (``pin_random_nodes``) and feed them the
numbers PyTorch drew, so the outputs can be compared sample by sample.

Difference measure: ``max_rel_diff(a, b) = max|a − b| / max|b|`` with b the PyTorch (or golden)
audio; the bound is 1e-4.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

import onnx_export
from modules.checkpoint import load_checkpoint, save_checkpoint
from modules.cli import run_main
from onnxexport import export as ex
from tests.synth_helpers import DATA, MINI_MODEL, build_mini, build_synth, golden_hps

REL_TOL = 1e-4
SEED = 52468


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a loaded 2-core machine PyTorch's thread barriers dominate these small runs.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """The golden tiny model exported through the 4.1 interface: ``-n tiny`` in a work folder."""
    root = tmp_path_factory.mktemp("onnx")
    folder = root / "checkpoints" / "tiny"
    folder.mkdir(parents=True)
    shutil.copy(DATA / "G_0.pth", folder / "model.pth")
    shutil.copy(DATA / "config.json", folder / "config.json")
    with contextlib.chdir(root):
        assert onnx_export.main(["-n", "tiny"]) == 0  # includes the built-in onnxruntime check
    return {"onnx": folder / "tiny_SoVits.onnx", "descriptor": root / "checkpoints" / "tiny.json"}


@pytest.fixture(scope="module")
def tiny_pinned(tiny_export):
    model = onnx.load(str(tiny_export["onnx"]))
    pinned = ex.pin_random_nodes(model)
    return ex.ort_session(model, threads=1), pinned


@pytest.fixture(scope="module")
def tiny_reference():
    """G_0 as 4.1's Svc runs it (weight norm kept), speaker mix enabled."""
    net = build_synth(golden_hps())
    load_checkpoint(DATA / "G_0.pth", net)
    net.eval()
    del net.enc_q
    net.EnableCharacterMix(2, "cpu")
    return net


def _run(session, feeds) -> np.ndarray:
    wanted = {i.name for i in session.get_inputs()}
    return session.run(["audio"], {k: np.asarray(v) for k, v in feeds.items() if k in wanted})[0]


def _stretch(units: torch.Tensor, mel2ph: torch.Tensor) -> torch.Tensor:
    """What the graph does with c and mel2ph, in PyTorch: ``[1, N, C]`` → ``[1, C, T]``."""
    padded = torch.cat([torch.zeros_like(units[:, :1]), units], dim=1)
    return padded[0, mel2ph[0]].T[None]


def _case(frames, units, channels, *, seed=0, zero_frames=()):
    gen = torch.Generator().manual_seed(seed)
    mel2ph = (torch.arange(frames) * units // frames + 1)[None]
    mel2ph[0, list(zero_frames)] = 0
    t = torch.arange(frames, dtype=torch.float32)
    uv = (torch.rand(1, frames, generator=gen) > 0.15).float()
    return {
        "c": torch.randn(1, units, channels, generator=gen),
        "f0": (150 + 90 * torch.sin(t / 9) + 20 * torch.rand(1, frames, generator=gen)) * uv,
        "mel2ph": mel2ph,
        "uv": uv,
    }


def _reference_and_feeds(net, inputs, *, sid_torch, noise_scale, seed, vol=None):
    """PyTorch's ``infer`` output and the ONNX feeds that reproduce its random draws."""
    frames = inputs["f0"].shape[1]
    with torch.no_grad():
        ref, _ = net.infer(_stretch(inputs["c"], inputs["mel2ph"]), inputs["f0"], inputs["uv"], g=sid_torch,
                           noice_scale=noise_scale, seed=seed, vol=vol)
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(1, net.inter_channels, frames, generator=gen)  # infer's enc_p draw
    draws = ex.random_draws(net, frames, generator=gen)
    return ref.numpy(), {"noise": eps * noise_scale}, draws


# --- the golden tiny model ---------------------------------------------------------------------------
def test_descriptor_fields_and_values(tiny_export):
    text = tiny_export["descriptor"].read_text()
    assert text.startswith('{\n    "Folder": "tiny",')  # json.dump(indent=4), 4.1's field order
    assert json.loads(text) == {
        "Folder": "tiny", "Name": "tiny", "Type": "SoVits", "Rate": 44100, "Hop": 512,
        "Hubert": "vec-768-layer-12", "SoVits4": True, "SoVits3": False, "CharaMix": True, "Volume": False,
        "HiddenSize": 768, "Characters": ["spk0", "spk1"], "Cluster": "",
    }
    assert list(json.loads(text)) == ["Folder", "Name", "Type", "Rate", "Hop", "Hubert", "SoVits4", "SoVits3",
                                      "CharaMix", "Volume", "HiddenSize", "Characters", "Cluster"]


def test_graph_interface(tiny_export):
    model = onnx.load(str(tiny_export["onnx"]))
    onnx.checker.check_model(model)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == 16

    def sig(value):
        t = value.type.tensor_type
        return onnx.TensorProto.DataType.Name(t.elem_type), [d.dim_param or d.dim_value for d in t.shape.dim]

    inputs = {i.name: sig(i) for i in model.graph.input}
    assert list(inputs) == ["c", "f0", "mel2ph", "uv", "noise", "sid"]
    assert inputs == {
        "c": ("FLOAT", ["batch", "units", 768]),
        "f0": ("FLOAT", [1, "frames"]),
        "mel2ph": ("INT64", [1, "frames"]),
        "uv": ("FLOAT", [1, "frames"]),
        "noise": ("FLOAT", [1, 192, "frames"]),
        "sid": ("FLOAT", ["frames", 2]),
    }
    assert [o.name for o in model.graph.output] == ["audio"]
    assert sig(model.graph.output[0]) == ("FLOAT", ["batch", 1, "samples"])
    ops = [n.op_type for n in model.graph.node]
    # The only randomness: the sine source's initial phases (as 4.1's graph).
    assert [op for op in ops if op.startswith("Random")] == ["RandomUniformLike"]
    # Training-only and unused parts are not in the file.
    names = {i.name for i in model.graph.initializer}
    assert not any(n.startswith(("enc_q.", "f0_decoder.")) for n in names)
    assert any(n.startswith("enc_p.enc_.attn_layers.0.") for n in names)  # 4.1 parameter names


def test_matches_41_golden_audio(tiny_pinned):
    """256 frames, speaker 1, noise scale 0.4: the graph reproduces the original code's audio."""
    session, pinned = tiny_pinned
    golden = np.load(DATA / "golden_infer.npz")
    d = np.load(DATA / "svc_tiny_inputs.npz")
    frames = d["f0"].shape[1]
    eps = torch.randn(1, 192, frames, generator=torch.Generator().manual_seed(SEED))
    assert np.array_equal(eps.flatten()[:1024].numpy(), golden["rng_enc_p_first1024"])
    feeds = {
        "c": np.ascontiguousarray(d["c"].transpose(0, 2, 1)), "f0": d["f0"], "uv": d["uv"],
        "noise": (eps * 0.4).numpy(),
        "mel2ph": np.arange(1, frames + 1, dtype=np.int64)[None],
        "sid": np.tile(np.array([[0.0, 1.0]], np.float32), (frames, 1)),  # one-hot = speaker id 1
        pinned[0][0]: golden["rng_sine"],
    }
    out = _run(session, feeds)
    assert out.shape == (1, 1, frames * 512)
    diff = ex.max_rel_diff(out, golden["ns0.4_audio"])
    assert diff < REL_TOL


@pytest.mark.parametrize("frames, units, weights, zero_frames", [
    (41, 23, "one-hot 0", ()),
    (97, 55, "ramp", (0, 1, 60)),  # mel2ph 0 selects the zero row
])
def test_matches_pytorch_two_lengths_and_mixes(tiny_pinned, tiny_reference, frames, units, weights, zero_frames):
    session, pinned = tiny_pinned
    inputs = _case(frames, units, 768, seed=frames, zero_frames=zero_frames)
    if weights == "one-hot 0":
        mix = torch.tensor([[1.0, 0.0]]).repeat(frames, 1)
    else:  # speaker 0 → speaker 1 over the clip
        w = torch.linspace(0, 1, frames)[:, None]
        mix = torch.cat([1 - w, w], dim=1)
    ref, feeds, draws = _reference_and_feeds(tiny_reference, inputs, sid_torch=mix,
                                             noise_scale=0.4, seed=SEED + frames)
    out = _run(session, {**inputs, **feeds, "sid": mix, **ex.pinned_feeds(pinned, draws)})
    assert out.shape == (1, 1, frames * 512)
    assert ex.max_rel_diff(out, ref) < REL_TOL
    # ... and the speaker weights matter: another mix gives other audio.
    other = _run(session, {**inputs, **feeds, "sid": mix.flip(1), **ex.pinned_feeds(pinned, draws)})
    assert ex.max_rel_diff(other, ref) > 1e-2


def test_unpinned_graph_runs_and_draws_phases(tiny_export):
    """As shipped (random node inside), the graph runs at any length and its phases vary."""
    session = ex.ort_session(tiny_export["onnx"], threads=1)
    inputs = _case(7, 4, 768, seed=3)
    feeds = {**inputs, "noise": torch.zeros(1, 192, 7), "sid": torch.tensor([[0.5, 0.5]]).repeat(7, 1)}
    a, b = _run(session, feeds), _run(session, feeds)
    assert a.shape == b.shape == (1, 1, 7 * 512)
    assert np.isfinite(a).all() and not np.array_equal(a, b)


# --- other model variants (very small random models) -----------------------------------------------------
def _mini_files(tmp_path, *, spk, **overrides):
    """A random mini model saved in the 4.1 file formats: model.pth + config.json."""
    net = build_mini(**overrides)
    with torch.no_grad():  # give the speaker table and the snake activations non-trivial values
        net.emb_g.weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))
        for name, p in net.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    config = json.loads((DATA / "config.json").read_text())
    config["model"] = {**copy.deepcopy(MINI_MODEL), **overrides}
    config["data"]["filter_length"] = 64  # 33 spectrogram channels, as build_mini
    config["train"]["segment_size"] = 4 * config["data"]["hop_length"]
    config["spk"] = spk
    (tmp_path / "config.json").write_text(json.dumps(config, indent=2))
    save_checkpoint(net, None, 1e-4, 1, tmp_path / "model.pth")
    net.eval()
    del net.enc_q
    return net, tmp_path / "model.pth", tmp_path / "config.json"


def _export(tmp_path, model, config, *extra):
    """Explicit paths; without -n the name comes from the output file (mini_SoVits.onnx → mini)."""
    out = tmp_path / "out" / "mini_SoVits.onnx"
    argv = ["--model_path", str(model), "--config_path", str(config), "--output", str(out), *extra]
    assert onnx_export.main(argv) == 0
    return out


def test_single_speaker_volume_transformer_flow(tmp_path):
    """One speaker → speaker-id graph (sid int64 [1]); vol input; transformer flow, shared."""
    net, model, config = _mini_files(tmp_path, spk={"solo": 0}, n_speakers=1, vol_embedding=True,
                                     use_transformer_flow=True, flow_share_parameter=True)
    out = _export(tmp_path, model, config)
    graph_model = onnx.load(str(out))
    assert [i.name for i in graph_model.graph.input] == ["c", "f0", "mel2ph", "uv", "noise", "sid", "vol"]
    sid_type = graph_model.graph.input[5].type.tensor_type
    assert sid_type.elem_type == onnx.TensorProto.INT64 and [d.dim_value for d in sid_type.shape.dim] == [1]
    desc = json.loads((out.parent / "mini.json").read_text())
    assert (desc["Folder"], desc["Name"]) == ("mini", "mini")
    assert (desc["CharaMix"], desc["Volume"], desc["Characters"], desc["HiddenSize"]) == (False, True, ["solo"], 16)
    assert desc["Hubert"] == "vec-16-layer-9"
    pinned = ex.pin_random_nodes(graph_model)
    session = ex.ort_session(graph_model, threads=1)
    for frames, units in ((9, 5), (30, 21)):
        inputs = _case(frames, units, 16, seed=frames)
        vol = 0.05 + 0.1 * torch.rand(1, frames, generator=torch.Generator().manual_seed(frames))
        ref, feeds, draws = _reference_and_feeds(net, inputs, sid_torch=torch.tensor([[0]]), noise_scale=0.7,
                                                 seed=frames, vol=vol)
        out_audio = _run(session, {**inputs, **feeds, "sid": np.array([0], np.int64), "vol": vol,
                                   **ex.pinned_feeds(pinned, draws)})
        assert ex.max_rel_diff(out_audio, ref) < REL_TOL


def test_snake_vocoder_mix_with_unordered_speaker_map(tmp_path):
    """Snake decoder (uv gating + source noise drawn in the graph); the mix columns follow the
    config's spk map in file order: {"b": 2, "a": 0} → embedding rows 2, 0."""
    # ResBlock2 with one kernel size: 16 anti-aliased activations instead of 96 keep the export quick.
    net, model, config = _mini_files(tmp_path, spk={"b": 2, "a": 0}, vocoder_name="nsf-snake-hifigan", resblock="2",
                                     resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])
    out = _export(tmp_path, model, config, "--no_check")
    graph_model = onnx.load(str(out))
    assert sorted(n.op_type for n in graph_model.graph.node if n.op_type.startswith("Random")) == [
        "RandomNormalLike", "RandomUniformLike"]
    assert json.loads((out.parent / "mini.json").read_text())["Characters"] == ["b", "a"]
    pinned = ex.pin_random_nodes(graph_model)
    session = ex.ort_session(graph_model, threads=1)
    net.EnableCharacterMix(3, "cpu")
    frames = 19
    inputs = _case(frames, 11, 16, seed=4)
    w = torch.linspace(0.2, 0.9, frames)[:, None]
    mix = torch.cat([w, 1 - w], dim=1)  # columns: "b" (row 2), "a" (row 0)
    mix_rows = torch.stack([mix[:, 1], torch.zeros(frames), mix[:, 0]], dim=1)  # the same mix over rows 0..2
    ref, feeds, draws = _reference_and_feeds(net, inputs, sid_torch=mix_rows, noise_scale=0.4, seed=11)
    out_audio = _run(session, {**inputs, **feeds, "sid": mix, **ex.pinned_feeds(pinned, draws)})
    assert ex.max_rel_diff(out_audio, ref) < REL_TOL


def test_no_mix_gives_the_speaker_id_graph(tmp_path):
    net, model, config = _mini_files(tmp_path, spk={"a": 0, "b": 1, "c": 2})
    out = _export(tmp_path, model, config, "--no_mix", "--no_check", "--descriptor", str(tmp_path / "id.json"))
    desc = json.loads((tmp_path / "id.json").read_text())
    assert (desc["CharaMix"], desc["Characters"]) == (False, ["a", "b", "c"])
    graph_model = onnx.load(str(out))
    assert graph_model.graph.input[5].type.tensor_type.elem_type == onnx.TensorProto.INT64
    pinned = ex.pin_random_nodes(graph_model)
    session = ex.ort_session(graph_model, threads=1)
    inputs = _case(23, 14, 16, seed=5)
    for speaker in (2, 1):
        ref, feeds, draws = _reference_and_feeds(net, inputs, sid_torch=torch.tensor([[speaker]]),
                                                 noise_scale=0.4, seed=12)
        out_audio = _run(session, {**inputs, **feeds, "sid": np.array([speaker], np.int64),
                                   **ex.pinned_feeds(pinned, draws)})
        assert ex.max_rel_diff(out_audio, ref) < REL_TOL


# --- errors ------------------------------------------------------------------------------------------------
def test_missing_files_name_the_expected_layout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(onnx_export.main, ["-n", "nothere"]) == 2
    err = capsys.readouterr().err
    assert "checkpoints/nothere/model.pth not found" in err and "--model_path" in err
    (tmp_path / "checkpoints" / "nothere").mkdir(parents=True)
    (tmp_path / "checkpoints" / "nothere" / "model.pth").write_bytes(b"x")
    assert run_main(onnx_export.main, ["-n", "nothere"]) == 2
    assert "checkpoints/nothere/config.json not found" in capsys.readouterr().err
    assert run_main(onnx_export.main, ["-n", "../up"]) == 2
    assert "plain folder name" in capsys.readouterr().err


def test_mismatched_config_and_bad_speaker_map_are_refused(tmp_path, capsys):
    _, model, config = _mini_files(tmp_path, spk={"a": 0, "b": 1, "c": 2})
    cfg = json.loads(config.read_text())
    cfg["model"]["n_speakers"] = 5  # the checkpoint's speaker table has 3 rows
    config.write_text(json.dumps(cfg))
    argv = ["--model_path", str(model), "--config_path", str(config), "--output", str(tmp_path / "x.onnx")]
    assert run_main(onnx_export.main, argv) == 2
    assert "emb_g.weight" in capsys.readouterr().err
    cfg["model"]["n_speakers"] = 3
    cfg["spk"] = {"a": 0, "z": 7}
    config.write_text(json.dumps(cfg))
    assert run_main(onnx_export.main, argv) == 2
    assert "'z' to 7" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
