"""Process-wide tuning, applied only by scripts' ``main()`` (never by library code).

Everything here changes the whole process (environment, allocator, thread pools, even the
process image), so libraries never call it: ``inference_main.py``, ``webUI.py`` and ``gui.py``
call :func:`apply_inference_profile` once, first thing after parsing their flags, and hand the
returned :attr:`Profile.on_slice_done` to :meth:`inference.infer_tool.Svc.convert`.

Native memory over a long song (each slice has another length). Two native caches otherwise
grow with the number of distinct slice lengths:

* oneDNN (PyTorch's CPU convolutions) caches its primitives, with their buffers, per input shape
  (up to 1024 primitives: several GB for the synthesizer's decoder);
* glibc's heap: freed activation buffers of tens of MB are kept and fragment, so the resident
  size ratchets up towards the sum of the largest slices seen, and a single slice can peak
  ~1 GB above its live data depending on how the heap happens to be laid out.

:func:`bound_native_memory` turns the first off (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``, read by
oneDNN when it creates its first primitive, so this must run before the first convolution; a
value already set in the environment is kept) and makes glibc map every buffer of 8 MiB or more
on its own, so it returns to the system as soon as it is freed. :func:`release_free_memory`
(``malloc_trim``) is the per-slice hook. Measured on a 60 s song: conversion peak 2.6 GB →
1.5 GB, the same 1.5 GB for 5 minutes (docs/benchmarks.md).

Fresh mappings cost page faults: ~12 % more CPU time with 4 KiB pages. glibc can ask for
transparent huge pages instead (tunable ``glibc.malloc.hugetlb=1``), which removes most of that
cost, but tunables are read only at process start: :func:`exec_with_huge_pages` re-executes the
running script once with the tunable set (opt out with ``SVC_NO_REEXEC=1``; library users can
set ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` themselves).

Threads (issue 24): :func:`configure_threads` applies ``--threads N`` to PyTorch's intra- and
inter-op pools and, for interactive tools, defaults OpenMP to a passive wait policy: with the
default (spinning) policy, any other load on the machine makes each parallel region wait for
descheduled spinning threads, measured ~10x slower per realtime block on a loaded 2-core machine.

Everything here is a no-op where it does not apply (not Linux/glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from modules.errors import SvcError

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 8 << 20   # bytes; glibc M_MMAP_THRESHOLD
_M_MMAP_THRESHOLD = -3     # glibc mallopt parameter number
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
NO_REEXEC_ENV = "SVC_NO_REEXEC"
INTERACTIVE_WAIT_POLICY = "PASSIVE"
#: default cap on slices converted at once (each holds its activations: memory grows with it)
MAX_DEFAULT_SLICE_WORKERS = 4  # OpenMP threads sleep instead of spinning between parallel regions
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


# --- memory ---------------------------------------------------------------------------------------
def bound_native_memory(*, fixed_shapes: bool = False) -> None:
    """Apply the memory bounds once per process (see module docstring).

    ``fixed_shapes``: the process convolves the same shapes over and over (realtime blocks), so
    oneDNN's primitive cache is left on: it then holds one set of primitives, reused every block,
    instead of growing with slice lengths (measured: 0.5 s blocks 18 % (fp32) / 27 % (bf16) less
    CPU per block than re-creating them, peak memory within 2 %; docs/bench/speed.md)."""
    global _done
    if _done:
        return
    _done = True
    if not fixed_shapes:
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    libc = _glibc()
    if libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (a few ms; the per-slice hook)."""
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

    The process image is replaced (same interpreter, same command line), so call it before any
    work. Does nothing when the tunable is already set, when glibc or the kernel would not use
    it (THP ``always`` already covers every region, ``never`` none), or when ``SVC_NO_REEXEC``
    is set.
    """
    current = os.environ.get("GLIBC_TUNABLES", "")
    if ("glibc.malloc.hugetlb" in current or os.environ.get(NO_REEXEC_ENV)
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


# --- threads --------------------------------------------------------------------------------------
def configure_threads(threads: int | None, interactive: bool) -> None:
    """``--threads`` and the OpenMP wait policy.

    Args:
        threads: PyTorch intra-op threads (and at most as many inter-op threads); also exported
            as ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` for libraries started later. None keeps
            PyTorch's default (one per core).
        interactive: a tool that must respond while other programs run (web UI, realtime GUI,
            training): sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already chose a
            policy. It only takes effect if OpenMP has not started yet, so call this before the
            first torch operation (scripts call it right after parsing their flags).
    """
    if threads is not None and (isinstance(threads, bool) or int(threads) != threads or threads < 1):
        raise SvcError(f"--threads must be a whole number ≥ 1, got {threads!r}")
    if interactive and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = INTERACTIVE_WAIT_POLICY
        if "torch" in sys.modules:
            log.debug("OMP_WAIT_POLICY set after torch was imported; it applies if OpenMP has not started yet")
    if threads is None:
        return
    n = int(threads)
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # inter-op pool already started (an embedding process): keep it
        log.debug("inter-op threads already started; left at %d", torch.get_num_interop_threads())


# --- the profile ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """What :func:`apply_inference_profile` set up; ``on_slice_done`` goes to ``Svc.convert``."""

    threads: int | None
    interactive: bool
    bounded_memory: bool
    on_slice_done: Callable[[], None] | None
    #: voiced slices a conversion may run at once (``Svc.convert(workers=...)``), each with one
    #: intra-op thread; 1: one slice at a time on all threads
    slice_workers: int = 1
    #: intra-op threads each of those slices runs on (``Svc.convert(slice_threads=...)``)
    slice_threads: int = 1
    #: the hook ``Svc.convert(set_threads=...)`` uses to switch to ``slice_threads`` and back
    set_threads: Callable[[int], int] | None = None

    def decoder_mrf_chunk(self) -> str | int:
        """The decoder chunking for ``Svc(mrf_chunk=...)``: ``"auto"`` where it pays with the threads
        a slice runs on (one with parallel slices; measured 6 % faster there), else 0."""
        import torch

        from vdecoder.hifigan.models import chunking_pays

        threads = self.slice_threads if self.slice_workers > 1 else torch.get_num_threads()
        return "auto" if chunking_pays(threads, os.environ.get("OMP_WAIT_POLICY")) else 0


def set_intra_op_threads(n: int) -> int:
    """Set PyTorch's intra-op threads (process-wide) to ``n``; returns the previous number (the
    :attr:`Profile.set_threads` hook)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    return previous


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def apply_inference_profile(*, threads: int | None = None, interactive: bool = False, reexec: bool = True,
                            bound_memory: bool = True, slice_workers: int | None = 1,
                            fixed_shapes: bool = False) -> Profile:
    """The inference scripts' process set-up, in the order it must happen.

    1. re-exec with huge pages (``reexec``; only pass True when the process runs the script's
       own command line, i.e. ``main(argv=None)``, since the re-exec repeats ``sys.orig_argv``);
    2. threads and wait policy (:func:`configure_threads`);
    3. bounded native memory (``bound_memory``), whose per-slice heap release is returned as
       ``Profile.on_slice_done``; ``fixed_shapes`` (realtime: the same block shapes every time)
       keeps oneDNN's primitive cache (:func:`bound_native_memory`);
    4. parallel slices: ``slice_workers`` slices at once, each on ``threads // slice_workers``
       intra-op threads (None: one worker per thread the process may use, i.e. ``threads`` or the
       available cores, at most :data:`MAX_DEFAULT_SLICE_WORKERS`, since every worker holds a
       slice's activations). On two idle cores this converts a song ~20 % faster than one slice
       at a time on two threads (single threads waste no time at the barriers of each operation;
       docs/bench/speed.md).
    """
    if reexec:
        exec_with_huge_pages()
    configure_threads(threads, interactive)
    if bound_memory:
        bound_native_memory(fixed_shapes=fixed_shapes)
    cores = int(threads) if threads is not None else available_cores()
    if slice_workers is None:
        slice_workers = min(cores, MAX_DEFAULT_SLICE_WORKERS)
    if isinstance(slice_workers, bool) or int(slice_workers) != slice_workers or slice_workers < 1:
        raise SvcError(f"slice workers must be a whole number ≥ 1, got {slice_workers!r}")
    slice_workers = int(slice_workers)
    return Profile(threads=threads, interactive=interactive, bounded_memory=bound_memory,
                   on_slice_done=release_free_memory if bound_memory else None, slice_workers=slice_workers,
                   slice_threads=max(1, cores // slice_workers),
                   set_threads=set_intra_op_threads if slice_workers > 1 else None)


def add_threads_argument(parser) -> None:
    """The ``--threads N`` flag every script takes (issue 24)."""
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch (default: one per core); interactive tools also default "
                             "to OMP_WAIT_POLICY=PASSIVE so other load does not stall them")
