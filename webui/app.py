"""The page: :func:`build_app` lays out 4.1's web UI (spec §11.2) and wires :mod:`webui.callbacks`.

Tabs: "Inference" (model settings, inference settings, audio in → converted audio out) and
"Tools" (static model mixing, model compression). 4.1's Edge-TTS tab is left out (it needs
an online service). Each browser session holds its own model in a ``gr.State``; closing the tab
frees it. Errors are shown as a pop-up message (``gr.Error``); the page stays usable.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import gradio as gr

from inference.options import ConversionOptions
from modules.errors import SvcError
from webui import callbacks as cb
from webui import pitch as pt
from webui import scores as sc

log = logging.getLogger(__name__)

TITLE = "so-vits-svc 4.1"
# Loading, unloading and converting share one queue (one at a time, all sessions): an unload can
# never pull the model from under a running conversion, and two conversions never compete for memory.
MODEL_QUEUE = "model"
FILE_BOX_HEIGHT = 150  # px: compact upload / download boxes (Gradio's default is much taller)
CACHE_CLEANUP = (24 * 3600, 24 * 3600)  # drop uploads / cached outputs older than a day, checked daily
SLIDER_MAX_STEPS = 1000  # an int setting with both bounds and at most this many values is a slider


def shown(fn: Callable) -> Callable:
    """Run a callback; user errors become a pop-up with their message (and one log line), anything
    else a pop-up with its type and message (and its traceback in the log). Pop-ups stay until closed."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except SvcError as e:
            log.warning("%s", e)
            raise gr.Error(str(e), title="Error", duration=None, print_exception=False) from None
        except Exception as e:  # a bug or an unexpected library error: say so, keep the page alive
            log.exception("%s failed", fn.__name__)
            raise gr.Error(f"{type(e).__name__}: {e} (see the server log for details)", title="Unexpected error",
                           duration=None, print_exception=False) from None

    return run


def _free(svc: Any) -> None:
    """``gr.State`` delete callback: the session ended, free its model."""
    if svc is not None:
        svc.unload_model()


# --- callbacks in the page's terms (component values in, component updates out) -----------------
@shown
def on_refresh_local(trained_dir: str | os.PathLike = cb.TRAINED_DIR):
    choices = cb.scan_local_models(trained_dir)
    return gr.update(choices=choices, value=choices[0] if choices else None)


def _load(svc, source, model_file, config_file, local_folder, diff_model, diff_config, cluster_file, device,
          enhance, only_diffusion, trained_dir, file_diffusion=False):
    if source == "local" and (not only_diffusion or (local_folder and Path(local_folder).is_file())):
        if local_folder and local_folder not in cb.scan_local_models(trained_dir):
            raise SvcError(f"local model {local_folder!r} is not a model folder under {trained_dir}/; press 'Refresh'")
        model_file, config_file = cb.local_model_files(local_folder)
    new, msg = cb.load_model(model_path=model_file, config_path=config_file, diffusion_model_path=diff_model,
                             diffusion_config_path=diff_config, cluster_model_path=cluster_file, device=device,
                             enhance=enhance, only_diffusion=only_diffusion, file_diffusion=file_diffusion)
    if svc is not None:  # one model per session; the old one stays usable if the new one fails to load
        cb.unload_model(svc)
    names = cb.speakers(new)
    return new, gr.update(choices=names, value=names[0] if names else None), msg


@shown
def on_unload(svc):
    msg = cb.unload_model(svc)
    return None, gr.update(choices=[], value=None), msg


def _conversion(svc, audio, speaker, values: dict[str, Any], results_dir, progress, run: dict | None = None,
                f0_file=None) -> cb.Conversion:
    """``run``: the script's runtime keywords for :meth:`Svc.convert` (``on_slice_done``, ``workers``,
    ``set_threads``, ``slice_threads``; see :func:`build_app`)."""
    options, output_format = cb.settings_from_ui(values)
    curve = pt.read_curve(svc, f0_file)  # bad rows are named before converting
    progress(0, desc="Reading audio")
    return cb.convert_file(svc, audio, speaker, options, output_format=output_format, results_dir=results_dir,
                           on_start=lambda s: progress(0, desc=f"Converting {s:.1f} s of audio"),
                           f0_curve=curve, **(run or {}))


def _convert(svc, audio, speaker, values: dict[str, Any], results_dir, progress, run: dict | None = None):
    result = _conversion(svc, audio, speaker, values, results_dir, progress, run)
    return result.message, str(result.path), str(result.path)


