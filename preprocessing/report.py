"""Per-file outcomes and the end-of-run summary of the preprocessing scripts.

Every file a stage looks at ends as exactly one :class:`FileOutcome`:

* ``done``    — processed, output written;
* ``skipped`` — nothing to do (outputs already exist, i.e. a resumed run) or deliberately left
  out (not audio, too short for the file list, ...); the reason says which;
* ``failed``  — an input that should have been processed but could not be (corrupt, truncated,
  silent, wrong rate ...); the reason says why and how to fix it.

A script exits with status 1 when anything failed, so a shell loop or CI notices.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Literal

from modules.errors import SvcError

Status = Literal["done", "skipped", "failed"]

EXIT_OK = 0
EXIT_SOME_FAILED = 1


class DatasetError(SvcError):
    """The dataset as a whole cannot be used (no files, too few clips for a validation split ...)."""


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one input file."""

    path: str
    status: Status
    reason: str = ""


@dataclass
class RunSummary:
    """Collects :class:`FileOutcome` s of one stage and reports them at the end."""

    stage: str
    outcomes: list[FileOutcome] = field(default_factory=list)

    def add(self, outcome: FileOutcome) -> FileOutcome:
        self.outcomes.append(outcome)
        return outcome

    def extend(self, outcomes: Iterable[FileOutcome]) -> None:
        self.outcomes.extend(outcomes)

    def _with(self, status: Status) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def done(self) -> list[FileOutcome]:
        return self._with("done")

    @property
    def skipped(self) -> list[FileOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[FileOutcome]:
        return self._with("failed")

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    def counts(self) -> dict[str, int]:
        c = Counter(o.status for o in self.outcomes)
        return {s: c.get(s, 0) for s in ("done", "skipped", "failed")}

    def log(self, logger: logging.Logger, *, max_skipped_listed: int = 50,
            rerun_hint: str = "finished files are kept and skipped on the next run") -> None:
        """Log one summary line, then every failure (and the skips, grouped by reason)."""
        n = self.counts()
        logger.info("%s: %d done, %d skipped, %d failed", self.stage, n["done"], n["skipped"], n["failed"])
        by_reason: dict[str, list[str]] = {}
        for o in self.skipped:
            by_reason.setdefault(o.reason, []).append(o.path)
        for reason, paths in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(paths[:max_skipped_listed])
            more = f" (+{len(paths) - max_skipped_listed} more)" if len(paths) > max_skipped_listed else ""
            logger.info("  skipped %d (%s): %s%s", len(paths), reason, shown, more)
        for o in self.failed:
            logger.error("  FAILED %s: %s", o.path, o.reason)
        if self.failed:
            logger.error("%s: %d file(s) failed; fix or remove them and run again (%s)",
                         self.stage, len(self.failed), rerun_hint)
