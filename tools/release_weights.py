"""Release a training run's best checkpoint into weights/<name>/ and rewrite weights/README.md.

`istd train` leaves a work dir with best/ (model.safetensors, config.json, README.md), log.csv
and config.yaml. This tool copies them into weights/<name>/ (config.yaml as train_config.yaml),
optionally evaluates the test split once (weights/<name>/metrics.json and pd_fa.png, with the
same library call as `istd eval`) and other datasets' test splits (cross_<dataset>.json),
records the release in release.json (final or intermediate, the hardware, the train command)
and regenerates the whole model card weights/README.md from the files of every weights/*/
folder: every number on the card is read from those files.

The new folder is built beside the old one and swapped in (`istd._atomic.replace_dir_atomic`).
A checkpoint with a lower validation IoU than the released one, or validated on other ids, is
refused without --force; a file of 25 MB or more is always refused. Evaluation results are kept
across releases only while the weights file is bit-identical (same sha256).

Usage:
    python tools/release_weights.py --run WORK_DIR --name mim-istd-nuaa-sirst [--final]
        [--eval-test DATA_ROOT] [--cross NAME=DATA_ROOT ...] [--force] [--hardware-note TEXT]
    python tools/release_weights.py --card-only
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from istd._atomic import replace_dir_atomic, write_atomic
from istd.errors import ConfigError, IstdError, WeightsError

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 25_000_000  # the "under 25 MB", in decimal megabytes
# (file in the work dir, name in the weights folder)
RUN_FILES = (
    ("best/model.safetensors", "model.safetensors"),
    ("best/config.json", "config.json"),
    ("best/README.md", "README.md"),
    ("log.csv", "log.csv"),
    ("config.yaml", "train_config.yaml"),
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# The paper's NUAA-SIRST test figures (Chen et al., TGRS 2024) and the targets.
PAPER = {"iou": 0.809, "niou": 0.801, "pd": 1.00, "fa": 2.2e-6}
TARGETS = (("iou", "IoU", ">=", 0.75), ("pd", "Pd", ">=", 0.97), ("fa", "Fa", "<=", 1e-5))
LATEST_ROWS = 8
__all__ = ["hardware", "read_log", "release", "render_card", "train_command", "write_card"]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (the same digest `istd eval` records as facts.weights_sha256)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hardware() -> dict[str, Any]:
    """Facts about this machine: CPU model and cores, OS, Python, torch and any CUDA device."""
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cpu_cores_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def read_log(path: Path) -> list[dict[str, float | None]]:
    """log.csv rows as floats (empty cells, e.g. epochs without validation, become None)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            {k: float(v) if v not in ("", None) else None for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and key != "overrides":  # model.overrides is one value
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _yaml_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)  # JSON is YAML flow syntax
    return text if yaml.safe_load(text) == value else json.dumps(value)


def train_command(resolved: dict[str, Any], base: str | None = None) -> tuple[str, list[str]]:
    """The shipped config and the fewest `--set` items that reproduce a resolved config.

    Args:
        resolved: a resolved config (a work dir's config.yaml).
        base: the shipped config to start from; None picks the one needing the fewest items
            (on a tie, the one building the same model).

    Returns:
        (shipped config name, ["key=value", ...]); `load_config(name, items)` equals `resolved`.

    Raises:
        ConfigError: no shipped config reproduces it (then only the YAML file itself does).
    """
    from istd.engine.config import config_from_dict, load_config, shipped_configs

    target = config_from_dict(resolved, "train_config.yaml").to_dict()
    flat = _flatten(target)
    found = []
    for name in [base] if base else shipped_configs():
        base_flat = _flatten(load_config(name).to_dict())
        items = [f"{k}={_yaml_value(v)}" for k, v in flat.items() if base_flat.get(k) != v]
        if load_config(name, items).to_dict() == target:
            other_model = base_flat["model.name"] != flat["model.name"]
            found.append(((len(items), other_model, name), name, items))
    if not found:
        raise ConfigError("no shipped config plus --set items reproduces train_config.yaml")
    return min(found)[1:]