def _convert_with_pitch(svc, audio, speaker, values: dict[str, Any], results_dir, progress, run: dict | None = None,
                        f0_file=None):
    """:func:`_convert` plus the pitch panel's outputs (plot, text, F0 CSV, suggested key; webui.pitch)."""
    result = _conversion(svc, audio, speaker, values, results_dir, progress, run, f0_file)
    panel = pt.pitch_panel(svc, result.f0, speaker, result.path)
    return (result.message, str(result.path), str(result.path), panel.image, panel.markdown,
            str(panel.csv_path) if panel.csv_path else None, panel.suggested)


def _mix_append(new_files, current):
    paths = list(current or []) + [f for f in (new_files or []) if f not in (current or [])]
    return paths


@shown
def on_mix_files_changed(paths, rates_text):
    return cb.mix_rates_text(paths, rates_text)


def _file(label: str, elem_id: str, **kwargs) -> gr.File:
    return gr.File(label=label, elem_id=elem_id, height=FILE_BOX_HEIGHT, **kwargs)


def _model_panel(trained_dir: Path) -> SimpleNamespace:
    """4.1's model settings: upload / local tabs, diffusion, cluster, device, enhancer, load / unload."""
    ui = SimpleNamespace()
    with gr.Row(variant="panel"):
        with gr.Column():
            gr.Markdown("**Model settings**")
            with gr.Tabs():
                with gr.Tab("Upload", id="upload") as ui.tab_upload:
                    with gr.Row():
                        ui.model_file = _file("Model (G_*.pth or .svc.safetensors)", "model_file")
                        ui.config_file = _file("Config (config.json; not needed for a .svc.safetensors model)",
                                               "config_file")
                with gr.Tab("Local", id="local") as ui.tab_local:
                    gr.Markdown(f"Put each model in its own folder under `{trained_dir}/` "
                                "(exactly one `.pth` and one `.json` per folder), or put `.svc.safetensors` "
                                "model files there.")
                    ui.local_refresh = gr.Button("Refresh local model list", elem_id="local_refresh")
                    choices = cb.scan_local_models(trained_dir)
                    ui.local_folder = gr.Dropdown(label="Model folder", choices=choices,
                                                  value=choices[0] if choices else None, interactive=True,
                                                  elem_id="local_folder")
            with gr.Row():
                ui.diff_model = _file("Diffusion model (model_*.pt, optional)", "diffusion_model")
                ui.diff_config = _file("Diffusion config (config.yaml)", "diffusion_config")
            ui.cluster_file = _file("Cluster model (kmeans_10000.pt) or feature index (feature_and_index.pkl), "
                                    "optional", "cluster_file")
            ui.device = gr.Dropdown(label="Device", choices=cb.device_choices(), value=cb.DEVICE_AUTO,
                                    info="Auto: a GPU if there is one, else the CPU", elem_id="device")
            ui.enhance = gr.Checkbox(label="NSF-HiFiGAN enhancer", value=False,
                                     info="can help models trained on little data; can hurt well-trained ones")
            ui.only_diffusion = gr.Checkbox(label="Diffusion only", value=False,
                                            info="no SoVITS model: the diffusion model converts alone")
            ui.file_diffusion = gr.Checkbox(label="Shallow diffusion with the model file's diffusion model",
                                            value=False, elem_id="file_diffusion",
                                            info="for a .svc.safetensors model that holds one (an uploaded "
                                                 "diffusion model takes its place)")
        with gr.Column():
            gr.Markdown("Choose the files on the left, then load the model.")
            ui.load_btn = gr.Button("Load model", variant="primary", elem_id="load_button")
            ui.unload_btn = gr.Button("Unload model", elem_id="unload_button")
            ui.speaker = gr.Dropdown(label="Speaker", choices=[], value=None, interactive=True, elem_id="speaker")
            ui.load_status = gr.Textbox(label="Model status", lines=6, interactive=False, elem_id="load_status")
    return ui


def _settings_panel() -> dict[str, gr.components.Component]:
    """One control per page setting (ConversionOptions fields + output format), in 4.1's two columns."""
    controls: dict[str, gr.components.Component] = {}
    with gr.Row(variant="panel"):
        for column in (cb.SETTINGS_LEFT, cb.SETTINGS_RIGHT):
            with gr.Column():
                if column is cb.SETTINGS_LEFT:
                    gr.Markdown("**Inference settings**")
                for name in column:
                    controls[name] = _setting_control(name)
    return controls


