"""The end-to-end demo (``demo.py --quick``) and its synthetic singing dataset.

The quick demo runs every numbered script as a subprocess (resample → flist/config → hubert_f0
with fcpe → train 2 steps → k-means → index → inference_main) on 2 × 3 short synthetic clips with
a tiny random-weight ContentVec; it takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import demo
from tools import synth_voice
from tools.demo import MARKER, MODEL_NAME

STAGES = ["dataset", "encoder", "resample", "flist_config", "hubert_f0", "train", "cluster", "index", "infer", "plot"]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """Run ``demo.py --quick`` once (no real encoder visible) → its output folder."""
    mp = pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("demo")
    mp.setenv("SVC_PRETRAIN_DIR", str(base / "no_pretrain"))  # a real file in pretrain/ must not change the test
    out = base / "out"
    try:
        assert demo.main(["--quick", "--out", str(out)]) == 0
        yield out
    finally:
        mp.undo()
        # G_/D_ checkpoints of the tiny config are ~0.9 GB per step saved; do not leave them behind
        shutil.rmtree(out / "work" / "logs", ignore_errors=True)


def test_quick_demo_writes_audio_of_the_right_length(quick_demo):
    out = quick_demo
    heldout = out / "work" / "raw" / "heldout.wav"
    info_in = sf.info(str(heldout))
    assert info_in.samplerate == synth_voice.RAW_SR
    config = json.loads((out / "work" / "logs" / MODEL_NAME / "config.json").read_text())
    model_sr = config["data"]["sampling_rate"]
    expected = info_in.frames * model_sr / info_in.samplerate
    for name in ("converted.wav", "input.wav"):
        y, sr = sf.read(str(out / name), dtype="float32")
        assert sr == model_sr == 44100
        assert y.ndim == 1
        assert abs(len(y) - expected) <= 2, (name, len(y), expected)
        assert np.isfinite(y).all()
        assert np.sqrt(np.mean(y ** 2)) > 1e-4, f"{name} is silent"
    # the converted file is what inference_main.py wrote into results/
    results = list((out / "work" / "results").glob("heldout.wav_-12key_baritone_sovits_fcpe.wav"))
    assert len(results) == 1
    assert results[0].read_bytes() == (out / "converted.wav").read_bytes()


def test_quick_demo_writes_plot_and_report(quick_demo):
    out = quick_demo
    png = (out / "spectrogram.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == STAGES
    for s in report["stages"]:
        assert s["wall_s"] >= 0 and s["cpu_s"] >= 0
        if s["command"]:
            assert Path(s["log"]).is_file()
    train = next(s for s in report["stages"] if s["name"] == "train")
    assert train["command"][:2] == ["python", "train.py"] and "--max_steps" in train["command"]
    assert report["encoder"] == {"name": "vec768l12", "random": True, "size": "tiny",
                                 "path": report["encoder"]["path"]}
    assert "not voice quality" in report["note"]
    assert report["dataset"]["speakers"] == ["alto", "baritone"] and report["dataset"]["clips"] == 6
    assert report["conversion"]["output_samples"] == report["conversion"]["input_samples"]
    assert report["config_edits"]["model.ssl_dim"] == 32  # the tiny random ContentVec's width
    assert report["total"]["wall_s"] > 0
    md = (out / "report.md").read_text()
    assert "not voice quality" in md and "| train |" in md and "python inference_main.py" in md
    # the random encoder is named loudly in the report and in the training stage's log
    assert "WARNING: RANDOM SPEECH ENCODER" in md
    assert "random weights" in Path(train["log"]).read_text().splitlines()[2]
    train_log = (out / "work" / "logs" / MODEL_NAME / "train.log").read_text().splitlines()
    assert "random weights" in train_log[0] and any("step 0:" in line for line in train_log)
    # loss curve from train.py's TensorBoard scalars (step 0 is logged)
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "loss_curve.png" in md
    assert report["training"]["loss_curve"]["loss/g/mel"]["points"] >= 1
    assert report["training"]["last_logged"]["step"] == 0
    # measured facts about the output: DC, and zeros where 4.1's slicer makes a silent chunk (the tail)
    a = report["analysis"]
    assert set(a["dc"]) == {"input", "sovits"} and abs(a["dc"]["input"]) < 1e-3
    assert a["silence"]["silent_chunks_s"] and a["silence"]["max_abs_in_silent_chunks"]["sovits"] == 0.0
    # the optional stages left their models where inference_main.py looks for them
    model_dir = out / "work" / "logs" / MODEL_NAME
    assert (model_dir / "G_2.pth").is_file()
    assert (model_dir / "kmeans_8.pt").is_file() and (model_dir / "feature_and_index.pkl").is_file()
    # the project's own folders were not used
    assert Path(report["outputs"]["work"]) == out.resolve() / "work"


def test_real_encoder_is_used_when_present(tmp_path, monkeypatch):
    from tools.demo import DemoSettings, prepare_encoder

    real = tmp_path / "mine" / "checkpoint_best_legacy_500.pt"
    real.parent.mkdir()
    real.write_bytes(b"stand-in for the real file")
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(real.parent))
    settings = DemoSettings.quick_form(tmp_path / "out")
    assert prepare_encoder(settings) == (real.parent, False)
    assert not (tmp_path / "out").exists()


def test_random_encoder_is_written_once(tmp_path, monkeypatch):
    from tools.demo import DemoSettings, prepare_encoder

    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(tmp_path / "empty"))
    settings = DemoSettings.quick_form(tmp_path / "out")
    folder, random_encoder = prepare_encoder(settings)
    path = folder / "checkpoint_best_legacy_500.pt"
    assert random_encoder and folder == (tmp_path / "out" / "pretrain").resolve() and path.is_file()
    stamp = path.stat().st_mtime_ns
    assert prepare_encoder(settings) == (folder, True)
    assert path.stat().st_mtime_ns == stamp  # reused, not rewritten
    # the random-weight mark is inside the file, not beside it
    from modules.checkpoint import RANDOM_WEIGHTS_KEY, torch_load
    from vencoder.files import FAIRSEQ_STAND_INS

    assert torch_load(path, stand_ins=FAIRSEQ_STAND_INS)[RANDOM_WEIGHTS_KEY] is True
    assert not list(folder.glob("*-random"))
    # other settings: written again
    prepare_encoder(replace(settings, residual_scale=0.5))
    assert path.stat().st_mtime_ns != stamp


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    from modules.cli import run_main

    (tmp_path / "mine.txt").write_text("keep me")
    assert run_main(demo.main, ["--quick", "--out", str(tmp_path)]) == 2
    assert "not made by the demo" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me" and not (tmp_path / MARKER).exists()


def test_demo_flags_are_checked(tmp_path, capsys):
    from modules.cli import run_main

    assert run_main(demo.main, ["--quick", "--steps", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--steps" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- the synthetic singers ------------------------------------------------------------------------
def _median_f0(y: np.ndarray, sr: int) -> float:
    import pyworld

    x = y.astype(np.float64)
    f0, t = pyworld.dio(x, sr, f0_floor=60.0, f0_ceil=900.0, frame_period=10.0)
    f0 = pyworld.stonemask(x, f0, t, sr)
    return float(np.median(f0[f0 > 0]))


def _centroid(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / sr)
    return float((spec * freqs).sum() / spec.sum())


def test_singers_differ_in_pitch_and_timbre():
    sr = synth_voice.RAW_SR
    alto, bari = (synth_voice.make_clip(v, 3.0, seed=5) for v in synth_voice.VOICES)
    f_alto, f_bari = _median_f0(alto, sr), _median_f0(bari, sr)
    assert 196 * 0.9 <= f_alto <= 523 * 1.1 and 98 * 0.9 <= f_bari <= 262 * 1.1
    assert f_alto > 1.4 * f_bari
    assert _centroid(alto, sr) > 1.2 * _centroid(bari, sr)
    assert synth_voice.transpose_semitones(synth_voice.VOICES[0], synth_voice.VOICES[1]) == -12


def test_clips_are_deterministic_sung_phrases():
    voice = synth_voice.get_voice("alto")
    a, b = synth_voice.make_clip(voice, 4.0, seed=3), synth_voice.make_clip(voice, 4.0, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, synth_voice.make_clip(voice, 4.0, seed=4))
    assert a.dtype == np.float32 and abs(np.max(np.abs(a)) - synth_voice.PEAK) < 1e-3
    # phrases separated by breaths: some 50 ms windows are much quieter than the sung ones
    win = synth_voice.RAW_SR // 20
    rms = np.sqrt(np.mean(a[: len(a) // win * win].reshape(-1, win) ** 2, axis=1))
    assert rms.min() < 0.05 * rms.max()
    # vibrato and glides: the pitch moves within notes, not only between them
    ctrl = synth_voice.make_controls(voice, 4.0, np.random.default_rng(3))
    voiced = ctrl.loudness > 0.5
    both = voiced[1:] & voiced[:-1]                      # frame pairs inside a phrase
    steps = np.abs(np.diff(1200 * np.log2(ctrl.f0)))[both]
    assert (steps > 0).mean() > 0.9   # continuously moving pitch, no flat synthetic notes
    assert steps.max() < 200          # glides, not jumps (5 ms frames)


def test_write_dataset_layout(tmp_path):
    clips = synth_voice.write_dataset(tmp_path, clips_per_speaker=2, clip_seconds=1.0, seed=1)
    assert sorted(clips) == ["alto", "baritone"]
    for name, paths in clips.items():
        assert [p.name for p in paths] == [f"{name}_00.wav", f"{name}_01.wav"]
        for p in paths:
            info = sf.info(str(p))
            assert info.samplerate == synth_voice.RAW_SR and info.subtype == "PCM_16" and info.channels == 1
            assert 0.7 <= info.duration <= 1.3
    with pytest.raises(ValueError):
        synth_voice.write_dataset(tmp_path, clips_per_speaker=0, clip_seconds=1.0)


def test_full_and_quick_forms(tmp_path):
    from dataclasses import asdict

    from tools.demo import DemoSettings

    full = DemoSettings.full_form(tmp_path, steps=7)
    assert full.steps == 7 and not full.quick and full.extra_conversions and full.encoder_size == "full"
    assert full.threads is None and full.clips_per_speaker * full.clip_seconds >= 45
    json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(full).items()})
    quick = DemoSettings.quick_form(tmp_path, skip_cluster=True)
    assert quick.quick and not quick.extra_conversions and quick.skip_cluster and quick.encoder_size == "tiny"
    assert not DemoSettings.full_form(tmp_path, skip_cluster=True).extra_conversions


def test_heldout_clip_has_a_pause_and_a_silent_tail():
    from inference.slicer import slice_audio

    y = synth_voice.make_heldout(synth_voice.get_voice("alto"), 10.0, seed=0)
    sr = synth_voice.RAW_SR
    assert len(y) == 10 * sr
    chunks = slice_audio(y, sr, -40, 5000)
    assert chunks[-1].silent and (chunks[-1].end - chunks[-1].start) / sr >= 0.3   # the tail: zeros in the output
    assert not any(c.silent for c in chunks[:-1])                                 # the pause stays in a slice
    win = sr // 50
    rms = np.sqrt(np.mean(y[: len(y) // win * win].reshape(-1, win) ** 2, axis=1))
    assert (rms == 0).sum() * win / sr >= synth_voice.HELDOUT_PAUSE_S * 0.8       # the pause is real silence


def test_train_progress_follows_the_log_lines():
    from tools.demo import TrainProgress

    bar = TrainProgress(120, enabled=False)
    bar("22:15:38 INFO training.loop: Train Epoch: 1 [0%]")
    assert bar.done == 0 and bar.last == {}
    bar("22:15:38 INFO training.loop: step 0: loss_disc 6.080, loss_gen 5.313, loss_fm 1.657, loss_mel 94.724, "
        "loss_kl 344.953, loss_lf0 0.4759, lr 0.0001, grad_norm d/g 6.63/4.75e+03, 18.44 s/step")
    assert bar.done == 1 and bar.last["loss_mel"] == pytest.approx(94.724)
    bar("x INFO training.loop: step 50: loss_disc 2.5, loss_gen 2.0, loss_fm 3.0, loss_mel 30.5, loss_kl 2.0, "
        "loss_lf0 0.1, lr 0.0001, grad_norm d/g 1/1, 2.00 s/step")
    assert bar.done == 51 and bar.last["step"] == 50
    bar.close(complete=True)
    assert bar.done == 121


def test_analysis_measures_dc_differences_and_silence(tmp_path):
    from modules.audio import save_audio
    from tools.demo import analyse_outputs

    sr = 44100
    raw_sr = synth_voice.RAW_SR
    held = synth_voice.make_heldout(synth_voice.get_voice("alto"), 3.0, seed=1)
    save_audio(tmp_path / "held.wav", held, raw_sr, subtype="PCM_16")
    from modules.audio import load_audio
    x, _ = load_audio(tmp_path / "held.wav", sr=sr)
    save_audio(tmp_path / "input.wav", x, sr, subtype="FLOAT")
    tail = int((3.0 - synth_voice.HELDOUT_TAIL_S + 0.1) * sr)
    plain = (x + 0.1).astype(np.float32)        # a DC offset ...
    plain[tail:] = 0                            # ... and zeros in the silent tail, as inference writes them
    other = plain.copy()
    other[: tail // 2] *= 0.5
    save_audio(tmp_path / "plain.wav", plain, sr, subtype="FLOAT")
    save_audio(tmp_path / "other.wav", other, sr, subtype="FLOAT")
    a = analyse_outputs(tmp_path / "input.wav", {"sovits": tmp_path / "plain.wav", "kmeans_0.5": tmp_path / "other.wav"},
                        tmp_path / "held.wav")
    assert abs(a["dc"]["input"]) < 1e-3 and 0.08 < a["dc"]["sovits"] < 0.1
    assert a["difference_vs_plain"]["kmeans_0.5"] > 0.1 and "sovits" not in a["difference_vs_plain"]
    assert a["silence"]["silent_chunks_s"] and a["silence"]["max_abs_in_silent_chunks"]["sovits"] < 0.11
    assert a["silence"]["rms_in_quiet_frames"]["sovits"] > a["silence"]["rms_in_quiet_frames"]["input"]


def test_loss_curve_from_tensorboard_events(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from tools.demo import write_loss_curve

    model_dir = tmp_path / "logs" / "44k"
    writer = SummaryWriter(log_dir=str(model_dir))
    for step in (0, 10, 20):
        writer.add_scalar("loss/g/mel", 100.0 - step, step)
        writer.add_scalar("loss/d/total", 6.0 - step / 10, step)
        writer.add_scalar("learning_rate", 1e-4, step)
    writer.close()
    curve = write_loss_curve(tmp_path, model_dir, random_encoder=True)
    assert curve == {"loss/g/mel": {"first": 100.0, "last": 80.0, "first_step": 0, "last_step": 20, "points": 3},
                     "loss/d/total": {"first": 6.0, "last": 4.0, "first_step": 0, "last_step": 20, "points": 3}}
    assert (tmp_path / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert write_loss_curve(tmp_path, tmp_path / "empty", random_encoder=False) is None


def test_report_states_the_measurements(tmp_path):
    from tools.demo import NOTE_RANDOM, write_report

    report = {
        "date": "2026-12-06T22:00:00", "machine": {"platform": "Linux", "python": "3.11", "cpus": 2},
        "encoder": {"name": "vec768l12", "random": True, "path": "/x/checkpoint_best_legacy_500.pt", "size": "full"},
        "note": NOTE_RANDOM, "settings": {"threads": None},
        "dataset": {"clips": 40, "seconds": 100.0, "speakers": ["alto", "baritone"]},
        "config_edits": {"train.batch_size": 2},
        "training": {"steps": 120, "loss_curve": {"loss/g/mel": {"first": 100.0, "last": 40.0, "first_step": 0,
                                                                  "last_step": 120, "points": 13}}},
        "conversion": {"input_voice": "alto", "target_speaker": "baritone", "transpose": -12, "f0_predictor": "fcpe"},
        "analysis": {"dc": {"input": 0.0, "sovits": -0.147, "kmeans_0.5": -0.14},
                     "rms": {"input": 0.2, "sovits": 0.3, "kmeans_0.5": 0.3},
                     "difference_vs_plain": {"kmeans_0.5": 0.25},
                     "silence": {"silent_chunks_s": [[9.64, 10.0]],
                                 "max_abs_in_silent_chunks": {"sovits": 0.0, "kmeans_0.5": 0.0},
                                 "quiet_frames_in_slices_s": 1.2,
                                 "rms_in_quiet_frames": {"input": 0.001, "sovits": 0.15, "kmeans_0.5": 0.14}}},
        "outputs": {"input": "/x/input.wav"}, "stages": [], "total": {"wall_s": 400.0, "cpu_s": 390.0},
    }
    write_report(tmp_path, report)
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# so-vits-svc demo run\n\n> **WARNING: RANDOM SPEECH ENCODER.**")
    assert "![loss curve](loss_curve.png)" in md and "| mel (L1 × c_mel) | 100.000 | 40.000 | 13 |" in md
    assert "| sovits | -0.1470 |" in md and "| kmeans_0.5 | -0.1400 | 0.3000 | 0.25 | 0.0000 |" in md
    assert "practically the same" not in md
    assert "9.64–10.00 s" in md and "sovits 0.1500" in md
    assert json.loads((tmp_path / "report.json").read_text())["analysis"]["dc"]["sovits"] == -0.147
