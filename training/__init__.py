"""Training of the SoVITS synthesizer (``train.py``) and model release (``compress_model.py``).

* :mod:`training.data` — the dataset over the 4.1 artifacts, collation and the (distributed) loaders
  (spec §6.12).
* :mod:`training.runner` — the one training runner shared with diffusion training: runtime and
  precision, DDP/torchrun, the step loop, save cadence, NaN/Inf guard with rollback, signal-safe
  stop, resumable state, progress.
* :mod:`training.loop` — the SoVITS half: models, optimisers, resume, one GAN step, logging,
  evaluation and checkpoints (spec §6.10–6.13).
* :mod:`training.summaries` — TensorBoard images (mel / f0 plots).
* :mod:`training.compress` — ``compress_model.py`` (spec §1.9, §7.4).

Nothing heavy is imported here; each module imports what it needs.
"""
