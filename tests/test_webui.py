"""Web UI callbacks (webui/callbacks.py, webui/app.py) with tiny random-weight models.

The browser test (tests/test_webui_browser.py) drives the same code through a real page.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from modules.errors import SvcError
from webui import callbacks as cb
from inference.options import ConversionOptions
from infer_helpers import models_in_use
from webui_helpers import SPEAKERS, build_diffusion, build_tiny_models, write_song

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with models_in_use(tmp_path_factory.mktemp("webui_models"), build_tiny_models) as tm:
        yield tm


@pytest.fixture(scope="module")
def svc(models):
    model, msg = cb.load_model(model_path=models.g, config_path=models.config, device="cpu")
    assert "Speakers: alto, tenor" in msg and "on cpu" in msg
    return model


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    # 22.05 kHz stereo: the page accepts any rate and channel count.
    return write_song(tmp_path_factory.mktemp("webui_in") / "my song.wav", 1.0, 22050, stereo=True)


# --- settings ----------------------------------------------------------------------------------
def test_settings_have_the_41_web_ui_defaults():
    s = cb.web_defaults()
    assert isinstance(s, ConversionOptions)
    assert (s.transpose, s.auto_predict_f0, s.f0_predictor, s.cluster_infer_ratio, s.slice_db) == (0, False, "pm", 0, -40)
    assert (s.noice_scale, s.k_step, s.pad_seconds, s.clip_seconds, s.lg_num, s.lgr_num) == (0.4, 100, 0.5, 0, 0, 0.75)
    assert (s.enhancer_adaptive_key, s.cr_threshold, s.second_encoding) == (0, 0.05, False)
    assert s.loudness_envelope_adjustment == 0  # 4.1 web UI (the CLI's default is 1)
    assert s == ConversionOptions().replace(loudness_envelope_adjustment=0)  # the only difference
    assert cb.DEFAULT_OUTPUT_FORMAT == "wav"
    assert {*cb.SETTINGS_LEFT, *cb.SETTINGS_RIGHT} - {"output_format"} <= set(ConversionOptions.fields_meta())


def test_settings_from_the_page_are_checked_and_typed():
    s, fmt = cb.settings_from_ui(dict(k_step=37.0, transpose=-3, auto_predict_f0=1, output_format="flac"))
    assert s.k_step == 37 and isinstance(s.k_step, int) and s.transpose == -3 and s.auto_predict_f0 is True
    assert fmt == "flac" and s.loudness_envelope_adjustment == 0  # untouched fields keep the web-UI defaults
    with pytest.raises(SvcError, match="'Noise scale' is empty"):
        cb.settings_from_ui(dict(noice_scale=None))
    with pytest.raises(SvcError, match="'Pad seconds' must be a number"):
        cb.settings_from_ui(dict(pad_seconds="lots"))
    with pytest.raises(SvcError, match=r"'Crossfade retain ratio' must be in \[0, 1\], got 2"):
        cb.settings_from_ui(dict(lgr_num=2))
    with pytest.raises(SvcError, match="'F0 predictor' must be one of .*rmvpe"):
        cb.settings_from_ui(dict(f0_predictor="yin"))
    with pytest.raises(SvcError, match="output format 'ogg'"):
        cb.settings_from_ui(dict(output_format="ogg"))


def test_output_name_is_the_41_web_ui_name():
    kw = dict(speaker="alto", tran=0, auto_predict_f0=False, cluster_infer_ratio=0, shallow_diffusion=False,
              only_diffusion=False, output_format="wav")
    assert cb.output_file_name("song", **kw) == "result_song_alto_0key_sovits.wav"
    assert cb.output_file_name("song", **{**kw, "tran": -2.7, "cluster_infer_ratio": 0.5,
                                          "shallow_diffusion": True, "output_format": "mp3"}) \
        == "result_song_alto_-2key_kmeans0.5_sovdiff.mp3"
    assert cb.output_file_name("song", **{**kw, "cluster_infer_ratio": 0.3, "feature_retrieval": True}) \
        == "result_song_alto_0key_index0.3_sovits.wav"
    assert cb.output_file_name("a b", **{**kw, "auto_predict_f0": True, "tran": 5, "only_diffusion": True}) \
        == "result_a b_alto_auto_diff.wav"


def test_device_choices():
    assert cb.device_choices()[0] == "Auto" and cb.device_choices()[-1] == "cpu"
    assert cb.device_from_choice("Auto") is None
    assert cb.device_from_choice("cpu") == "cpu"
    assert cb.device_from_choice("CUDA:1 NVIDIA H100 80GB HBM3") == "cuda:1"
    with pytest.raises(SvcError, match="unknown device 'tpu'"):
        cb.device_from_choice("tpu")


def test_local_models_are_folders_with_one_pth_and_one_json(tmp_path, models):
    good = tmp_path / "trained" / "singer"
    nested = tmp_path / "trained" / "group" / "other"
    two = tmp_path / "trained" / "two_models"
    for d in (good, nested, two):
        d.mkdir(parents=True)
        shutil.copy(models.g, d / "G_100.pth")
        shutil.copy(models.config, d / "config.json")
    shutil.copy(models.g, two / "G_200.pth")
    (good / "kmeans_10000.pt").write_bytes(b"")  # other files may sit beside them
    found = cb.scan_local_models(tmp_path / "trained")
    assert found == [str(nested), str(good)]
    assert cb.local_model_files(good) == (good / "G_100.pth", good / "config.json")
    with pytest.raises(SvcError, match="exactly one .pth and one .json"):
        cb.local_model_files(two)
    with pytest.raises(SvcError, match="no local model chosen"):
        cb.local_model_files(None)
    assert cb.scan_local_models(tmp_path / "missing") == []


# --- loading -----------------------------------------------------------------------------------
def test_load_errors_are_readable(models, tmp_path):
    with pytest.raises(SvcError, match="choose its config.json first"):
        cb.load_model(model_path=models.g, config_path=None)
    with pytest.raises(SvcError, match="G_0.pth is a model file"):
        cb.load_model(model_path=models.g, config_path=models.g)
    with pytest.raises(SvcError, match="config.json is a config file.*swapped"):
        cb.load_model(model_path=models.config, config_path=models.g)
    with pytest.raises(SvcError, match="model file .*gone.pth not found"):
        cb.load_model(model_path=tmp_path / "gone.pth", config_path=models.config)
    with pytest.raises(SvcError, match="needs both the diffusion model"):
        cb.load_model(model_path=models.g, config_path=models.config, diffusion_model_path=models.g)
    with pytest.raises(SvcError, match="diffusion-only inference needs a diffusion model"):
        cb.load_model(model_path=None, config_path=None, only_diffusion=True)
    # A config that does not fit the checkpoint: the pipeline's error comes through as SvcError.
    cfg = json.loads(models.config.read_text())
    cfg["model"]["n_speakers"] = 5
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps(cfg))
    with pytest.raises(SvcError, match="n_speakers"):
        cb.load_model(model_path=models.g, config_path=bad, device="cpu")


def test_speakers_come_from_the_config(svc):
    assert cb.speakers(svc) == list(SPEAKERS) and cb.speakers(None) == []


# --- conversion --------------------------------------------------------------------------------
def test_convert_writes_the_41_name_with_the_input_length(svc, song, tmp_path):
    started = []
    r = cb.convert_file(svc, song, "tenor", results_dir=tmp_path, on_start=started.append)
    assert r.path == tmp_path / "result_my song_tenor_0key_sovits.wav"
    info = sf.info(r.path)
    assert info.samplerate == 44100 and info.channels == 1 and info.frames == 44100  # 1 s at 22.05 kHz → 44.1 kHz
    assert started == [pytest.approx(1.0)] and r.seconds == pytest.approx(1.0)
    assert "Success" in r.message and str(r.path) in r.message and r.elapsed > 0
    y, _ = sf.read(r.path)
    assert np.abs(y).max() > 1e-3


def test_convert_settings_reach_the_pipeline(svc, song, tmp_path):
    web = cb.web_defaults()
    base = cb.convert_file(svc, song, "tenor", output_format="flac", results_dir=tmp_path)
    up = cb.convert_file(svc, song, "tenor", web.replace(transpose=4), output_format="flac", results_dir=tmp_path)
    lea = cb.convert_file(svc, song, "alto", web.replace(loudness_envelope_adjustment=1), output_format="mp3",
                          results_dir=tmp_path)
    assert base.path.name == "result_my song_tenor_0key_sovits.flac"
    assert up.path.name == "result_my song_tenor_4key_sovits.flac"
    assert lea.path.name == "result_my song_alto_0key_sovits.mp3"
    a, b = sf.read(base.path)[0], sf.read(up.path)[0]
    assert a.shape == b.shape == (44100,) and not np.allclose(a, b)
    assert sf.info(lea.path).format == "MP3" and abs(sf.info(lea.path).duration - 1.0) < 0.1
    # the same request again: the first result is kept, the new one gets a suffix
    again = cb.convert_file(svc, song, "tenor", output_format="flac", results_dir=tmp_path)
    assert again.path.name == "result_my song_tenor_0key_sovits_1.flac"
    np.testing.assert_array_equal(sf.read(again.path)[0], a)


def test_convert_runs_parallel_slices_with_the_profile_settings(svc, song, tmp_path):
    # webUI.py hands its runtime profile's parallel-slice settings to every conversion; the audio
    # is the one-slice-at-a-time audio up to float rounding (docs/compatibility.md, "Parallel slices")
    import torch

    threads = []

    def hook(n):
        threads.append(n)
        previous = torch.get_num_threads()
        torch.set_num_threads(n)
        return previous

    y, sr = sf.read(song, dtype="float32")
    phrases = tmp_path / "two phrases.wav"  # two voiced slices (the slicer keeps slices ≥ 5 s)
    phrase = np.tile(y, (6, 1))
    sf.write(phrases, np.concatenate([phrase, np.zeros((sr, y.shape[1]), np.float32), phrase]), sr)
    one = cb.convert_file(svc, phrases, "tenor", output_format="flac", results_dir=tmp_path / "one")
    two = cb.convert_file(svc, phrases, "tenor", output_format="flac", results_dir=tmp_path / "two",
                          workers=2, set_threads=hook, slice_threads=1)
    assert threads and threads[0] == 1  # the workers ran on one intra-op thread each
    a, b = sf.read(one.path, dtype="float32")[0], sf.read(two.path, dtype="float32")[0]
    assert a.shape == b.shape and np.abs(a).max() > 1e-3
    assert np.abs(a - b).max() <= 2 / 2 ** 15  # FLAC is 16-bit: at most a rounding step apart


def test_convert_errors_are_readable(svc, song, tmp_path, models):
    with pytest.raises(SvcError, match="no model is loaded"):
        cb.convert_file(None, song, "alto", results_dir=tmp_path)
    with pytest.raises(SvcError, match="upload an audio file"):
        cb.convert_file(svc, None, "alto", results_dir=tmp_path)
    with pytest.raises(SvcError, match="choose a speaker.*alto, tenor"):
        cb.convert_file(svc, song, None, results_dir=tmp_path)
    with pytest.raises(SvcError, match="not in this model's speaker list"):
        cb.convert_file(svc, song, "soprano", results_dir=tmp_path)
    with pytest.raises(SvcError, match="no cluster model or feature index is loaded"):
        cb.convert_file(svc, song, "alto", ConversionOptions(cluster_infer_ratio=0.5), results_dir=tmp_path)
    with pytest.raises(SvcError, match="output format 'ogg'"):
        cb.convert_file(svc, song, "alto", output_format="ogg", results_dir=tmp_path)
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    with pytest.raises(SvcError, match="notes.wav: not a readable audio file"):
        cb.convert_file(svc, text, "alto", results_dir=tmp_path)
    assert not list(tmp_path.glob("result_*"))


def test_unloaded_model_cannot_convert(models, song, tmp_path):
    other, _ = cb.load_model(model_path=models.g2, config_path=models.config, device="cpu")
    assert cb.unload_model(other) == "Model unloaded."
    assert cb.unload_model(None) == "No model to unload."
    with pytest.raises(SvcError, match="no model is loaded"):
        cb.convert_file(other, song, "alto", results_dir=tmp_path)


def test_cluster_file_and_shallow_diffusion(models, song, tmp_path):
    from cluster import save_kmeans

    rng = np.random.default_rng(0)
    kmeans = tmp_path / "kmeans_10000.pt"
    save_kmeans({name: {"cluster_centers_": rng.standard_normal((8, 32)).astype(np.float32),
                        "n_features_in_": 32, "_n_threads": 1} for name in SPEAKERS}, kmeans)
    dm, dc = build_diffusion(tmp_path, models.pretrain)
    svc, msg = cb.load_model(model_path=models.g, config_path=models.config, diffusion_model_path=dm,
                             diffusion_config_path=dc, cluster_model_path=kmeans, device="cpu", enhance=True)
    assert "Cluster model kmeans_10000.pt loaded" in msg and "(shallow)" in msg
    assert "enhancer is not used together with diffusion" in msg
    assert svc.shallow_diffusion and not svc.feature_retrieval and svc.cluster_model is not None
    r = cb.convert_file(svc, song, "alto", cb.web_defaults().replace(cluster_infer_ratio=0.5, k_step=2),
                        results_dir=tmp_path)
    assert r.path.name == "result_my song_alto_0key_kmeans0.5_sovdiff.wav"
    assert sf.info(r.path).frames == 44100
    svc.unload_model()


def test_index_file_turns_on_feature_retrieval(models, tmp_path):
    import faiss

    from cluster import write_index_file

    rng = np.random.default_rng(0)
    indexes = {}
    for sid in SPEAKERS.values():
        index = faiss.IndexFlatL2(32)
        index.add(rng.standard_normal((50, 32)).astype(np.float32))
        indexes[sid] = index
    path = tmp_path / "feature_and_index.pkl"
    write_index_file(indexes, path)
    svc, msg = cb.load_model(model_path=models.g, config_path=models.config, cluster_model_path=path, device="cpu")
    assert svc.feature_retrieval and "Feature index feature_and_index.pkl loaded" in msg
    svc.unload_model()


# --- tools -------------------------------------------------------------------------------------
def test_mix_rates_text_prefills_100_and_keeps_typed_rates(models):
    paths = [models.g, models.g2]  # both are named G_0.pth
    text = cb.mix_rates_text(paths)
    assert json.loads(text) == {"G_0.pth": 100, "G_0.pth (2)": 100}
    third = models.root / "G_9.pth"
    kept = cb.mix_rates_text([*paths, third], json.dumps({"G_0.pth": 30, "G_0.pth (2)": 70}))
    assert json.loads(kept) == {"G_0.pth": 30, "G_0.pth (2)": 70, "G_9.pth": 100}
    assert cb.mix_rates_text([]) == ""
    assert cb.parse_mix_rates(paths, kept.replace(',\n  "G_9.pth": 100', "")) == [30.0, 70.0]
    with pytest.raises(SvcError, match="not valid JSON"):
        cb.parse_mix_rates(paths, "{G_0.pth: 1}")
    with pytest.raises(SvcError, match="unknown names: x.pth.*no rate for: G_0.pth \\(2\\)"):
        cb.parse_mix_rates(paths, '{"G_0.pth": 1, "x.pth": 2}')
    with pytest.raises(SvcError, match="rate of G_0.pth must be a number"):
        cb.parse_mix_rates(paths, '{"G_0.pth": "half", "G_0.pth (2)": 2}')


@pytest.mark.parametrize("mode,rates,weights", [
    ("convex", [100, 100], [0.5, 0.5]),
    ("convex", [100, 0], [math.e / (math.e + 1), 1 / (math.e + 1)]),  # 4.1's softmax of rate/100
    ("linear", [70, 30], [0.7, 0.3]),
])
def test_mix_models_writes_a_weighted_sum(models, tmp_path, mode, rates, weights):
    from modules.checkpoint import torch_load

    paths = [models.g, models.g2]
    text = json.dumps(dict(zip(cb.display_names(paths), rates)))
    out, msg = cb.mix_models(paths, text, mode, results_dir=tmp_path)
    assert out == tmp_path / "output.pth" and "Mixed 2 models" in msg
    a, b, m = (torch_load(p)["model"] for p in (models.g, models.g2, out))
    key = "emb_g.weight"
    torch.testing.assert_close(m[key], weights[0] * a[key] + weights[1] * b[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(SvcError, match="upload the models to mix"):
        cb.mix_models([], "", mode, results_dir=tmp_path)
    with pytest.raises(SvcError, match="unknown mixing mode"):
        cb.mix_models(paths, text, "cubic", results_dir=tmp_path)


def test_compress_gives_a_smaller_model_that_converts_the_same(models, svc, song, tmp_path):
    from modules.checkpoint import torch_load

    out, msg = cb.compress(models.g, models.config, False, results_dir=tmp_path)
    assert out == tmp_path / "G_0_release.pth" and "Compressed G_0.pth" in msg
    ckpt = torch_load(out)
    assert not any("enc_q" in k for k in ckpt["model"]) and ckpt["iteration"] == 0
    assert out.stat().st_size < models.g.stat().st_size
    small, _ = cb.load_model(model_path=out, config_path=models.config, device="cpu")
    a = cb.convert_file(svc, song, "alto", results_dir=tmp_path / "a")
    b = cb.convert_file(small, song, "alto", results_dir=tmp_path / "b")
    np.testing.assert_array_equal(sf.read(a.path)[0], sf.read(b.path)[0])
    small.unload_model()

    half, _ = cb.compress(models.g, models.config, True, results_dir=tmp_path)
    assert half.name == "G_0_release_half.pth"
    assert all(v.dtype == torch.float16 for v in torch_load(half)["model"].values() if v.is_floating_point())
    with pytest.raises(SvcError, match="needs the model"):
        cb.compress(models.g, None, results_dir=tmp_path)


# --- the page ----------------------------------------------------------------------------------
def test_script_does_no_work_at_import():
    code = "import sys, webUI; assert 'gradio' not in sys.modules and 'torch' not in sys.modules; print('ok')"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    import webUI

    args = webUI.build_parser().parse_args([])
    assert (args.host, args.port, args.share, args.threads) == ("127.0.0.1", 7860, False, None)


def test_build_app_lays_out_every_setting_with_its_default(tmp_path):
    import gradio as gr

    from webui.app import build_app

    app = build_app(results_dir=tmp_path / "results", trained_dir=tmp_path / "trained")
    assert isinstance(app, gr.Blocks)
    by_id = {b.elem_id: b for b in app.blocks.values() if getattr(b, "elem_id", None)}
    defaults = cb.web_defaults()
    for name in cb.SETTINGS_LEFT + cb.SETTINGS_RIGHT:
        control = by_id[f"setting_{name}"]
        assert control.label == cb.label(name)
        if name == "output_format":
            assert control.value == cb.DEFAULT_OUTPUT_FORMAT
            continue
        spec = ConversionOptions.spec(name)
        assert control.value == getattr(defaults, name), name
        assert control.info.startswith(spec.help), name
        if spec.kind in ("float", "int"):  # bounds from the option's metadata
            # an optional number's box also takes 0 (an emptied box), which means "not set"
            assert (control.minimum, control.maximum) == (0 if spec.optional else spec.minimum, spec.maximum), name
    assert [c for c, _ in by_id["setting_f0_predictor"].choices] == ConversionOptions.choices("f0_predictor")
    assert by_id["setting_output_format"].choices == [(f, f) for f in cb.OUTPUT_FORMATS]
    assert by_id["device"].value == "Auto"
    for elem in ("model_file", "config_file", "diffusion_model", "diffusion_config", "cluster_file", "load_button",
                 "unload_button", "speaker", "input_audio", "convert_button", "output_audio", "output_file",
                 "local_refresh", "local_folder", "mix_files", "mix_rates", "mix_mode", "mix_button",
                 "compress_model", "compress_config", "compress_half", "compress_button"):
        assert elem in by_id, elem


def test_errors_become_messages_in_the_page():
    import gradio as gr

    from webui.app import shown

    @shown
    def user_error():
        raise SvcError("the config does not fit")

    @shown
    def bug():
        raise ZeroDivisionError("division by zero")

    with pytest.raises(gr.Error, match="the config does not fit"):
        user_error()
    with pytest.raises(gr.Error, match="ZeroDivisionError: division by zero"):
        bug()


def test_page_callbacks_load_local_model_convert_and_unload(models, song, tmp_path):
    import gradio as gr

    from webui.app import _convert, _load, on_refresh_local, on_unload, shown

    folder = tmp_path / "trained" / "tiny"
    folder.mkdir(parents=True)
    shutil.copy(models.g, folder / "G_0.pth")
    shutil.copy(models.config, folder / "config.json")
    update = on_refresh_local(tmp_path / "trained")
    assert update["choices"] == [str(folder)] and update["value"] == str(folder)
    with pytest.raises(SvcError, match="not a model folder"):
        _load(None, "local", None, None, str(tmp_path), None, None, None, "cpu", False, False, tmp_path / "trained")

    svc, speaker_update, msg = _load(None, "local", None, None, str(folder), None, None, None, "cpu", False, False,
                                     tmp_path / "trained")
    assert speaker_update["choices"] == ["alto", "tenor"] and speaker_update["value"] == "alto"
    calls = []
    message, audio, download = _convert(svc, str(song), "alto", {"tran": 2.0, "k_step": 100.0},
                                        tmp_path / "results", lambda *a, **k: calls.append(k.get("desc")))
    assert audio == download == str(tmp_path / "results" / "result_my song_alto_2key_sovits.wav")
    assert message.startswith("Success") and calls == ["Reading audio", "Converting 1.0 s of audio"]

    # Loading again replaces (and frees) the session's model.
    svc2, _, _ = _load(svc, "upload", str(models.g2), str(models.config), None, None, None, None, "cpu", False,
                       False, tmp_path / "trained")
    assert svc.hubert_model is None and svc2.hubert_model is not None
    state, speaker_update, msg = on_unload(svc2)
    assert state is None and speaker_update["choices"] == [] and msg == "Model unloaded."
    with pytest.raises(gr.Error, match="no model is loaded"):
        shown(_convert)(state, str(song), "alto", {}, tmp_path, lambda *a, **k: None)


# --- .svc.safetensors model files (issue 23) ---------------------------------------------------------
@pytest.fixture(scope="module")
def model_file(models, tmp_path_factory):
    from modelfile import export_model

    dm, dc = build_diffusion(tmp_path_factory.mktemp("webui_diff"), models.pretrain)
    return export_model(model_path=models.g, config_path=models.config,
                        output_path=models.root / "voice.svc.safetensors", diffusion_model_path=dm,
                        diffusion_config_path=dc, author="A. Singer", license="CC-BY-4.0", description="tiny voice")


def test_model_file_loads_without_a_config_shows_its_metadata_and_converts_the_same(models, svc, model_file, song,
                                                                                      tmp_path):
    new, msg = cb.load_model(model_path=model_file, config_path=None, device="cpu")
    for text in ("Model file voice.svc.safetensors: speech encoder vec768l12", "Author: A. Singer",
                 "License: CC-BY-4.0", "Description: tiny voice", "also holds a diffusion model",
                 "Speakers: alto, tenor"):
        assert text in msg, msg
    assert not new.shallow_diffusion and cb.speakers(new) == list(SPEAKERS)
    a = cb.convert_file(new, song, "tenor", results_dir=tmp_path / "file")
    b = cb.convert_file(svc, song, "tenor", results_dir=tmp_path / "pth")
    np.testing.assert_array_equal(sf.read(a.path)[0], sf.read(b.path)[0])
    new.unload_model()
    # a config left in its box is not used; the file's diffusion model on request
    new, msg = cb.load_model(model_path=model_file, config_path=models.config, device="cpu", file_diffusion=True)
    assert "config.json is not used" in msg and "Diffusion model from the model file loaded (shallow)" in msg
    assert new.shallow_diffusion
    new.unload_model()
    with pytest.raises(SvcError, match="put it in the model box"):
        cb.load_model(model_path=models.g, config_path=model_file)
    with pytest.raises(SvcError, match="needs a .svc.safetensors model"):
        cb.load_model(model_path=models.g, config_path=models.config, file_diffusion=True)


def test_disguised_pickle_is_refused_by_the_page(tmp_path):
    import pickle

    evil = tmp_path / "voice.svc.safetensors"
    evil.write_bytes(pickle.dumps({"model": 1}))
    with pytest.raises(SvcError, match="nothing in it was executed"):
        cb.load_model(model_path=evil, config_path=None, device="cpu")


def test_local_model_files_are_listed_and_load(models, model_file, tmp_path):
    from webui.app import _load

    trained = tmp_path / "trained"
    (trained / "shared").mkdir(parents=True)
    shutil.copy(model_file, trained / "shared" / "voice.svc.safetensors")
    found = cb.scan_local_models(trained)
    assert found == [str(trained / "shared" / "voice.svc.safetensors")]
    assert cb.local_model_files(found[0]) == (Path(found[0]), None)
    svc, update, msg = _load(None, "local", None, None, found[0], None, None, None, "cpu", False, False, trained)
    assert update["choices"] == ["alto", "tenor"] and "Author: A. Singer" in msg
    svc.unload_model()


def test_mixing_accepts_model_files(models, model_file, tmp_path):
    from modules.checkpoint import torch_load

    paths = [model_file, models.g2]
    text = json.dumps(dict(zip(cb.display_names(paths), [70, 30])))
    out, msg = cb.mix_models(paths, text, "linear", results_dir=tmp_path)
    a, b, m = (torch_load(p)["model"] for p in (models.g, models.g2, out))
    assert "enc_q.pre.weight" not in m
    torch.testing.assert_close(m["emb_g.weight"], 0.7 * a["emb_g.weight"] + 0.3 * b["emb_g.weight"], rtol=1e-5,
                               atol=1e-6)
