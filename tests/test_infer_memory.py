"""modules.runtime: the process-wide profile (memory bounds, huge-page re-exec, threads) that only
scripts apply, and the rule that library code never applies it."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc heap tuning is Linux-only")

# Fragment the heap: 1500 blocks of 96 KiB (below glibc's mmap threshold, so they come from the
# heap), each followed by a small block that stays allocated, so freeing the big ones leaves holes
# that the automatic top trimming cannot return. Prints resident MB after freeing, and after
# release_free_memory().
SCRIPT = textwrap.dedent("""
    import ctypes, ctypes.util, sys
    sys.path.insert(0, {root!r})
    from modules import runtime as memory
    if {bound}:
        memory.bound_native_memory()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    big, small = [], []
    for _ in range(1500):
        p = libc.malloc(96 << 10)
        ctypes.memset(p, 1, 96 << 10)
        big.append(p)
        small.append(libc.malloc(64))
    for p in big:
        libc.free(p)
    before = rss()
    memory.release_free_memory()
    print(before, rss())
""")


def _run(bound: bool) -> tuple[float, float]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT), bound=bound)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, after = map(float, proc.stdout.split())
    return before, after


def test_release_returns_freed_heap_pages():
    before, after = _run(bound=True)
    assert before - after > 100, f"RSS {before:.0f} MB → {after:.0f} MB: ~140 MB of freed blocks not returned"


def test_release_is_a_no_op_unless_bounds_were_asked_for():
    before, after = _run(bound=False)
    assert abs(before - after) < 20


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    import os

    full = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SVC_NO_REEXEC",
                                                               "ONEDNN_PRIMITIVE_CACHE_CAPACITY")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); " + code],
                          capture_output=True, text=True, timeout=60, env=full)


def test_bound_native_memory_caps_the_onednn_cache_and_keeps_a_user_value():
    code = ("import os; from modules import runtime as memory; memory.bound_native_memory(); "
            "print(os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'))")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    out = _python(code, ONEDNN_PRIMITIVE_CACHE_CAPACITY="16")
    assert out.stdout.strip() == "16"


def test_fixed_shapes_keep_the_onednn_cache_but_bound_the_heap():
    # realtime (gui.py): the same block shapes every time, so oneDNN's cache is reused, not grown
    code = ("import os; from modules import runtime; p = runtime.apply_inference_profile(reexec=False, "
            "interactive=True, fixed_shapes=True); "
            "print(os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'), p.on_slice_done is runtime.release_free_memory)")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "True"]


def test_gui_keeps_the_primitive_cache_and_the_offline_scripts_do_not():
    import ast

    def keywords(script):
        tree = ast.parse((ROOT / f"{script}.py").read_text(encoding="utf-8"))
        call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                    and getattr(n.func, "id", "") == "apply_inference_profile")
        return {k.arg: getattr(k.value, "value", None) for k in call.keywords}

    assert keywords("gui")["fixed_shapes"] is True
    for script in ("inference_main", "webUI"):
        assert "fixed_shapes" not in keywords(script)


# Prints the tunables seen by the process after the (possible) re-exec, and the argument list.
REEXEC = ("import os; from modules import runtime as memory; print('start', flush=True); memory.exec_with_huge_pages(); "
          "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")


def test_exec_with_huge_pages_reexecutes_once_with_the_tunable():
    from modules.runtime import huge_pages_on_request

    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); " + REEXEC,
                          "x", "--flag"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in __import__("os").environ.items()
                              if k not in ("GLIBC_TUNABLES", "SVC_NO_REEXEC")})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    if huge_pages_on_request():
        assert lines == ["start", "start", "glibc.malloc.hugetlb=1 ['x', '--flag']"]
    else:  # the kernel would not use it: no re-exec
        assert lines == ["start", "None ['x', '--flag']"]


def test_exec_with_huge_pages_keeps_other_tunables_and_can_be_disabled():
    out = _python(REEXEC, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
    assert out.stdout.splitlines() == ["start", "glibc.malloc.hugetlb=0 []"]  # already chosen: kept
    out = _python(REEXEC, SVC_NO_REEXEC="1")
    assert out.stdout.splitlines() == ["start", "None []"]


# --- threads and the OpenMP wait policy ---------------------------------------------------------
THREADS = ("import os, torch; from modules import runtime; runtime.configure_threads({threads}, {interactive}); "
           "print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads(), os.environ.get('OMP_NUM_THREADS'), sep='|')")


def test_configure_threads_sets_pools_and_interactive_wait_policy():
    out = _python(THREADS.format(threads=1, interactive=True), OMP_WAIT_POLICY="")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split("|") == ["", "1", "1"]  # a policy already chosen (even empty) is kept
    env_less = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                          + THREADS.format(threads=2, interactive=True)], capture_output=True, text=True,
                         timeout=60, env=env_less)
    assert out.stdout.strip().split("|") == ["PASSIVE", "2", "2"], out.stderr
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                          + THREADS.format(threads=None, interactive=False)], capture_output=True, text=True,
                         timeout=60, env=env_less)
    policy, _, omp = out.stdout.strip().split("|")
    assert policy == "None" and omp == "None", out.stderr


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_configure_threads_rejects_bad_counts(bad):
    from modules.errors import SvcError
    from modules.runtime import configure_threads

    with pytest.raises(SvcError, match="--threads"):
        configure_threads(bad, False)


def test_profile_returns_the_heap_release_as_slice_hook():
    code = ("from modules import runtime; p = runtime.apply_inference_profile(reexec=False); "
            "print(p.on_slice_done is runtime.release_free_memory, p.bounded_memory); "
            "q = runtime.apply_inference_profile(reexec=False, bound_memory=False); print(q.on_slice_done)")
    out = _python(code)
    assert out.stdout.split() == ["True", "True", "None"], out.stderr


def test_library_code_never_applies_the_runtime_profile():
    """Only top-level scripts (and benchmarks) may import modules.runtime or call malloc_trim."""
    import ast

    offenders = []
    for path in ROOT.glob("*/**/*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "bench", ".venv", "scripts") or rel == Path("modules/runtime.py"):
            continue
        if rel == Path("cluster/train_cluster.py"):
            continue  # a script (4.1 keeps it in cluster/), so its main() may apply the profile
        text = path.read_text(encoding="utf-8")
        if "malloc_trim" in text or "mallopt" in text:
            offenders.append(f"{rel}: malloc tuning")
        for node in ast.walk(ast.parse(text)):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.startswith("modules.runtime") for n in names):
                offenders.append(f"{rel}: imports modules.runtime")
    assert not offenders, offenders


@pytest.mark.parametrize("script", ["inference_main", "webUI", "gui"])
def test_scripts_take_threads_and_apply_the_profile_in_main(script):
    import ast
    import importlib

    sys.path.insert(0, str(ROOT))
    mod = importlib.import_module(script)
    assert mod.build_parser().parse_args(["--threads", "3"]).threads == 3
    tree = ast.parse((ROOT / f"{script}.py").read_text(encoding="utf-8"))
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = {n.func.id for n in ast.walk(main) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "apply_inference_profile" in calls
    interactive = next(k.value.value for n in ast.walk(main) if isinstance(n, ast.Call)
                       and getattr(n.func, "id", "") == "apply_inference_profile"
                       for k in n.keywords if k.arg == "interactive")
    assert interactive is (script != "inference_main")  # web UI and realtime GUI are interactive
