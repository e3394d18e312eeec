"""Atomic files and the resume record of a training run.

Format: `last.ckpt` is one safetensors file. Its tensors are every tensor of the resume record
(model and optimiser state, RNG states), named by their path in the record
("model/stem.conv.weight"); its header metadata holds the rest of the record as JSON
(scheduler state, epoch, step, best value, the epoch log), with each tensor replaced by a
reference to its name. Reading it parses JSON and raw tensor bytes only: nothing is unpickled,
as for the published weights (`best/`, the model's `save_pretrained`). JSON cannot tell a tuple
from a list, an int dict key from a str one, or hold inf and nan, so those are tagged
(`_encode`); the optimiser's state is keyed by int parameter ids.

Checkpoints of version 1 (one `torch.save` file) are still read, with
`torch.load(weights_only=True)`, whose allow-list admits tensors and plain containers only, and
a warning; the next epoch rewrites them in this format.

Every file and the `best/` folder are written through `istd._atomic` (temporary name in the same
folder, fsync, `os.replace`, fsync of the folder), so a SIGKILL at any moment leaves either the
old or the new file, never a torn one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors
from torch import nn

from istd._atomic import replace_dir_atomic, write_atomic
from istd.engine.config import TrainConfig, config_from_saved, save_config
from istd.errors import ConfigError, WeightsError

CHECKPOINT_VERSION = 2
_LEGACY_VERSION = 1  # one torch.save file
_RECORD_KEY = "istd_resume_record"  # safetensors metadata entry holding the JSON part
# Tags of the JSON part: single-key objects that stand for what JSON has no type for.
_TENSOR, _TUPLE, _INT_KEYS, _FLOAT = "__tensor__", "__tuple__", "__int_keys__", "__float__"
_TAGS = (_TENSOR, _TUPLE, _INT_KEYS, _FLOAT)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically, replacing any file there (`istd._atomic`)."""
    write_atomic(path, data, overwrite=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """UTF-8 text version of `atomic_write_bytes`."""
    write_atomic(path, text, overwrite=True)


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


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state: Python `random`, NumPy's legacy global, torch CPU and CUDA.

    Returns tensors and plain containers only, which `save_checkpoint` stores without pickling.
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


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able form of `value`; its tensors go into `tensors` under their record path."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {_TENSOR: path}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            if len(value) == 1 and next(iter(value)) in _TAGS:
                raise TypeError(f"{path}: a dict keyed {next(iter(value))!r} cannot be stored")
            return {k: _encode(v, f"{path}/{k}" if path else k, tensors) for k, v in value.items()}
        if all(isinstance(k, int) and not isinstance(k, bool) for k in value):
            items = [[k, _encode(v, f"{path}/{k}", tensors)] for k, v in value.items()]
            return {_INT_KEYS: items}
        raise TypeError(f"{path}: dict keys must be all str or all int")
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT: repr(value)}  # 'inf', '-inf' or 'nan'
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{path}: a {type(value).__name__} cannot be stored in a resume record")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `_encode`."""
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        tag, inner = next(iter(value.items()))
        if tag == _TENSOR:
            return tensors[inner]
        if tag == _TUPLE:
            return tuple(_decode(v, tensors) for v in inner)
        if tag == _INT_KEYS:
            return {int(k): _decode(v, tensors) for k, v in inner}
        if tag == _FLOAT:
            return float(inner)
    return {k: _decode(v, tensors) for k, v in value.items()}


