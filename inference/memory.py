"""Keep native memory bounded over a long song (each slice has another length).

Two native caches otherwise grow with the number of distinct slice lengths:

* oneDNN (PyTorch's CPU convolutions) caches its primitives, with their buffers, per input shape
  (up to 1024 primitives: several GB for the synthesizer's decoder);
* glibc's heap: freed activation buffers of tens of MB are kept and fragment, so the resident
  size ratchets up towards the sum of the largest slices seen, and a single slice can peak
  ~1 GB above its live data depending on how the heap happens to be laid out.

:func:`bound_native_memory` turns the first off (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``, read by
oneDNN when it creates its first primitive, so this must run before the first convolution; a
value already set in the environment is kept) and makes glibc map every buffer of 8 MiB or more
on its own, so it returns to the system as soon as it is freed. The converter also calls
:func:`release_free_memory` after every slice (``malloc_trim``). Measured on a 60 s song:
conversion peak 2.6 GB → 1.5 GB, the same 1.5 GB for 5 minutes (docs/benchmarks.md).

Fresh mappings cost page faults: ~12 % more CPU time with 4 KiB pages. glibc can ask for
transparent huge pages instead (tunable ``glibc.malloc.hugetlb=1``), which removes most of that
cost, but tunables are read only at process start: :func:`exec_with_huge_pages` re-executes the
running script once with the tunable set (``inference_main.py`` does; library users can set
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` themselves). Everything here is a no-op where it does
not apply (not Linux/glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import sys
from pathlib import Path

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 8 << 20   # bytes; glibc M_MMAP_THRESHOLD
_M_MMAP_THRESHOLD = -3     # glibc mallopt parameter number
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_done = False
_libc: ctypes.CDLL | None | bool = None


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (has ``malloc_trim``/``mallopt``), else None."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt"):
                    _libc = lib
            except OSError:  # no loadable C library (unusual embedding): nothing to tune
                pass
    return _libc or None


def bound_native_memory() -> None:
    """Apply the settings once per process (see module docstring)."""
    global _done
    if _done:
        return
    _done = True
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    libc = _glibc()
    if libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (between slices; a few ms)."""
    if not _done:  # only where the process asked for bounded memory
        return
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def huge_pages_on_request() -> bool:
    """True when the kernel gives transparent huge pages to regions that ask (``[madvise]``)."""
    try:
        return "[madvise]" in THP_SETTING.read_text()
    except OSError:
        return False


def exec_with_huge_pages() -> None:
    """Re-execute this Python process once with glibc's huge-page tunable (see module docstring).

    Call it first thing in a script's ``__main__`` block, before any work: the process image is
    replaced. Does nothing when the tunable is already set, when glibc or the kernel would not
    use it (THP ``always`` already covers every region, ``never`` none), or when
    ``SVC_NO_REEXEC`` is set.
    """
    current = os.environ.get("GLIBC_TUNABLES", "")
    if ("glibc.malloc.hugetlb" in current or os.environ.get("SVC_NO_REEXEC")
            or not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc"
            or not huge_pages_on_request()):
        return
    env = dict(os.environ, GLIBC_TUNABLES=f"{current}:{HUGE_PAGES_TUNABLE}" if current else HUGE_PAGES_TUNABLE)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError as e:  # keep going without huge pages (slower, same result)
        log.debug("re-exec with %s failed: %s", HUGE_PAGES_TUNABLE, e)
