"""The web UI's pitch panel (issue 20): controls, plot, key suggestion, F0 CSV download / upload."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from inference.options import ConversionOptions
from modules.errors import SvcError
from modules.f0_stats import SpeakerF0Stats, save_f0_stats
from webui import callbacks as cb
from infer_helpers import models_in_use
from webui_helpers import build_tiny_models, write_song


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with models_in_use(tmp_path_factory.mktemp("webui_pitch_models"), build_tiny_models) as tm:
        # alto sings one octave below write_song's 220 Hz voice
        alto = SpeakerF0Stats(frames=500, voiced_seconds=5.8, median_hz=110.0, p5_hz=95.0, p95_hz=130.0)
        save_f0_stats(tm.config.parent / "f0_stats.json", {"alto": alto})
        yield tm


@pytest.fixture(scope="module")
def svc(models):
    model, _ = cb.load_model(model_path=models.g, config_path=models.config, device="cpu")
    return model


def test_pitch_controls_are_generated_from_the_options(tmp_path):
    import gradio as gr

    from webui.app import build_app

    app = build_app(results_dir=tmp_path / "results", trained_dir=tmp_path / "trained")
    by_id = {b.elem_id: b for b in app.blocks.values() if getattr(b, "elem_id", None)}
    for name in ("f0_min", "f0_max", "f0_repair", "auto_key"):
        control = by_id[f"setting_{name}"]
        assert control.label == ConversionOptions.spec(name).label and control.value == ConversionOptions.default(name)
    assert isinstance(by_id["setting_f0_min"], gr.Number) and isinstance(by_id["setting_auto_key"], gr.Checkbox)
    assert "hybrid:rmvpe+fcpe+crepe" in [c for c, _ in by_id["setting_f0_predictor"].choices]
    for elem in ("pitch_plot", "pitch_text", "pitch_apply", "pitch_csv", "pitch_upload"):
        assert elem in by_id, elem
    opts, _ = cb.settings_from_ui({"f0_min": None, "f0_max": 600, "f0_repair": True})
    assert (opts.f0_min, opts.f0_max, opts.f0_repair) == (None, 600, True)
    assert cb.settings_from_ui({"f0_min": 0, "f0_max": 0})[0].f0_min is None  # an emptied box sends 0
    with pytest.raises(SvcError, match="'Lowest f0 \\(Hz\\)' must be below f0_max"):
        cb.settings_from_ui({"f0_min": 700, "f0_max": 600})


def test_convert_shows_the_pitch_plot_suggests_the_key_and_round_trips_the_csv(svc, tmp_path):
    from webui.app import _convert_with_pitch
    from webui.pitch import apply_suggestion

    song = write_song(tmp_path / "song.wav", 1.0, 44100)
    quiet = lambda *a, **k: None  # noqa: E731
    msg, out, download, image, text, csv, suggested = _convert_with_pitch(svc, str(song), "alto", {"transpose": 0},
                                                                          tmp_path / "results", quiet)
    assert msg.startswith("Success") and image.ndim == 3 and image.dtype == np.uint8 and image.shape[2] == 3
    assert suggested == -12 and "**Suggested key**: -12 semitones" in text
    assert "outside alto's 5-95 % range" in text  # untransposed, the song is an octave too high
    assert csv.endswith(".f0.csv") and open(csv).readline().strip() == "time_s,f0_hz,voiced"
    assert apply_suggestion(suggested) == -12
    # the downloaded curve, uploaded again, gives the same audio
    _, out2, *_ = _convert_with_pitch(svc, str(song), "alto", {"transpose": 5}, tmp_path / "results", quiet,
                                      f0_file=csv)
    assert out2 != out
    np.testing.assert_array_equal(sf.read(out)[0], sf.read(out2)[0])
    # a speaker without statistics: no suggestion, and the button says why
    _, _, _, image, text, _, suggested = _convert_with_pitch(svc, str(song), "tenor", {}, tmp_path / "results", quiet)
    assert suggested is None and "No f0 statistics for speaker 'tenor'" in text and image is not None
    with pytest.raises(SvcError, match="no key suggestion yet"):
        apply_suggestion(None)


def test_bad_uploaded_f0_file_names_the_row(svc, tmp_path):
    from webui.app import _convert_with_pitch

    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,f0_hz,voiced\n0.0,220.0,1\n0.0116,-3,1\n")
    with pytest.raises(SvcError, match="row 3"):
        _convert_with_pitch(svc, str(write_song(tmp_path / "s.wav")), "alto", {}, tmp_path / "results",
                            lambda *a, **k: None, f0_file=str(bad))