def save_checkpoint(path: str | Path, record: dict[str, Any]) -> None:
    """Write a resume record atomically as safetensors + JSON (see the module docstring).

    Raises:
        TypeError: the record holds something other than tensors and plain containers.
    """
    tensors: dict[str, torch.Tensor] = {}
    meta = _encode({"version": CHECKPOINT_VERSION, **record}, "", tensors)
    text = json.dumps(meta, allow_nan=False, separators=(",", ":"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, save_safetensors(tensors, metadata={_RECORD_KEY: text}), overwrite=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a resume record onto the CPU.

    Raises:
        WeightsError: missing, truncated, foreign or newer-version file, naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"no checkpoint at {path}; start without --resume or pick the right --work-dir"
        )
    with path.open("rb") as handle:
        legacy = handle.read(2) == b"PK"  # a torch.save zip archive
    try:
        record = _load_legacy(path) if legacy else _load_safetensors(path)
    except Exception as exc:  # safetensors, json and torch raise several types
        raise WeightsError(f"cannot read checkpoint {path}: {exc}") from None
    version = _LEGACY_VERSION if legacy else CHECKPOINT_VERSION
    if not isinstance(record, dict) or record.get("version") != version:
        raise WeightsError(
            f"{path} is not an istd resume checkpoint (version {CHECKPOINT_VERSION})"
        )
    return record


def _load_safetensors(path: Path) -> dict[str, Any]:
    with safe_open(path, framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        if _RECORD_KEY not in meta:
            raise SafetensorError("no istd resume record in its metadata")
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    return _decode(json.loads(meta[_RECORD_KEY]), tensors)


def _load_legacy(path: Path) -> dict[str, Any]:
    warnings.warn(
        f"{path}: a version-1 checkpoint (torch.save), read with torch.load(weights_only=True); "
        "the next save writes the safetensors format",
        stacklevel=3,
    )
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- the run folder: config.yaml, log.csv, last.ckpt, best/, init.json ------------------

INIT_RECORD = "init.json"  # where a --load-from run's weights came from
RUN_FILES = ("config.yaml", "log.csv", "last.ckpt", "best", INIT_RECORD)
LOG_HEAD = ("epoch", "step", "loss", "lr")
LOG_TAIL = ("images_per_s", "epoch_s", "wall_time_s")


@dataclass
class RunState:
    """Progress of a run: completed epochs, global step, best so far, log rows, wall time."""

    epoch: int = 0
    step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    wall_time: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def prepare_work_dir(
    config: TrainConfig | None,
    work_dir: Path,
    resume: bool,
    load_from: str | Path | None,
    barrier: Callable[[], None],
) -> TrainConfig:
    """Check the work dir against the request; return the config to train.

    A new run refuses a folder holding any run file, so nothing a user had is overwritten.
    `--resume` takes the saved config when `config` is None and refuses a different one.

    Raises:
        ConfigError: naming the folder and what to do.
    """
    saved_path = work_dir / "config.yaml"
    if resume:
        if load_from is not None and (work_dir / "last.ckpt").is_file():
            raise ConfigError(
                "--load-from and --resume together: --resume already restores the weights"
            )
        if saved_path.is_file():
            saved = config_from_saved(
                yaml.safe_load(saved_path.read_text(encoding="utf-8")), str(saved_path)
            )
            if config is None:
                config = saved
            elif config.to_dict() != saved.to_dict():
                diff = _diff(saved.to_dict(), config.to_dict())
                raise ConfigError(
                    f"--resume: the config differs from {saved_path} in {', '.join(diff)}; "
                    "resume with the same config (or omit CONFIG to reuse the saved one)"
                )
        elif config is None:
            raise ConfigError(
                f"--resume: {work_dir} holds no config.yaml; give CONFIG to start the run"
            )
    else:
        if config is None:
            raise ConfigError("no CONFIG given: name a shipped config or a YAML file")
        present = [name for name in RUN_FILES if (work_dir / name).exists()]
        if present:
            raise ConfigError(
                f"{work_dir} already holds a run ({', '.join(present)}); pass --resume to continue "
                "it or choose another --work-dir (nothing was overwritten)"
            )
    config.validate()
    barrier()  # every rank has checked the folder before rank 0 writes into it
    return config


def write_config(work_dir: Path, config: TrainConfig) -> None:
    """Save the resolved config as `work_dir/config.yaml` unless a resumed run has it already.

    Called once data and model are known to load, so a failed start leaves no run behind.
    """
    path = work_dir / "config.yaml"
    if not path.is_file():
        work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, save_config(config))


def write_init_record(work_dir: Path, load_from: str | Path) -> None:
    """Record in `work_dir/init.json` the weights a --load-from run started from.

    The folder, its weights file's sha256 and its best-checkpoint facts, so that a release can
    name (and check) the first stage of a fine-tuned model. Written once, at the run's start.
    """
    from istd.engine.evaluate import sha256_file
    from istd.models.hub import read_config, weights_folder

    folder = weights_folder(load_from)
    if folder is None:
        raise WeightsError(f"--load-from {load_from}: not a weights folder")
    extra = read_config(folder).get("extra", {})
    record = {
        "load_from": str(load_from),
        "folder": str(folder.resolve()),
        "weights_sha256": sha256_file(folder / "model.safetensors"),
        "epoch": extra.get("epoch"),
        "val_metrics": extra.get("metrics"),
    }
    atomic_write_text(work_dir / INIT_RECORD, json.dumps(record, indent=2) + "\n")


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k != "overrides":
            keys += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k} ({va!r} -> {vb!r})")
    return keys


