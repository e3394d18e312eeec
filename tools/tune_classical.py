"""Tune and report the weight-free detectors (top-hat, MPCM, max-median).

``--tune``: grid search of each detector's parameters on the NUAA-SIRST **val** split
(idx_427/val.txt, 85 images; the test split is never read), scored with `istd.metrics.Metrics`
at the 0.5 threshold; the best setting is the highest dataset IoU (ties: higher Pd, then lower
Fa). The chosen values are the defaults written in each config's docstring.

``--report``: run each registered detector with its defaults, end to end through the model's
``forward``, on the NUAA-SIRST test split (idx_427/test.txt) and the NUDT-SIRST test split
(50_50/test.txt), and time one 512 x 512 frame on the CPU; prints a markdown table.

Usage:
    python tools/tune_classical.py --tune [--out runs/tune_classical.json]
    python tools/tune_classical.py --report [--repeats 20] [--timing-only]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from istd.data import open_dataset, read_image, read_mask
from istd.errors import DataError
from istd.metrics import Metrics
from istd.models import build_model
from istd.models.classical import CLASSICAL_MODELS, adaptive_saliency

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path(os.environ.get("ISTD_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

# Structural parameter grid per detector; every one is crossed with K_GRID x FLOOR_GRID.
STRUCT_GRID: dict[str, list[dict[str, Any]]] = {
    "tophat": [{"radius": r} for r in (2, 3, 4, 5, 6, 7, 9)],
    "mpcm": [{"scales": s} for s in ((3, 5), (3, 5, 7), (3, 5, 7, 9), (5, 7, 9), (3, 5, 7, 9, 11))],
    "maxmedian": [{"size": s} for s in (9, 15, 21, 27, 35, 45)],
}
K_GRID = (3.0, 6.0, 9.0, 12.0, 14.0, 16.0, 20.0, 24.0, 32.0)
FLOOR_GRID = (0.02, 0.04, 0.06, 0.1, 0.15, 0.2)


def load_split(root: Path, dataset: str, split: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Read (id, image, mask) for one split through `istd.data.open_dataset`.

    The data layer resolves split ids safely (no path leaves the dataset folder) and applies
    NUAA-SIRST's corrected Misc_111 mask from ``fixes/``. For NUAA-SIRST ``val`` and ``test``
    are the official idx_427 splits; for NUDT-SIRST ``test`` is 50_50/test.txt.
    """
    samples = []
    for sample in open_dataset(root / dataset).samples(split):
        image, mask = read_image(sample.image_path), read_mask(sample.mask_path)
        if image.shape != mask.shape:
            raise DataError(
                f"{sample.id}: image {image.shape} and mask {mask.shape} differ in size"
            )
        samples.append((sample.id, image, mask))
    return samples


def _scores(metrics: Metrics) -> dict[str, float]:
    out = metrics.compute()
    return {key: float(out[key]) for key in ("iou", "niou", "pd", "fa")}


def tune(root: Path) -> dict[str, Any]:
    """Grid-search each detector on NUAA-SIRST val; returns every score and the best settings."""
    val = load_split(root, "NUAA-SIRST", "val")
    print(f"NUAA-SIRST val: {len(val)} images", flush=True)
    results: dict[str, Any] = {}
    for name in CLASSICAL_MODELS:
        rows = []
        for struct in STRUCT_GRID[name]:
            detector = build_model(name, **struct)
            # The response does not depend on k / floor: compute it once per structural setting.
            responses = [detector.response(image) for _, image, _ in val]
            for k, floor in itertools.product(K_GRID, FLOOR_GRID):
                metrics = Metrics(keep_per_image=False)
                for response, (_, _, mask) in zip(responses, val, strict=True):
                    metrics.update(adaptive_saliency(response, k, floor) > 0.5, mask)
                rows.append({**struct, "k": k, "floor": floor, **_scores(metrics)})
        best = max(rows, key=lambda r: (r["iou"], r["pd"], -r["fa"]))
        results[name] = {"best": best, "grid": rows}
        print(f"{name}: best {_fmt_row(best)}", flush=True)
    print("\n" + top_table(results))
    return results


