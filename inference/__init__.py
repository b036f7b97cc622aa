"""Offline inference (spec §10): the ``Svc`` pipeline (:mod:`inference.infer_tool`), the silence
slicer, dynamic speaker mixing, static model mixing and the file loop of ``inference_main.py``.
Nothing heavy is imported here."""
