"""Step 3 driver: every ``<in_dir>/<speaker>/*.wav`` → its artifacts, in parallel, resumable.

* Files are found like 4.1 (``<in_dir>/*/*.wav``, hidden files excluded) but sorted.
* ``num_processes`` = 1 runs in this process; more start spawned workers (0 = one per CPU, as
  4.1). Each worker builds one :class:`~preprocessing.features.FeatureExtractor`, so the speech
  encoder and the F0 predictor are loaded once per worker, not once per file. Files are handed
  out one at a time, so a slow long clip does not hold up a pre-assigned chunk.
* Worker k uses GPU k mod (number of GPUs) when CUDA is there and no explicit device was given.
* Artifacts that exist are skipped unless made by other models or settings (see
  :mod:`preprocessing.provenance`); leftovers of atomic writes from a killed run are removed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from preprocessing.features import ExtractSettings, FeatureExtractor, is_temporary_name
from preprocessing.report import DatasetError, FileOutcome, RunSummary

log = logging.getLogger(__name__)


def find_wavs(in_dir: str | os.PathLike) -> list[Path]:
    """``<in_dir>/*/*.wav`` (4.1's glob: lower-case suffix, hidden files excluded), sorted."""
    root = Path(in_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found (expected {root}/<speaker>/<file>.wav; set --in_dir)")
    return sorted(p for p in root.glob("*/*.wav") if not p.name.startswith(".") and not p.parent.name.startswith(".")
                  and p.is_file())


def remove_stale_temporaries(in_dir: str | os.PathLike) -> int:
    """Delete hidden temporaries that atomic writes of a killed run left behind; returns the count."""
    n = 0
    for p in Path(in_dir).glob("*/.*.tmp*"):
        if p.is_file() and is_temporary_name(p.name):
            p.unlink(missing_ok=True)
            n += 1
    if n:
        log.info("removed %d unfinished temporary file(s) left by an interrupted run", n)
    return n


def worker_device(requested: str | None, worker_index: int) -> str:
    """The device of worker ``worker_index``: the requested one, else GPU k mod n, else CPU."""
    import torch

    if requested not in (None, "cuda"):
        return requested
    if torch.cuda.is_available():
        return f"cuda:{worker_index % torch.cuda.device_count()}"
    return "cpu"


# --- worker process state ----------------------------------------------------------------------
_EXTRACTOR: FeatureExtractor | None = None


def _init_worker(settings: ExtractSettings, counter: Any, threads: int, log_level: int) -> None:
    global _EXTRACTOR
    import torch

    from modules.logger import setup_logging

    setup_logging(log_level)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    torch.set_num_threads(threads)
    _EXTRACTOR = FeatureExtractor(settings, device=worker_device(settings.device, index))


def _work(path: str) -> FileOutcome:
    assert _EXTRACTOR is not None
    return _EXTRACTOR.process(path)


def _timings() -> dict[str, float]:
    return dict(_EXTRACTOR.timings) if _EXTRACTOR is not None else {}


# --- the run ------------------------------------------------------------------------------------
def preprocess_dataset(
    in_dir: str | os.PathLike,
    settings: ExtractSettings,
    *,
    num_processes: int = 1,
    progress: bool = True,
    timings: dict[str, float] | None = None,
    force: bool = False,
    f0_stats_path: str | os.PathLike | None = None,
) -> RunSummary:
    """Write the missing or stale artifacts of every wav under ``in_dir``; returns the summary.

    Which models made each artifact is kept in ``<in_dir>/.svc_provenance.json``
    (:mod:`preprocessing.provenance`): artifacts made with other models or settings are recomputed,
    ``force`` recomputes everything. The weight files are checked before any file is looked at.
    ``timings`` (optional) receives the seconds spent per stage, summed over workers of the
    in-process run (spawned workers keep theirs). ``f0_stats_path``: afterwards, write the
    per-speaker f0 statistics of all f0 artifacts there (:mod:`preprocessing.f0_stats`).
    """
    from tqdm import tqdm

    from preprocessing.provenance import ProvenancePlan

    files = find_wavs(in_dir)
    if not files:
        raise DatasetError(f"{in_dir}: no .wav files found in {in_dir}/<speaker>/ (run resample.py first)")
    plan = ProvenancePlan.start(in_dir, settings, force=force)  # a missing weight file stops here
    remove_stale_temporaries(in_dir)
    for f in files:
        plan.prepare(f)
    plan.log_plan()
    n = num_processes if num_processes > 0 else (os.cpu_count() or 1)
    n = max(1, min(n, len(files)))
    log.info("preprocessing %d file(s): encoder %s, f0 %s%s, %d process(es)", len(files), settings.speech_encoder,
             settings.f0_predictor, ", diffusion features" if settings.use_diff else "", n)
    summary = RunSummary("preprocess_hubert_f0")
    bar = tqdm(total=len(files), desc="features", unit="file", disable=not progress)
    try:
        if n == 1:
            extractor = FeatureExtractor(settings, device=worker_device(settings.device, 0))
            for f in files:
                summary.add(extractor.process(f))
                plan.finished(f)
                bar.update()
            if timings is not None:
                timings.update(extractor.timings)
        else:
            _run_pool(files, settings, n, summary, bar, plan)
    finally:
        bar.close()
        plan.manifest.save()   # also after a crash: what was written so far is recorded
    if f0_stats_path is not None:
        from preprocessing.f0_stats import write_f0_stats

        write_f0_stats(files, f0_stats_path, hop_length=settings.hop_length, sampling_rate=settings.sampling_rate,
                       f0_predictor=settings.f0_predictor)
    return summary


def _run_pool(files: list[Path], settings: ExtractSettings, n: int, summary: RunSummary, bar: Any,
              plan: Any) -> None:
    ctx = multiprocessing.get_context("spawn")  # CUDA and torch threads do not survive fork
    counter = ctx.Value("i", 0)
    threads = max(1, (os.cpu_count() or 1) // n)  # n workers share the cores instead of oversubscribing
    level = logging.getLogger().getEffectiveLevel()
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker,
                             initargs=(settings, counter, threads, level)) as pool:
        futures = [pool.submit(_work, str(f)) for f in files]
        try:
            for fut in as_completed(futures):
                outcome = summary.add(fut.result())  # a ModelLoadError re-raises here and stops the run
                plan.finished(outcome.path)
                bar.update()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
