"""Front ends accept a ``.svc.safetensors`` model file wherever they accept ``-m``/``-c`` (issue 23):
``Svc``, ``inference_main.py`` (incl. its early checks), model mixing. The audio equals the G
checkpoint + config's bit for bit. The web UI's part is in tests/test_webui.py."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from infer_helpers import ROOT, SPEAKERS, models_in_use, voice
from modelfile import export_model as export, load_model_file
from modules.cli import run_main
from modules.errors import SvcError

sys.path.insert(0, str(ROOT))
import inference_main  # noqa: E402
import model_mix  # noqa: E402

SR = 44100


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with models_in_use(tmp_path_factory.mktemp("wire_models")) as ms:
        yield ms


@pytest.fixture(scope="module")
def plain(models):
    return export(model_path=models.g, config_path=models.config, output_path=models.root / "plain.svc.safetensors")


@pytest.fixture(scope="module")
def with_kmeans(models):
    """Synthesizer + k-means + diffusion, with free text."""
    return export(model_path=models.g, config_path=models.config, output_path=models.root / "km.svc.safetensors",
                  cluster_path=models.kmeans, diffusion_model_path=models.diffusion,
                  diffusion_config_path=models.diffusion_config, author="A. Singer", license="CC-BY-4.0",
                  description="test voice")


@pytest.fixture(scope="module")
def with_index(models):
    return export(model_path=models.g, config_path=models.config, output_path=models.root / "ix.svc.safetensors",
                  cluster_path=models.index)


@pytest.fixture(scope="module")
def audio():
    return np.concatenate([voice(1.2, SR, 220.0, 1), np.zeros(SR // 3, np.float32), voice(0.6, SR, 300.0, 2)])


@pytest.fixture(autouse=True)
def _no_log_handlers(monkeypatch):
    # run_main installs a stderr log handler once per process; under capsys that stream closes.
    monkeypatch.setattr("modules.cli.setup_logging", lambda *a, **k: None)


def _svc(*args, **kwargs):
    from inference.infer_tool import Svc

    return Svc(*args, device="cpu", **kwargs)


# --- Svc --------------------------------------------------------------------------------------------
def test_svc_from_the_file_converts_bit_for_bit_like_the_checkpoint(models, plain, audio):
    from inference.options import ConversionOptions

    ref = _svc(models.g, models.config, cluster_model_path=None)
    svc = _svc(plain, None)
    assert svc.model_file is not None and ref.model_file is None
    assert svc.spk2id == ref.spk2id == SPEAKERS and svc.target_sample == ref.target_sample
    opts = ConversionOptions(transpose=2, noice_scale=0.3)
    np.testing.assert_array_equal(svc.convert(audio, SR, "bob", opts, progress=False),
                                  ref.convert(audio, SR, "bob", opts, progress=False))
    np.testing.assert_array_equal(svc.slice_inference(audio, "carol", 0, sr=SR, clip_seconds=0.5, lg_num=0.1,
                                                      progress=False),
                                  ref.slice_inference(audio, "carol", 0, sr=SR, clip_seconds=0.5, lg_num=0.1,
                                                      progress=False))
    assert svc.model_file.state_dict == {}  # the weights are not kept twice


def test_svc_from_a_float16_file_stays_within_the_float16_bound(models, plain, audio):
    from synth_helpers import rel_err
    from test_modelfile import HALF_REL_L2_BOUND

    half = export(model_path=models.g, config_path=models.config, output_path=models.root / "half.svc.safetensors",
                  half=True)
    ref = _svc(plain, None).slice_inference(audio, "bob", 0, sr=SR, progress=False)
    got = _svc(half, None).slice_inference(audio, "bob", 0, sr=SR, progress=False)
    assert 0 < rel_err(got, ref) < HALF_REL_L2_BOUND


@pytest.mark.parametrize("part", ["kmeans", "index"])
def test_the_files_cluster_part_mixes_like_the_cluster_file(models, with_kmeans, with_index, audio, part):
    fr = part == "index"
    ref = _svc(models.g, models.config, cluster_model_path=models.index if fr else models.kmeans, feature_retrieval=fr)
    svc = _svc(with_index if fr else with_kmeans, None)  # no cluster file given: the file's part
    assert svc.cluster_model is not None and svc.feature_retrieval is fr
    kwargs = dict(sr=SR, cluster_infer_ratio=0.6, progress=False)
    np.testing.assert_array_equal(svc.slice_inference(audio, "alice", 0, **kwargs),
                                  ref.slice_inference(audio, "alice", 0, **kwargs))


def test_a_given_cluster_file_overrides_the_files_part(models, with_kmeans, audio):
    svc = _svc(with_kmeans, None, cluster_model_path=models.index, feature_retrieval=True)
    ref = _svc(models.g, models.config, cluster_model_path=models.index, feature_retrieval=True)
    assert svc.feature_retrieval and svc.cluster_model_path == str(models.index)
    kwargs = dict(sr=SR, cluster_infer_ratio=0.5, progress=False)
    np.testing.assert_array_equal(svc.slice_inference(audio, "bob", 0, **kwargs),
                                  ref.slice_inference(audio, "bob", 0, **kwargs))


def test_shallow_diffusion_from_the_files_diffusion_part(models, with_kmeans, plain, audio):
    ref = _svc(models.g, models.config, cluster_model_path=None, shallow_diffusion=True,
               diffusion_model_path=models.diffusion, diffusion_config_path=models.diffusion_config)
    svc = _svc(with_kmeans, None, shallow_diffusion=True)  # no -dm: the file's diffusion model
    kwargs = dict(sr=SR, k_step=4, progress=False)
    np.testing.assert_array_equal(svc.slice_inference(audio, "bob", 0, **kwargs),
                                  ref.slice_inference(audio, "bob", 0, **kwargs))
    # a file without diffusion uses -dm / -dc as before
    over = _svc(plain, None, shallow_diffusion=True, diffusion_model_path=models.diffusion,
                diffusion_config_path=models.diffusion_config)
    np.testing.assert_array_equal(over.slice_inference(audio, "bob", 0, **kwargs),
                                  ref.slice_inference(audio, "bob", 0, **kwargs))
    with pytest.raises(SvcError, match="holds no diffusion model"):
        _svc(plain, None, shallow_diffusion=True, diffusion_model_path=None)


def test_a_config_beside_a_model_file_is_refused(models, plain):
    with pytest.raises(SvcError, match="carries its own config"):
        _svc(plain, models.config)


# --- inference_main.py ------------------------------------------------------------------------------
@pytest.fixture
def workdir(tmp_path, monkeypatch, audio):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    sf.write(tmp_path / "raw" / "song.wav", audio, SR)
    return tmp_path


def _run(argv, capsys):
    code = run_main(inference_main.main, argv)
    return code, capsys.readouterr().err


class _Counter:
    """Counts calls of every model loader (and still calls them)."""

    def __init__(self, monkeypatch):
        import inference.components as components
        import modelfile
        from inference.infer_tool import Svc

        self.calls, self.args = [], []
        for owner, name in ((Svc, "load_model"), (components, "get_speech_encoder"), (components, "load_diffusion"),
                            (modelfile, "load_model_file"), (torch, "load")):
            real = getattr(owner, name)

            def counted(*a, _real=real, _name=name, **k):
                self.calls.append(_name)
                self.args.append(str(a[0]) if a else "")
                return _real(*a, **k)

            monkeypatch.setattr(owner, name, counted)


def test_cli_without_c_writes_the_same_audio_as_with_the_checkpoint(models, with_kmeans, workdir, capsys):
    common = ["-n", "song.wav", "-s", "bob", "-wf", "wav", "-cr", "0.5", "-t", "1"]
    code, err = _run(["-m", str(models.g), "-c", str(models.config), "-cm", str(models.kmeans)] + common, capsys)
    assert code == 0, err
    out = workdir / "results" / "song.wav_1key_bob_kmeans0.5_sovits_pm.wav"
    ref = sf.read(out, dtype="int16")[0]
    out.unlink()
    code, err = _run(["-m", str(with_kmeans)] + common, capsys)  # no -c, no -cm: the file's own parts
    assert code == 0, err
    np.testing.assert_array_equal(sf.read(out, dtype="int16")[0], ref)


def test_cli_shallow_diffusion_from_the_file(models, with_kmeans, workdir, capsys):
    common = ["-n", "song.wav", "-s", "carol", "-wf", "wav", "-shd", "-ks", "4"]
    code, err = _run(["-m", str(models.g), "-c", str(models.config), "-dm", str(models.diffusion),
                      "-dc", str(models.diffusion_config)] + common, capsys)
    assert code == 0, err
    out = workdir / "results" / "song.wav_0key_carol_sovdiff_pm.wav"
    ref = sf.read(out, dtype="int16")[0]
    out.unlink()
    code, err = _run(["-m", str(with_kmeans)] + common, capsys)
    assert code == 0, err
    np.testing.assert_array_equal(sf.read(out, dtype="int16")[0], ref)
    # diffusion only: the file's diffusion model and its speaker map (the diffusion config's)
    common = ["-n", "song.wav", "-s", "bob", "-wf", "wav", "-od", "-ks", "4"]
    code, err = _run(["-dm", str(models.diffusion), "-dc", str(models.diffusion_config)] + common, capsys)
    assert code == 0, err
    out = workdir / "results" / "song.wav_0key_bob_diff_pm.wav"
    ref = sf.read(out, dtype="int16")[0]
    out.unlink()
    code, err = _run(["-m", str(with_kmeans)] + common, capsys)
    assert code == 0, err
    np.testing.assert_array_equal(sf.read(out, dtype="int16")[0], ref)


@pytest.mark.parametrize("extra,message", [
    (["-s", "dave"], "'dave' is not in this model's speaker list: alice, bob, carol"),
    (["-s", "bob", "-c", "config.json"], "carries its own config; drop -c"),
    (["-s", "bob", "-shd"], "holds no diffusion model; pass one with -dm and -dc"),
    (["-s", "bob", "-cr", "0.5"], "kmeans_10000.pt: k-means model not found"),
    ([], "no speaker given: pass -s NAME [NAME ...]; this model's speakers: alice, bob, carol"),
])
def test_cli_checks_the_model_file_before_any_model_loads(models, plain, workdir, capsys, monkeypatch, extra,
                                                          message):
    counter = _Counter(monkeypatch)
    code, err = _run(["-m", str(plain), "-n", "song.wav"] + extra, capsys)
    assert code == 2 and message in err, err
    assert counter.calls == []
    code, err = _run(["-m", str(plain), "-n", "song.wav", "-s", "bob"], capsys)
    assert code == 0, err
    assert counter.calls.count("load_model_file") == 1
    assert str(plain) not in [a for c, a in zip(counter.calls, counter.args) if c == "load"]  # never torch.load


def test_preflight_reads_speakers_from_the_header_only(plain, monkeypatch):
    from inference.batch import read_model_file_speakers

    def no_tensors(*a, **k):
        raise AssertionError("tensor data was read")

    monkeypatch.setattr("modelfile.format.read_tensors", no_tensors)
    monkeypatch.setattr("modelfile.bundle.read_tensors", no_tensors)
    table = read_model_file_speakers(plain)
    assert table.spk2id == SPEAKERS and table.n_speakers == len(SPEAKERS)
    table.check("carol")
    with pytest.raises(SvcError, match="'zed' is not in this model's speaker list"):
        table.check("zed")


class _CreatesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("kind", ["pickle", "torch_zip"])
def test_cli_refuses_a_pickle_renamed_to_a_model_file_and_runs_nothing(workdir, capsys, monkeypatch, kind):
    marker = workdir / "pwned.txt"
    evil = workdir / "voice.svc.safetensors"
    if kind == "pickle":
        evil.write_bytes(pickle.dumps({"model": _CreatesFile(marker)}, protocol=4))
    else:
        torch.save({"model": _CreatesFile(marker)}, evil)
    counter = _Counter(monkeypatch)
    code, err = _run(["-m", str(evil), "-n", "song.wav", "-s", "bob"], capsys)
    assert code == 2 and "nothing in it was executed" in err, err
    assert counter.calls == [] and not marker.exists()
    # the same with a config given, as for a G checkpoint: still refused, not unpickled
    code, err = _run(["-m", str(evil), "-c", "config.json", "-n", "song.wav", "-s", "bob"], capsys)
    assert code == 2 and "nothing in it was executed" in err and not marker.exists(), err


# --- model mixing -----------------------------------------------------------------------------------
def test_model_mix_accepts_model_files(models, plain, tmp_path):
    from modules.checkpoint import torch_load

    ref, got = tmp_path / "ref.pth", tmp_path / "got.pth"
    assert run_main(model_mix.main, ["-m", str(models.g), str(models.g), "-r", "70", "30", "--mode", "linear",
                                     "-o", str(ref)]) == 0
    assert run_main(model_mix.main, ["-m", str(plain), str(models.g), "-r", "70", "30", "--mode", "linear",
                                     "-o", str(got)]) == 0
    a, b = torch_load(ref)["model"], torch_load(got)["model"]
    assert set(b) == {k for k in a if not k.startswith("enc_q")}  # inference weights only
    for k, v in b.items():
        assert torch.equal(v, a[k]), k


def test_model_mix_writes_a_model_file_when_the_name_says_so(models, with_kmeans, tmp_path, audio):
    out = tmp_path / "mixed.svc.safetensors"
    assert run_main(model_mix.main, ["-m", str(with_kmeans), str(models.g), "-o", str(out)]) == 0
    bundle = load_model_file(out)
    assert bundle.spk2id == SPEAKERS and bundle.cluster is None and bundle.diffusion_state is None
    pth = tmp_path / "mixed.pth"
    assert run_main(model_mix.main, ["-m", str(with_kmeans), str(models.g), "-o", str(pth)]) == 0
    from modules.checkpoint import torch_load

    state = torch_load(pth)["model"]
    assert set(state) == set(bundle.state_dict)
    for k, v in bundle.state_dict.items():
        assert torch.equal(v, state[k]), k
    assert "mixed from" in bundle.description


# --- realtime (gui.py file mode, the engine's loader, the window's speaker list) ----------------------
def test_realtime_from_the_file_streams_the_same_audio(models, plain, tmp_path, audio):
    from gui import main as gui_main
    from realtime_gui.app import model_speakers

    sf.write(tmp_path / "in.wav", audio, SR)
    none = str(tmp_path / "no_settings.json")
    outs = []
    for model in (models.g, plain):  # the G checkpoint finds config.json beside it; the file needs none
        outs.append(tmp_path / f"out_{len(outs)}.wav")
        assert gui_main(["-m", str(model), "--input", str(tmp_path / "in.wav"), "--output", str(outs[-1]),
                         "--block", "0.25", "-f0p", "pm", "-s", "bob", "--settings", none]) == 0
    a, b = (sf.read(p, dtype="float32")[0] for p in outs)
    assert len(a) == len(audio)
    np.testing.assert_array_equal(b, a)
    assert model_speakers(str(plain)) == model_speakers(str(models.g)) == list(SPEAKERS)


def test_realtime_settings_route_a_model_file(models, with_kmeans):
    from inference.realtime import RealtimeSettings, load_svc

    s = RealtimeSettings(model_path=str(with_kmeans), config_path=str(models.config), device="cpu",
                         use_diffusion=True)
    assert s.resolved_config_path() is None and s.given("cluster_model_path") is None
    svc = load_svc(s)  # the stale config is not used; the file's k-means and diffusion parts are
    assert svc.model_file is not None and svc.cluster_model is not None and svc.shallow_diffusion
    assert RealtimeSettings(model_path=str(models.g)).resolved_config_path() == models.config


# --- onnx_export.py -----------------------------------------------------------------------------------
def test_onnx_export_from_the_file_equals_the_export_from_the_checkpoint(models, plain, tmp_path, monkeypatch):
    import json

    import onnx
    import onnx_export
    from onnx.numpy_helper import to_array

    folder = tmp_path / "checkpoints" / "voice"
    folder.mkdir(parents=True)
    (folder / "model.svc.safetensors").write_bytes(plain.read_bytes())  # 4.1's -n layout, model file only
    monkeypatch.chdir(tmp_path)
    assert run_main(onnx_export.main, ["-n", "voice"]) == 0  # includes the onnxruntime check
    ref_onnx = tmp_path / "ref" / "ref_SoVits.onnx"
    assert run_main(onnx_export.main, ["--model_path", str(models.g), "--config_path", str(models.config),
                                       "--output", str(ref_onnx), "--no_check"]) == 0
    got = {t.name: to_array(t) for t in onnx.load(str(folder / "voice_SoVits.onnx")).graph.initializer}
    ref = {t.name: to_array(t) for t in onnx.load(str(ref_onnx)).graph.initializer}
    assert got.keys() == ref.keys()
    for name, value in ref.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    got_desc = json.loads((tmp_path / "checkpoints" / "voice.json").read_text())
    ref_desc = json.loads((ref_onnx.parent / "ref.json").read_text())
    assert {k: v for k, v in got_desc.items() if k not in ("Folder", "Name")} == \
        {k: v for k, v in ref_desc.items() if k not in ("Folder", "Name")}
    assert run_main(onnx_export.main, ["--model_path", str(plain), "--config_path", str(models.config),
                                       "--output", str(tmp_path / "x_SoVits.onnx")]) == 2
