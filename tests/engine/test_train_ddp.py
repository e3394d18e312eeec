"""DDP: `torchrun --nproc_per_node=2 -m istd train ...` on the CPU with gloo."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from istd.engine.checkpoint import load_checkpoint
from istd.models import from_pretrained

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(nuaa_sirst: Path, tmp_path: Path) -> None:
    work = tmp_path / "ddp"
    sets = [
        f"data.root={nuaa_sirst}",
        "data.limit=6",  # 3 training images per rank
        "data.val_limit=2",
        "model.name=mim-istd-test",
        "augment.crop_size=32",
        "train.batch_size=2",
        "train.epochs=2",
        "train.threads=1",
    ]
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args += ["-m", "istd", "train", "mim-istd_nuaa-sirst", "--work-dir", str(work), "--quiet"]
    for item in sets:
        args += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Rank 0 alone printed and wrote: one summary line, one log row per epoch.
    assert done.stdout.count("done:") == 1, done.stdout
    rows = list(csv.DictReader((work / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    record = load_checkpoint(work / "last.ckpt")
    # 3 images per rank in batches of 2: 2 steps per epoch on each rank.
    assert record["epoch"] == 2 and record["step"] == 4
    assert all(torch.isfinite(v).all() for v in record["model"].values() if v.is_floating_point())
    assert from_pretrained(work / "best").config.norm_std[0] > 0
    assert not list(work.glob(".*"))