def train_command_line(
    resolved: dict[str, Any], work_dir: str = "WORK", base: str | None = None
) -> str:
    """`istd train ...` as a shell line (see `train_command`)."""
    name, items = train_command(resolved, base)
    sets = "".join(f" --set {shlex.quote(item)}" for item in items)
    return f"istd train {name} --work-dir {work_dir}{sets}"


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"{what} {name!r}: use letters, digits, '.', '_' or '-' only")
    return name


def _check_run(run: Path) -> dict[str, Any]:
    """Check the work dir holds every file to release, each under MAX_BYTES; return best/config."""
    from istd.models.hub import read_config

    for src, _ in RUN_FILES:
        path = run / src
        if not path.is_file():
            raise WeightsError(f"{path}: missing; is {run} an `istd train` work dir with best/?")
        if path.stat().st_size >= MAX_BYTES:
            raise WeightsError(
                f"{path}: {path.stat().st_size / 1e6:.1f} MB, the limit is {MAX_BYTES / 1e6:.0f} MB"
            )
    return read_config(run / "best")


def _copy_run(run: Path, tmp: Path, tries: int = 5) -> None:
    """Copy the run's files; retry while a training run replaces best/ meanwhile.

    `istd train` swaps in a new best/ folder (a new inode) when validation improves, so equal
    inodes before and after the copy mean the weights and config.json are of one checkpoint.
    """
    for _ in range(tries):
        before = (run / "best").stat().st_ino
        for src, target in RUN_FILES:
            shutil.copyfile(run / src, tmp / target)
        if (run / "best").stat().st_ino == before:
            return
    raise WeightsError(f"{run / 'best'} kept changing while it was copied; try again")


def _val_iou(meta: dict[str, Any]) -> float | None:
    value = meta.get("extra", {}).get("metrics", {}).get("iou")
    return float(value) if isinstance(value, (int, float)) else None


def _refuse_worse(dst: Path, new: dict[str, Any], force: bool) -> None:
    from istd.models.hub import read_config

    if force or not (dst / "config.json").is_file():
        return
    old = read_config(dst)
    old_iou, new_iou = _val_iou(old), _val_iou(new)
    if old_iou is not None and (new_iou is None or new_iou < old_iou):
        raise WeightsError(
            f"{dst} holds weights with best val IoU {old_iou:.4f}, the run's best is "
            f"{new_iou if new_iou is None else round(new_iou, 4)}: not replaced (pass --force)"
        )
    old_split = old.get("extra", {}).get("split_sha256")
    new_split = new.get("extra", {}).get("split_sha256")
    if old_split and new_split and old_split != new_split:
        raise WeightsError(
            f"{dst} was validated on other ids (split_sha256 {old_split} vs {new_split}): "
            "its IoU is not comparable; pass --force to replace it"
        )


def _evaluate(folder: Path, name: str, data: Path, limit: int | None, device: str) -> Path:
    """Evaluate `folder`'s weights on `data`'s test split; return the report folder (temporary).

    The weights are linked into a folder named `name`, so the report's label and the Pd-Fa
    legend say `name`, not a temporary name.
    """
    from istd.engine.evaluate import run_evaluation

    work = Path(tempfile.mkdtemp(prefix="istd-release-"))
    source = work / name
    source.mkdir()
    for file in ("model.safetensors", "config.json"):
        (source / file).symlink_to((folder / file).resolve())
    try:
        run_evaluation([str(source)], data, work / "report", limit=limit, gallery=0, device=device)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return work


def _eval_json(work: Path, name: str, limit: int | None) -> dict[str, Any]:
    data = json.loads((work / "report" / "metrics.json").read_text(encoding="utf-8"))
    # The file evaluated is the released one (same sha256); name it where it will live.
    data["facts"].update(source=name, weights=f"weights/{name}/model.safetensors", limit=limit)
    return data


def _carry_over(
    old: Path, tmp: Path, sha: str, wanted: dict[str, tuple[str, int | None]], reeval: bool
) -> list[str]:
    """Copy evaluation files of the same weights file (equal sha256) into the new folder.

    A file asked for again (`wanted`: name -> (dataset, limit)) is kept only if it was made on
    that dataset with that limit, and never with `reeval`.
    """
    kept = []
    for path in sorted(old.glob("metrics.json")) + sorted(old.glob("cross_*.json")):
        facts = json.loads(path.read_text(encoding="utf-8")).get("facts", {})
        asked = path.name in wanted
        if asked and (reeval or (facts.get("dataset"), facts.get("limit")) != wanted[path.name]):
            continue
        if facts.get("weights_sha256") == sha:
            shutil.copyfile(path, tmp / path.name)
            kept.append(path.name)
            if path.name == "metrics.json" and (old / "pd_fa.png").is_file():
                shutil.copyfile(old / "pd_fa.png", tmp / "pd_fa.png")
    return kept


