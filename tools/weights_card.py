"""The model card weights/README.md, written from the files of every weights/*/ folder.

Used by tools/release_weights.py (and tools/ablation.py for the train command): every number on
the card is read from a folder's config.json, log.csv, train_config.yaml, release.json and,
once evaluated, metrics.json and cross_<dataset>.json. Nothing is typed in by hand.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from istd._atomic import write_atomic
from istd.errors import ConfigError, WeightsError

REPO = Path(__file__).resolve().parents[1]

# The paper's NUAA-SIRST test figures (Chen et al., TGRS 2024) and the targets.
PAPER = {"iou": 0.809, "niou": 0.801, "pd": 1.00, "fa": 2.2e-6}


TARGETS = (("iou", "IoU", ">=", 0.75), ("pd", "Pd", ">=", 0.97), ("fa", "Fa", "<=", 1e-5))


LATEST_ROWS = 8
# A fine-tuned model's earlier stages, oldest first (one record each, with the names of its log
# and config in the folder). Folders released before chains were supported hold one earlier
# stage as init.json, init_log.csv and init_train_config.yaml.
STAGES_FILE = "stages.json"
# the test split evaluated with flip test-time augmentation (`istd eval --tta`)
TTA_FILE = "metrics_tta.json"


def stage_dir(k: int) -> str:
    """Where stage k's best checkpoint lies in the printed commands (stage 1: WORK1/best)."""
    return f"WORK{k}/best"


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
    from istd.engine.config import config_from_saved, load_config, shipped_configs

    target = config_from_saved(resolved, "train_config.yaml").to_dict()
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
    resolved: dict[str, Any],
    work_dir: str = "WORK",
    base: str | None = None,
    load_from: str | None = None,
) -> str:
    """`istd train ...` as a shell line (see `train_command`), with `--load-from` if given."""
    name, items = train_command(resolved, base)
    start = f" --load-from {shlex.quote(load_from)}" if load_from else ""
    sets = "".join(f" --set {shlex.quote(item)}" for item in items)
    return f"istd train {name} --work-dir {shlex.quote(work_dir)}{start}{sets}"


def _f(value: Any, digits: int = 4, scale: float = 1.0) -> str:
    if not isinstance(value, (int, float)) or value != value:
        return "n/a"
    return f"{value * scale:.{digits}f}"


def _selection_note(selection: dict[str, Any] | None) -> str:
    """How best/ was chosen when `train.best_window` averaged several validations."""
    if not selection or selection.get("window", 1) <= 1:
        return ""
    return (
        f"; chosen by the mean {selection['metric']} of the last {selection['window']} "
        f"validations ({_f(selection['score'])})"
    )


def _metric_cells(m: dict[str, Any]) -> str:
    return (
        f"{_f(m.get('iou'))} | {_f(m.get('niou'))} | {_f(m.get('pd'))} | {_f(m.get('fa'), 2, 1e6)}"
    )


def _limited(m: dict[str, Any]) -> str:
    limit = m.get("facts", {}).get("limit")
    return f" **Only the first {limit} images of the split (--eval-limit).**" if limit else ""


def _saved_config(path: Path) -> dict[str, Any] | None:
    """A run's saved config resolved as it trained (keys added since get that run's values)."""
    from istd.engine.config import config_from_saved

    if not path.is_file():
        return None
    return config_from_saved(yaml.safe_load(path.read_text(encoding="utf-8")), str(path)).to_dict()


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def earlier_stages(folder: Path) -> list[dict[str, Any]]:
    """A released folder's earlier training stages, oldest first; [] for a run from scratch.

    Each is the `init.json` record of the stage that followed it (the weights' sha256, best
    epoch and val metrics), its own release record under `release`, and under `log` and
    `train_config` the names of its log.csv and config in `folder`.
    """
    stages = _json(folder / STAGES_FILE)
    if stages is not None:
        return stages
    init = _json(folder / "init.json")  # released before chains: one earlier stage
    if init is None:
        return []
    return [{**init, "log": "init_log.csv", "train_config": "init_train_config.yaml"}]


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