def _conversion_panel() -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Tabs():
        with gr.Tab("Audio to audio", id="audio"):
            ui.input_audio = gr.Audio(label="Input audio (wav, flac, ogg, mp3; mono or stereo)", type="filepath",
                                      sources=["upload", "microphone"], elem_id="input_audio")
            ui.convert_btn = gr.Button("Convert", variant="primary", elem_id="convert_button")
    with gr.Row():
        with gr.Column():
            ui.status = gr.Textbox(label="Output message", lines=3, interactive=False, elem_id="convert_status")
            ui.output_file = _file("Download", "output_file", interactive=False)
        with gr.Column():
            ui.output_audio = gr.Audio(label="Output audio", type="filepath", interactive=False,
                                       elem_id="output_audio")
    ui.result = _result_panel()
    ui.pitch = _pitch_panel()
    return ui


def _pitch_panel() -> SimpleNamespace:
    """F0 of the last conversion, key suggestion, F0 CSV download / upload (``webui.pitch``)."""
    ui = SimpleNamespace()
    with gr.Accordion("Pitch: f0 curve, suggested key, F0 file", open=True):
        ui.image = gr.Image(label="f0: source, used, speaker's range", type="numpy", interactive=False,
                            elem_id="pitch_plot")
        ui.text = gr.Markdown(elem_id="pitch_text")
        ui.suggested = gr.State(None)
        with gr.Row():
            ui.apply = gr.Button("Apply suggested key", elem_id="pitch_apply")
            ui.download = _file("F0 curve used (CSV)", "pitch_csv", interactive=False)
            ui.upload = _file("F0 file to use instead of predicting (CSV; not transposed again)", "pitch_upload",
                              file_types=[".csv"])
    return ui


def _result_panel() -> SimpleNamespace:
    """Scores and spectrogram of the last conversion (``webui.scores``)."""
    ui = SimpleNamespace()
    with gr.Accordion("Scores and spectrogram of the result", open=True):
        with gr.Row():
            ui.score = gr.Checkbox(label="Score the result", value=sc.SCORE_BY_DEFAULT, elem_id="score_result",
                                   info="pitch error, voicing and speaker similarity of the output (evaluate.py's "
                                        "metrics)")
            ui.refs = gr.Files(label=f"Target speaker's reference clips (optional; default: "
                                     f"{sc.DATASET_DIR}/<speaker>/)", elem_id="score_refs", height=FILE_BOX_HEIGHT)
        ui.panel = gr.Markdown(elem_id="score_panel")
        # no label: it would cover the figure's own "input" title
        ui.spectrogram = gr.Image(label="Spectrogram: input (top) and output", show_label=False, type="numpy",
                                  interactive=False, elem_id="spectrogram")
    return ui


def _score(svc, input_audio, output_audio, speaker, transpose, auto_predict_f0, score, refs, scorer, dataset_dir):
    """The result panel after a successful conversion → ``(score text, spectrogram image)``."""
    if not output_audio:
        return "", None
    options, _ = cb.settings_from_ui({"transpose": transpose, "auto_predict_f0": auto_predict_f0})
    panel = sc.result_panel(input_audio, output_audio, speaker=speaker, transpose=options.transpose,
                            auto_predict_f0=options.auto_predict_f0, score=bool(score), scorer=scorer,
                            uploads=refs or None, dataset_dir=dataset_dir, device=getattr(svc, "dev", None))
    return panel.markdown, panel.image


def _mixing_tab() -> SimpleNamespace:
    ui = SimpleNamespace()
    gr.Markdown(
        "Merge several models into one: every weight becomes a weighted sum of the models' weights. All models "
        "must come from the **same config** (same encoder, sizes and speaker count; multi-speaker tables are "
        "mixed speaker by speaker). Rates are in %. *Convex* passes the rates through a softmax of rate/100 "
        "(4.1's definition: equal rates average the models, 100/0 gives ≈73/27); *linear* uses rate/100 as "
        "given. Use any of the models' config.json with the result; cluster models no longer fit.")
    ui.files = gr.Files(label="Models to mix (G_*.pth or .svc.safetensors)", elem_id="mix_files")
    ui.upload = gr.UploadButton("Add more models", file_count="multiple", elem_id="mix_upload")
    ui.rates = gr.Textbox(label="Mixing rates (JSON: file name → rate in %)", lines=5, interactive=True,
                          elem_id="mix_rates")
    ui.mode = gr.Radio(label="Mixing mode", choices=[(label, key) for key, label in cb.MIX_MODE_LABELS.items()],
                       value="convex", elem_id="mix_mode")
    ui.button = gr.Button("Mix models", variant="primary", elem_id="mix_button")
    ui.status = gr.Textbox(label="Output message", interactive=False, elem_id="mix_status")
    ui.output = _file("Mixed model", "mix_output", interactive=False)
    return ui


