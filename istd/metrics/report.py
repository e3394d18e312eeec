"""Evaluation reports: report.md, a self-contained report.html, metrics.json, per_image.csv,
pd_fa.png, roc.png and a gallery of the worst images; comparison tables for several models.

Every file is written atomically (temporary file, fsync, rename) through
`istd.data.io.write_bytes_atomic`; an existing report folder is only reused with `overwrite`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from istd._json import json_safe
from istd.data.io import write_bytes_atomic
from istd.errors import DataError
from istd.metrics._figures import overlay, pd_fa_png, roc_png
from istd.metrics.bootstrap import paired_bootstrap

__all__ = [
    "EvalRun",
    "GalleryItem",
    "iou_losses",
    "markdown_table",
    "metrics_table",
    "overlay",
    "prepare_out_dir",
    "write_comparison",
    "write_report",
]

#: per_image.csv's columns (`Metrics.per_image()` records)
PER_IMAGE_COLUMNS = ["image", "height", "width", "targets", "detected", "objects",
                     "false_alarm_objects", "false_alarm_pixels", "target_pixels",
                     "predicted_pixels", "intersection", "union", "iou"]  # fmt: skip
# Headline columns: (key, header, scale). Ratios print in %, Fa per million pixels.
COLUMNS = (
    ("iou", "IoU (%)", 100.0),
    ("niou", "nIoU (%)", 100.0),
    ("pd", "Pd (%)", 100.0),
    ("fa", "Fa (x1e-6)", 1e6),
    ("f1", "pixel F1 (%)", 100.0),
    ("target_f1", "target F1 (%)", 100.0),
    ("pd_fa_auc", "Pd-Fa area", 1.0),
    ("roc_auc", "ROC AUC", 1.0),
)
DEFINITIONS = (
    "IoU sums intersections and unions over the split; nIoU averages per-image IoU ({niou}); "
    "Pd counts targets (8-connected ground-truth components) matched by a predicted object "
    "whose centroid is less than {distance:g} px away, {matching}; Fa counts pixels of predicted "
    "objects that matched no target over all pixels, printed x1e-6. Binarised as probability > "
    "{threshold:g} at native resolution. Pd-Fa area: normalised area under Pd(Fa) for Fa in "
    "[0, 100 x1e-6]. See docs/metrics.md."
)
# The wording of each `Metrics` option, so that the text states the run's own settings.
MATCHING_TEXT = {
    "first": "greedily: each target, in label order, takes the first still-unmatched object "
    "in range (BasicIRSTD)",
    "optimal": "one-to-one: the assignment with the most matches, then the least total distance",
}
NIOU_EMPTY_TEXT = {
    "zero": "images with empty prediction and ground truth score 0",
    "one": "images with empty prediction and ground truth score 1",
    "skip": "images with empty prediction and ground truth are left out",
}
GALLERY_ID_BYTES = 80  # id part of a gallery file name: far below the 255-byte name limit


def _definitions(m: dict[str, Any]) -> str:
    """The metric definitions under the settings `m` (a `Metrics.compute()`) was computed with."""
    return DEFINITIONS.format(
        niou=NIOU_EMPTY_TEXT[m["niou_empty"]],
        distance=m["distance"],
        matching=MATCHING_TEXT[m["matching"]],
        threshold=m["threshold"],
    )


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of report text. Ids from non-UTF-8 file names (surrogate-escaped by the OS
    decoding) would not encode; their raw bytes are shown as \\xNN escapes instead."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").encode()


def _gallery_name(k: int, image_id: str) -> str:
    """`gallery/NN_<id>.png` with a file-system-safe id. Long ids are cut to
    `GALLERY_ID_BYTES` UTF-8 bytes (at a character boundary) plus a short hash of the whole id,
    so that the name, with the atomic writer's temporary suffix, stays within 255 bytes; `NN`
    keeps names unique."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)
    if len(safe.encode()) > GALLERY_ID_BYTES:
        digest = hashlib.sha256(image_id.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        safe = safe.encode()[:GALLERY_ID_BYTES].decode(errors="ignore") + "-" + digest
    return f"gallery/{k:02d}_{safe}.png"


@dataclass
class GalleryItem:
    """One drawn image: (H, W, 3) uint8 RGB overlay and a caption."""

    image_id: str
    overlay: np.ndarray
    caption: str


@dataclass
class EvalRun:
    """Everything a report shows about one model on one split.

    Attributes:
        label: the model's short name in tables and folder names.
        metrics: `Metrics.compute()`.
        curves: `Metrics.curves()`, or None without probability maps.
        per_image: `Metrics.per_image()`.
        facts: run facts (weights sha256, split ids and their sha256, threshold, versions, ...).
        gallery: the worst images, worst first.
    """

    label: str
    metrics: dict[str, Any]
    curves: dict[str, Any] | None = None
    per_image: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    gallery: list[GalleryItem] = field(default_factory=list)


def to_json(data: dict[str, Any]) -> bytes:
    """Strict JSON (no NaN), indented, UTF-8."""
    return (json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n").encode()


def _fmt(value: Any, scale: float) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value * scale:.2f}" if scale != 1.0 else f"{value:.4f}"


def metrics_table(runs: Sequence[EvalRun]) -> pd.DataFrame:
    """One row per run with the headline metrics, scaled as printed (%, x1e-6)."""
    rows = []
    for run in runs:
        m = run.metrics
        row: dict[str, Any] = {"model": run.label}
        for key, header, scale in COLUMNS:
            v = m.get(key)
            digits = 4 if scale == 1.0 else 2  # areas keep 4 decimals, % and x1e-6 two
            row[header] = None if v is None or not math.isfinite(v) else round(v * scale, digits)
        row.update(images=m["n_images"], targets=m["n_targets"], detected=m["n_matched"])
        rows.append(row)
    return pd.DataFrame(rows)


def iou_losses(per_image: Sequence[dict[str, Any]], top: int = 5) -> pd.DataFrame:
    """The images that cost the dataset-level IoU most: pixels of their union outside their
    intersection (missed target pixels plus extra predicted ones), largest first.

    IoU is summed over the whole split, so a few images with large missed targets can hold most
    of the gap to a perfect score; ``iou_if_fixed`` is the split's IoU had that image alone been
    segmented exactly.
    """
    df = pd.DataFrame(list(per_image), columns=PER_IMAGE_COLUMNS)
    inter, union = int(df["intersection"].sum()), int(df["union"].sum())
    lost = df["union"] - df["intersection"]
    df = df.assign(lost_pixels=lost, lost_share=lost / max(1, union - inter))
    # exact on that image: its intersection and union both become its target pixels
    fixed_inter = inter - df["intersection"] + df["target_pixels"]
    df["iou_if_fixed"] = fixed_inter / (union - df["union"] + df["target_pixels"])
    df = df[df["lost_pixels"] > 0].sort_values("lost_pixels", ascending=False, kind="stable")
    df = df.head(top)
    return df[["image", "target_pixels", "predicted_pixels", "intersection", "lost_pixels",
               "lost_share", "iou_if_fixed"]]  # fmt: skip


_IOU_LOSS_TEXT = (
    "IoU counts pixels over the whole split: the images below hold the largest shares of the "
    "pixels in the union but not the intersection; the last column is the split's IoU had "
    "that image alone been segmented exactly."
)


def _iou_loss_table(run: EvalRun) -> pd.DataFrame:
    """`iou_losses` as printed: shares in %, IoU to 4 decimals."""
    losses = iou_losses(run.per_image)
    return losses.assign(
        lost_share=(losses["lost_share"] * 100).round(1),
        iou_if_fixed=losses["iou_if_fixed"].round(4),
    ).rename(columns={"lost_share": "share of lost %", "iou_if_fixed": "IoU if fixed"})


def markdown_table(df: pd.DataFrame) -> str:
    """`df` as a Markdown table; None and NaN cells read n/a."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = [
        "| " + " | ".join("n/a" if v is None or v != v else str(v) for v in row) + " |"
        for row in df.itertuples(index=False)
    ]
    return "\n".join([head, sep, *body])


def prepare_out_dir(out: str | Path, overwrite: bool) -> Path:
    """Create the report folder; refuse a non-empty one unless `overwrite`.

    Raises:
        DataError: `out` is a file, or a non-empty folder and `overwrite` is false.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(
            f"{out}: report folder is not empty; choose another --out or pass --overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _png_rgb(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError("PNG encoding of an overlay failed")
    return buf.tobytes()


def _facts_md(facts: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in facts.items():
        if key == "ids":
            value = f"{len(value)} ids (listed in metrics.json)"
        elif key == "versions":
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        lines.append(f"- **{key}**: {value}")
    return lines


def _markdown(run: EvalRun, gallery_files: list[str]) -> str:
    m = run.metrics
    f = run.facts
    lines = [
        f"# istd evaluation: {run.label}",
        "",
        f"{f.get('dataset', '?')}, split `{f.get('split', '?')}` ({m['n_images']} images, "
        f"{m['n_targets']} targets).",
        "",
        markdown_table(metrics_table([run])),
        "",
        _definitions(m),
        "",
        f"Pixel precision {_fmt(m['precision'], 100)} %, recall {_fmt(m['recall'], 100)} %; "
        f"target precision {_fmt(m['target_precision'], 100)} %, recall "
        f"{_fmt(m['target_recall'], 100)} %. Images with empty prediction and ground truth: "
        f"{m['n_empty']}. False-alarm pixels: {m['fa_pixels']} of {m['n_pixels']}.",
        "",
    ]
    if run.curves is not None:
        lines += ["## Curves", "", "![Pd-Fa](pd_fa.png)", "", "![ROC](roc.png)", ""]
    else:
        lines += ["No threshold sweeps: the predictions were masks, not probabilities.", ""]
    losses = _iou_loss_table(run)
    if len(losses):
        lines += ["## Where the IoU is lost", "", _IOU_LOSS_TEXT, "", markdown_table(losses), ""]
    if gallery_files:
        lines += ["## Worst images", "", "Green: ground truth; red: prediction; yellow: both.", ""]
        lines += [
            f"![{item.caption}]({name})  \n{item.caption}\n"
            for item, name in zip(run.gallery, gallery_files, strict=True)
        ]
    lines += ["## Run facts", "", *_facts_md(f), ""]
    return "\n".join(lines)


def _img_tag(png: bytes, alt: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{size}>'


def _html(run: EvalRun, figures: dict[str, bytes], gallery_png: list[bytes]) -> str:
    m, f = run.metrics, run.facts
    table = metrics_table([run]).to_html(index=False, na_rep="n/a", border=0)
    facts = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in json_safe(f).items()
        if k != "ids"
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>istd evaluation: {html.escape(run.label)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "figure{display:inline-block;margin:6px}img.g{image-rendering:pixelated}</style>",
        "</head><body>",
        f"<h1>istd evaluation: {html.escape(run.label)}</h1>",
        f"<p>{html.escape(str(f.get('dataset', '?')))}, split <code>{html.escape(str(f.get('split', '?')))}</code> "
        f"({m['n_images']} images, {m['n_targets']} targets).</p>",
        table,
        f"<p>{html.escape(_definitions(m))}</p>",
    ]
    for name in ("pd_fa.png", "roc.png"):
        if name in figures:
            parts.append(_img_tag(figures[name], name))
    losses = _iou_loss_table(run)
    if len(losses):
        parts += [
            f"<h2>Where the IoU is lost</h2><p>{html.escape(_IOU_LOSS_TEXT)}</p>",
            losses.to_html(index=False, border=0),
        ]
    if gallery_png:
        parts.append(
            "<h2>Worst images</h2><p>Green: ground truth; red: prediction; yellow: both.</p>"
        )
        for item, png in zip(run.gallery, gallery_png, strict=True):
            # Small targets: show frames up to twice their size, but no wider than 1000 px so that
            # they fit the 1100 px page (wider frames are shrunk; gallery/ keeps full resolution).
            w = min(2 * item.overlay.shape[1], 1000)
            tag = _img_tag(png, item.caption, w).replace("<img ", '<img class="g" ')
            parts.append(
                f"<figure>{tag}<figcaption>{html.escape(item.caption)}</figcaption></figure>"
            )
    parts += [f"<h2>Run facts</h2><table>{facts}</table>", "</body></html>"]
    return "\n".join(parts)


def write_report(out_dir: str | Path, run: EvalRun, overwrite: bool = False) -> list[Path]:
    """Write one run's report files into `out_dir` and return their paths.

    Files: metrics.json (the `compute()` keys, plus `facts` and `curves`), per_image.csv,
    pd_fa.png and roc.png (when curves exist), gallery/NN_<id>.png, report.md, report.html.
    """
    out = Path(out_dir)

    def put(name: str, data: bytes) -> Path:
        return write_bytes_atomic(out / name, data, overwrite=overwrite)

    files = [
        put("metrics.json", to_json({**run.metrics, "facts": run.facts, "curves": run.curves}))
    ]
    csv = io.StringIO()
    pd.DataFrame(run.per_image, columns=PER_IMAGE_COLUMNS).to_csv(csv, index=False)
    files.append(put("per_image.csv", _utf8(csv.getvalue())))
    figures: dict[str, bytes] = {}
    if run.curves is not None:
        figures["pd_fa.png"] = pd_fa_png({run.label: run.curves})
        figures["roc.png"] = roc_png({run.label: run.curves}, {run.label: run.metrics["roc_auc"]})
        files += [put(name, data) for name, data in figures.items()]
    gallery_png = [_png_rgb(item.overlay) for item in run.gallery]
    gallery_files = []
    for k, (item, png) in enumerate(zip(run.gallery, gallery_png, strict=True)):
        gallery_files.append(_gallery_name(k, item.image_id))
        files.append(put(gallery_files[-1], png))
    files.append(put("report.md", _utf8(_markdown(run, gallery_files))))
    files.append(put("report.html", _utf8(_html(run, figures, gallery_png))))
    return files


def differences_table(runs: Sequence[EvalRun], n_resamples: int = 2000) -> pd.DataFrame:
    """Each later run against the first: `paired_bootstrap` rows with a `model` column (raw
    fractions; empty without per-image records)."""
    first, later = runs[0], runs[1:]
    if not first.per_image or not all(r.per_image for r in later):
        return pd.DataFrame()
    tables = [
        paired_bootstrap(first.per_image, r.per_image, n_resamples).assign(model=r.label)
        for r in later
    ]
    return pd.concat(tables, ignore_index=True)


def printable_differences(first: str, differences: pd.DataFrame) -> pd.DataFrame:
    """`differences_table` as printed: IoU, nIoU and Pd in points of %, Fa x 1e-6; `first` is
    the label of the model the others are compared with."""
    names = {"iou": ("IoU (%)", 100.0), "niou": ("nIoU (%)", 100.0), "pd": ("Pd (%)", 100.0),
             "fa": ("Fa (x1e-6)", 1e6)}  # fmt: skip
    fixed = ("model", "metric", "value", "difference", "95 % interval", "better in % of draws")
    base = first if first not in fixed else f"{first} (first)"
    rows = []
    for r in differences.itertuples():
        name, k = names[r.metric]
        rows.append({
            "model": r.model,
            "metric": name,
            "value": f"{r.other * k:.2f}",
            base: f"{r.base * k:.2f}",
            "difference": f"{r.difference * k:+.2f}",
            "95 % interval": f"{r.low * k:+.2f} to {r.high * k:+.2f}",
            "better in % of draws": f"{r.share_better * 100:.0f}",
        })  # fmt: skip
    return pd.DataFrame(rows)


def _differences_md(runs: Sequence[EvalRun], diffs: pd.DataFrame) -> list[str]:
    first, n = runs[0].label, runs[0].metrics["n_images"]
    return [
        f"## Differences against {first}",
        "",
        f"Paired bootstrap over the {n} images (the same 2000 draws with replacement for both "
        "models, `istd.metrics.bootstrap`): each metric's difference on all images and its 95 % "
        "interval, and the share of draws in which the model beats "
        f"{first} (for Fa, by fewer false alarms). An interval holding 0 is a difference this "
        "split cannot tell from the noise of which images it happens to hold.",
        "",
        markdown_table(printable_differences(first, diffs)),
        "",
    ]


def write_comparison(
    out_dir: str | Path,
    runs: Sequence[EvalRun],
    overwrite: bool = False,
    differences: pd.DataFrame | None = None,
) -> list[Path]:
    """Write comparison.md, comparison.csv, differences.csv (`differences`, the paired bootstrap
    against the first run; computed when None) and pd_fa_compare.png for runs on one split."""
    out = Path(out_dir)
    df = metrics_table(runs)
    files = [
        write_bytes_atomic(
            out / "comparison.csv", _utf8(df.to_csv(index=False)), overwrite=overwrite
        )
    ]
    first = runs[0]
    m = first.metrics
    facts = first.facts
    md = [
        "# istd comparison",
        "",
        f"{facts.get('dataset', '?')}, split `{facts.get('split', '?')}` ({m['n_images']} images, "
        f"{m['n_targets']} targets, ids sha256 `{facts.get('ids_sha256', '?')}`).",
        "",
        markdown_table(df),
        "",
        _definitions(m),
        "",
        "Per-model reports: " + ", ".join(f"[{r.label}]({r.label}/report.md)" for r in runs),
        "",
    ]
    diffs = differences_table(runs) if differences is None else differences
    if not diffs.empty:
        files.append(
            write_bytes_atomic(
                out / "differences.csv", _utf8(diffs.to_csv(index=False)), overwrite=overwrite
            )
        )
        md += _differences_md(runs, diffs)
    with_curves = {r.label: r.curves for r in runs if r.curves is not None}
    if with_curves:
        files.append(
            write_bytes_atomic(
                out / "pd_fa_compare.png", pd_fa_png(with_curves), overwrite=overwrite
            )
        )
        md += ["![Pd-Fa](pd_fa_compare.png)", ""]
    files.append(
        write_bytes_atomic(out / "comparison.md", _utf8("\n".join(md)), overwrite=overwrite)
    )
    return files
