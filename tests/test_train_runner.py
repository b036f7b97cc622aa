"""The shared pieces of training: device resolution, precision, typed configs, RNG state, start line."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch

from modules.config_types import DiffusionConfig, SovitsConfig
from modules.device import resolve_device
from modules.errors import ConfigError
from modules.hparams import HParams, get_hparams_from_file
from training import runner
from tests.train_helpers import REPO, one_thread, run_train, tiny_run, write_config  # noqa: F401


def test_one_device_resolver_with_one_error_text():
    assert resolve_device(None) == resolve_device("auto") == resolve_device("")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match=r"unknown device 'xla'; use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("xla")  # a real torch device type we do not support
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="'cuda:1' was requested but CUDA is not available"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(ConfigError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    # the five former copies now share it
    import inference.infer_tool
    import modules.F0Predictor.base
    import vencoder

    assert modules.F0Predictor.base.resolve_device is resolve_device and vencoder.resolve_device is resolve_device
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        inference.infer_tool._resolve_device("tpu")


def test_precision_auto_and_41_keys():
    cpu = torch.device("cpu")
    assert runner.resolve_precision("auto", cpu).name == "fp32"  # never float16, never on the CPU
    assert runner.resolve_precision("fp32", cpu).dtype is None
    with pytest.raises(ConfigError, match="precision 'fp8' unknown"):
        runner.resolve_precision("fp8", cpu)
    import training.loop as loop

    assert loop.resolve_precision(HParams(fp16_run=True, half_type="auto"), cpu).name == "fp32"
    assert loop.resolve_precision(HParams(fp16_run=False, half_type="bf16"), cpu).name == "fp32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_precision_auto_on_a_gpu():
    dev = torch.device("cuda", 0)
    p = runner.resolve_precision("auto", dev)
    assert p.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None) and not p.use_scaler
    assert runner.resolve_precision("fp16", dev).use_scaler


def test_typed_configs_are_built_once_and_reject_unknown_keys(tmp_path):
    hps = get_hparams_from_file(write_config(tmp_path, save_every_minutes=5))
    cfg = SovitsConfig.from_hparams(hps)
    assert cfg.train.batch_size == 4 and cfg.train.save_every_minutes == 5.0 and cfg.train.betas == (0.8, 0.99)
    assert cfg.segment_frames == 10 and cfg.spec_channels == 1025 and cfg.spk == {"spk0": 0, "spk1": 1}
    assert cfg.model_kwargs["n_speakers"] == 2 and cfg.train.precision == "fp32"
    data = hps.to_dict()
    data["train"]["batch_sise"] = 3
    with pytest.raises(ConfigError, match="unknown config key 'train.batch_sise' \\(did you mean 'train.batch_size'"):
        SovitsConfig.from_hparams(data)
    data["train"].pop("batch_sise")
    data["train"]["epochs"] = "many"
    with pytest.raises(ConfigError, match="'train.epochs' must be int, found 'many'"):
        SovitsConfig.from_hparams(data)
    diff = DiffusionConfig.from_hparams(get_hparams_from_file(REPO / "configs/diffusion_template.yaml"))
    assert diff.train.amp_dtype == "fp32" and diff.train.interval_val == 2000 and diff.expdir == "logs/44k/diffusion"


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    state = runner.capture_rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.save({"rng": state}, tmp_path / "x.pt")
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    runner.restore_rng_state(torch.load(tmp_path / "x.pt", weights_only=True)["rng"])
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_start_line_and_threads_flag(tiny_run, caplog):
    cfg = write_config(tiny_run, eval_interval=100)
    caplog.set_level(logging.INFO)
    before = torch.get_num_threads()
    try:
        assert run_train("-c", str(cfg), "-m", "44k", "--max_steps", "0", "--threads", "1") == 0
    finally:
        torch.set_num_threads(before)
    assert ("SoVITS training: device cpu (1 threads; a GPU is much faster), precision fp32, world size 1, "
            "batch 4 per process; starting fresh") in caplog.text
    # the first step is logged at once, whatever log_interval says (CPU runs are slow)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("step 0 (epoch 1): loss_disc"))
    assert "s/step, ETA 0:00:00" in line  # one step of one: nothing left
    assert run_train("-c", str(cfg), "-m", "44k", "--threads", "0") == 2
    json.loads(cfg.read_text())  # config untouched


class _FakeJob:
    """A TrainJob without a model: each step advances a fake clock by 40 s."""

    def __init__(self, clock: list[float]) -> None:
        self.progress = runner.Progress(step=0, epoch=1)
        self.progress.last_save_time = clock[0]
        self.runtime = runner.Runtime(torch.device("cpu"))
        self.clock, self.saved = clock, []

    def begin_epoch(self):
        return list(range(5))

    def train_step(self, batch):
        self.clock[0] += 40.0
        return runner.StepReport({"loss": 1.0})

    def after_step(self, report, batch_index, n_batches):
        pass

    def save(self):
        self.saved.append(self.progress.step)

    def rollback(self):
        return False

    def memory_advice(self, where):
        return where


def test_saves_by_minutes_and_at_the_end(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    job = _FakeJob(clock)
    plan = runner.RunPlan(last_epoch=1, save_every_minutes=1.0, total_steps=5)
    assert runner.run(job, plan) == 0
    # 40 s per step: 80 s after the start (step 1) and 80 s after that (step 3); then the last step
    assert job.saved == [1, 3, 4]
    assert job.progress.step == 5 and job.progress.epoch == 1
