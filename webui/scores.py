"""The web UI's result panel: objective scores and spectrograms of one conversion (no Gradio here).

After a conversion the page shows (``webui.app`` wires it; this module holds the logic):

* **scores** (when "score the result" is ticked) from :mod:`evaluation` — the same metrics as
  ``evaluate.py``: pitch error of the output against the source moved by the transposition
  (cents, frames voiced in both), V/UV F1 (the source's voicing as the truth) and speaker
  similarity of the output to the target speaker's reference clips and to the source. When the
  output is closer to the source than to the target, the panel says so (timbre leakage);
* a **spectrogram** of input and output, one above the other on one time and colour scale
  (log mel from :mod:`modules.mel_processing`, drawn on a matplotlib ``Figure`` without pyplot).

Target references, in this order: clips uploaded in the page, else the speaker's training clips in
``dataset/44k/<speaker>/`` (relative to the working directory, as 4.1's layout), else none — then
only the similarity to the source is shown. At most :data:`MAX_REF_CLIPS` clips are used (evenly
spread over the sorted folder); their embedding is cached per clip set.

Cost (``bench/bench_eval.py --webui``, docs/bench/eval.md): the pitch tracks of both files are
most of it; the models load once per page (the first scored conversion pays for loading them).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from modules.errors import SvcError

log = logging.getLogger(__name__)

DATASET_DIR = Path("dataset/44k")     # 4.1's resampled training clips: dataset/44k/<speaker>/*.wav
MAX_REF_CLIPS = 8                     # reference clips per speaker (enough for a stable mean embedding)
SOURCE_CACHE = 4                      # analyses of recent inputs kept (the same song is often converted again)
SCORE_F0_PREDICTOR = "fcpe"           # pitch tracker of both sides (evaluate.py's default)
SCORE_BY_DEFAULT = True              # the page's "score the result" box (cost: docs/bench/eval.md)
LEAKAGE_TEXT = "closer to the source than to the target: timbre leakage"

# Spectrogram: the synthesizer's log-mel front end at the output's rate (44.1 kHz models: 2048-point
# frames every 512 samples, 11.6 ms), 128 bands up to the Nyquist frequency.
SPEC_N_FFT = 2048
SPEC_HOP = 512
SPEC_MELS = 128
SPEC_FLOOR_DB = 80.0                  # colour range: the loudest bin down to this many dB below it
FIGURE_SIZE = (10.0, 4.6)             # inches at FIGURE_DPI
FIGURE_DPI = 100


@dataclass(frozen=True)
class ConversionScores:
    """Scores of one conversion (``None``: undefined or not computed)."""

    f0_rmse_cents: float | None       # RMS pitch error, frames voiced in both (cents)
    f0_corr: float | None             # correlation of the two pitch curves
    vuv_f1: float | None              # voicing agreement (1 = same voiced frames)
    spk_sim_target: float | None      # cosine similarity to the target references (None: no references)
    spk_sim_source: float | None      # cosine similarity to the source (None: no speaker encoder)
    references: str                   # where the target references came from ("" when none)
    note: str = ""                    # why something is missing (no encoder weights, ...)

    @property
    def leakage(self) -> bool:
        """The output is closer to the source's voice than to the target's."""
        return (self.spk_sim_target is not None and self.spk_sim_source is not None
                and self.spk_sim_source > self.spk_sim_target)


# --- target references -------------------------------------------------------------------------
def target_references(speaker: str, uploads: Sequence[str | os.PathLike] | None = None, *,
                      dataset_dir: str | os.PathLike = DATASET_DIR) -> tuple[list[Path], str]:
    """Reference clips of ``speaker`` → ``(files, description)``; ``([], "")`` when there are none.

    Uploaded clips win (the user chose them); otherwise the speaker's folder under
    ``dataset_dir``. At most :data:`MAX_REF_CLIPS`, evenly spread over the sorted list.
    """
    from evaluation.runner import expand_refs

    if uploads:
        files = expand_refs(uploads)
        where = "uploaded"
    else:
        folder = Path(dataset_dir) / str(speaker)
        if not folder.is_dir():
            return [], ""
        try:
            files = expand_refs([folder])
        except SvcError:   # a folder without audio (only features): no references
            return [], ""
        where = f"from {folder}"
    if len(files) > MAX_REF_CLIPS:
        files = [files[i] for i in np.linspace(0, len(files) - 1, MAX_REF_CLIPS).round().astype(int)]
    return files, f"{len(files)} clip{'s' if len(files) != 1 else ''} {where}"


# --- scores ------------------------------------------------------------------------------------
class ConversionScorer:
    """Loads the F0 predictor and the speaker encoder on first use (once per device) and caches
    the target speakers' embeddings. One per page (``build_app``); safe to share between sessions."""

    def __init__(self, *, f0_predictor: str = SCORE_F0_PREDICTOR, speaker_weights: str | Path | None = None) -> None:
        self.f0_predictor = f0_predictor
        self.speaker_weights = speaker_weights
        self._analyzers: dict[str, Any] = {}
        self._refs: dict[tuple, np.ndarray] = {}
        self._sources: dict[tuple, Any] = {}   # (device, digest of the 16 kHz input) → Analysis, oldest first
        self._lock = threading.Lock()
        self._no_speaker = ""   # why speaker similarity is off ("" = on)

    def analyzer(self, device: Any = None):
        """The :class:`evaluation.analysis.Analyzer` for ``device`` (built once). Without the
        speaker-encoder weights it scores pitch only and remembers why."""
        from evaluation.analysis import Analyzer
        from modules.errors import MissingPretrainedError

        key = str(device)
        with self._lock:
            if key not in self._analyzers:
                try:
                    self._analyzers[key] = Analyzer(f0_predictor=self.f0_predictor, device=device,
                                                    speaker_weights=self.speaker_weights)
                except MissingPretrainedError as e:
                    log.warning("web UI scores without speaker similarity: %s", e)
                    self._no_speaker = str(e)
                    self._analyzers[key] = Analyzer(f0_predictor=self.f0_predictor, device=device, with_speaker=False)
            return self._analyzers[key]

    def clear_cache(self) -> None:
        """Forget the cached input analyses and reference embeddings (the models stay loaded)."""
        self._sources.clear()
        self._refs.clear()

    def analyze_source(self, source: np.ndarray, device: Any = None):
        """:class:`~evaluation.analysis.Analysis` of a 16 kHz input, cached by content: converting the
        same song again with other settings re-analyses only the output."""
        import hashlib

        digest = hashlib.blake2b(np.ascontiguousarray(source, np.float32).tobytes(), digest_size=16).digest()
        key = (str(device), digest)
        if key not in self._sources:
            analysis = self.analyzer(device).analyze(source, what="input audio")
            while len(self._sources) >= SOURCE_CACHE:
                self._sources.pop(next(iter(self._sources)))
            self._sources[key] = analysis
        return self._sources[key]

    def reference_embedding(self, files: Sequence[Path], device: Any = None) -> np.ndarray:
        """Mean speaker embedding ``[256]`` of ``files`` (cached by path, size and modification time)."""
        from evaluation.analysis import check_audible, load_for_analysis

        key = (str(device),) + tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        if key not in self._refs:
            wavs = []
            for p in files:
                wav = load_for_analysis(p)
                check_audible(wav, f"{p} (target reference)")
                wavs.append(wav)
            self._refs[key] = self.analyzer(device).embed_many(wavs)
        return self._refs[key]

    def score(self, source: np.ndarray, converted: np.ndarray, *, transpose: float = 0.0,
              references: Sequence[Path] = (), references_text: str = "", device: Any = None) -> ConversionScores:
        """Score 16 kHz mono ``converted`` ``[L']`` against ``source`` ``[L]`` (``evaluation.analysis``
        rates). Raises :class:`~modules.errors.AudioError` naming the side that is silent."""
        from evaluation.analysis import compare

        analyzer = self.analyzer(device)
        src = self.analyze_source(source, device)
        out = analyzer.analyze(converted, what="converted audio")
        speaker_on = analyzer.encoder is not None
        target = self.reference_embedding(list(references), device) if references and speaker_on else None
        m = compare(src, out, transpose=transpose, target_embedding=target)
        note = "" if speaker_on else f"no speaker similarity: {self._no_speaker}"
        return ConversionScores(f0_rmse_cents=m["f0_rmse_cents"], f0_corr=m["f0_corr"], vuv_f1=m["vuv_f1"],
                                spk_sim_target=m["spk_sim_target"], spk_sim_source=m["spk_sim_source"],
                                references=references_text if target is not None else "", note=note)


