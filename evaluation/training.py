"""Training-time scores: how well the model reconstructs the validation set, and which step is best.

At every ``eval_interval`` the training loop already runs ``generator.infer`` on each validation
item (``training.loop.evaluate``). Handing the (real, generated, speaker) triples to
:func:`score_validation` gives scalars for TensorBoard; :func:`update_best` keeps ``best.json``
beside the checkpoints, naming the step with the lowest *validation score*. The training loop
does all three through :class:`ValidationHook` (one call per ``eval_interval``)::

    hook = ValidationHook(hps.data, model_dir, device=device)   # once per run, rank 0
    ...
    hook(items, global_step, writer=writer_eval, checkpoint=f"G_{global_step}.pth")

which amounts to::

    scorer = ValidationScorer(hps.data)                       # once (loads FCPE + speaker encoder)
    ...
    items = [(y[0, 0], y_hat[0, 0], int(g)) for each validation batch]   # audio at hps.data.sampling_rate
    scores = score_validation(items, hps.data, scorer=scorer)
    for k, v in scores.items():
        writer_eval.add_scalar(f"val/{k}", v, global_step)
    update_best(Path(model_dir) / "best.json", global_step, scores, checkpoint=f"G_{global_step}.pth")

Scores (means over the validation items; NaN when undefined for every item):

* ``mel_l1``: mean |log-mel(y) − log-mel(ŷ)| with the training loss's mel front end (natural-log
  mel, ``hps.data`` parameters); the same quantity as the mel loss before its weight ``c_mel``;
* ``f0_rmse_cents``: pitch error of ŷ against y (frames voiced in both; F0 predictor ``fcpe``
  by default) — the reconstruction should follow the given f0 exactly;
* ``vuv_f1``: voicing agreement of ŷ with y;
* ``spk_sim``: cosine similarity of ŷ's speaker embedding to the speaker's *other* validation
  clips (leave-one-out; the clip itself only when the speaker has one clip), or to the clips
  given in ``speaker_refs``;
* ``score``: ``mel_l1 + 0.01 · f0_rmse_cents + 2 · (1 − spk_sim)``, lower is better
  (:data:`SCORE_WEIGHTS`). Each term is ~0.1–1 for a usable model: a mel L1 of 0.5, a pitch error
  of 50 cents and a similarity of 0.75 each add 0.5. When the validation score rises while the
  training loss keeps falling, the model is over-training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch

from evaluation.analysis import ANALYSIS_SR, Analysis, Analyzer, DEFAULT_F0_PREDICTOR, load_for_analysis
from evaluation.metrics import f0_metrics
from evaluation.speaker import cosine
from modules.audio import resample
from modules.errors import SvcError
from modules.io_utils import atomic_write_text

log = logging.getLogger(__name__)

#: weights of the validation score: score = mel_l1·w₁ + f0_rmse_cents·w₂ + (1 − spk_sim)·w₃ (lower is better)
SCORE_WEIGHTS = {"mel_l1": 1.0, "f0_rmse_cents": 0.01, "spk_sim": 2.0}
SCORE_FORMULA = "mel_l1 + 0.01 * f0_rmse_cents + 2 * (1 - spk_sim)  (lower is better)"
SCORE_KEYS = ("mel_l1", "f0_rmse_cents", "vuv_f1", "spk_sim", "score")
BEST_JSON = "best.json"   # beside the checkpoints (logs/44k/best.json)

AudioLike = torch.Tensor | np.ndarray
ValidationItem = tuple[AudioLike, AudioLike, Hashable]   # (real y, generated ŷ, speaker id or name)


def _cfg(data_config: Any, key: str) -> Any:
    """``hps.data`` is an attribute-and-key object; plain dicts work too."""
    if isinstance(data_config, Mapping):
        if key not in data_config:
            raise SvcError(f"data config has no '{key}' (needs sampling_rate, filter_length, hop_length, win_length, "
                           "n_mel_channels, mel_fmin, mel_fmax)")
        return data_config[key]
    return getattr(data_config, key)


def _as_tensor(x: AudioLike) -> torch.Tensor:
    """``[L]``, ``[1, L]`` or ``[1, 1, L]`` → float ``[L]`` (device kept)."""
    t = torch.as_tensor(x).detach().float()
    if t.dim() > 1:
        if t.numel() != t.shape[-1]:
            raise SvcError(f"validation audio must be one mono clip ([L], [1, L] or [1, 1, L]), got shape {tuple(t.shape)}")
        t = t.reshape(-1)
    return t


def _digest(x: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=16).hexdigest()


class ValidationScorer:
    """Holds the models and per-clip caches for :func:`score_validation`; build it once per run.

    Args:
        data_config: ``hps.data`` (``sampling_rate``, ``filter_length``, ``hop_length``,
            ``win_length``, ``n_mel_channels``, ``mel_fmin``, ``mel_fmax``).
        f0_predictor: F0 predictor name for the pitch scores (default ``fcpe``).
        device: device of the F0 predictor and speaker encoder (``None``: CUDA when available).
        speaker_weights: Resemblyzer ``pretrained.pt`` (default: the installed wheel's).

    The analyses of real clips (which do not change during training) are cached by content.
    """

    def __init__(self, data_config: Any, *, f0_predictor: str = DEFAULT_F0_PREDICTOR,
                 device: str | torch.device | None = None, speaker_weights: str | Path | None = None) -> None:
        self.sampling_rate = int(_cfg(data_config, "sampling_rate"))
        self.mel_args = dict(n_fft=int(_cfg(data_config, "filter_length")),
                             num_mels=int(_cfg(data_config, "n_mel_channels")), sampling_rate=self.sampling_rate,
                             hop_size=int(_cfg(data_config, "hop_length")),
                             win_size=int(_cfg(data_config, "win_length")),
                             fmin=float(_cfg(data_config, "mel_fmin")),
                             fmax=None if _cfg(data_config, "mel_fmax") is None else float(_cfg(data_config, "mel_fmax")))
        self.analyzer = Analyzer(f0_predictor=f0_predictor, device=device, speaker_weights=speaker_weights)
        self._real: dict[str, Analysis | None] = {}
        self._refs: dict[tuple, np.ndarray] = {}

    # -- per clip -----------------------------------------------------------------------------
    def _analyze(self, wav: torch.Tensor, what: str) -> Analysis | None:
        x = resample(wav.cpu().numpy(), self.sampling_rate, ANALYSIS_SR)
        try:
            return self.analyzer.analyze(x, what=what)
        except SvcError as e:  # a silent clip (early in training) must not stop the run
            log.warning("validation scores: %s", e)
            return None

    def analyze_real(self, wav: torch.Tensor) -> Analysis | None:
        key = _digest(wav.cpu().numpy())
        if key not in self._real:
            self._real[key] = self._analyze(wav, "validation clip")
        return self._real[key]

    def mel_l1(self, real: torch.Tensor, generated: torch.Tensor) -> float:
        from modules.mel_processing import mel_spectrogram_torch

        n = min(real.shape[-1], generated.shape[-1])
        a = mel_spectrogram_torch(real[None, :n], **self.mel_args)
        b = mel_spectrogram_torch(generated[None, :n].to(real.device), **self.mel_args)
        return float((a - b).abs().mean())

    def reference_embedding(self, speaker: Hashable, clips: Sequence[str | os.PathLike | AudioLike]) -> np.ndarray:
        """Speaker embedding of ``clips`` (paths, or audio at the data rate), cached per speaker and content."""
        key = (speaker, tuple(str(c) if isinstance(c, (str, os.PathLike)) else _digest(_as_tensor(c).cpu().numpy())
                              for c in clips))
        if key not in self._refs:
            wavs = [load_for_analysis(c) if isinstance(c, (str, os.PathLike))
                    else resample(_as_tensor(c).cpu().numpy(), self.sampling_rate, ANALYSIS_SR) for c in clips]
            self._refs[key] = self.analyzer.embed_many(wavs)
        return self._refs[key]

    # -- a validation pass --------------------------------------------------------------------
    def score(self, items: Iterable[ValidationItem],
              speaker_refs: Mapping[Hashable, Sequence[str | os.PathLike | AudioLike]] | None = None) -> dict[str, float]:
        """See :func:`score_validation`."""
        items = [(_as_tensor(r), _as_tensor(g), s) for r, g, s in items]
        if not items:
            raise SvcError("score_validation: no validation items")
        real = [self.analyze_real(r) for r, _, _ in items]
        mel, rmse, f1, sim = [], [], [], []
        for i, (r, g, spk) in enumerate(items):
            mel.append(self.mel_l1(r, g))
            gen = self._analyze(g, f"generated audio of validation item {i}")
            if gen is None or real[i] is None:
                continue
            m = f0_metrics(real[i].f0, real[i].voiced, gen.f0, gen.voiced)
            if m["f0_rmse_cents"] is not None:
                rmse.append(m["f0_rmse_cents"])
            if m["vuv_f1"] is not None:
                f1.append(m["vuv_f1"])
            if speaker_refs is not None and spk in speaker_refs:
                ref = self.reference_embedding(spk, speaker_refs[spk])
            else:
                # leave-one-out over the same speaker's real validation clips
                others = [real[j].embedding for j, (_, _, s) in enumerate(items)
                          if s == spk and j != i and real[j] is not None]
                if not others:
                    others = [real[i].embedding]
                mean = np.mean(others, axis=0)
                ref = mean / np.linalg.norm(mean)
            sim.append(cosine(gen.embedding, ref))

        def avg(v: list[float]) -> float:
            return float(np.mean(v)) if v else math.nan

        scores = {"mel_l1": avg(mel), "f0_rmse_cents": avg(rmse), "vuv_f1": avg(f1), "spk_sim": avg(sim)}
        scores["score"] = validation_score(scores)
        return scores


def score_validation(items: Iterable[ValidationItem], data_config: Any, *, scorer: ValidationScorer | None = None,
                     speaker_refs: Mapping[Hashable, Sequence[str | os.PathLike | AudioLike]] | None = None,
                     f0_predictor: str = DEFAULT_F0_PREDICTOR,
                     device: str | torch.device | None = None) -> dict[str, float]:
    """Score one validation pass.

    Args:
        items: ``(y, ŷ, speaker)`` per validation clip: real and generated audio ``[L]`` / ``[1, L]``
            / ``[1, 1, L]`` in [-1, 1] at ``data_config.sampling_rate`` (any device), and the
            speaker id or name (clips of one speaker serve as each other's references).
        data_config: ``hps.data``.
        scorer: a :class:`ValidationScorer` built once per run (recommended: it caches the models
            and the real clips' analyses); ``None`` builds one for this call
            (``f0_predictor`` and ``device`` apply only then).
        speaker_refs: optional ``speaker → clips`` (file paths or audio at the data rate) to use as
            that speaker's references instead of the other validation clips.
    Returns:
        ``{"mel_l1", "f0_rmse_cents", "vuv_f1", "spk_sim", "score"}`` floats (NaN where undefined);
        see the module docstring for units and the score formula.
    """
    if scorer is None:
        scorer = ValidationScorer(data_config, f0_predictor=f0_predictor, device=device)
    return scorer.score(items, speaker_refs)


def validation_score(scores: Mapping[str, float]) -> float:
    """``mel_l1 + 0.01·f0_rmse_cents + 2·(1 − spk_sim)`` (lower is better); NaN if a term is missing."""
    try:
        terms = (SCORE_WEIGHTS["mel_l1"] * scores["mel_l1"],
                 SCORE_WEIGHTS["f0_rmse_cents"] * scores["f0_rmse_cents"],
                 SCORE_WEIGHTS["spk_sim"] * (1.0 - scores["spk_sim"]))
    except (KeyError, TypeError):
        return math.nan
    total = float(sum(terms))
    return total if math.isfinite(total) else math.nan


def _json_number(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def update_best(best_json_path: str | os.PathLike, step: int, scores: Mapping[str, float], *,
                checkpoint: str | None = None) -> bool:
    """Record one validation pass in ``best.json`` (written atomically); return whether it is the new best.

    The file::

        {"score_formula": "...", "lower_is_better": true,
         "best": {"step": 4000, "score": 1.23, "checkpoint": "G_4000.pth", "scores": {...}} or null,
         "history": [{"step": 800, "score": ..., "mel_l1": ..., ...}, ...]}   # sorted by step

    A pass at a step already in the history replaces it (a resumed run). A pass whose score is NaN
    is recorded but never best. ``checkpoint`` names the file saved at this step, if any (the
    training loop's ``keep_ckpts`` may delete it later; the step still identifies it).
    """
    path = Path(best_json_path)
    state: dict[str, Any] = {}
    if path.exists():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(state, dict) or not isinstance(state.get("history", []), list):
                raise ValueError("not a best.json object")
        except (ValueError, OSError) as e:
            log.warning("%s is unreadable (%s); starting a new one", path, e)
            state = {}
    score = validation_score(scores)
    entry = {"step": int(step), "score": _json_number(score),
             **{k: _json_number(float(v)) for k, v in scores.items() if k != "score"}}
    if checkpoint is not None:
        entry["checkpoint"] = str(checkpoint)
    history = [h for h in state.get("history", []) if isinstance(h, dict) and h.get("step") != int(step)]
    history.append(entry)
    history.sort(key=lambda h: h.get("step", 0))
    valid = [h for h in history if isinstance(h.get("score"), (int, float))]
    best = min(valid, key=lambda h: (h["score"], h["step"])) if valid else None
    out = {"score_formula": SCORE_FORMULA, "lower_is_better": True,
           "best": None if best is None else {"step": best["step"], "score": best["score"],
                                              "checkpoint": best.get("checkpoint"),
                                              "scores": {k: v for k, v in best.items()
                                                         if k not in ("step", "score", "checkpoint")}},
           "history": history}
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    return best is not None and best["step"] == int(step)


class ValidationHook:
    """What the training loop calls once per ``eval_interval`` (rank 0), after ``infer`` on the
    validation items: score them, log ``val/<name>`` scalars, update ``best.json``. Build it once
    per run; the scorer (F0 predictor + speaker encoder) loads on the first pass.

    Never stops training: a scorer that cannot load (missing encoder weights) logs one warning and
    switches the hook off for the run; a pass that fails logs a warning and is skipped.

    Args:
        data_config: ``hps.data``.
        model_dir: the run's folder (``logs/44k``); ``best.json`` goes there, beside the checkpoints.
        device: where the scorer runs (the training device; ``None``: CUDA when available).
        f0_predictor: pitch tracker of the scores (default ``fcpe``).
    """

    def __init__(self, data_config: Any, model_dir: str | os.PathLike, *, device: str | torch.device | None = None,
                 f0_predictor: str = DEFAULT_F0_PREDICTOR) -> None:
        self.data_config = data_config
        self.best_json = Path(model_dir) / BEST_JSON
        self.device = device
        self.f0_predictor = f0_predictor
        self.scorer: ValidationScorer | None = None
        self.disabled = ""   # why the hook is off for this run ("" = on)

    def __call__(self, items: Iterable[ValidationItem], step: int, *, writer: Any = None,
                 checkpoint: str | None = None) -> dict[str, float] | None:
        """Score one pass at ``step``; return the scores, or ``None`` when scoring is off or failed.

        ``items``: ``(y, ŷ, speaker)`` per validation clip (see :func:`score_validation`);
        ``writer``: a TensorBoard ``SummaryWriter`` (``add_scalar``) or ``None``; ``checkpoint``:
        the file saved at this step (recorded in ``best.json``).
        """
        if self.disabled:
            return None
        try:
            if self.scorer is None:
                self.scorer = ValidationScorer(self.data_config, f0_predictor=self.f0_predictor, device=self.device)
        except Exception as e:  # noqa: BLE001 - scores are an extra; training goes on without them
            self.disabled = str(e)
            log.warning("validation scores are off for this run: %s", e)
            return None
        try:
            scores = score_validation(items, self.data_config, scorer=self.scorer)
            if writer is not None:
                for name, value in scores.items():
                    writer.add_scalar(f"val/{name}", value, step)
            best = update_best(self.best_json, step, scores, checkpoint=checkpoint)
        except Exception as e:  # noqa: BLE001 - a failed pass must not stop a long run
            log.warning("validation scores at step %d failed (%s: %s); training goes on", step, type(e).__name__, e)
            return None
        log.info("validation scores at step %d: %s%s", step,
                 ", ".join(f"{k} {v:.3f}" for k, v in scores.items()), " (best so far)" if best else "")
        return scores