def release(
    run: str | Path,
    name: str,
    *,
    weights_root: str | Path | None = None,
    final: bool = False,
    eval_test: str | Path | None = None,
    cross: dict[str, str | Path] | None = None,
    force: bool = False,
    reeval: bool = False,
    hardware_note: str | None = None,
    eval_limit: int | None = None,
    device: str = "cpu",
    invocation: str | None = None,
    log: Any = print,
) -> Path:
    """Copy a run's best checkpoint, log and config into `weights_root/name` and rewrite the card.

    Args:
        run: the `istd train` work dir.
        name: the weights name (folder under `weights_root`).
        weights_root: default the repository's weights/.
        final: training is over; recorded in release.json (the card's status).
        eval_test: dataset root whose test split is evaluated (needs `final`): metrics.json and
            pd_fa.png. Skipped when the folder already holds it for the same weights file.
        cross: {dataset name: root}: test splits of other datasets -> cross_<name>.json.
        force: replace weights with a higher validation IoU or another validation split.
        reeval: evaluate again even when results for the same weights file exist.
        hardware_note: free text on the training hardware, shown on the card.
        eval_limit: evaluate only the first N test images (smoke tests; the card shows N).
        device: evaluation device.
        invocation: the command line that asked for this release (kept in release.json).
        log: prints progress lines.

    Returns:
        The released folder.

    Raises:
        WeightsError: missing or too large files, or a worse checkpoint without `force`.
        ConfigError: bad names, or a test evaluation asked for without `final`.
    """
    from istd.models import from_pretrained

    run, root = Path(run), Path(weights_root) if weights_root else REPO / "weights"
    _check_name(name, "weights name")
    cross = {_check_name(k, "cross dataset name"): Path(v) for k, v in (cross or {}).items()}
    if eval_test is not None and not final:
        raise ConfigError("--eval-test: the test split is evaluated once, on final weights; "
                          "add --final (or drop --eval-test for an intermediate release)")  # fmt: skip
    meta = _check_run(run)
    dst = root / name
    _refuse_worse(dst, meta, force)
    resolved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    try:
        command = train_command_line(resolved)
    except ConfigError:
        command = None
    record = {
        "name": name,
        "final": final,
        "released_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run.resolve()),
        "weights_sha256": None,  # of the copied file, below
        "train_command": command,
        "hardware": hardware(),
        "hardware_note": hardware_note,
        "tool": invocation,
    }

    def build(tmp: Path) -> None:
        _copy_run(run, tmp)
        from_pretrained(tmp)  # refuse weights that do not load
        sha = record["weights_sha256"] = sha256_file(tmp / "model.safetensors")
        jobs: dict[str, Path] = {}
        if eval_test is not None:
            jobs["metrics.json"] = Path(eval_test)
        jobs.update({f"cross_{k}.json": v for k, v in cross.items()})
        wanted = {target: (str(data), eval_limit) for target, data in jobs.items()}
        kept = _carry_over(dst, tmp, sha, wanted, reeval) if dst.is_dir() else []
        for target, data in jobs.items():
            if target in kept:
                log(f"{target}: kept (same weights file already evaluated; --reeval to redo)")
                continue
            log(f"evaluating {name} on {data} (test split) -> {target}")
            work = _evaluate(tmp, name, data, eval_limit, device)
            try:
                write_atomic(tmp / target, json.dumps(_eval_json(work, name, eval_limit), indent=2) + "\n",
                             overwrite=True)  # fmt: skip
                if target == "metrics.json" and (work / "report" / "pd_fa.png").is_file():
                    shutil.copyfile(work / "report" / "pd_fa.png", tmp / "pd_fa.png")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        write_atomic(tmp / "release.json", json.dumps(record, indent=2) + "\n", overwrite=True)
        for path in tmp.iterdir():
            if path.stat().st_size >= MAX_BYTES:
                raise WeightsError(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB >= 25 MB")
            path.chmod(0o644)
        tmp.chmod(0o755)

    replace_dir_atomic(dst, build)
    log(f"released {run} -> {dst}")
    card = write_card(root)
    log(f"model card: {card}")
    return dst


def _f(value: Any, digits: int = 4, scale: float = 1.0) -> str:
    if not isinstance(value, (int, float)) or value != value:
        return "n/a"
    return f"{value * scale:.{digits}f}"


def _metric_cells(m: dict[str, Any]) -> str:
    return (
        f"{_f(m.get('iou'))} | {_f(m.get('niou'))} | {_f(m.get('pd'))} | {_f(m.get('fa'), 2, 1e6)}"
    )


def _limited(m: dict[str, Any]) -> str:
    limit = m.get("facts", {}).get("limit")
    return f" **Only the first {limit} images of the split (--eval-limit).**" if limit else ""


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _distance(m: dict[str, Any], where: str) -> str:
    """Plain sentence: how far metrics `m` are from the issue's targets and the paper."""
    parts = []
    for key, label, op, goal in TARGETS:
        v = m.get(key)
        if not isinstance(v, (int, float)):
            parts.append(f"{label} n/a")
            continue
        scale, unit = (1e6, " x 1e-6") if key == "fa" else (1.0, "")
        ok = v >= goal if op == ">=" else v <= goal
        gap = (
            "met"
            if ok
            else f"{abs(v - goal) * scale:.4g}{unit} {'short' if op == '>=' else 'over'}"
        )
        parts.append(f"{label} {v * scale:.4g}{unit} (target {op} {goal * scale:g}{unit}: {gap})")
    labels = {"iou": "IoU", "niou": "nIoU", "pd": "Pd", "fa": "Fa"}
    paper = ", ".join(
        f"{labels[k]} {(m[k] - p) * 1e6:+.3g} x 1e-6"
        if k == "fa"
        else f"{labels[k]} {m[k] - p:+.4f}"
        for k, p in PAPER.items()
        if isinstance(m.get(k), (int, float))
    )
    return (
        f"On {where}: {'; '.join(parts)}. Difference to the paper's NUAA-SIRST test figures "
        f"(IoU 0.809, nIoU 0.801, Pd 1.00, Fa 2.2 x 1e-6 after 800 epochs on GPUs): {paper}."
    )


def _section(folder: Path) -> list[str]:
    """The card section of one weights folder, every figure read from its files."""
    from istd.models import from_pretrained
    from istd.models.hub import read_config

    name = folder.name
    meta = read_config(folder)
    extra, cfg = meta["extra"], meta["config"]
    rel = _json(folder / "release.json") or {}
    train = yaml.safe_load((folder / "train_config.yaml").read_text(encoding="utf-8")) if (
        folder / "train_config.yaml").is_file() else None  # fmt: skip
    rows = read_log(folder / "log.csv") if (folder / "log.csv").is_file() else []
    test, val = _json(folder / "metrics.json"), extra.get("metrics", {})
    params = sum(p.numel() for p in from_pretrained(folder).parameters())
    planned = train["train"]["epochs"] if train else None
    done = int(rows[-1]["epoch"]) if rows else None
    if rel.get("final"):
        status = f"**Status: final weights** (epoch {done} of {planned} planned"
        status += ")." if done == planned else "; released as final before the planned end)."
    elif done is not None and done == planned:
        status = (
            f"**Status: not released as final** (epoch {done} of {planned}: training has ended); "
            "this is the run's best checkpoint on validation."
        )
    else:
        status = (
            f"**Status: an intermediate checkpoint** (epoch {done} of {planned} planned): training "
            "is still running or resumable; this is the best checkpoint so far on validation."
        )
    if test is None:
        status += " The test split has not been evaluated for these weights."
    lines = [f"## {name}", "", status, "", "| | |", "|---|---|"]
    model = f"`{meta['model']}` ({params / 1e6:.2f} M parameters), scan `{cfg.get('scan')}`, "
    lines.append(f"| model | {model}inner `{cfg.get('inner')}`, in_chans {cfg.get('in_chans')} |")
    n_val = f" ({int(val['n_images'])} images)" if "n_images" in val else ""
    lines.append(f"| data | {extra.get('dataset', 'n/a')}; {extra.get('split', 'n/a')}{n_val} |")
    mean, std = (", ".join(f"{v:.4f}" for v in cfg.get(k, ())) for k in ("norm_mean", "norm_std"))
    norm = f"mean {mean}, std {std} (measured on the training split)"
    lines.append(f"| normalisation | {norm} |")
    if train:
        o, s, t, a = train["optim"], train["schedule"], train["train"], train["augment"]
        lines.append(
            f"| recipe | {o['name']} lr {o['lr']:g}, weight decay {o['weight_decay']:g}, "
            f"{s['name']} schedule (warm-up {s['warmup_epochs']}, min lr {s['min_lr']:g}), "
            f"{train['loss']['name']} loss, {a['crop_size']} x {a['crop_size']} crops, batch "
            f"{t['batch_size']}, seed {t['seed']}, validation every {t['val_every']} epochs |"
        )
    lines.append(f"| epochs | {done} done of {planned} planned |")
    if rows:
        epoch_s = sum(r["epoch_s"] or 0.0 for r in rows)
        ips = sorted(r["images_per_s"] for r in rows if r.get("images_per_s") is not None)
        wall = _f(rows[-1].get("wall_time_s"), 2, 1 / 3600)
        median = _f(ips[len(ips) // 2] if ips else None, 2)
        lines.append(
            f"| wall time | {epoch_s / 3600:.2f} h (sum of epoch_s), {wall} h (wall_time_s); "
            f"median {median} training images/s |"
        )
    hw = rel.get("hardware")
    if hw:
        gpu = hw.get("cuda") or "no GPU"
        lines.append(
            f"| release machine | {hw['cpu']}, {hw['cpu_cores_usable']} usable cores, {gpu}; "
            f"{hw['platform']}; torch {hw['torch']} |"
        )
    if rel.get("hardware_note"):
        lines.append(f"| training hardware | {rel['hardware_note']} |")
    if val:
        lines.append(
            f"| best checkpoint | epoch {extra.get('epoch')}: val IoU {_f(val.get('iou'))}, nIoU "
            f"{_f(val.get('niou'))}, Pd {_f(val.get('pd'))}, Fa {_f(val.get('fa'), 2, 1e6)} x 1e-6 |"
        )
    size = (folder / "model.safetensors").stat().st_size / 1e6
    lines.append(
        f"| weights | model.safetensors, {size:.1f} MB, sha256 `{rel.get('weights_sha256', 'not recorded')}` |"
    )
    lines.append(f"| released | {rel.get('released_utc', 'not recorded')} |")
    lines += ["", "Command (the resolved config is `train_config.yaml`):", "", "```"]
    with contextlib.suppress(ConfigError, TypeError, KeyError):
        lines.append(train_command_line(train) if train else rel["train_command"])
    lines += [f"istd train weights/{name}/train_config.yaml --work-dir WORK   # the same config",
              "istd train --work-dir WORK --resume   # after each interruption", "```", ""]  # fmt: skip
    if test is not None:
        f = test["facts"]
        lines += [
            f"### Test metrics (threshold {test.get('threshold')})", "",
            f"`istd eval --weights {name} --data {f['dataset']} --split {f['split']}` (the same "
            f"library call, run by the release tool): {test['n_images']} images, "
            f"{test['n_targets']} targets; `metrics.json`." + _limited(test), "",
            "| IoU | nIoU | Pd | Fa (x 1e-6) |", "|---|---|---|---|",
            f"| {_metric_cells(test)} |", "",
        ]  # fmt: skip
    cross = sorted(folder.glob("cross_*.json"))
    if cross:
        lines += ["### Cross-dataset (other datasets' test splits)", "",
                  "| dataset | split | images | threshold | IoU | nIoU | Pd | Fa (x 1e-6) | file |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for path in cross:
            c = json.loads(path.read_text(encoding="utf-8"))
            lines.append(
                f"| {path.stem[6:]} | {c['facts']['split']} | {c['n_images']} | {c.get('threshold')} | "
                f"{_metric_cells(c)} | `{path.name}`{_limited(c)} |"
            )
        lines.append("")
    if (folder / "pd_fa.png").is_file():
        lines += ["### Pd-Fa curve (test split)", "", f"![Pd-Fa curve]({name}/pd_fa.png)", ""]
    val_rows = [r for r in rows if r.get("val_iou") is not None][-LATEST_ROWS:]
    if val_rows:
        lines += ["### Latest validation rows (`log.csv`)", "",
                  "| epoch | train loss | val IoU | val nIoU | val Pd | val Fa (x 1e-6) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {int(r['epoch'])} | {_f(r['loss'])} | {_f(r['val_iou'])} | {_f(r['val_niou'])} | "
            f"{_f(r['val_pd'])} | {_f(r['val_fa'], 2, 1e6)} |"
            for r in val_rows
        ]
        lines.append("")
    if str(extra.get("dataset", "")).startswith("NUAA-SIRST"):
        lines += ["### Distance to the targets and the paper", ""]
        if test is not None:
            lines.append(_distance(test, f"the {test['facts']['split']} split"))
        else:
            lines.append(_distance(val, "the validation split (the targets are for test, "
                                        "which is not evaluated yet)"))  # fmt: skip
        lines.append("")
    return lines


def render_card(weights_root: Path) -> str:
    """weights/README.md text: an introduction and one section per weights folder."""
    from istd.models.hub import DEFAULT_WEIGHTS

    folders = sorted(
        p for p in weights_root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()
    )  # fmt: skip
    lines = [
        "# Shipped weights", "",
        "Generated by `python tools/release_weights.py` from the files in each folder; do not "
        "edit by hand. Weights are `model.safetensors` plus `config.json` (architecture, "
        "normalisation statistics of the training split, and under `extra` the validation "
        "metrics, split hashes and training config); nothing is pickled. Each folder also holds "
        "the run's `log.csv`, `train_config.yaml` and `release.json`. Load with "
        f"`istd.from_pretrained(\"<name>\")` or `--weights <name>`; `istd predict` and `istd eval` "
        f"use `{DEFAULT_WEIGHTS}` when no weights are named.", "",
        "Issue targets on the NUAA-SIRST test split at threshold 0.5: IoU >= 0.75, Pd >= 0.97, "
        "Fa <= 1e-5. Fa is printed x 1e-6.", "",
    ]  # fmt: skip
    for folder in folders:
        lines += _section(folder)
    return "\n".join(lines).rstrip() + "\n"


def write_card(weights_root: str | Path | None = None) -> Path:
    """Rewrite `weights_root/README.md` from every weights folder in it, atomically."""
    root = Path(weights_root) if weights_root else REPO / "weights"
    path = write_atomic(root / "README.md", render_card(root), overwrite=True)
    path.chmod(0o644)
    return path


def _parse_cross(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--cross {item!r}: expected NAME=DATA_ROOT, e.g. NUDT-SIRST=../x")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status (an `IstdError` prints one line and gives 1)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="istd train work dir (with best/)")
    parser.add_argument("--name", help="weights name, e.g. mim-istd-nuaa-sirst")
    parser.add_argument("--final", action="store_true", help="training is over")
    parser.add_argument("--eval-test", type=Path, metavar="DATA_ROOT",
                        help="evaluate the test split of this dataset once (needs --final)")  # fmt: skip
    parser.add_argument("--cross", action="append", default=[], metavar="NAME=DATA_ROOT",
                        help="evaluate on another dataset's test split (repeatable)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace a better checkpoint")
    parser.add_argument("--reeval", action="store_true", help="evaluate again (same weights)")
    parser.add_argument("--hardware-note", help="training hardware, shown on the card")
    parser.add_argument("--eval-limit", type=int, help="first N test images only (smoke)")
    parser.add_argument("--device", default="cpu", help="evaluation device")
    parser.add_argument("--weights-root", type=Path, help="default: the repository's weights/")
    parser.add_argument("--card-only", action="store_true", help="only rewrite README.md")
    args = parser.parse_args(argv)
    try:
        if args.card_only:
            print(f"model card: {write_card(args.weights_root)}")
            return 0
        if args.run is None or args.name is None:
            parser.error("--run and --name are required (or --card-only)")
        release(
            args.run, args.name, weights_root=args.weights_root, final=args.final,
            eval_test=args.eval_test, cross=_parse_cross(args.cross), force=args.force,
            reeval=args.reeval, hardware_note=args.hardware_note, eval_limit=args.eval_limit,
            device=args.device,
            invocation="python tools/release_weights.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        )  # fmt: skip
    except IstdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
