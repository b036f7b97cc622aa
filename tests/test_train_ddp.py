"""train.py under torchrun: two CPU processes (gloo) train together on different halves of the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from modules.checkpoint import torch_load
from tests.train_helpers import REPO, make_dataset, write_config


def test_two_gloo_processes_split_the_data_and_train(tmp_path):
    make_dataset(tmp_path, clips_per_speaker=2)
    cfg = write_config(tmp_path, batch_size=1, eval_interval=100, log_interval=100)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.train_helpers", "-c", str(cfg), "-m", "ddp", "--max_steps", "2"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "each of the 2 processes trains on 2 of the 4 files per epoch" in proc.stderr

    # steps 0..2 with batch 1: each rank read 3 items; its 2-file share, then again from the start
    seen = [json.loads((tmp_path / f"indices_rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 3
    first_epoch = [s[:2] for s in seen]
    assert not set(first_epoch[0]) & set(first_epoch[1])  # 4.1 fed every rank every file
    assert sorted(first_epoch[0] + first_epoch[1]) == sorted((tmp_path / "filelists/train.txt").read_text().split())
    assert seen[0][2] == seen[0][0] and seen[1][2] == seen[1][0]

    # only rank 0 saved; the weights are the DDP-synchronised ones, without a "module." prefix
    model_dir = tmp_path / "logs/ddp"
    assert sorted(p.name for p in model_dir.glob("G_*.pth")) == ["G_0.pth", "G_2.pth"]
    g2 = torch_load(model_dir / "G_2.pth")
    assert not any(k.startswith("module.") for k in g2["model"])
    assert all(torch.isfinite(v).all() for v in g2["model"].values())
    assert {float(s["step"]) for s in g2["optimizer"]["state"].values()} == {3.0}
