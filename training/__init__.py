"""Training of the SoVITS synthesizer (``train.py``) and model release (``compress_model.py``).

* :mod:`training.data` — the dataset over the 4.1 artifacts, collation and the (distributed) loaders
  (spec §6.12).
* :mod:`training.loop` — set-up (devices, processes, models, optimisers, resume), one GAN step,
  logging, evaluation and checkpoints (spec §6.10–6.13).
* :mod:`training.summaries` — TensorBoard images (mel / f0 plots).
* :mod:`training.compress` — ``compress_model.py`` (spec §1.9, §7.4).

Nothing heavy is imported here; each module imports what it needs.
"""