def _iou_loss_lines(per_image_csv: Path, top: int = 3) -> list[str]:
    """Card lines naming the test images that hold most of the IoU lost (none without the
    file, which releases before it was written lack)."""
    if not per_image_csv.is_file():
        return []
    import pandas as pd

    from istd.metrics.report import iou_losses

    losses = iou_losses(pd.read_csv(per_image_csv).to_dict("records"), top=top)
    if losses.empty:
        return []
    lines = [
        "Where the test IoU is lost (`per_image_test.csv`): IoU counts pixels over the whole "
        "split, so a few images with large missed targets can hold much of the gap.",
        "",
        "| image | target px | predicted px | both | share of lost px | test IoU if this image "
        "were exact |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.image} | {r.target_pixels} | {r.predicted_pixels} | {r.intersection} | "
        f"{100 * r.lost_share:.1f} % | {r.iou_if_fixed:.4f} |"
        for r in losses.itertuples()
    ]
    return [*lines, ""]


def _section(folder: Path) -> list[str]:
    """The card section of one weights folder, every figure read from its files."""
    from istd.models import from_pretrained
    from istd.models.hub import read_config

    name = folder.name
    meta = read_config(folder)
    extra, cfg = meta["extra"], meta["config"]
    rel = _json(folder / "release.json") or {}
    train = _saved_config(folder / "train_config.yaml")
    rows = read_log(folder / "log.csv") if (folder / "log.csv").is_file() else []
    test, val = _json(folder / "metrics.json"), extra.get("metrics", {})
    tta = _json(folder / TTA_FILE)
    if tta is not None and tta["facts"].get("weights_sha256") != rel.get("weights_sha256"):
        tta = None  # made for another weights file
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
    model += f"inner `{cfg.get('inner')}`, in_chans {cfg.get('in_chans')}, "
    stride = cfg.get("head_stride", 4)
    model += f"head at {'H' if stride == 1 else f'H/{stride}'}, "
    model += f"input scale {cfg.get('input_scale', 1.0):g}"
    lines.append(f"| model | {model} |")
    n_val = f" ({int(val['n_images'])} images)" if "n_images" in val else ""
    lines.append(f"| data | {extra.get('dataset', 'n/a')}; {extra.get('split', 'n/a')}{n_val} |")
    mean, std = (", ".join(f"{v:.4f}" for v in cfg.get(k, ())) for k in ("norm_mean", "norm_std"))
    norm = f"mean {mean}, std {std} (measured on the training split)"
    lines.append(f"| normalisation | {norm} |")
    if train:
        o, s, t, a = train["optim"], train["schedule"], train["train"], train["augment"]
        decayed = {"weights": "conv and linear weights", "all": "every parameter"}
        flips = "/".join(f"{a[k]:g}" for k in ("hflip_p", "vflip_p", "rot90_p"))
        if a.get("scale_p", 0) > 0:  # absent from configs saved before the option
            low, high = a["scale_range"]
            flips += f", rescale by {low:g}-{high:g} p {a['scale_p']:g}"
        if a.get("pad_fill") == "mean":
            flips += ", small frames padded with the normalisation mean"
        lines.append(
            f"| recipe | {o['name']} lr {o['lr']:g}, weight decay {o['weight_decay']:g} on "
            f"{decayed[o['decay']]}, "
            f"{s['name']} schedule (warm-up {s['warmup_epochs']}, min lr {s['min_lr']:g}), "
            f"{train['loss']['name']} loss, {a['crop_size']} x {a['crop_size']} crops, "
            f"h-flip/v-flip/rot90 p {flips}, batch "
            f"{t['batch_size']}, seed {t['seed']}, validation every "
            f"{'epoch' if t['val_every'] == 1 else str(t['val_every']) + ' epochs'}"
            + (
                f", weights: moving average, decay {t['ema_decay']:g} per step"
                if t.get("ema_decay")
                else ""
            )
            + " |"
        )
    lines.append(f"| epochs | {done} done of {planned} planned |")
    stages = earlier_stages(folder)
    for k, stage in enumerate(stages, 1):
        lines.append(_stage_row(folder, k, stage, len(stages)))
    if rows:
        epoch_s = sum(r["epoch_s"] or 0.0 for r in rows)
        ips = sorted(r["images_per_s"] for r in rows if r.get("images_per_s") is not None)
        wall = _f(rows[-1].get("wall_time_s"), 2, 1 / 3600)
        median = _f(ips[len(ips) // 2] if ips else None, 2)
        lines.append(
            f"| wall time | {epoch_s / 3600:.2f} h (sum of epoch_s), {wall} h (wall_time_s); "
            f"median {median} training images/s |"
        )
    lines += _machine_row(rel)
    if rel.get("hardware_note"):
        lines.append(f"| training hardware | {rel['hardware_note']} |")
    if val:
        lines.append(
            f"| best checkpoint | epoch {extra.get('epoch')}: val IoU {_f(val.get('iou'))}, nIoU "
            f"{_f(val.get('niou'))}, Pd {_f(val.get('pd'))}, Fa {_f(val.get('fa'), 2, 1e6)} x 1e-6"
            f"{_selection_note(extra.get('selection'))} |"
        )
    size = (folder / "model.safetensors").stat().st_size / 1e6
    lines.append(
        f"| weights | model.safetensors, {size:.1f} MB, sha256 `{rel.get('weights_sha256', 'not recorded')}` |"
    )
    lines.append(f"| released | {rel.get('released_utc', 'not recorded')} |")
    # each earlier stage keeps the notes of its own release
    notes = list(rel.get("notes") or [])
    for k, stage in enumerate(stages, 1):
        notes += [f"Stage {k}: {note}" for note in (stage.get("release") or {}).get("notes") or []]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    lines += ["", "Command (the resolved config is `train_config.yaml`):", "", "```"]
    start = stage_dir(len(stages)) if stages else None
    with contextlib.suppress(ConfigError, TypeError, KeyError):
        for k, stage in enumerate(stages, 1):
            config = _saved_config(folder / stage["train_config"])
            earlier = stage_dir(k - 1) if k > 1 else None
            lines.append(
                f"{train_command_line(config, f'WORK{k}', load_from=earlier)}   # stage {k}"
            )
        lines.append(train_command_line(train, load_from=start) if train else rel["train_command"])
    again = f" --load-from {start}" if start else ""
    lines += [f"istd train weights/{name}/train_config.yaml --work-dir WORK{again}   # the same config",
              "istd train --work-dir WORK --resume   # after each interruption", "```", ""]  # fmt: skip
    lines += _evaluation_lines(folder, test, tta)
    if (folder / "curves.png").is_file():
        lines += [
            "### Training curves (`log.csv`)",
            "",
            f"![Training curves]({name}/curves.png)",
            "",
        ]
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
        lines += _distance_lines(test, tta, val)
    return lines


def _interval_lines(per_image: Path, test: dict[str, Any]) -> list[str]:
    """How far the test metrics could move with other images: bootstrap intervals over the test
    images (none where the per-image file is missing or disagrees with `test`)."""
    import pandas as pd

    from istd.metrics.bootstrap import metric_intervals

    if not per_image.is_file():
        return []
    table = metric_intervals(pd.read_csv(per_image).to_dict("records")).set_index("metric")
    if any(abs(table.loc[k, "value"] - test[k]) > 1e-9 for k in ("iou", "niou", "pd", "fa")):
        return []
    cells = [
        f"{label} {table.loc[k, 'low'] * scale:.{digits}f} to {table.loc[k, 'high'] * scale:.{digits}f}"
        for k, label, scale, digits in (
            ("iou", "IoU", 1, 3), ("niou", "nIoU", 1, 3), ("pd", "Pd", 1, 3), ("fa", "Fa", 1e6, 1)
        )
    ]  # fmt: skip
    return [
        f"95 % bootstrap intervals over these {test['n_images']} images "
        f"(`istd.metrics.bootstrap.metric_intervals` on `{per_image.name}`, 2000 draws): "
        + ", ".join(cells)
        + " (Fa x 1e-6): how far they could move on other images like these.",
        "",
    ]


def _evaluation_lines(
    folder: Path, test: dict[str, Any] | None, tta: dict[str, Any] | None
) -> list[str]:
    """Card lines of a folder's test metrics (plain and --tta), the images where its IoU is
    lost, its cross-dataset results and its Pd-Fa curve."""
    name, lines = folder.name, []
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
        if tta is not None:
            lines += [
                f"With flip test-time augmentation, `istd eval ... --tta` (the mean probability "
                f"over the frame and its horizontal, vertical and double flips; four times the "
                f"compute): `{TTA_FILE}`." + _limited(tta), "",
                "| IoU | nIoU | Pd | Fa (x 1e-6) |", "|---|---|---|---|",
                f"| {_metric_cells(tta)} |", "",
            ]  # fmt: skip
        lines += _interval_lines(folder / "per_image_test.csv", test)
        lines += _iou_loss_lines(folder / "per_image_test.csv")
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
    return lines


def _distance_lines(
    test: dict[str, Any] | None, tta: dict[str, Any] | None, val: dict[str, Any]
) -> list[str]:
    """The card's distance to the issue's targets and the paper (NUAA-SIRST weights)."""
    lines = ["### Distance to the targets and the paper", ""]
    if test is not None:
        # a smoke evaluation (--eval-limit) must not read as the whole split's distance
        limit = test["facts"].get("limit")
        first = f"the first {limit} images of " if limit else ""
        lines.append(_distance(test, f"{first}the {test['facts']['split']} split"))
        if tta is not None:
            lines += ["", _distance(tta, f"the {tta['facts']['split']} split with --tta")]
    else:
        lines.append(_distance(val, "the validation split (the targets are for test, "
                                    "which is not evaluated yet)"))  # fmt: skip
    lines.append("")
    return lines


def _machine_row(rel: dict[str, Any]) -> list[str]:
    """The card row of the machine a release was made on (none for releases without it)."""
    hw = rel.get("hardware")
    if not hw:
        return []
    gpu = hw.get("cuda") or "no GPU"
    return [
        f"| release machine | {hw['cpu']}, {hw['cpu_cores_usable']} usable cores, {gpu}; "
        f"{hw['platform']}; torch {hw['torch']} |"
    ]


def _ensemble_section(folder: Path) -> list[str]:
    """The card section of an ensemble folder: its members, and its metrics on their validation
    split (what it was chosen on) and on test."""
    from istd.models import from_pretrained
    from istd.models.ensemble import ENSEMBLE_FILE, ensemble_members
    from istd.models.hub import read_config

    name, members = folder.name, ensemble_members(folder)
    rel = _json(folder / "release.json") or {}
    val, test = _json(folder / "metrics_val.json"), _json(folder / "metrics.json")
    params = sum(p.numel() for p in from_pretrained(folder).parameters())
    metas = {m.name: read_config(folder.parent / m.name) for m in members}
    links = " and ".join(f"[`{m}`](#{m.name.replace('.', '')})" for m in members)
    lines = [
        f"## {name}", "",
        f"**An ensemble** of {links} (`{ENSEMBLE_FILE}`, `istd.models.ensemble`): the mean of "
        "their probabilities, each member at its own input scale or the one after its `@`. It "
        "runs every member, so it "
        f"costs the sum of their compute ({params / 1e6:.2f} M parameters in all).", "",
        "| | |", "|---|---|",
    ]  # fmt: skip
    shas = rel.get("members", {})
    for m in members:
        at = "" if m.input_scale is None else f" (run at input scale {m.input_scale:g})"
        lines.append(
            f"| member | `{m}`{at}, model.safetensors sha256 `{shas.get(str(m), 'not recorded')}` |"
        )
    lines += _machine_row(rel)
    lines += [f"| released | {rel.get('released_utc', 'not recorded')} |", ""]
    if rel.get("notes"):
        lines += ["Notes:", ""] + [f"- {note}" for note in rel["notes"]] + [""]
    if val is not None:
        f = val["facts"]
        lines += [
            "### Validation (what it was chosen on)", "",
            f"`istd eval --weights {name} --data {f['dataset']} --split {f['split']}` "
            f"(`metrics_val.json`), {val['n_images']} images, against each member's best "
            "checkpoint on the same split at its own input scale (recorded by `istd train` in "
            "its config.json)."
            + _limited(val), "",
            "| weights | IoU | nIoU | Pd | Fa (x 1e-6) |", "|---|---|---|---|---|",
            f"| {name} | {_metric_cells(val)} |",
        ]  # fmt: skip
        lines += [
            f"| {n} | {_metric_cells(meta['extra'].get('metrics', {}))} |"
            for n, meta in metas.items()
        ]
        lines.append("")
    lines += _evaluation_lines(folder, test, None)
    if str(metas[members[0].name]["extra"].get("dataset", "")).startswith("NUAA-SIRST"):
        lines += _distance_lines(test, None, val or {})
    return lines


def _stage_row(folder: Path, k: int, stage: dict[str, Any], n_stages: int) -> str:
    """The card row of earlier stage k of n_stages (its record, log and config in `folder`)."""
    log = folder / stage["log"]
    rows = read_log(log) if log.is_file() else []
    epochs = int(rows[-1]["epoch"]) if rows else "n/a"
    hours = sum(r["epoch_s"] or 0.0 for r in rows) / 3600
    val = (stage.get("val_metrics") or {}).get("iou")
    started = "this run" if k == n_stages else f"stage {k + 1}"
    return (
        f"| stage {k} | {epochs} epochs of `{stage['train_config']}` ({hours:.2f} h, log "
        f"`{stage['log']}`); its best checkpoint (epoch {stage.get('epoch')}, val IoU {_f(val)}, "
        f"sha256 `{stage['weights_sha256']}`) started {started} (`--load-from`) |"
    )


def render_card(weights_root: Path) -> str:
    """weights/README.md text: an introduction and one section per weights folder."""
    from istd.models.ensemble import ENSEMBLE_FILE
    from istd.models.hub import DEFAULT_WEIGHTS

    if not weights_root.is_dir():
        raise WeightsError(f"{weights_root}: no such weights folder")
    folders = sorted(
        p for p in weights_root.iterdir()
        if p.is_dir() and not p.name.startswith(".")
        and ((p / "config.json").is_file() or (p / ENSEMBLE_FILE).is_file())
    )  # fmt: skip
    lines = [
        "# Shipped weights", "",
        "Generated by `python tools/release_weights.py` from the files in each folder; do not "
        "edit by hand. Weights are `model.safetensors` plus `config.json` (architecture, "
        "normalisation statistics of the training split, and under `extra` the validation "
        "metrics, split hashes and training config); nothing is pickled. Each folder also holds "
        "the run's `log.csv`, `train_config.yaml` and `release.json`; an ensemble folder holds "
        "`ensemble.json`, naming the weights folders whose probabilities it averages, instead "
        "of weights and training files. Load with "
        f"`istd.from_pretrained(\"<name>\")` or `--weights <name>`; `istd predict` and `istd eval` "
        f"use `{DEFAULT_WEIGHTS}` when no weights are named.", "",
        "Issue targets on the NUAA-SIRST test split at threshold 0.5: IoU >= 0.75, Pd >= 0.97, "
        "Fa <= 1e-5. Fa is printed x 1e-6.", "",
    ]  # fmt: skip
    for folder in folders:
        ensemble = (folder / ENSEMBLE_FILE).is_file()
        lines += _ensemble_section(folder) if ensemble else _section(folder)
    return "\n".join(lines).rstrip() + "\n"


def write_card(weights_root: str | Path | None = None) -> Path:
    """Rewrite `weights_root/README.md` from every weights folder in it, atomically."""
    root = Path(weights_root) if weights_root else REPO / "weights"
    path = write_atomic(root / "README.md", render_card(root), overwrite=True)
    path.chmod(0o644)
    return path