def _num(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def scores_markdown(s: ConversionScores, *, transpose: float = 0.0, auto_predict_f0: bool = False,
                    speaker: str = "") -> str:
    """The score panel's text (Markdown)."""
    shift = f"transposed by {transpose:+g} semitones" if transpose else "not transposed"
    lines = ["**Scores of the result**", "",
             "| score | value | best |", "|---|---:|---:|",
             f"| pitch error vs the input ({shift}) | {_num(s.f0_rmse_cents, '.1f')} cents | 0 |",
             f"| pitch correlation | {_num(s.f0_corr, '.3f')} | 1 |",
             f"| voiced/unvoiced F1 | {_num(s.vuv_f1, '.3f')} | 1 |"]
    if s.spk_sim_target is not None:
        lines.append(f"| speaker similarity to the target ({s.references}) | {s.spk_sim_target:.3f} | 1 |")
    if s.spk_sim_source is not None:
        lines.append(f"| speaker similarity to the input | {s.spk_sim_source:.3f} | low |")
    notes = []
    if auto_predict_f0:
        notes.append("Automatic pitch prediction was on: the output is not meant to follow the input's pitch, "
                     "so the pitch scores say little.")
    if s.f0_rmse_cents is None:
        notes.append("No frame is voiced in both input and output: pitch error undefined.")
    if s.leakage:
        notes.append(f"⚠️ The output is {LEAKAGE_TEXT}.")
    elif s.spk_sim_target is not None and s.spk_sim_source is not None:
        notes.append("The output is closer to the target speaker than to the input.")
    elif s.spk_sim_source is not None:
        notes.append(f"No reference clips of {speaker or 'the target speaker'}: put its training clips in "
                     f"{DATASET_DIR}/{speaker or '<speaker>'}/ or upload a few to compare with the target.")
    if s.note:
        notes.append(s.note)
    return "\n".join(lines + [""] + notes)


# --- spectrograms ------------------------------------------------------------------------------
def log_mel(y: np.ndarray, sr: int) -> np.ndarray:
    """``[L]`` audio at ``sr`` → ``[SPEC_MELS, L // SPEC_HOP]`` log mel in dB (the synthesizer's front
    end, ``modules.mel_processing.mel_spectrogram_torch``, natural log converted to dB)."""
    import torch

    from modules.mel_processing import mel_spectrogram_torch

    x = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None]
    if x.shape[-1] < SPEC_N_FFT:   # too short for one frame: pad with silence
        x = torch.nn.functional.pad(x, (0, SPEC_N_FFT - x.shape[-1]))
    with torch.no_grad():
        mel = mel_spectrogram_torch(x, SPEC_N_FFT, SPEC_MELS, sr, SPEC_HOP, SPEC_N_FFT, 0.0, sr / 2)[0]
    return (mel.numpy() * (20.0 / np.log(10.0))).astype(np.float32)   # ln(magnitude) → dB