def _compression_tab() -> SimpleNamespace:
    ui = SimpleNamespace()
    gr.Markdown(
        "Make a release model from a training checkpoint: drops the training-only posterior encoder and the "
        "optimiser state (about a third of the size), optionally as float16. Inference is unchanged, but "
        "**the result cannot be trained further**.")
    with gr.Row():
        ui.model = _file("Model (G_*.pth)", "compress_model")
        ui.config = _file("Its config.json", "compress_config")
    ui.half = gr.Checkbox(label="Store weights as float16 (half the size again)", value=False,
                          elem_id="compress_half")
    ui.button = gr.Button("Compress model", variant="primary", elem_id="compress_button")
    ui.status = gr.Textbox(label="Output message", interactive=False, elem_id="compress_status")
    ui.output = _file("Compressed model", "compress_output", interactive=False)
    return ui


def build_app(*, results_dir: str | os.PathLike = cb.RESULTS_DIR,
              trained_dir: str | os.PathLike = cb.TRAINED_DIR,
              on_slice_done: Callable[[], None] | None = None,
              dataset_dir: str | os.PathLike = sc.DATASET_DIR, slice_workers: int = 1,
              set_threads: Callable[[int], int] | None = None, slice_threads: int = 1) -> gr.Blocks:
    """The web UI as a ``gr.Blocks`` (not launched). Outputs go to ``results_dir``; local models
    are listed from ``trained_dir`` (both relative to the working directory by default, as 4.1).
    ``on_slice_done`` goes to every conversion (``webUI.py`` passes its runtime profile's hook), and
    so do the parallel-slice settings ``slice_workers`` / ``set_threads`` / ``slice_threads``
    (:meth:`Svc.convert`'s ``workers`` / ``set_threads`` / ``slice_threads``; 1 slice at a time by default).
    The result panel takes target-speaker clips from ``dataset_dir/<speaker>/`` (``webui.scores``)."""
    results_dir, trained_dir = Path(results_dir), Path(trained_dir)
    run = dict(on_slice_done=on_slice_done, workers=slice_workers, set_threads=set_threads, slice_threads=slice_threads)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=CACHE_CLEANUP) as app:
        svc_state = gr.State(None, delete_callback=_free)  # this session's model (an Svc) or None
        source_state = gr.State("upload")                  # which model tab is open: "upload" / "local"
        gr.Markdown(f"## {TITLE} — singing voice conversion")
        with gr.Tabs():
            with gr.Tab("Inference", id="inference"):
                model = _model_panel(trained_dir)
                controls = _settings_panel()
                conv = _conversion_panel()
            with gr.Tab("Tools", id="tools"):
                with gr.Tabs():
                    with gr.Tab("Static model mixing", id="mixing"):
                        mix = _mixing_tab()
                    with gr.Tab("Model compression", id="compression"):
                        comp = _compression_tab()

        # --- wiring -----------------------------------------------------------------------------
        model.tab_upload.select(lambda: "upload", None, source_state)
        model.tab_local.select(lambda: "local", None, source_state)
        model.local_refresh.click(functools.partial(on_refresh_local, trained_dir), None, model.local_folder)

        @shown
        def on_load(svc, source, model_f, config_f, local_f, diff_m, diff_c, cluster_f, dev, enh, only_diff, file_diff):
            return _load(svc, source, model_f, config_f, local_f, diff_m, diff_c, cluster_f, dev, enh, only_diff,
                         trained_dir, file_diffusion=file_diff)

        model.load_btn.click(on_load, [svc_state, source_state, model.model_file, model.config_file,
                                       model.local_folder, model.diff_model, model.diff_config, model.cluster_file,
                                       model.device, model.enhance, model.only_diffusion, model.file_diffusion],
                             [svc_state, model.speaker, model.load_status], concurrency_id=MODEL_QUEUE)
        model.unload_btn.click(on_unload, svc_state, [svc_state, model.speaker, model.load_status],
                               concurrency_id=MODEL_QUEUE)

        @shown
        def on_convert(data: dict, progress=gr.Progress(track_tqdm=True)):
            # Inputs come as a set, so Gradio passes {component: value}.
            values = {name: data[c] for name, c in controls.items()}
            return _convert_with_pitch(data[svc_state], data[conv.input_audio], data[model.speaker], values,
                                       results_dir, progress, run, data[conv.pitch.upload])

        converted = conv.convert_btn.click(on_convert, {svc_state, conv.input_audio, model.speaker, conv.pitch.upload,
                                                        *controls.values()},
                                           [conv.status, conv.output_audio, conv.output_file, conv.pitch.image,
                                            conv.pitch.text, conv.pitch.download, conv.pitch.suggested],
                                           concurrency_id=MODEL_QUEUE)
        conv.pitch.apply.click(shown(lambda k: (pt.apply_suggestion(k), False)), conv.pitch.suggested,
                               [controls["transpose"], controls["auto_key"]])
        scorer = sc.ConversionScorer()  # score models load on first use, once per page

        @shown
        def on_score(svc, audio_in, audio_out, speaker, transpose, auto_f0, score, refs):
            return _score(svc, audio_in, audio_out, speaker, transpose, auto_f0, score, refs, scorer, dataset_dir)

        converted.success(on_score, [svc_state, conv.input_audio, conv.output_audio, model.speaker,
                                     controls["transpose"], controls["auto_predict_f0"], conv.result.score,
                                     conv.result.refs],
                          [conv.result.panel, conv.result.spectrogram], concurrency_id=MODEL_QUEUE)

        mix.files.change(on_mix_files_changed, [mix.files, mix.rates], mix.rates)
        mix.upload.upload(shown(_mix_append), [mix.upload, mix.files], mix.files)

        @shown
        def on_mix(paths, rates_text, mode):
            out, msg = cb.mix_models(paths, rates_text, mode, results_dir=results_dir)
            return msg, str(out)

        mix.button.click(on_mix, [mix.files, mix.rates, mix.mode], [mix.status, mix.output])

        @shown
        def on_compress(model_f, config_f, half):
            out, msg = cb.compress(model_f, config_f, half, results_dir=results_dir)
            return msg, str(out)

        comp.button.click(on_compress, [comp.model, comp.config, comp.half], [comp.status, comp.output])
    return app


