"""Atomic files and the resume record of a training run.

Format choice: `last.ckpt` is one `torch.save` file holding only tensors and plain Python
containers (dict, list, tuple, str, int, float, bool, None): model, optimiser and scheduler state
dicts, every RNG state, epoch, step, best value and the epoch log. It is read back with
`torch.load(weights_only=True)`, which refuses any other object, so loading never unpickles
arbitrary code (the issue's contract; torchvision's reference scripts keep the same shape). The
published weights (`best/`) are safetensors + JSON, written by the model's `save_pretrained`.

Every file is written to a temporary name in the same folder, flushed, fsynced, renamed over
the target with `os.replace`, and the folder is fsynced, so a SIGKILL at any moment leaves either
the old or the new file, never a torn one.
"""

from __future__ import annotations

import csv
import io
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from istd.errors import WeightsError

CHECKPOINT_VERSION = 1


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically: temp file, fsync, rename, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """UTF-8 text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_csv_atomic(
    path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]
) -> None:
    """Rewrite a CSV file atomically with `columns` as header (missing values left empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def replace_dir_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Fill a fresh temporary folder with `write(tmp)` and swap it in place of `path`.

    The old folder is renamed aside before the new one is renamed in, then deleted; if the
    process dies between the two renames, `recover_dir` restores the old one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(tmp)
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(path: str | Path) -> None:
    """Undo a `replace_dir_atomic` cut short between its renames, and drop stale temp folders."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        if path.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state: Python `random`, NumPy's legacy global, torch CPU and CUDA.

    Returns tensors and plain containers only, so the record loads with `weights_only=True`.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (
            np_state["kind"],
            keys,
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, record: dict[str, Any]) -> None:
    """Write a resume record atomically (see module docstring for the format)."""
    buf = io.BytesIO()
    torch.save({"version": CHECKPOINT_VERSION, **record}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a resume record with `torch.load(weights_only=True)` onto the CPU.

    Raises:
        WeightsError: missing, truncated, foreign or newer-version file, naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"no checkpoint at {path}; start without --resume or pick the right --work-dir"
        )
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise WeightsError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(record, dict) or record.get("version") != CHECKPOINT_VERSION:
        raise WeightsError(
            f"{path} is not an istd resume checkpoint (version {CHECKPOINT_VERSION})"
        )
    return record
