"""inference_main.py and model_mix.py: flags, output naming, model mixing, user errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from infer_helpers import ROOT, model_config, models_in_use, voice, write_generator
from modules.cli import run_main

sys.path.insert(0, str(ROOT))
import inference_main  # noqa: E402
import model_mix  # noqa: E402

SR = 44100


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with models_in_use(tmp_path_factory.mktemp("cli_models")) as ms:
        yield ms


@pytest.fixture(autouse=True)
def _no_log_handlers(monkeypatch):
    # run_main installs a stderr log handler once per process; under capsys that stream closes.
    monkeypatch.setattr("modules.cli.setup_logging", lambda *a, **k: None)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    sf.write(tmp_path / "raw" / "song.wav", voice(1.0, SR), SR)
    sf.write(tmp_path / "other.flac", np.stack([voice(0.8, 22050, 300.0)] * 2, 1), 22050)
    return tmp_path


def run(argv, capsys):
    code = run_main(inference_main.main, argv)
    return code, capsys.readouterr().err


def test_inputs_times_speakers_with_41_names(models, workdir, capsys):
    argv = ["-m", str(models.g), "-c", str(models.config), "-n", "song.wav", str(workdir / "other.flac"),
            "-t", "2", "-s", "alice", "bob", "-wf", "wav", "-cr", "0.5", "-cm", str(models.kmeans)]
    code, err = run(argv, capsys)
    assert code == 0, err
    names = sorted(p.name for p in (workdir / "results").iterdir())
    assert names == sorted(f"{n}_2key_{s}_kmeans0.5_sovits_pm.wav" for n in ("song.wav", "other.flac")
                           for s in ("alice", "bob"))
    y, sr = sf.read(workdir / "results" / "song.wav_2key_alice_kmeans0.5_sovits_pm.wav")
    info = sf.info(workdir / "results" / "song.wav_2key_alice_kmeans0.5_sovits_pm.wav")
    assert sr == SR and len(y) == SR and info.subtype == "PCM_16"
    y2, _ = sf.read(workdir / "results" / "other.flac_2key_bob_kmeans0.5_sovits_pm.wav")
    assert len(y2) == int(np.ceil(0.8 * 22050 * 2))


def test_default_format_auto_f0_diffusion_and_mix_names(models, workdir, capsys):
    base = ["-m", str(models.g), "-c", str(models.config), "-n", "song"]
    assert run(base + ["-s", "carol", "-a"], capsys)[0] == 0
    dm = ["-dm", str(models.diffusion), "-dc", str(models.diffusion_config), "-ks", "10"]
    assert run(base + ["-s", "carol", "-shd", "-f0p", "dio"] + dm, capsys)[0] == 0
    assert run(base + ["-od", "-s", "bob"] + dm, capsys)[0] == 0
    mix = workdir / "mix.py"
    mix.write_text("spk_mix_map = {0: [[0., 1., 1., 0.]], 1: [[0., 1., 0., 1.]], 2: [[0., 1., 0., 0.]]}\n")
    assert run(base + ["-usm", "--spk_mix_file", str(mix)], capsys)[0] == 0
    names = sorted(p.name for p in (workdir / "results").iterdir())
    assert names == sorted(["song_auto_carol_sovits_pm.flac", "song_0key_carol_sovdiff_dio.flac",
                            "song_0key_bob_diff_pm.flac", "song_0key_spk_mix_sovits_pm.flac"])
    for p in (workdir / "results").iterdir():
        y, sr = sf.read(p)
        assert sr == SR and len(y) == SR


@pytest.mark.parametrize("extra,message", [
    ([], "no speaker given: pass -s NAME"),
    (["-s", "dave"], "'dave' is not in this model's speaker list: alice, bob, carol"),
    (["-s", "bob", "-wf", "xyz"], "output format 'xyz'"),
    (["-s", "bob", "-cr", "0.5"], "kmeans_10000.pt"),
    (["-s", "bob", "-f0p", "yin"], "f0_predictor (-f0p/--f0_predictor) must be one of"),
    (["-s", "bob", "-lgr", "2"], "lgr_num (-lgr/--linear_gradient_retain) must be in [0, 1], got 2.0"),
    (["-s", "bob", "--threads", "0"], "--threads must be"),
    (["-s", "bob", "-eh", "-d", "cuda:7"], "cuda"),
])
def test_user_errors_are_one_line(models, workdir, capsys, extra, message):
    argv = ["-m", str(models.g), "-c", str(models.config), "-n", "song.wav"] + extra
    code, err = run(argv, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert "speakers: alice, bob, carol" in err or extra


def test_missing_input_and_no_input(models, workdir, capsys):
    code, err = run(["-m", str(models.g), "-c", str(models.config), "-s", "bob"], capsys)
    assert code == 2 and "no input given" in err
    code, err = run(["-m", str(models.g), "-c", str(models.config), "-s", "bob", "-n", "nope.wav"], capsys)
    assert code == 2 and "nope.wav" in err and "raw" in err
    (workdir / "raw" / "text.wav").write_text("hello")
    code, err = run(["-m", str(models.g), "-c", str(models.config), "-s", "bob", "-n", "text.wav"], capsys)
    assert code == 2 and "text.wav" in err and "not a readable audio file" in err
    code, err = run(["-m", str(workdir / "G_1.pth"), "-c", str(models.config), "-s", "bob", "-n", "song.wav"], capsys)
    assert code == 2 and "G_1.pth" in err


def test_help_lists_41_flags(capsys):
    with pytest.raises(SystemExit):
        inference_main.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("-m", "-c", "-cl", "-n", "-t", "-s", "-a", "-cm", "-cr", "-lg", "-f0p", "-eh", "-shd", "-usm",
                 "-lea", "-fr", "-dm", "-dc", "-ks", "-se", "-od", "-sd", "-d", "-ns", "-p", "-wf", "-lgr", "-eak",
                 "-ft"):
        assert f" {flag} " in text or f" {flag}," in text, flag
    args = inference_main.build_parser().parse_args([])
    assert (args.slice_db, args.noice_scale, args.pad_seconds, args.wav_format, args.lgr_num,
            args.k_step, args.f0_predictor, args.cr_threshold, args.loudness_envelope_adjustment) == \
        (-40, 0.4, 0.5, "flac", 0.75, 100, "pm", 0.05, 1)


# 4.1's inference_main.py flags that are not conversion options, and this implementation's additions
MODEL_FLAGS_41 = {"-m", "--model_path", "-c", "--config_path", "-n", "--clean_names", "-s", "--spk_list",
                  "-cm", "--cluster_model_path", "-eh", "--enhance", "-shd", "--shallow_diffusion",
                  "-fr", "--feature_retrieval", "-dm", "--diffusion_model_path", "-dc", "--diffusion_config_path",
                  "-od", "--only_diffusion", "-d", "--device", "-wf", "--wav_format"}
OURS = {"-h", "--help", "--half", "--spk_mix_file", "--threads", "--f0_out", "--f0_file",
        "--slice_workers"}


def test_help_lists_exactly_the_option_fields_plus_the_41_flags(capsys):
    import re

    from inference.options import ConversionOptions

    with pytest.raises(SystemExit):
        inference_main.main(["--help"])
    text = capsys.readouterr().out
    listed = set(re.findall(r"(?:^|[\s,\[])(--?[A-Za-z][\w-]*)", text.split("options:", 1)[1]))
    option_flags = {f for spec in ConversionOptions.fields_meta().values() for f in spec.flags}
    assert listed == option_flags | MODEL_FLAGS_41 | OURS
    # one flag (pair) per field, dest = field name, default = the field's default
    parser = inference_main.build_parser()
    dests = {a.dest: a for a in parser._actions}
    for name, spec in ConversionOptions.fields_meta().items():
        assert set(dests[name].option_strings) == set(spec.flags), name
        default = dests[name].default
        assert (default[0] if spec.per_input else default) == ConversionOptions.default(name), name


class _Counter:
    """Counts calls of the model loaders (and still calls them)."""

    def __init__(self, monkeypatch):
        import inference.components as components
        from inference.infer_tool import Svc

        self.calls = []
        for owner, name in ((Svc, "load_model"), (components, "get_speech_encoder"), (components, "load_diffusion")):
            real = getattr(owner, name)

            def counted(*a, _real=real, _name=name, **k):
                self.calls.append(_name)
                return _real(*a, **k)

            monkeypatch.setattr(owner, name, counted)


@pytest.mark.parametrize("extra,message", [
    (["-s", "dave"], "'dave' is not in this model's speaker list: alice, bob, carol"),
    (["-s", "bob", "-n", "nope.wav"], "nope.wav"),
    (["-s", "bob", "-n", "text.wav"], "not a readable audio file"),
    (["-s", "bob", "-wf", "xyz"], "output format 'xyz'"),
    (["-s", "bob", "-ks", "0"], "k_step (-ks/--k_step)"),
    ([], "no speaker given"),
])
def test_speaker_input_and_flag_checks_happen_before_any_model_loads(models, workdir, capsys, monkeypatch,
                                                                     extra, message):
    (workdir / "raw" / "text.wav").write_text("hello")
    counter = _Counter(monkeypatch)
    argv = ["-m", str(models.g), "-c", str(models.config)] + (["-n", "song.wav"] if "-n" not in extra else []) + extra
    code, err = run(argv, capsys)
    assert code == 2 and message in err, err
    assert counter.calls == []
    code, err = run(["-m", str(models.g), "-c", str(models.config), "-n", "song.wav", "-s", "bob"], capsys)
    assert code == 0 and counter.calls.count("load_model") == 1, err  # the counter does see a real load


def test_config_speaker_ids_beyond_the_checkpoint_are_refused_early(models, workdir, capsys, monkeypatch):
    import json

    cfg = json.loads(models.config.read_text())
    cfg["spk"] = {"alice": 0, "bob": 1, "zed": 7}
    bad = workdir / "config.json"
    bad.write_text(json.dumps(cfg))
    counter = _Counter(monkeypatch)
    code, err = run(["-m", str(models.g), "-c", str(bad), "-n", "song.wav", "-s", "bob"], capsys)
    assert code == 2 and "'zed': 7" in err and "speaker embeddings" in err, err
    assert counter.calls == []


def test_existing_results_are_never_overwritten(models, workdir, capsys):
    argv = ["-m", str(models.g), "-c", str(models.config), "-n", "song.wav", "-s", "bob", "-wf", "wav"]
    first = workdir / "results" / "song.wav_0key_bob_sovits_pm.wav"
    assert run(argv, capsys)[0] == 0
    first.write_bytes(b"the user's edit")
    code, err = run(argv + ["-ns", "0.1"], capsys)
    assert code == 0, err
    assert first.read_bytes() == b"the user's edit"
    second = workdir / "results" / "song.wav_0key_bob_sovits_pm_1.wav"
    assert sf.info(second).frames == SR
    assert run(argv, capsys)[0] == 0
    assert (workdir / "results" / "song.wav_0key_bob_sovits_pm_2.wav").is_file()


def test_index_mode_and_ratio_are_in_the_name():
    from inference.batch import output_name

    kw = dict(clean_name="a.wav", tran=0, spk="bob", auto_predict_f0=False, shallow_diffusion=False,
              only_diffusion=False, f0_predictor="pm", wav_format="flac")
    assert output_name(cluster_infer_ratio=0, **kw) == "a.wav_0key_bob_sovits_pm.flac"  # 4.1's name
    assert output_name(cluster_infer_ratio=0.3, **kw) == "a.wav_0key_bob_kmeans0.3_sovits_pm.flac"
    assert output_name(cluster_infer_ratio=0.3, feature_retrieval=True, **kw) == "a.wav_0key_bob_index0.3_sovits_pm.flac"


# --- static model mixing ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("mix")
    cfg = model_config()
    return write_generator(d / "G_a.pth", cfg, seed=1), write_generator(d / "G_b.pth", cfg, seed=2), cfg


def test_convex_equal_rates_is_the_average(two_models, tmp_path):
    from inference.model_mix import mix_model
    from modules.checkpoint import torch_load

    a, b, _ = two_models
    out = mix_model([a, b], [100, 100], "convex", tmp_path / "output.pth")
    mixed, sa, sb = torch_load(out), torch_load(a)["model"], torch_load(b)["model"]
    assert set(mixed) == {"model", "iteration", "optimizer", "learning_rate"}
    for k in sa:
        torch.testing.assert_close(mixed["model"][k], 0.5 * sa[k] + 0.5 * sb[k], rtol=0, atol=1e-7)


def test_linear_and_41_softmax_rates(two_models, tmp_path):
    from inference.model_mix import mix_model, mix_weights
    from modules.checkpoint import torch_load

    a, b, _ = two_models
    sa, sb = torch_load(a)["model"], torch_load(b)["model"]
    mixed = torch_load(mix_model([a, b], [70, 30], 1, tmp_path / "lin.pth"))["model"]
    k = "emb_g.weight"
    torch.testing.assert_close(mixed[k], 0.7 * sa[k] + 0.3 * sb[k])
    w = mix_weights([100, 0], "convex")  # 4.1's convex mode is a softmax of rate/100
    torch.testing.assert_close(w, torch.tensor([0.7310586, 0.2689414]))


def test_mixed_model_loads_and_cli(two_models, models, tmp_path, capsys, monkeypatch):
    from inference.infer_tool import Svc

    a, b, _ = two_models
    monkeypatch.chdir(tmp_path)
    assert run_main(model_mix.main, ["-m", str(a), str(b)]) == 0
    svc = Svc(tmp_path / "output.pth", models.config, device="cpu")
    out = svc.slice_inference(voice(0.5, SR), "bob", 0, sr=SR, progress=False)
    assert out.shape == (SR // 2,)


def test_mixing_models_of_different_configs_is_refused(two_models, tmp_path, capsys):
    a, _, _ = two_models
    c = write_generator(tmp_path / "G_c.pth", model_config(filter_channels=48))
    code = run_main(model_mix.main, ["-m", str(a), str(c), "-o", str(tmp_path / "x.pth")])
    err = capsys.readouterr().err
    assert code == 2 and "G_c.pth" in err and "shape" in err and "Traceback" not in err
    assert not (tmp_path / "x.pth").exists()
    code = run_main(model_mix.main, ["-m", str(a), str(c), "-r", "50"])
    assert code == 2 and "2 models but 1 rates" in capsys.readouterr().err


def test_checkpoint_carrying_its_config_needs_no_c(models, workdir, capsys):
    """Issue 19: a G written by our trainer stores its config; -c may then be left out (no
    logs/44k/config.json here), and the audio equals the run with the side config."""
    import json

    from modules.checkpoint import CONFIG_KEY

    ckpt = torch.load(models.g, map_location="cpu", weights_only=True)
    ckpt[CONFIG_KEY] = json.loads(models.config.read_text())
    carried = workdir / "G_carried.pth"
    torch.save(ckpt, carried)
    assert run(["-m", str(carried), "-n", "song.wav", "-s", "alice", "-wf", "wav"], capsys)[0] == 0
    (workdir / "results" / "song.wav_0key_alice_sovits_pm.wav").rename(workdir / "no_c.wav")
    assert run(["-m", str(carried), "-c", str(models.config), "-n", "song.wav", "-s", "alice", "-wf", "wav"],
               capsys)[0] == 0
    a, _ = sf.read(workdir / "no_c.wav")
    b, _ = sf.read(workdir / "results" / "song.wav_0key_alice_sovits_pm.wav")
    assert np.array_equal(a, b)


def test_41_checkpoint_without_config_and_no_c_names_the_fix(models, workdir, capsys):
    code, err = run(["-m", str(models.g), "-n", "song.wav", "-s", "alice"], capsys)
    assert code != 0 and "config.json" in err and "-c" in err


def test_slice_workers_convert_slices_in_parallel_with_the_same_audio(models, workdir, capsys, monkeypatch):
    """``--slice_workers 2`` (the default with two threads) runs the voiced slices on two worker
    threads; the written file is the one ``--slice_workers 1`` writes (to one 16-bit step)."""
    import threading

    from infer_helpers import song
    from inference.infer_tool import Svc

    y, _ = song()  # two voiced slices
    sf.write(workdir / "raw" / "two.wav", y, SR)
    names = []
    real = Svc._infer_wav
    monkeypatch.setattr(Svc, "_infer_wav",
                        lambda self, *a, **k: names.append(threading.current_thread().name) or real(self, *a, **k))
    base = ["-m", str(models.g), "-c", str(models.config), "-n", "two.wav", "-s", "bob", "-wf", "wav",
            "--threads", "1"]
    try:
        assert run(base + ["--slice_workers", "1"], capsys)[0] == 0
        assert set(names) == {"MainThread"}
        names.clear()
        code, err = run(base + ["--slice_workers", "2"], capsys)
        assert code == 0, err
        assert len(names) == 2 and all(n.startswith("svc-slice") for n in names)
    finally:
        torch.set_num_threads(1)
    one, _ = sf.read(workdir / "results" / "two.wav_0key_bob_sovits_pm.wav")
    two, _ = sf.read(workdir / "results" / "two.wav_0key_bob_sovits_pm_1.wav")
    assert one.shape == two.shape and np.abs(one - two).max() <= 1.5 / 32768
    assert np.abs(one).max() > 0.01  # real audio, not silence
