"""Exact resume: SIGKILL a real `python -m istd train` process, resume it, compare weights."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from istd.engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
# A tiny epoch takes 0.05-0.3 s, so the run is long enough that the kill, sent as soon as the
# first checkpoint appears, always lands with epochs left to resume, however fast the machine.
EPOCHS = 16


def _cmd(work: Path, root: Path, *extra: str) -> list[str]:
    sets = [
        f"data.root={root}",
        "model.name=mim-istd-test",
        "data.limit=6",
        "data.val_limit=2",
        "augment.crop_size=32",
        "train.batch_size=2",
        f"train.epochs={EPOCHS}",
        "train.threads=1",
    ]
    args = [
        sys.executable,
        "-m",
        "istd",
        "train",
        "mim-istd_nuaa-sirst",
        "--work-dir",
        str(work),
        "--quiet",
    ]
    for item in sets:
        args += ["--set", item]
    return args + list(extra)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _run(args: list[str]) -> None:
    done = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(nuaa_sirst: Path, tmp_path: Path) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    _run(_cmd(full, nuaa_sirst))

    proc = subprocess.Popen(
        _cmd(cut, nuaa_sirst),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not (cut / "last.ckpt").exists():
            assert proc.poll() is None, "training exited before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(cut / "last.ckpt")["epoch"]
    assert 1 <= killed_at < EPOCHS, (
        f"the run got to epoch {killed_at} before the kill; nothing to resume"
    )

    _run(_cmd(cut, nuaa_sirst, "--resume"))

    a = load_checkpoint(full / "last.ckpt")
    b = load_checkpoint(cut / "last.ckpt")
    assert a["epoch"] == b["epoch"] == EPOCHS and a["step"] == b["step"]
    diffs = {
        k: (a["model"][k].double() - b["model"][k].double()).abs().max().item() for k in a["model"]
    }
    assert max(diffs.values()) == 0.0, (
        f"weights differ after resume: {max(diffs.items(), key=lambda kv: kv[1])}"
    )
    rows_a = list(csv.DictReader((full / "log.csv").open()))
    rows_b = list(csv.DictReader((cut / "log.csv").open()))
    assert [(r["epoch"], r["loss"], r["val_iou"]) for r in rows_a] == [
        (r["epoch"], r["loss"], r["val_iou"]) for r in rows_b
    ]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert not list(cut.glob(".*")), "temp files of the killed run were left behind"
