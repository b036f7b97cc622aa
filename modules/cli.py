"""Helpers shared by the top-level scripts: logging set-up and user-error handling.

A script's ``main()`` is wrapped with :func:`run_main`; a :class:`modules.errors.SvcError`
becomes one ``error: ...`` line on stderr and exit status 2, Ctrl-C exit status 130.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable

from modules.errors import SvcError
from modules.logger import setup_logging

log = logging.getLogger(__name__)


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` and convert user errors into a clean non-zero exit code."""
    setup_logging()
    try:
        code = main(argv)
    except SvcError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