def _setting_control(name: str) -> gr.components.Component:
    """The control of one page setting, generated from its ConversionOptions metadata (label,
    help, bounds, choices) with the web UI's default value."""
    elem_id = f"setting_{name}"
    if name == "output_format":
        return gr.Radio(label=cb.label(name), choices=list(cb.OUTPUT_FORMATS), value=cb.DEFAULT_OUTPUT_FORMAT,
                        elem_id=elem_id)
    spec = ConversionOptions.spec(name)
    value = getattr(cb.web_defaults(), name)
    info = spec.help + (f" ({spec.unit})" if spec.unit and not spec.unit.startswith("ratio") else "")
    common = dict(label=spec.label, value=value, info=info, elem_id=elem_id)
    if spec.kind == "bool":
        return gr.Checkbox(**common)
    if spec.kind == "choice":
        return gr.Dropdown(choices=ConversionOptions.choices(name), **common)
    lo, hi = spec.minimum, spec.maximum
    if spec.optional:  # the browser sends an emptied box as 0, which means "not set" here
        lo, common["info"] = 0, info + "; empty or 0 = 4.1's"
    if spec.kind == "int" and lo is not None and hi is not None and hi - lo <= SLIDER_MAX_STEPS:
        return gr.Slider(minimum=lo, maximum=hi, step=1, **common)
    return gr.Number(minimum=lo, maximum=hi, **common)


def theme() -> gr.themes.Base:
    """4.1's green theme with local fonts only (the default theme fetches web fonts, which fails offline)."""
    return gr.themes.Base(primary_hue=gr.themes.colors.green,
                          font=["Source Sans Pro", "Arial", "ui-sans-serif", "sans-serif"],
                          font_mono=["JetBrains Mono", "Consolas", "Courier New", "monospace"])


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           results_dir: str | os.PathLike = cb.RESULTS_DIR) -> None:
    """Serve ``app`` (blocks until the server stops)."""
    results = Path(results_dir).resolve()
    results.mkdir(parents=True, exist_ok=True)
    # quiet: Gradio would also print "set share=True" although webUI.py has --share; say the
    # addresses ourselves instead.
    app.queue().launch(server_name=host, server_port=port, share=share, inbrowser=False, theme=theme(),
                       allowed_paths=[str(results)], footer_links=["gradio", "settings"], quiet=True,
                       prevent_thread_lock=True)
    log.info("* Running on local URL:  %s", str(app.local_url).rstrip("/"))
    if app.share_url:
        log.info("* Running on public URL: %s (temporary; anyone with the link can use this page)", app.share_url)
    app.block_thread()
