"""Objective quality scores of conversions and of training runs.

* ``evaluate.py`` → :func:`evaluation.runner.evaluate` (pitch, loudness, speaker similarity,
  duration of converted files against their sources; metrics in :mod:`evaluation.metrics`).
* Training: :class:`evaluation.training.ValidationHook` (what ``train.py`` calls at every
  ``eval_interval``) over :func:`evaluation.training.score_validation` and
  :func:`evaluation.training.update_best`.
* The web UI's result panel: :mod:`webui.scores`.
* Speaker embeddings: :mod:`evaluation.speaker` (Resemblyzer's released encoder, our module).

Submodules are imported on use; importing this package loads nothing heavy.
"""
