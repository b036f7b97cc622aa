"""Parallel slices (issue 25): ``Svc.convert(workers=N, set_threads=hook)`` converts voiced slices
on N threads with one intra-op thread each, and gives the audio of one slice at a time.

Every slice draws its prior noise and sine phases from its own generator (``modules.rng``),
seeded as 4.1 seeds the global one, so the thread that converted a slice does not matter. With
the same intra-op thread count (1 here) the two ways are equal up to the float rounding of the
last slice's decoder, which is split in one range per worker (rel L2 ≤ 1e-6).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from modules import rng


# --- modules.rng ------------------------------------------------------------------------------------
def test_own_generator_draws_what_the_seeded_global_generator_draws():
    t = torch.empty(2, 5, 300)
    torch.manual_seed(52468)
    ref = (torch.randn_like(t), torch.rand(3, 9), torch.randn_like(t.to(torch.bfloat16)))
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    with rng.own_generator():
        rng.manual_seed(52468)
        got = (rng.randn_like(t), rng.rand(3, 9), rng.randn_like(t.to(torch.bfloat16)))
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global generator was not used
    assert rng.current_generator() is None


def test_without_own_generator_the_global_generator_is_used_as_in_41():
    t = torch.empty(4, 100)
    rng.manual_seed(3)
    a = rng.randn_like(t)
    torch.manual_seed(3)
    assert torch.equal(a, torch.randn_like(t))
    assert not torch.equal(rng.randn_like(t), a)  # the stream moved on


def test_the_generator_is_per_thread():
    seen = {}

    def worker(name):
        with rng.own_generator(seed=1) as g:
            seen[name] = rng.current_generator() is g

    threads = [threading.Thread(target=worker, args=(n,)) for n in "ab"]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert seen == {"a": True, "b": True}
    assert rng.current_generator() is None


# --- Svc.convert(workers=...) --------------------------------------------------------------------
@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    from infer_helpers import models_in_use
    from inference.infer_tool import Svc

    with models_in_use(tmp_path_factory.mktemp("parallel")) as ms:
        yield Svc(ms.g, ms.config, device="cpu", cluster_model_path=None)


def song2() -> np.ndarray:
    """Two copies of infer_helpers.song (5.4 s + 1 s, 0.9 s gaps): two voiced slices (more with -cl)."""
    from infer_helpers import song

    y, _ = song()
    return np.concatenate([y, np.zeros(40000, np.float32), y[::-1].copy()])


class Hook:
    """A ``set_threads`` hook that records its calls (and really sets the threads)."""

    def __init__(self):
        self.calls = []

    def __call__(self, n: int) -> int:
        self.calls.append(n)
        previous = torch.get_num_threads()
        torch.set_num_threads(n)
        return previous


def threads_of_slices(monkeypatch, svc):
    from inference.infer_tool import Svc

    names = []
    real = Svc._infer_wav

    def recording(self, *a, **k):
        names.append(threading.current_thread().name)
        return real(self, *a, **k)

    monkeypatch.setattr(Svc, "_infer_wav", recording)
    return names


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("extra", [{}, {"clip_seconds": 1.5, "lg_num": 0.3, "lgr_num": 0.5}],
                         ids=["slices", "forced clips with crossfades"])
def test_parallel_slices_give_the_audio_of_one_at_a_time(svc, monkeypatch, extra):
    from inference.options import ConversionOptions

    torch.set_num_threads(1)
    y = song2()
    opts = ConversionOptions(**extra)
    names = threads_of_slices(monkeypatch, svc)
    from inference.infer_tool import Svc

    split_calls = []
    real_split = Svc._decode_in_parts
    monkeypatch.setattr(Svc, "_decode_in_parts",
                        staticmethod(lambda *a: split_calls.append(a[-1]) or real_split(*a)))
    ref = svc.convert(y, 44100, "bob", opts, progress=False)
    assert set(names) == {"MainThread"} and len(names) >= 2
    names.clear()
    hook = Hook()
    torch.set_num_threads(2)
    out = svc.convert(y, 44100, "bob", opts, progress=False, workers=2, set_threads=hook)
    assert torch.get_num_threads() == 2 and hook.calls == [1, 2]  # one thread per slice, then restored
    assert len({n for n in names if n.startswith("svc-slice")}) == 2  # both workers converted slices
    assert split_calls == [2]  # the last slice's decoder, in one range per worker
    assert rel_l2(out, ref) <= 1e-6
    # the random draws matter: another seed is other audio, so equality above is not trivial
    other = svc.convert(y, 44100, "bob", opts.replace(seed=1), progress=False, workers=2, set_threads=Hook())
    assert not np.allclose(other, ref)


def test_no_hook_or_speaker_mixing_means_one_slice_at_a_time(svc, monkeypatch):
    from inference.options import ConversionOptions

    names = threads_of_slices(monkeypatch, svc)
    svc.convert(song2(), 44100, "bob", ConversionOptions(), progress=False, workers=2)  # no set_threads
    assert set(names) == {"MainThread"}
    assert svc.parallel_slices_possible(ConversionOptions())
    assert not svc.parallel_slices_possible(ConversionOptions(use_spk_mix=True))


def test_a_failing_slice_stops_the_conversion_and_restores_the_threads(svc, monkeypatch):
    from inference.infer_tool import Svc
    from inference.options import ConversionOptions

    real, count = Svc._infer_wav, []

    def failing(self, *a, **k):
        count.append(1)
        if len(count) == 2:
            raise RuntimeError("slice failed")
        return real(self, *a, **k)

    monkeypatch.setattr(Svc, "_infer_wav", failing)
    torch.set_num_threads(2)
    hook = Hook()
    with pytest.raises(RuntimeError, match="slice failed"):
        svc.convert(song2(), 44100, "bob", ConversionOptions(), progress=False, workers=2, set_threads=hook)
    assert hook.calls == [1, 2] and torch.get_num_threads() == 2
    torch.set_num_threads(1)


def test_each_parallel_slice_gets_the_profiles_share_of_threads(svc):
    from inference.options import ConversionOptions

    torch.set_num_threads(1)
    hook = Hook()
    svc.convert(song2(), 44100, "bob", ConversionOptions(), progress=False, workers=2, set_threads=hook,
                slice_threads=2)
    assert hook.calls == [2, 1] and torch.get_num_threads() == 1


def test_profile_gives_workers_and_the_thread_hook():
    from modules import runtime
    from modules.errors import SvcError

    previous = torch.get_num_threads()
    try:
        p = runtime.apply_inference_profile(threads=2, reexec=False, bound_memory=False, slice_workers=None)
        assert p.slice_workers == 2 and p.slice_threads == 1 and p.set_threads is runtime.set_intra_op_threads
        assert p.decoder_mrf_chunk() == "auto"  # one intra-op thread per slice: chunking pays
        # many cores: at most MAX_DEFAULT_SLICE_WORKERS slices at once (memory), the threads shared
        big = runtime.apply_inference_profile(threads=10, reexec=False, bound_memory=False, slice_workers=None)
        assert (big.slice_workers, big.slice_threads) == (runtime.MAX_DEFAULT_SLICE_WORKERS, 10 // 4)
        q = runtime.apply_inference_profile(threads=2, reexec=False, bound_memory=False, slice_workers=1)
        assert q.slice_workers == 1 and q.set_threads is None
        with pytest.raises(SvcError, match="slice workers"):
            runtime.apply_inference_profile(threads=2, reexec=False, bound_memory=False, slice_workers=0)
        assert runtime.set_intra_op_threads(1) == 2 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)


def test_decoding_in_parts_equals_one_decode_and_never_waits_for_a_queued_part():
    """Parts not yet started are taken back and decoded by the caller (a pool whose only worker
    is busy must not block it); parts give one decode's samples with the same random draws."""
    from concurrent.futures import ThreadPoolExecutor

    from inference.infer_tool import Svc
    from synth_helpers import build_mini

    net = build_mini().for_inference()
    T = 120
    g = torch.Generator().manual_seed(5)
    z = torch.randn(1, net.dec.h["inter_channels"], T, generator=g)
    f0 = 150 + 80 * torch.rand(1, T, generator=g)
    spk = torch.randn(1, net.dec.h["gin_channels"], 1, generator=g)
    with rng.own_generator(seed=11):
        ref = net.decode_range(z, f0, spk, 10, 110)
    busy = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        blocker = pool.submit(busy.wait, 30)  # the only worker is busy until the parts are done
        with rng.own_generator(seed=11), torch.inference_mode():
            out = Svc._decode_in_parts(net, z, f0, spk, (10, 110), pool, 3)
        busy.set()
        blocker.result()
    hop = net.dec.upp
    kept = slice(10 * hop, 110 * hop)
    assert rel_l2(out[..., kept], ref[..., kept]) <= 1e-6
    with rng.own_generator(seed=12):  # another phase draw: other samples, so the test can fail
        other = net.decode_range(z, f0, spk, 10, 110)
    assert rel_l2(other[..., kept], ref[..., kept]) > 1e-3


def test_prepare_makes_what_the_options_need_before_the_first_conversion(svc):
    from inference.options import ConversionOptions

    opts = ConversionOptions(precision="bf16")
    svc.prepare(opts)
    net, enc = svc._models_by_precision["bf16"], svc._encoders_by_precision["bf16"]
    assert net.precision == "bf16"
    svc.convert(song2()[:44100 * 2], 44100, "bob", opts, progress=False)
    assert svc._models_by_precision["bf16"] is net and svc._encoders_by_precision["bf16"] is enc  # not made again


def test_prepare_leaves_the_f0_predictor_alone_when_curves_are_given(svc):
    """With F0 files (--f0_file) no predictor is needed, so missing predictor weights are no error."""
    from inference.options import ConversionOptions
    from modules.errors import SvcError

    opts = ConversionOptions(f0_predictor="rmvpe")  # no rmvpe.pt in the tiny model set
    with pytest.raises(SvcError, match="rmvpe"):
        svc.prepare(opts)
    svc.prepare(opts, f0=False)
