"""Atomic files, RNG capture/restore and the safetensors + JSON resume record."""

from __future__ import annotations

import datetime
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from istd._atomic import recover_dir, replace_dir_atomic
from istd.engine.checkpoint import (
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    write_csv_atomic,
)
from istd.errors import WeightsError


def _draws() -> tuple:
    return (
        random.random(),
        float(np.random.rand()),
        float(np.random.randn()),
        torch.rand(3).tolist(),
    )


def test_rng_round_trip_through_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leave a cached gaussian in NumPy's state
    save_checkpoint(tmp_path / "last.ckpt", {"rng": capture_rng_state()})
    expected = _draws()
    _draws()
    restore_rng_state(load_checkpoint(tmp_path / "last.ckpt")["rng"])
    assert _draws() == expected


def test_checkpoint_holds_model_optimizer_and_scheduler_without_pickle(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5**epoch)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    save_checkpoint(
        tmp_path / "a.ckpt",
        {"model": model.state_dict(), "optimizer": opt.state_dict(),
         "scheduler": sched.state_dict(), "epoch": 3, "best_value": float("-inf"),
         "history": [{"loss": 0.5, "val_iou": None}], "pair": (1, "a")},
    )  # fmt: skip
    # A plain safetensors file: tensors by record path, the rest as JSON in its header.
    with safe_open(tmp_path / "a.ckpt", framework="pt") as f:
        assert "optimizer/state/0/sum" in set(f.keys())
        assert json.loads(f.metadata()["istd_resume_record"])["epoch"] == 3
    record = load_checkpoint(tmp_path / "a.ckpt")
    assert record["epoch"] == 3 and record["best_value"] == float("-inf")
    assert record["history"] == [{"loss": 0.5, "val_iou": None}] and record["pair"] == (1, "a")
    assert torch.equal(record["model"]["weight"], model.weight.detach())
    assert set(record["optimizer"]["state"]) == {0, 1}  # int parameter ids survive JSON
    opt2 = torch.optim.Adagrad(torch.nn.Linear(3, 2).parameters(), lr=0.05)
    opt2.load_state_dict(record["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["sum"], opt.state_dict()["state"][0]["sum"])
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda epoch: 0.5**epoch)
    sched2.load_state_dict(record["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    with pytest.raises(TypeError, match="date"):  # only tensors and plain containers
        save_checkpoint(tmp_path / "b.ckpt", {"when": datetime.date(2020, 1, 1)})


def test_version_1_checkpoints_still_load_and_pickles_are_refused(tmp_path: Path) -> None:
    torch.save({"version": 1, "epoch": 4, "w": torch.ones(2)}, tmp_path / "old.ckpt")
    with pytest.warns(UserWarning, match="version-1"):
        assert load_checkpoint(tmp_path / "old.ckpt")["epoch"] == 4
    # Any object outside weights_only's allow-list (here a datetime) must be refused.
    torch.save({"version": 1, "x": datetime.date(2020, 1, 1)}, tmp_path / "evil.ckpt")
    with pytest.warns(UserWarning), pytest.raises(WeightsError, match="evil.ckpt"):
        load_checkpoint(tmp_path / "evil.ckpt")
    # A safetensors file that is not a resume record (e.g. best/model.safetensors).
    save_file({"w": torch.ones(2)}, tmp_path / "weights.ckpt")
    with pytest.raises(WeightsError, match="weights.ckpt"):
        load_checkpoint(tmp_path / "weights.ckpt")


def test_truncated_or_missing_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a.ckpt", {"epoch": 1})
    data = (tmp_path / "a.ckpt").read_bytes()
    (tmp_path / "b.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="b.ckpt"):
        load_checkpoint(tmp_path / "b.ckpt")
    with pytest.raises(WeightsError, match="--resume"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_atomic_text_and_csv_leave_no_temp(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "x.txt", "one")
    atomic_write_text(tmp_path / "x.txt", "two")
    write_csv_atomic(
        tmp_path / "log.csv", [{"epoch": 1, "loss": 0.5}, {"epoch": 2}], ["epoch", "loss"]
    )
    assert (tmp_path / "x.txt").read_text() == "two"
    assert (tmp_path / "log.csv").read_text() == "epoch,loss\n1,0.5\n2,\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv", "x.txt"]


def test_replace_dir_and_recover(tmp_path: Path) -> None:
    best = tmp_path / "best"
    replace_dir_atomic(best, lambda d: (d / "a.txt").write_text("1"))
    replace_dir_atomic(best, lambda d: (d / "a.txt").write_text("2"))
    assert (best / "a.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]

    def fail(d: Path) -> None:
        (d / "a.txt").write_text("3")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        replace_dir_atomic(best, fail)
    assert (best / "a.txt").read_text() == "2"
    # A crash between the two renames leaves only `.best.old`: recovery puts it back.
    best.rename(tmp_path / ".best.old")
    (tmp_path / ".best.x1.tmp").mkdir()  # a temp folder a SIGKILL left half-written
    recover_dir(best)
    assert (best / "a.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
