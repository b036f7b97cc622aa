"""The Gradio web UI (``python webUI.py``).

* :mod:`webui.callbacks` — what the buttons do, as plain functions (no Gradio): load / unload a
  model, convert a file, list local models, mix and compress models. Errors are
  :class:`modules.errors.SvcError` with a readable message.
* :mod:`webui.scores` — the result panel after a conversion: objective scores (``evaluation``)
  and the spectrogram of input and output, as plain functions (no Gradio).
* :mod:`webui.app` — :func:`webui.app.build_app` lays out the page and wires the callbacks; it
  turns errors into ``gr.Error`` pop-ups so the page never dies.

Nothing here runs at import; Gradio is imported only by :mod:`webui.app`.
"""
