"""Release a training run's best checkpoint into weights/<name>/ and rewrite weights/README.md.

`istd train` leaves a work dir with best/ (model.safetensors, config.json, README.md), log.csv
and config.yaml. This tool copies them into weights/<name>/ (config.yaml as train_config.yaml),
optionally evaluates the test split once (weights/<name>/metrics.json, pd_fa.png and
per_image_test.csv, with the same library call as `istd eval`) and other datasets' test
splits (cross_<dataset>.json),
records the release in release.json (final or intermediate, the hardware, the train command)
and regenerates the whole model card weights/README.md from the files of every weights/*/
folder: every number on the card is read from those files.

A run started with `--load-from` (its init.json) also brings its earlier stages: the log and
config of the weights it started from, as stage<k>_log.csv and stage<k>_train_config.yaml, and
those of the stages before it when it started from a released fine-tuned folder, listed oldest
first in stages.json, once that folder is checked to still hold the same weights file (sha256).

The new folder is built beside the old one and swapped in (`istd._atomic.replace_dir_atomic`).
A checkpoint with a lower validation IoU than the released one, or validated on other ids, is
refused without --force; a file of 25 MB or more is always refused. Evaluation results are kept
across releases only while the weights file is bit-identical (same sha256).

Usage:
    python tools/release_weights.py --run WORK_DIR --name mim-istd-nuaa-sirst [--final]
        [--eval-test DATA_ROOT] [--cross NAME=DATA_ROOT ...] [--force] [--hardware-note TEXT]
        [--note TEXT ...]
    python tools/release_weights.py --card-only [--name NAME --note TEXT ...]
    python tools/release_weights.py --name NAME --eval-tta DATA_ROOT
    python tools/release_weights.py --name NAME --ensemble MEMBER --ensemble MEMBER
        --eval-test DATA_ROOT [--cross NAME=DATA_ROOT ...] [--note TEXT ...]

`--eval-tta` evaluates a released folder's test split again with flip test-time augmentation
(`istd eval --tta`) into metrics_tta.json, which the card shows beside the plain figures.

`--ensemble` releases `--name` as an ensemble (`istd.models.ensemble`) of released folders:
`ensemble.json` naming them, its metrics on their validation split (`metrics_val.json`, what
it is chosen on) and on the test split, evaluated at release.

`--card-only` with `--name` and `--note` adds remarks to a released folder's release.json (a
later run that was tried and not released, say) without touching its weights.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from istd._atomic import recover_dir, replace_dir_atomic, write_atomic
from istd.engine.checkpoint import INIT_RECORD
from istd.engine.curves import write_training_curves
from istd.engine.evaluate import sha256_file, weights_sha256
from istd.errors import ConfigError, IstdError, WeightsError
from istd.models.ensemble import ENSEMBLE_FILE, EnsembleMember, ensemble_members

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling card module
from weights_card import (  # noqa: E402
    STAGES_FILE,
    TTA_FILE,
    earlier_stages,
    read_log,
    render_card,
    stage_dir,
    train_command,
    train_command_line,
    write_card,
)

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 25_000_000  # the "under 25 MB", in decimal megabytes
# files of the test split's `istd eval` report kept beside metrics.json: report name -> name here
TEST_EXTRAS = {"pd_fa.png": "pd_fa.png", "per_image.csv": "per_image_test.csv"}
# (file in the work dir, name in the weights folder)
RUN_FILES = (
    ("best/model.safetensors", "model.safetensors"),
    ("best/config.json", "config.json"),
    ("best/README.md", "README.md"),
    ("log.csv", "log.csv"),
    ("config.yaml", "train_config.yaml"),
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

__all__ = [
    "evaluate_tta",
    "hardware",
    "read_log",
    "release",
    "release_ensemble",
    "render_card",
    "train_command",
    "write_card",
]


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


def _earlier_stages(run: Path) -> list[tuple[dict[str, Any], Path, Path]]:
    """A --load-from run's earlier stages, oldest first: (record, log.csv, config) each.

    The folder it started from must still hold the same weights file (sha256) with the log and
    config that made it. A released folder brings its own earlier stages along; a work dir's
    best/ must come from a run from scratch (release a fine-tuned run before tuning it again).
    """
    path = run / INIT_RECORD
    if not path.is_file():
        return []
    init = json.loads(path.read_text(encoding="utf-8"))
    folder = Path(init["folder"])
    work_dir = folder.name == "best" and not (folder / "log.csv").is_file()
    if work_dir:  # a work dir's best/: its log and config lie beside it
        log, config = folder.parent / "log.csv", folder.parent / "config.yaml"
    else:
        log, config = folder / "log.csv", folder / "train_config.yaml"
    weights = folder / "model.safetensors"
    if not weights.is_file() or sha256_file(weights) != init["weights_sha256"]:
        raise WeightsError(
            f"{run} started from {weights} (--load-from), which no longer holds those weights "
            f"(sha256 {init['weights_sha256'][:12]}...): its earlier stages cannot be documented"
        )
    missing = [str(p) for p in (log, config) if not p.is_file()]
    if missing:
        raise WeightsError(f"{run}: the earlier stage's {', '.join(missing)} missing")
    if work_dir and (folder.parent / INIT_RECORD).is_file():
        raise WeightsError(
            f"{run} started from {folder}, itself fine-tuned and not released: release that "
            "run first and fine-tune the released folder"
        )
    stages = [
        (stage, folder / stage["log"], folder / stage["train_config"])
        for stage in ([] if work_dir else earlier_stages(folder))
    ]
    release_json = folder / "release.json"
    first = json.loads(release_json.read_text(encoding="utf-8")) if release_json.is_file() else {}
    init["release"] = {k: first.get(k) for k in ("name", "train_command", "hardware_note", "notes")}
    return [*stages, (init, log, config)]


def _val_iou(meta: dict[str, Any]) -> float | None:
    value = meta.get("extra", {}).get("metrics", {}).get("iou")
    return float(value) if isinstance(value, (int, float)) else None


def _refuse_worse(dst: Path, new: dict[str, Any], force: bool) -> None:
    from istd.models.hub import read_config

    if dst.exists() and not (dst / "config.json").is_file():
        # replace_dir_atomic would delete it; --force is for weights, never for other files
        raise WeightsError(
            f"{dst} exists but is not a weights folder (no config.json): not replaced"
        )
    if force or not dst.exists():
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


def _evaluate(
    folder: Path,
    name: str,
    data: Path,
    limit: int | None,
    device: str,
    tta: bool = False,
    split: str | None = None,
) -> Path:
    """Evaluate `folder`'s weights on a split of `data` (default: its test split); return the
    report folder (temporary).

    The weights are linked into a folder named `name`, so the report's label and the Pd-Fa
    legend say `name`, not a temporary name; an ensemble's members are linked beside it.
    """
    from istd.engine.evaluate import run_evaluation

    work = Path(tempfile.mkdtemp(prefix="istd-release-"))
    source = work / name
    source.mkdir()
    if (folder / ENSEMBLE_FILE).is_file():
        shutil.copyfile(folder / ENSEMBLE_FILE, source / ENSEMBLE_FILE)
        for member in {m.name for m in ensemble_members(folder)}:
            (work / member).symlink_to((folder.parent / member).resolve())
    else:
        for file in ("model.safetensors", "config.json"):
            (source / file).symlink_to((folder / file).resolve())
    try:
        run_evaluation(
            [str(source)], data, work / "report", split=split, limit=limit, gallery=0,
            device=device, tta=tta,
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return work


def _eval_json(
    work: Path, name: str, limit: int | None, file: str = "model.safetensors"
) -> dict[str, Any]:
    data = json.loads((work / "report" / "metrics.json").read_text(encoding="utf-8"))
    # The file evaluated is the released one (same sha256); name it where it will live.
    data["facts"].update(source=name, weights=f"weights/{name}/{file}", limit=limit)
    return data


def _carry_over(
    old: Path, tmp: Path, sha: str, wanted: dict[str, tuple[str, int | None]], reeval: bool
) -> list[str]:
    """Copy evaluation files of the same weights file (equal sha256) into the new folder.

    A file asked for again (`wanted`: name -> (dataset, limit)) is kept only if it was made on
    that dataset with that limit, and never with `reeval`.
    """
    kept = []
    for path in sorted(old.glob("metrics*.json")) + sorted(old.glob("cross_*.json")):
        facts = json.loads(path.read_text(encoding="utf-8")).get("facts", {})
        asked = path.name in wanted
        if asked and (reeval or (facts.get("dataset"), facts.get("limit")) != wanted[path.name]):
            continue
        if facts.get("weights_sha256") == sha:
            shutil.copyfile(path, tmp / path.name)
            kept.append(path.name)
            if path.name == "metrics.json":
                for extra in TEST_EXTRAS.values():
                    if (old / extra).is_file():
                        shutil.copyfile(old / extra, tmp / extra)
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
    notes: Sequence[str] = (),
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
        notes: free-text remarks on how the weights were made (e.g. a code fix during the run),
            listed on the card.
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
    stages = _earlier_stages(run)
    dst = root / name
    # A release killed between its two renames left the old weights at .<name>.old; restore
    # them, or the check below finds no weights and the swap deletes them.
    recover_dir(dst)
    _refuse_worse(dst, meta, force)
    resolved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    try:
        command = train_command_line(resolved, load_from=stage_dir(len(stages)) if stages else None)
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
        "notes": list(notes),
        "tool": invocation,
    }

    def build(tmp: Path) -> None:
        _copy_run(run, tmp)
        records = []
        for k, (stage, log_file, config_file) in enumerate(stages, 1):
            # copied before the swap: an earlier stage may lie in `dst`
            stage = {
                **stage,
                "log": f"stage{k}_log.csv",
                "train_config": f"stage{k}_train_config.yaml",
            }
            shutil.copyfile(log_file, tmp / stage["log"])
            shutil.copyfile(config_file, tmp / stage["train_config"])
            records.append(stage)
        if records:
            write_atomic(tmp / STAGES_FILE, json.dumps(records, indent=2) + "\n", overwrite=True)
        from_pretrained(tmp)  # refuse weights that do not load
        extra = json.loads((tmp / "config.json").read_text(encoding="utf-8")).get("extra", {})
        write_training_curves(tmp, pd.read_csv(tmp / "log.csv"), extra.get("epoch"))
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
                _write_eval(tmp, target, work, name, eval_limit, "model.safetensors")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        _seal(tmp, record)

    replace_dir_atomic(dst, build)
    log(f"released {run} -> {dst}")
    log(f"model card: {write_card(root)}")
    return dst


def _seal(tmp: Path, record: dict[str, Any]) -> None:
    """Write the release record into the new folder and make its files world-readable; refuse
    any file of 25 MB or more."""
    write_atomic(tmp / "release.json", json.dumps(record, indent=2) + "\n", overwrite=True)
    for path in tmp.iterdir():
        if path.stat().st_size >= MAX_BYTES:
            raise WeightsError(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB >= 25 MB")
        path.chmod(0o644)
    tmp.chmod(0o755)


def _write_eval(
    tmp: Path, target: str, work: Path, name: str, limit: int | None, file: str
) -> None:
    """Keep an evaluation's metrics as `target` in `tmp`; a test split's also its Pd-Fa curve and
    per-image table (TEST_EXTRAS)."""
    result = json.dumps(_eval_json(work, name, limit, file), indent=2) + "\n"
    write_atomic(tmp / target, result, overwrite=True)
    if target == "metrics.json":
        for report_file, extra in TEST_EXTRAS.items():
            if (work / "report" / report_file).is_file():
                shutil.copyfile(work / "report" / report_file, tmp / extra)


def release_ensemble(
    name: str,
    members: Sequence[str],
    data: str | Path,
    *,
    weights_root: str | Path | None = None,
    cross: dict[str, str | Path] | None = None,
    notes: Sequence[str] = (),
    eval_limit: int | None = None,
    device: str = "cpu",
    invocation: str | None = None,
    log: Any = print,
) -> Path:
    """Write `weights_root/name` as an ensemble of released weights folders and rewrite the card.

    `members` are folder names, each optionally `@scale` to run it at another input scale
    (`name@1.25`). The folder holds `ensemble.json` (the members; they stay in their own
    folders), the
    ensemble's metrics on the members' validation split (`metrics_val.json`, what it was chosen
    on), on the test split of `data` (`metrics.json`, `pd_fa.png`, `per_image_test.csv`),
    on other datasets' test splits (`cross`) and `release.json`.

    Raises:
        ConfigError: bad names or scales, fewer than two members or a member named twice at
            the same scale.
        WeightsError: a member that is not a released weights folder, members validated on
            other ids, or a folder of that name that is not an ensemble.
    """
    from istd.models import from_pretrained
    from istd.models.hub import read_config

    root = Path(weights_root) if weights_root else REPO / "weights"
    _check_name(name, "weights name")
    members = [EnsembleMember.parse(m) for m in members]
    for member in members:
        _check_name(member.name, "ensemble member")
    if len(members) < 2 or len(set(members)) != len(members):
        raise ConfigError(
            f"an ensemble needs two or more different members, got {[str(m) for m in members]}"
        )
    cross = {_check_name(k, "cross dataset name"): Path(v) for k, v in (cross or {}).items()}
    metas = []
    for member in members:
        if not (root / member.name / "model.safetensors").is_file():
            raise WeightsError(
                f"{root / member.name}: not a released weights folder (release each member first)"
            )
        metas.append(read_config(root / member.name))
    val_ids = {m["extra"].get("split_sha256", {}).get("val") for m in metas}
    if len(val_ids) != 1 or None in val_ids:
        raise WeightsError(
            f"members {', '.join(map(str, members))} were not validated on the same ids: an "
            "ensemble is chosen on the validation split its members share"
        )
    val_split = metas[0]["extra"]["train_config"]["data"]["val_split"]
    dst = root / name
    recover_dir(dst)
    if dst.exists() and not (dst / ENSEMBLE_FILE).is_file():
        raise WeightsError(f"{dst} exists and is not an ensemble folder: not replaced")
    record = {
        "name": name,
        "final": True,
        "released_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "members": {str(m): sha256_file(root / m.name / "model.safetensors") for m in members},
        "weights_sha256": None,  # of the members, below
        "hardware": hardware(),
        "notes": list(notes),
        "tool": invocation,
    }

    def build(tmp: Path) -> None:
        text = json.dumps({"members": [m.to_json() for m in members]}, indent=2) + "\n"
        write_atomic(tmp / ENSEMBLE_FILE, text, overwrite=True)
        from_pretrained(tmp)  # refuse members that do not load (tmp lies beside them)
        record["weights_sha256"] = weights_sha256(tmp)
        jobs = [("metrics_val.json", Path(data), val_split), ("metrics.json", Path(data), None)]
        jobs += [(f"cross_{k}.json", v, None) for k, v in cross.items()]
        for target, source, split in jobs:
            log(f"evaluating {name} on {source} ({split or 'test'} split) -> {target}")
            work = _evaluate(tmp, name, source, eval_limit, device, split=split)
            try:
                _write_eval(tmp, target, work, name, eval_limit, ENSEMBLE_FILE)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        val = _json_file(tmp / "metrics_val.json")
        if eval_limit is None and val["facts"].get("ids_sha256") != val_ids.pop():
            raise WeightsError(
                f"{data}: its {val_split!r} split holds other ids than the members' validation"
            )
        _seal(tmp, record)

    replace_dir_atomic(dst, build)
    log(f"released the ensemble {' + '.join(map(str, members))} -> {dst}")
    log(f"model card: {write_card(root)}")
    return dst


def _json_file(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def add_notes(name: str, notes: Sequence[str], weights_root: str | Path | None = None) -> Path:
    """Append `notes` (those not there yet) to `weights_root/name/release.json`; rewrite the card.

    Raises:
        WeightsError: no released folder of that name.
    """
    root = Path(weights_root) if weights_root else REPO / "weights"
    path = root / name / "release.json"
    if not path.is_file():
        raise WeightsError(f"{path} not found: release weights named {name!r} first")
    record = json.loads(path.read_text(encoding="utf-8"))
    record["notes"] = [
        *record.get("notes", []),
        *(n for n in notes if n not in record.get("notes", [])),
    ]
    write_atomic(path, json.dumps(record, indent=2) + "\n", overwrite=True).chmod(0o644)
    return write_card(root)


def evaluate_tta(
    name: str,
    data: str | Path,
    weights_root: str | Path | None = None,
    limit: int | None = None,
    device: str = "cpu",
    log: Any = print,
) -> Path:
    """Evaluate a released folder's test split with flip TTA into `metrics_tta.json`; rewrite
    the card. The weights and their plain `metrics.json` are not touched.

    Raises:
        WeightsError: no released folder of that name.
    """
    root = Path(weights_root) if weights_root else REPO / "weights"
    folder = root / _check_name(name, "weights name")
    if not (folder / "release.json").is_file():
        raise WeightsError(
            f"{folder / 'release.json'} not found: release weights named {name!r} first"
        )
    log(f"evaluating {name} on {data} (test split, flip TTA) -> {TTA_FILE}")
    work = _evaluate(folder, name, Path(data), limit, device, tta=True)
    try:
        result = json.dumps(_eval_json(work, name, limit), indent=2) + "\n"
        write_atomic(folder / TTA_FILE, result, overwrite=True).chmod(0o644)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return write_card(root)


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
    parser.add_argument("--note", dest="notes", action="append", default=[],
                        help="a remark on how the weights were made, listed on the card (repeatable)")  # fmt: skip
    parser.add_argument("--eval-tta", type=Path, metavar="DATA_ROOT",
                        help="evaluate a released folder's test split with flip TTA (needs --name)")  # fmt: skip
    parser.add_argument("--ensemble", dest="members", action="append", default=[],
                        metavar="MEMBER", help="release --name as an ensemble of these released "
                        "folders, NAME or NAME@SCALE to run one at another input scale "
                        "(repeatable; needs --eval-test)")  # fmt: skip
    parser.add_argument("--eval-limit", type=int, help="first N test images only (smoke)")
    parser.add_argument("--device", default="cpu", help="evaluation device")
    parser.add_argument("--weights-root", type=Path, help="default: the repository's weights/")
    parser.add_argument("--card-only", action="store_true", help="only rewrite README.md")
    args = parser.parse_args(argv)
    try:
        if args.card_only:
            if args.notes and args.name is None:
                parser.error("--note with --card-only needs --name (the weights to annotate)")
            if args.notes:
                card = add_notes(args.name, args.notes, args.weights_root)
            else:
                card = write_card(args.weights_root)
            print(f"model card: {card}")
            return 0
        if args.eval_tta is not None:
            if args.name is None or args.run is not None:
                parser.error("--eval-tta takes --name (a released folder), not --run")
            card = evaluate_tta(
                args.name, args.eval_tta, args.weights_root, args.eval_limit, args.device
            )
            print(f"model card: {card}")
            return 0
        if args.members:
            if args.name is None or args.eval_test is None or args.run is not None:
                parser.error("--ensemble takes --name and --eval-test DATA_ROOT, not --run")
            release_ensemble(
                args.name, args.members, args.eval_test, weights_root=args.weights_root,
                cross=_parse_cross(args.cross), notes=args.notes, eval_limit=args.eval_limit,
                device=args.device,
                invocation="python tools/release_weights.py " + shlex.join(sys.argv[1:] if argv is None else argv),
            )  # fmt: skip
            return 0
        if args.run is None or args.name is None:
            parser.error("--run and --name are required (or --card-only)")
        release(
            args.run, args.name, weights_root=args.weights_root, final=args.final,
            eval_test=args.eval_test, cross=_parse_cross(args.cross), force=args.force,
            reeval=args.reeval, hardware_note=args.hardware_note, notes=args.notes, eval_limit=args.eval_limit,
            device=args.device,
            invocation="python tools/release_weights.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        )  # fmt: skip
    except IstdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