def top_table(results: dict[str, Any], n: int = 5) -> str:
    """Markdown table of the ``n`` best grid settings per detector (by the tuning order)."""
    lines = [
        "| method | setting | val IoU | val nIoU | val Pd | val Fa (1e-6) |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        rows = sorted(result["grid"], key=lambda r: (r["iou"], r["pd"], -r["fa"]), reverse=True)
        for row in rows[:n]:
            params = ", ".join(
                f"{k}={v}" for k, v in row.items() if k not in {"iou", "niou", "pd", "fa"}
            )
            lines.append(
                f"| `{name}` | {params} | {row['iou']:.4f} | {row['niou']:.4f} | {row['pd']:.4f} "
                f"| {row['fa'] * 1e6:.1f} |"
            )
    return "\n".join(lines)


def _fmt_row(row: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in row.items() if k not in {"iou", "niou", "pd", "fa"})
    return (
        f"{params}: IoU {row['iou']:.4f}, nIoU {row['niou']:.4f}, Pd {row['pd']:.4f}, "
        f"Fa {row['fa'] * 1e6:.1f}e-6"
    )


@torch.inference_mode()
def evaluate_model(
    name: str, samples: Iterable[tuple[str, np.ndarray, np.ndarray]]
) -> dict[str, float]:
    """Metrics of a registered detector with its defaults, through ``forward`` and a sigmoid."""
    model = build_model(name).eval()
    metrics = Metrics(keep_per_image=False)
    for sample_id, image, mask in samples:
        logits = model(torch.from_numpy(image)[None, None])  # (1, 1, H, W)
        metrics.update(torch.sigmoid(logits)[0, 0], mask, image_id=sample_id)
    return _scores(metrics)


@torch.inference_mode()
def time_frame(name: str, frame: np.ndarray, repeats: int) -> dict[str, float]:
    """Median and fastest wall time in ms of one forward on a (512, 512) frame, after a warm-up.

    On a shared machine the median includes waiting for the CPU; the fastest run is closer to the
    detector's own cost. Both are reported.
    """
    model = build_model(name).eval()
    x = torch.from_numpy(frame)[None, None]  # (1, 1, 512, 512)
    model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return {"median_ms": 1000.0 * statistics.median(times), "min_ms": 1000.0 * min(times)}


def report(root: Path, repeats: int, timing_only: bool = False) -> list[dict[str, Any]]:
    """Test-split metrics and CPU time per 512 x 512 frame for every detector."""
    nuaa = load_split(root, "NUAA-SIRST", "test")
    nudt = [] if timing_only else load_split(root, "NUDT-SIRST", "test")
    # A real infrared frame resized to 512 x 512, so timing sees real image content.
    frame = cv2.resize(nuaa[0][1], (512, 512), interpolation=cv2.INTER_LINEAR)
    rows = []
    for name in CLASSICAL_MODELS:
        row: dict[str, Any] = {"model": name, "config": build_model(name).config.to_dict()}
        if not timing_only:
            row["nuaa"] = evaluate_model(name, nuaa)
            row["nudt"] = evaluate_model(name, nudt)
        row["time"] = time_frame(name, frame, repeats)
        rows.append(row)
        print(f"{name} done", file=sys.stderr, flush=True)
    print(
        f"\nCPU ms per 512 x 512 frame ({nuaa[0][0]} resized): median / fastest of {repeats} runs, "
        f"torch threads {torch.get_num_threads()}, OpenCV threads {cv2.getNumThreads()}"
    )
    if timing_only:
        for r in rows:
            print(f"{r['model']}: {r['time']['median_ms']:.1f} / {r['time']['min_ms']:.1f} ms")
        return rows
    print(
        f"NUAA-SIRST idx_427 test ({len(nuaa)} images), NUDT-SIRST 50_50 test ({len(nudt)} images)\n"
    )
    print(
        "| method | NUAA IoU | NUAA nIoU | NUAA Pd | NUAA Fa (1e-6) | NUDT IoU | NUDT nIoU "
        "| NUDT Pd | NUDT Fa (1e-6) | CPU ms / 512x512 (median / fastest) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, b, t = r["nuaa"], r["nudt"], r["time"]
        print(
            f"| `{r['model']}` | {a['iou']:.4f} | {a['niou']:.4f} | {a['pd']:.4f} | {a['fa'] * 1e6:.1f} "
            f"| {b['iou']:.4f} | {b['niou']:.4f} | {b['pd']:.4f} | {b['fa'] * 1e6:.1f} "
            f"| {t['median_ms']:.1f} / {t['min_ms']:.1f} |"
        )
    return rows


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file, fsync and rename; refuses to overwrite an existing file."""
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if path appeared meanwhile: never overwrite
    finally:
        os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--tune", action="store_true", help="grid search on NUAA-SIRST val")
    mode.add_argument("--report", action="store_true", help="test metrics and CPU time")
    parser.add_argument(
        "--data-root", type=Path, default=DEFAULT_ROOT, help="parent of NUAA-SIRST/ and NUDT-SIRST/"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the results as JSON (new file)"
    )
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed runs per detector (--report)"
    )
    parser.add_argument(
        "--timing-only", action="store_true", help="with --report: skip the metrics"
    )
    args = parser.parse_args(argv)
    result = (
        tune(args.data_root)
        if args.tune
        else report(args.data_root, args.repeats, timing_only=args.timing_only)
    )
    if args.out is not None:
        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
