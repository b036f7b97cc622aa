"""The web UI's pitch panel (issue 20): plain functions behind the "Pitch" accordion.

After a conversion the page shows the f0 the song had (source), the f0 the model got (used),
and the target speaker's 5-95 % range as a band, with the suggested key (and a button that
puts it into "Transpose"), and offers the used curve as an F0 CSV download. An uploaded F0
CSV (one written here or by ``inference_main.py --f0_out``, possibly edited) is used instead
of predicting. The curve format and the frame grid are :mod:`modules.f0_file` /
:mod:`inference.pitch`'s.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modules.errors import SvcError
from webui.scores import FIGURE_DPI, figure_to_image

log = logging.getLogger(__name__)

PITCH_FIGURE_SIZE = (9.0, 3.2)  # inches: one wide panel under the spectrogram
F0_SUFFIX = ".f0.csv"


@dataclass(frozen=True)
class PitchPanel:
    markdown: str                  # suggested key, range warning
    image: np.ndarray | None       # [H, W, 3] uint8 plot
    csv_path: Path | None          # the used curve as an F0 CSV
    suggested: int | None          # semitones, None without statistics


def read_curve(svc: Any, path: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray] | None:
    """An uploaded F0 CSV → ``(f0 [T] Hz, uv [T])`` at the loaded model's frame rate; None without upload.
    Bad rows raise naming the row and the rule (``modules.f0_file``)."""
    if not path:
        return None
    if svc is None or getattr(svc, "hop_size", None) is None:
        raise SvcError("no model is loaded: load one before using an F0 file")
    from modules.f0_file import read_f0_csv

    return read_f0_csv(path, hop_length=svc.hop_size, sampling_rate=svc.target_sample)


def pitch_figure(curve: Any, stats: Any = None, *, speaker: str = ""):
    """Source and used f0 (Hz, log scale) of a :class:`~inference.pitch.F0Curve` over song time,
    with the speaker's 5-95 % band and median when ``stats`` is given. A ``matplotlib.figure.Figure``
    (no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=PITCH_FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
    ax = fig.subplots()
    voiced = curve.voiced()
    order = np.argsort(curve.time_s, kind="stable")
    t = curve.time_s[order]
    for values, label, style in ((curve.source_f0, "source", dict(color="0.55", lw=1.0)),
                                 (curve.f0, f"used ({curve.transpose:+g} st)", dict(color="tab:green", lw=1.4))):
        y = np.where(voiced, values, np.nan)[order]  # gaps at unvoiced frames
        ax.plot(t, y, label=label, **style)
    if stats is not None:
        ax.axhspan(stats.p5_hz, stats.p95_hz, color="tab:blue", alpha=0.15,
                   label=f"{speaker or 'speaker'} 5-95 % ({stats.p5_hz:.0f}-{stats.p95_hz:.0f} Hz)")
        ax.axhline(stats.median_hz, color="tab:blue", lw=0.8, ls="--")
    if voiced.any():
        ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("f0 (Hz)")
    ax.set_xlim(0.0, max(float(t[-1]) if t.size else 0.0, 1e-3))
    ax.legend(loc="upper right", fontsize=8)
    return fig


def pitch_panel(svc: Any, curve: Any, speaker: str, output_path: str | os.PathLike | None) -> PitchPanel:
    """The panel after a conversion: plot, key suggestion, and the used curve written beside the
    output (``<output stem>.f0.csv``, a free name)."""
    if curve is None:
        return PitchPanel("", None, None, None)
    from inference.batch import unique_path
    from inference.pitch import key_report
    from modules.f0_file import write_f0_csv
    from modules.f0_stats import format_out_of_range

    stats = svc.speaker_f0_stats(speaker) if hasattr(svc, "speaker_f0_stats") else None
    suggested, lines = None, []
    if stats is not None:
        report = key_report(curve, stats, speaker)
        suggested = report.suggested
        lines.append(f"**Suggested key**: {report.suggested:+d} semitones (song median "
                     f"{report.source_median_hz or 0:.0f} Hz, {speaker}'s median {report.speaker_median_hz:.0f} Hz); "
                     f"used {curve.transpose:+g}.")
        warning = format_out_of_range(report.out_of_range, stats, speaker)
        if warning:
            lines.append(f"⚠ {warning}")
    else:
        lines.append(f"No f0 statistics for speaker {speaker!r} in this model, so no key suggestion "
                     "(preprocess_hubert_f0.py writes configs/f0_stats.json next to the config).")
    csv_path = None
    if output_path:
        out = Path(output_path)
        csv_path = unique_path(out.with_name(out.name[:-len(out.suffix)] + F0_SUFFIX if out.suffix else
                                             out.name + F0_SUFFIX))
        write_f0_csv(csv_path, curve.f0, curve.uv, hop_length=curve.hop_length, sampling_rate=curve.sampling_rate)
    image = figure_to_image(pitch_figure(curve, stats, speaker=speaker))
    return PitchPanel("\n\n".join(lines), image, csv_path, suggested)


def apply_suggestion(suggested: int | None) -> int:
    """The "Apply suggested key" button: the value for "Transpose"; without a suggestion, say why."""
    if suggested is None:
        raise SvcError("no key suggestion yet: convert once with a model that has f0 statistics for the speaker")
    return int(suggested)