def spectrogram_figure(source: np.ndarray, converted: np.ndarray, sr: int):
    """Input above output: log-mel spectrograms ``[time, mel band]`` of two mono ``[L]`` signals at
    ``sr`` on one time axis (s), one frequency axis (Hz at mel-spaced ticks) and one colour scale (dB).
    Returns a ``matplotlib.figure.Figure`` (no pyplot: no global figure registry)."""
    import librosa
    from matplotlib.figure import Figure

    mels = [log_mel(source, sr), log_mel(converted, sr)]
    top = max(float(m.max()) for m in mels)
    seconds = max(len(source), len(converted)) / sr
    fig = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
    axes = fig.subplots(2, 1, sharex=True, sharey=True)
    freqs = librosa.mel_frequencies(n_mels=SPEC_MELS, fmin=0.0, fmax=sr / 2)
    ticks = [t for t in (0, 500, 1000, 2000, 4000, 8000, 16000) if t <= sr / 2]
    image = None
    for ax, mel, title, n in zip(axes, mels, ("input", "output"), (len(source), len(converted))):
        image = ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=top - SPEC_FLOOR_DB, vmax=top,
                          extent=(0.0, mel.shape[1] * SPEC_HOP / sr, 0, SPEC_MELS), interpolation="nearest")
        ax.set_title(f"{title} ({n / sr:.1f} s)", fontsize=10, loc="left")
        ax.set_ylabel("Hz")
        ax.set_yticks(np.interp(ticks, freqs, np.arange(SPEC_MELS)), labels=[f"{t:g}" for t in ticks])
        ax.set_xlim(0.0, seconds)
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=list(axes), label="dB", shrink=0.9)
    return fig


def figure_to_image(fig) -> np.ndarray:
    """Render a ``Figure`` → ``[H, W, 3]`` uint8 RGB (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


# --- one call per conversion -------------------------------------------------------------------
@dataclass(frozen=True)
class ResultPanel:
    markdown: str                     # the score panel ("" when not scored)
    image: np.ndarray | None          # [H, W, 3] uint8 spectrogram of input and output


def result_panel(source_path: str | os.PathLike, converted_path: str | os.PathLike, *, speaker: str,
                 transpose: float = 0.0, auto_predict_f0: bool = False, score: bool = True,
                 scorer: ConversionScorer | None = None, uploads: Sequence[str | os.PathLike] | None = None,
                 dataset_dir: str | os.PathLike = DATASET_DIR, device: Any = None) -> ResultPanel:
    """Spectrogram (always) and scores (when ``score``) of a finished conversion.

    A problem with the scores (silent output, unreadable reference clip) becomes the panel's text,
    never an error: the conversion itself succeeded. ``device`` is the model's (scores run where
    the model runs).
    """
    from evaluation.analysis import ANALYSIS_SR
    from modules.audio import load_audio, resample

    src, src_sr = load_audio(source_path)
    out, out_sr = load_audio(converted_path)
    image = figure_to_image(spectrogram_figure(resample(src, src_sr, out_sr), out, out_sr))
    if not score:
        return ResultPanel("", image)
    scorer = scorer if scorer is not None else ConversionScorer()
    try:
        refs, refs_text = target_references(speaker, uploads, dataset_dir=dataset_dir)
        s = scorer.score(resample(src, src_sr, ANALYSIS_SR), resample(out, out_sr, ANALYSIS_SR),
                         transpose=transpose, references=refs, references_text=refs_text, device=device)
    except SvcError as e:
        log.warning("scores of %s: %s", converted_path, e)
        return ResultPanel(f"**Scores of the result**: not available — {e}", image)
    return ResultPanel(scores_markdown(s, transpose=transpose, auto_predict_f0=auto_predict_f0, speaker=speaker),
                       image)
