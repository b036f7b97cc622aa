"""``evaluate.py``'s job: score converted files against their sources (and target references).

Input is one pair (``--source`` / ``--converted``) or a list file of pairs; output a report
dict (written as JSON on request) and a Markdown table. See :mod:`evaluation.metrics` for the
metrics, :mod:`evaluation.analysis` for how each file is analysed.

List file format (UTF-8, one pair per line; blank lines and lines starting with ``#`` skipped)::

    source.wav|converted.wav            # transposition: --transpose
    source.wav|converted_up2.wav|2      # this pair was converted with -t 2

Relative paths in a list file are relative to the folder holding the list file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from evaluation.metrics import METRIC_KEYS, mean_metrics
from modules.audio import AUDIO_EXTENSIONS
from modules.errors import AudioError, SvcError
from modules.io_utils import atomic_write_text

log = logging.getLogger(__name__)

REPORT_VERSION = 1


@dataclass(frozen=True)
class EvalPair:
    source: Path
    converted: Path
    transpose: float = 0.0   # semitones the conversion shifted the pitch by


@dataclass(frozen=True)
class EvalOptions:
    """One evaluation job (built by ``evaluate.py`` from its flags)."""

    pairs: tuple[EvalPair, ...]
    target_refs: tuple[Path, ...] = ()       # audio files of the target speaker (dirs already expanded)
    f0_predictor: str = "fcpe"
    device: str | None = None
    speaker_weights: Path | None = None      # Resemblyzer pretrained.pt; None: the wheel's
    json_path: Path | None = None


def read_pair_list(path: str | os.PathLike, transpose: float = 0.0) -> list[EvalPair]:
    """Parse a list file (format in the module docstring). Raises :class:`SvcError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise SvcError(f"{path}: list file not found")
    base = path.parent
    pairs = []
    for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise SvcError(f"{path}:{no}: expected 'source|converted' or 'source|converted|transpose', got {raw!r}")
        t = transpose
        if len(parts) == 3:
            try:
                t = float(parts[2])
            except ValueError:
                raise SvcError(f"{path}:{no}: transpose must be a number of semitones, got {parts[2]!r}") from None
        pairs.append(EvalPair(base / parts[0], base / parts[1], t))
    if not pairs:
        raise SvcError(f"{path}: list file holds no pairs (format: 'source|converted[|transpose]' per line)")
    return pairs


def expand_refs(items: Sequence[str | os.PathLike]) -> list[Path]:
    """Files and folders → the audio files (folders: their audio files, sorted, not recursive)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise SvcError(f"{p}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this target-reference folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise SvcError(f"{p}: target reference not found (give audio files or a folder of the target "
                           "speaker's clips with --target_refs)")
    return out


def validate(options: EvalOptions) -> None:
    """Check every named file exists before any model loads; raise :class:`SvcError` naming the first missing one."""
    if not options.pairs:
        raise SvcError("nothing to evaluate: give --source and --converted, or --list")
    for pair in options.pairs:
        for role, p in (("source", pair.source), ("converted", pair.converted)):
            if not p.is_file():
                raise AudioError(f"{p}: {role} file not found")
    for p in options.target_refs:
        if not p.is_file():
            raise AudioError(f"{p}: target reference not found")
    from evaluation.speaker import resolve_weights
    from modules.F0Predictor import list_f0_predictors

    if options.f0_predictor not in list_f0_predictors():
        raise SvcError(f"unknown f0 predictor '{options.f0_predictor}'; choose one of: {', '.join(list_f0_predictors())}")
    resolve_weights(options.speaker_weights)   # a missing encoder file is reported before any model loads


def evaluate(options: EvalOptions) -> dict[str, Any]:
    """Score every pair; write ``options.json_path`` if set; return the report.

    Report: ``{"version", "f0_predictor", "target_refs", "pairs": [{"source", "converted",
    "transpose", <metrics>}], <metrics>}``; the top-level metrics are the means over the pairs
    (a pair's own values when there is one). Metric keys: ``evaluation.metrics.METRIC_KEYS``;
    a value is ``null`` when undefined (e.g. ``spk_sim_target`` without ``target_refs``).
    """
    from tqdm import tqdm

    from evaluation.analysis import Analyzer, check_audible, compare, load_for_analysis

    validate(options)
    analyzer = Analyzer(f0_predictor=options.f0_predictor, device=options.device,
                        speaker_weights=options.speaker_weights)
    target = None
    if options.target_refs:
        refs = []
        for p in options.target_refs:
            wav = load_for_analysis(p)
            check_audible(wav, f"{p} (target reference)")
            refs.append(wav)
        target = analyzer.embed_many(refs)
    sources: dict[Path, Any] = {}
    rows = []
    for pair in tqdm(options.pairs, desc="evaluate", unit="pair", disable=len(options.pairs) < 2):
        if pair.source not in sources:
            sources[pair.source] = analyzer.analyze(load_for_analysis(pair.source), what=f"{pair.source} (source)")
        conv = analyzer.analyze(load_for_analysis(pair.converted), what=f"{pair.converted} (converted)")
        scores = compare(sources[pair.source], conv, transpose=pair.transpose, target_embedding=target)
        if scores["f0_rmse_cents"] is None:
            log.warning("%s: no frame is voiced in both files; pitch metrics are undefined", pair.converted)
        rows.append({"source": str(pair.source), "converted": str(pair.converted), "transpose": pair.transpose,
                     **scores})
    report: dict[str, Any] = {"version": REPORT_VERSION, "f0_predictor": options.f0_predictor,
                              "target_refs": [str(p) for p in options.target_refs], "pairs": rows,
                              **mean_metrics(rows)}
    if options.json_path is not None:
        if options.json_path.exists():
            log.warning("overwriting %s", options.json_path)
        atomic_write_text(options.json_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


_COLUMNS = (("f0_rmse_cents", "F0 RMSE (cents)", "{:.1f}"), ("f0_corr", "F0 corr", "{:.3f}"),
            ("vuv_f1", "V/UV F1", "{:.3f}"), ("loudness_corr", "loudness corr", "{:.3f}"),
            ("spk_sim_target", "sim → target", "{:.3f}"), ("spk_sim_source", "sim → source", "{:.3f}"),
            ("duration_ratio", "duration ratio", "{:.3f}"))
assert tuple(k for k, _, _ in _COLUMNS) == METRIC_KEYS


def markdown_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one row per pair, plus a mean row when there are several."""
    def cells(row: dict) -> list[str]:
        return ["–" if row.get(k) is None else fmt.format(row[k]) for k, _, fmt in _COLUMNS]

    lines = ["| converted | t | " + " | ".join(h for _, h, _ in _COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(_COLUMNS)]
    for row in report["pairs"]:
        name = Path(row["converted"]).name.replace("|", "\\|")
        lines.append(f"| {name} | {row['transpose']:g} | " + " | ".join(cells(row)) + " |")
    if len(report["pairs"]) > 1:
        lines.append("| **mean** | | " + " | ".join(cells(report)) + " |")
    return "\n".join(lines)
