"""The web UI's result panel (webui/scores.py and its hook in webui/app.py): scores against the
source and the target speaker's clips, the leakage verdict, the spectrogram, and the page wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval_helpers import SR, needs_speaker_weights, sung, write
from webui import scores as sc


@pytest.fixture(scope="module")
def scorer():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield sc.ConversionScorer()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("webui_scores")
    src = write(root / "source.wav", sung(3.0, voice="alto", seed=1))
    up2 = write(root / "up2.wav", sung(3.0, voice="alto", seed=1, semitones=2))
    other = write(root / "other.wav", sung(3.0, voice="baritone", seed=3))
    dataset = root / "dataset" / "44k"
    (dataset / "baritone").mkdir(parents=True)
    for i in range(10):  # more than MAX_REF_CLIPS
        write(dataset / "baritone" / f"{i:02d}.wav", sung(2.0, voice="baritone", seed=10 + i))
    (dataset / "features_only").mkdir()
    (dataset / "features_only" / "a.wav.f0.npy").write_bytes(b"")
    return dict(root=root, src=src, up2=up2, other=other, dataset=dataset)


def _score(clips, scorer, converted, **kw):
    return sc.result_panel(clips["src"], converted, scorer=scorer, dataset_dir=clips["dataset"], device="cpu", **kw)


@needs_speaker_weights
def test_identical_output_scores_perfect_without_references(clips, scorer):
    panel = _score(clips, scorer, clips["src"], speaker="tenor")
    assert "| pitch error vs the input (not transposed) | 0.0 cents |" in panel.markdown
    assert "| voiced/unvoiced F1 | 1.000 |" in panel.markdown
    assert "| speaker similarity to the input | 1.000 |" in panel.markdown
    assert "similarity to the target" not in panel.markdown  # no clips of "tenor": source similarity only
    assert "No reference clips of tenor: put its training clips in dataset/44k/tenor/" in panel.markdown
    assert sc.LEAKAGE_TEXT not in panel.markdown
    assert panel.image.dtype == np.uint8 and panel.image.ndim == 3 and panel.image.shape[2] == 3


def test_pitch_error_is_measured_after_the_transposition(clips, scorer):
    from evaluation.analysis import load_for_analysis

    src, up2 = load_for_analysis(clips["src"]), load_for_analysis(clips["up2"])
    moved = scorer.score(src, up2, transpose=2)
    assert moved.f0_rmse_cents < 20 and moved.vuv_f1 > 0.95
    assert 150 < scorer.score(src, up2, transpose=0).f0_rmse_cents < 250
    panel = _score(clips, scorer, clips["up2"], speaker="tenor", transpose=2)
    assert "pitch error vs the input (transposed by +2 semitones)" in panel.markdown
    auto = _score(clips, scorer, clips["up2"], speaker="tenor", auto_predict_f0=True, score=True)
    assert "Automatic pitch prediction was on" in auto.markdown


@needs_speaker_weights
def test_output_in_the_source_voice_is_flagged_as_timbre_leakage(clips, scorer):
    leaked = _score(clips, scorer, clips["src"], speaker="baritone")
    assert f"speaker similarity to the target ({sc.MAX_REF_CLIPS} clips from {clips['dataset'] / 'baritone'})" \
        in leaked.markdown
    assert f"The output is {sc.LEAKAGE_TEXT}." in leaked.markdown
    converted = _score(clips, scorer, clips["other"], speaker="baritone")   # the target's voice
    assert sc.LEAKAGE_TEXT not in converted.markdown
    assert "closer to the target speaker than to the input" in converted.markdown


def test_the_same_input_is_analysed_once(clips, scorer, monkeypatch):
    from evaluation.analysis import load_for_analysis

    src, up2 = load_for_analysis(clips["src"]), load_for_analysis(clips["up2"])
    scorer.clear_cache()
    seen = []
    analyzer = scorer.analyzer(None)
    real = analyzer.analyze
    monkeypatch.setattr(analyzer, "analyze", lambda wav, **k: seen.append(k["what"]) or real(wav, **k))
    first = scorer.score(src, up2, transpose=2)
    again = scorer.score(src.copy(), up2, transpose=2)   # same samples, another array
    assert seen == ["input audio", "converted audio", "converted audio"] and again == first
    for i in range(sc.SOURCE_CACHE):   # older inputs are dropped: the cache stays small
        scorer.analyze_source(src * (0.5 + 0.1 * i))
    scorer.score(src, up2, transpose=2)
    assert seen[-2:] == ["input audio", "converted audio"] and len(scorer._sources) == sc.SOURCE_CACHE


def test_target_references_uploads_win_then_the_dataset_folder(clips):
    files, text = sc.target_references("baritone", dataset_dir=clips["dataset"])
    assert len(files) == sc.MAX_REF_CLIPS and files[0].name == "00.wav" and files[-1].name == "09.wav"
    assert text == f"{sc.MAX_REF_CLIPS} clips from {clips['dataset'] / 'baritone'}"
    files, text = sc.target_references("baritone", [clips["other"]], dataset_dir=clips["dataset"])
    assert files == [clips["other"]] and text == "1 clip uploaded"
    assert sc.target_references("nobody", dataset_dir=clips["dataset"]) == ([], "")
    assert sc.target_references("features_only", dataset_dir=clips["dataset"]) == ([], "")


def test_a_silent_output_or_reference_becomes_the_panels_text(clips, scorer, tmp_path):
    silent = write(tmp_path / "silent.wav", np.zeros(SR, np.float32))
    panel = _score(clips, scorer, silent, speaker="tenor")
    assert panel.markdown.startswith("**Scores of the result**: not available")
    assert "converted audio: silent" in panel.markdown
    assert panel.image is not None  # the spectrogram still shows what came out
    panel = _score(clips, scorer, clips["src"], speaker="tenor", uploads=[silent])
    if panel.markdown.startswith("**Scores of the result**: not available"):  # speaker encoder installed
        assert f"{silent} (target reference): silent" in panel.markdown


def test_without_encoder_weights_the_panel_scores_pitch_only(clips, tmp_path):
    scorer = sc.ConversionScorer(speaker_weights=tmp_path / "missing.pt")
    panel = sc.result_panel(clips["src"], clips["src"], speaker="baritone", scorer=scorer,
                            dataset_dir=clips["dataset"], device="cpu")
    assert "| pitch error vs the input (not transposed) | 0.0 cents |" in panel.markdown
    assert "| speaker similarity" not in panel.markdown
    assert "no speaker similarity:" in panel.markdown and "missing.pt" in panel.markdown


def test_score_off_draws_only_the_spectrogram(clips):
    panel = sc.result_panel(clips["src"], clips["up2"], speaker="tenor", score=False,
                            scorer=sc.ConversionScorer(speaker_weights="/nonexistent"))  # never loaded
    assert panel.markdown == "" and panel.image.shape[2] == 3


def test_spectrogram_shows_a_tone_in_its_band_on_one_time_axis():
    import librosa

    sr = 44100
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    mel = sc.log_mel(tone, sr)
    assert mel.shape == (sc.SPEC_MELS, sr // sc.SPEC_HOP)
    band = int(np.argmax(mel[:, mel.shape[1] // 2]))
    freqs = librosa.mel_frequencies(n_mels=sc.SPEC_MELS, fmin=0.0, fmax=sr / 2)
    assert 850 < freqs[band] < 1150
    quieter = sc.log_mel(tone / 2, sr)
    assert mel.max() - quieter.max() == pytest.approx(20 * np.log10(2), abs=0.05)  # dB: half the amplitude = −6 dB

    fig = sc.spectrogram_figure(tone, np.concatenate([tone, tone]), sr)
    top, bottom = fig.axes[0], fig.axes[1]
    assert top.get_title(loc="left") == "input (1.0 s)" and bottom.get_title(loc="left") == "output (2.0 s)"
    assert top.get_xlim() == bottom.get_xlim() == (0.0, 2.0)
    image = sc.figure_to_image(fig)
    assert image.shape == (round(sc.FIGURE_SIZE[1] * sc.FIGURE_DPI), round(sc.FIGURE_SIZE[0] * sc.FIGURE_DPI), 3)


# --- the page ----------------------------------------------------------------------------------
def test_page_has_the_result_panel_and_fills_it_after_a_conversion(tmp_path, monkeypatch):
    import gradio as gr

    from webui import callbacks as cb
    from webui.app import _convert, _score, build_app
    from webui_helpers import build_tiny_models, write_song

    app = build_app(results_dir=tmp_path / "results", trained_dir=tmp_path / "trained")
    by_id = {b.elem_id: b for b in app.blocks.values() if getattr(b, "elem_id", None)}
    assert isinstance(by_id["score_result"], gr.Checkbox) and by_id["score_result"].value is sc.SCORE_BY_DEFAULT
    assert isinstance(by_id["score_refs"], gr.Files) and isinstance(by_id["score_panel"], gr.Markdown)
    assert isinstance(by_id["spectrogram"], gr.Image)

    models = build_tiny_models(tmp_path / "models")
    monkeypatch.setenv("SVC_PRETRAIN_DIR", str(models.pretrain))
    svc, _ = cb.load_model(model_path=models.g, config_path=models.config, device="cpu")
    song = write_song(tmp_path / "song.wav", 1.0, 22050)
    _, out, _ = _convert(svc, str(song), "alto", {"transpose": 3}, tmp_path / "results", lambda *a, **k: None)
    scorer = sc.ConversionScorer(speaker_weights=tmp_path / "no_encoder.pt")  # pitch only: fast
    text, image = _score(svc, str(song), out, "alto", 3, False, True, None, scorer, tmp_path / "dataset")
    assert text.startswith("**Scores of the result**")  # a table, or why the random model's output cannot be scored
    assert image.ndim == 3 and image.dtype == np.uint8
    if "| pitch error" in text:
        assert "transposed by +3 semitones" in text
    text, image = _score(svc, str(song), out, "alto", 3, False, False, None, scorer, tmp_path / "dataset")
    assert text == "" and image.ndim == 3
    assert _score(svc, str(song), None, "alto", 0, False, True, None, scorer, tmp_path) == ("", None)
