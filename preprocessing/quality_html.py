"""The quality report as one self-contained HTML page (plots inline as PNG, no external files).

Sections (element ids, which the browser test looks for): ``summary``, ``problems`` (one row per
problem: file, kind, value, threshold, what to do), ``speakers`` (per speaker: clips, total
minutes, F0 range, a clip-length and an F0 histogram), ``files`` (every measurement per file) and
``left-out`` (entries that are not audio).
"""

from __future__ import annotations

import base64
import html
import io
import os
from datetime import datetime, timezone

import numpy as np

from preprocessing.quality import F0_BINS, QualityReport, SpeakerStats

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0} tr.error td{background:#fde2e2} tr.warning td{background:#fff6d6}
.num{text-align:right;font-variant-numeric:tabular-nums} .ok{color:#1a7f37} .bad{color:#b42318}
.speaker{display:flex;gap:1em;flex-wrap:wrap;align-items:flex-start} img{border:1px solid #ddd}
"""


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure():
    from matplotlib.figure import Figure  # no pyplot: no global figure registry or backend switch

    return Figure(figsize=(4.2, 2.6), dpi=100, layout="constrained")


def _length_hist(s: SpeakerStats) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    top = max(20.0, max(s.lengths, default=0.0))
    ax.hist(s.lengths, bins=np.arange(0, top + 1, 1.0), color="#4c78a8")
    ax.set_xlabel("clip length (s)")
    ax.set_ylabel("clips")
    ax.set_title(f"{s.name}: clip lengths")
    return _png(fig)


def _f0_hist(s: SpeakerStats) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    ax.stairs(s.f0_hist / 50.0, F0_BINS, fill=True, color="#f58518")  # frames of 20 ms → seconds
    ax.set_xscale("log")
    ax.set_xticks([60, 100, 200, 400, 800], labels=["60", "100", "200", "400", "800"])
    ax.set_xlabel("F0 (Hz)")
    ax.set_ylabel("voiced seconds")
    ax.set_title(f"{s.name}: F0")
    return _png(fig)


def _fmt(v, spec: str = ".1f", unit: str = "") -> str:
    return "" if v is None else f"{v:{spec}}{unit}"


def render_html(report: QualityReport) -> str:
    """The whole page as a string."""
    e = html.escape
    errors, warnings = report.errors, report.warnings
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Dataset report: {e(report.root)}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>Dataset report: {e(report.root)}</h1>",
             "<section id='summary'><table>",
             f"<tr><th>files</th><td class='num'>{len(report.files)}</td></tr>",
             f"<tr><th>speakers</th><td class='num'>{len(report.speakers)}</td></tr>",
             f"<tr><th>total</th><td class='num'>{sum(s.seconds for s in report.speakers.values()) / 60:.1f} min</td></tr>",
             f"<tr><th>errors</th><td class='num {'bad' if errors else 'ok'}'>{len(errors)}</td></tr>",
             f"<tr><th>warnings</th><td class='num {'bad' if warnings else 'ok'}'>{len(warnings)}</td></tr>",
             f"<tr><th>written</th><td>{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}</td></tr></table></section>"]

    parts.append("<section id='problems'><h2>Problems</h2>")
    if report.problems:
        parts.append("<table><tr><th>file</th><th>problem</th><th>measured</th><th>threshold</th><th>what to do</th></tr>")
        for p in sorted(report.problems, key=lambda p: (not p.is_error, p.path)):
            parts.append(f"<tr class='{'error' if p.is_error else 'warning'}'><td>{e(p.path)}</td><td>{e(p.kind.value)}"
                         f"</td><td>{e(p.value)}</td><td>{e(p.threshold)}</td><td>{e(p.advice)}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p class='ok'>No problems found.</p>")
    parts.append("</section>")

    parts.append("<section id='speakers'><h2>Speakers</h2>")
    for s in report.speakers.values():
        f0 = f"{s.f0_low:.0f}-{s.f0_high:.0f} Hz" if s.f0_low else "no voiced frames"
        parts.append(f"<h3>{e(s.name)}</h3><div class='speaker'><table class='speaker-stats'>"
                     f"<tr><th>clips</th><td class='num'>{s.files}</td></tr>"
                     f"<tr><th>usable</th><td class='num'>{s.usable}</td></tr>"
                     f"<tr><th>total</th><td class='num'>{s.seconds / 60:.1f} min</td></tr>"
                     f"<tr><th>F0 (5-95 %)</th><td class='num'>{f0}</td></tr></table>"
                     f"<img alt='clip lengths of {e(s.name)}' class='plot-lengths' src='{_length_hist(s)}'>"
                     f"<img alt='F0 histogram of {e(s.name)}' class='plot-f0' src='{_f0_hist(s)}'></div>")
    parts.append("</section>")

    parts.append("<section id='files'><h2>Files</h2><table><tr><th>file</th><th>s</th><th>Hz</th><th>ch</th>"
                 "<th>peak dBFS</th><th>clipped %</th><th>DC</th><th>bandwidth kHz</th><th>made at kHz</th>"
                 "<th>silence %</th><th>SNR dB</th><th>voiced %</th><th>F0 Hz</th><th>problems</th></tr>")
    for f in report.files:
        pct = (lambda v: _fmt(None if v is None else 100 * v, ".1f"))
        f0 = f"{f.f0_low:.0f}-{f.f0_high:.0f}" if f.f0_low else ""
        kinds = ", ".join(p.kind.value for p in f.problems)
        cls = "error" if any(p.is_error for p in f.problems) else ("warning" if f.problems else "")
        parts.append(f"<tr class='{cls}'><td>{e(f.path)}</td><td class='num'>{f.seconds:.2f}</td>"
                     f"<td class='num'>{f.samplerate or ''}</td><td class='num'>{f.channels or ''}</td>"
                     f"<td class='num'>{_fmt(f.peak_db)}</td><td class='num'>{pct(f.clipped_share)}</td>"
                     f"<td class='num'>{_fmt(f.dc_offset, '+.3f')}</td>"
                     f"<td class='num'>{_fmt(None if f.bandwidth_hz is None else f.bandwidth_hz / 1000)}</td>"
                     f"<td class='num'>{_fmt(None if f.original_rate is None else f.original_rate / 1000, 'g')}</td>"
                     f"<td class='num'>{pct(f.silence_share)}</td><td class='num'>{_fmt(f.snr_db, '.0f')}</td>"
                     f"<td class='num'>{pct(f.voiced_share)}</td><td class='num'>{f0}</td><td>{e(kinds)}</td></tr>")
    parts.append("</table></section>")

    parts.append("<section id='left-out'><h2>Not audio (left out)</h2>")
    if report.left_out:
        parts.append("<table><tr><th>entry</th><th>why</th></tr>" + "".join(
            f"<tr><td>{e(o.path)}</td><td>{e(o.reason)}</td></tr>" for o in report.left_out) + "</table>")
    else:
        parts.append("<p>none</p>")
    parts.append("</section></body></html>")
    return "\n".join(parts)


def write_html(report: QualityReport, path: str | os.PathLike) -> None:
    """Write the page atomically (temp name, then rename)."""
    from modules.io_utils import atomic_write_text

    atomic_write_text(path, render_html(report))
