"""The one place that configures :mod:`logging` for scripts."""

from __future__ import annotations

import logging
import os
import sys

class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at emit time.

    Binding the stream once breaks when stderr is replaced later (test capture, GUIs that
    redirect it): records would go to a closed stream and print "--- Logging error ---".
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_configured = False


def setup_logging(level: int | str | None = None, log_file: str | os.PathLike | None = None) -> None:
    """Configure the root logger once: stderr handler, optional file handler.

    ``level`` defaults to the ``SVC_LOG_LEVEL`` environment variable, else INFO. Calling again
    only adds a file handler (training adds ``logs/<model>/train.log`` after start-up).
    """
    global _configured
    root = logging.getLogger()
    if level is None:
        level = os.environ.get("SVC_LOG_LEVEL", "INFO")
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    if not _configured:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        # Third-party libraries are chatty at INFO (numba, matplotlib, httpx...).
        for noisy in ("numba", "matplotlib", "httpx", "urllib3", "PIL", "h5py", "jax"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        _configured = True
    root.setLevel(level)
    if log_file is not None:
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(fh)
