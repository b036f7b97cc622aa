"""Dataset preparation, steps 1–3 of the 4.1 pipeline (spec §1.1–1.3).

* :mod:`preprocessing.resample` — ``resample.py``: raw audio → mono 16-bit PCM at 44.1 kHz.
* :mod:`preprocessing.flist` — ``preprocess_flist_config.py``: speaker ids, train/val lists,
  ``configs/config.json`` and ``configs/diffusion.yaml``.
* :mod:`preprocessing.features` — the per-file artifacts of ``preprocess_hubert_f0.py`` (names,
  exact on-disk formats, safe readers that training uses too) and the extractor that writes them.
* :mod:`preprocessing.runner` — the parallel, resumable driver of ``preprocess_hubert_f0.py``.
* :mod:`preprocessing.report` — the per-file outcome list and end-of-run summary shared by all.

Nothing heavy is imported here; each module imports what it needs.
"""