def write_log(work_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite log.csv atomically from the run's rows (one per epoch)."""
    middle: list[str] = []
    for row in history:
        middle += [k for k in row if k not in LOG_HEAD and k not in LOG_TAIL and k not in middle]
    write_csv_atomic(work_dir / "log.csv", history, [*LOG_HEAD, *middle, *LOG_TAIL])


def write_best(path: Path, model: nn.Module, extra: dict[str, Any]) -> None:
    """Replace `path` with the model's `save_pretrained` folder, atomically."""
    from istd.models.hub import save_pretrained

    replace_dir_atomic(path, lambda tmp: save_pretrained(model, tmp, extra=extra))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict into `model`, every name and shape checked.

    Parameters under the model's ``optional_prefixes`` (layers that start as a no-op, such as
    MiM-ISTD's H/2 head) may be missing from `state`: they keep their initial values.

    Raises:
        WeightsError: naming `source` and the first mismatches.
    """
    try:
        result = model.load_state_dict(state, strict=False)  # shapes are still checked
    except RuntimeError as exc:
        first = str(exc).splitlines()[:3]
        raise WeightsError(f"{source} does not fit this model: {' '.join(first)}") from None
    optional = tuple(getattr(model, "optional_prefixes", ()))
    missing = [k for k in result.missing_keys if not (optional and k.startswith(optional))]
    if missing or result.unexpected_keys:
        listed = ", ".join([*missing[:3], *result.unexpected_keys[:3]])
        raise WeightsError(
            f"{source} does not fit this model: {len(missing)} missing and "
            f"{len(result.unexpected_keys)} unexpected keys ({listed})"
        )


def make_record(
    state: RunState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    splits: dict[str, str],
    mean: float,
    std: float,
    ema: nn.Module | None = None,
) -> dict[str, Any]:
    """The resume record for `save_checkpoint` (tensors and plain containers only)."""
    record = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng_state(),
        "epoch": state.epoch,
        "step": state.step,
        "best_value": state.best_value,
        "best_epoch": state.best_epoch,
        "wall_time": state.wall_time,
        "history": state.history,
        "split_sha256": dict(splits),
        "norm": [float(mean), float(std)],
    }
    if ema is not None:
        record["ema"] = ema.state_dict()
    return record


def restore_run(
    record: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    splits: dict[str, str],
    path: Path,
    ema: nn.Module | None = None,
) -> RunState:
    """Load a resume record into the run's objects and return its progress.

    Raises:
        ConfigError: the dataset ids changed since the checkpoint.
        WeightsError: the record does not fit the model or optimiser.
    """
    if record.get("split_sha256") != splits:
        raise ConfigError(
            f"{path}: the training/validation ids differ from the checkpoint's "
            "(dataset or data.limit changed); resume needs the same data"
        )
    load_weights(model, record["model"], str(path))
    if ema is not None:
        if "ema" not in record:
            raise WeightsError(f"{path} holds no weight average; train.ema_decay was set after it")
        load_weights(ema, record["ema"], f"{path} (weight average)")
    try:
        optimizer.load_state_dict(record["optimizer"])
        scheduler.load_state_dict(record["scheduler"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise WeightsError(f"{path}: optimiser/scheduler state does not fit: {exc}") from None
    restore_rng_state(record["rng"])
    return RunState(
        epoch=int(record["epoch"]),
        step=int(record["step"]),
        best_value=record["best_value"],
        best_epoch=record["best_epoch"],
        wall_time=float(record["wall_time"]),
        history=list(record["history"]),
    )
