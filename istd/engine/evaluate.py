"""Evaluation: the `evaluate` loop (training validation and `istd eval`) and the report run.

`evaluate(model, loader, metrics, device)` is a plain function with explicit arguments, as in
torchvision's references/segmentation/train.py. Models run at each image's native resolution
(no resize), one image at a time, under `torch.inference_mode` and in eval mode.
`run_evaluation` evaluates one or more models on one dataset split and writes the report
(`istd.metrics.report`).
"""

from __future__ import annotations

import hashlib
import heapq
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from istd.errors import BackendError, ConfigError, DataError
from istd.metrics import Metrics
from istd.metrics.report import (
    EvalRun,
    GalleryItem,
    differences_table,
    overlay,
    prepare_out_dir,
    write_comparison,
)
from istd.metrics.report import write_report as write_run_report
from istd.models.precision import (
    conv_precision,
    has_dense_convs,
    resolve_precision,
    without_cudnn,
)

__all__ = ["EvalSummary", "evaluate", "run_evaluation"]

# on_image(image_id, image (H, W), prob (H, W), gt (H, W) bool, record) -> None
ImageHook = Callable[[str, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]], None]


def _model_input(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Repeat a grey channel for models built for more input channels (e.g. in_chans=3)."""
    in_chans = getattr(getattr(model, "config", None), "in_chans", None)
    if isinstance(in_chans, int) and images.shape[1] == 1 and in_chans > 1:
        images = images.expand(-1, in_chans, -1, -1)  # (B, 1, H, W) -> (B, in_chans, H, W)
    return images


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    metrics: Metrics,
    device: torch.device | str,
    on_image: ImageHook | None = None,
    on_step: Callable[[int], None] | None = None,
    sync: bool = False,
    conv_dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Run `model` over `loader` and accumulate `metrics`; return `metrics.compute()`.

    Args:
        model: maps images (B, C, H, W) in [0, 1] to logits (B, 1, H, W). Put in eval mode
            here; its previous mode is restored afterwards (training calls this for validation).
        loader: yields (images (B, 1, H, W) float in [0, 1], masks (B, 1, H, W) {0, 1}, ids),
            e.g. a DataLoader over `IRSTDDataset` with batch_size=1 at native resolution.
        metrics: accumulates; it is not reset here, so several loaders can add to one object.
        device: where the model lives; batches are moved there.
        on_image: called once per image with (id, image, prob, gt, per-image record).
        on_step: called with the number of images after each batch (progress bars).
        sync: all-reduce the metrics over DDP ranks before computing (each rank saw a shard).
        conv_dtype: the dense convolutions' dtype (`istd.models.precision.conv_precision`).

    Returns:
        `metrics.compute()`.

    Raises:
        DataError: the loader yields malformed batches or the model output has the wrong shape.
    """
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            if not isinstance(batch, (list, tuple)) or len(batch) not in (2, 3):
                raise DataError("the loader must yield (images, masks) or (images, masks, ids)")
            images, masks = batch[0], batch[1]
            ids = list(batch[2]) if len(batch) == 3 else [None] * images.shape[0]
            if images.ndim != 4 or masks.ndim != 4 or masks.shape[1] != 1:
                raise DataError(
                    f"expected images (B, C, H, W) and masks (B, 1, H, W), got "
                    f"{tuple(images.shape)} and {tuple(masks.shape)}"
                )
            x = _model_input(images.to(device=device, dtype=torch.float32), model)
            with conv_precision(conv_dtype), without_cudnn():  # sizes vary: no cuDNN plans
                logits = model(x)  # (B, 1, H, W)
            if tuple(logits.shape) != (images.shape[0], 1, *images.shape[2:]):
                raise DataError(
                    f"model output {tuple(logits.shape)} does not match the input: expected "
                    f"({images.shape[0]}, 1, {images.shape[2]}, {images.shape[3]})"
                )
            probs = torch.sigmoid(logits.float())[:, 0].cpu().numpy()  # (B, H, W)
            gts = (masks[:, 0] > 0.5).cpu().numpy()  # (B, H, W) bool
            for b in range(probs.shape[0]):
                image_id = None if ids[b] is None else str(ids[b])
                metrics.update(probs[b], gts[b], image_id=image_id)
                if on_image is not None:
                    record = metrics.last_record or {}
                    image = images[b, 0].cpu().numpy()  # (H, W)
                    # The record's id: the loader's, or the image's running index in `metrics`.
                    on_image(record["image"], image, probs[b], gts[b], record)
            if on_step is not None:
                on_step(int(probs.shape[0]))
    finally:
        model.train(was_training)
    if sync:
        metrics.all_reduce()
    return metrics.compute()


class _WorstImages:
    """Keeps the `k` worst images seen (most missed targets + false objects, then lowest IoU)."""

    def __init__(self, k: int, threshold: float) -> None:
        self.k = k
        self.threshold = threshold
        self._heap: list[tuple[tuple[float, float], int, GalleryItem]] = []
        self._count = 0

    def __call__(
        self,
        image_id: str,
        image: np.ndarray,  # (H, W)
        prob: np.ndarray,  # (H, W)
        gt: np.ndarray,  # (H, W) bool
        record: dict[str, Any],
    ) -> None:
        if self.k <= 0:
            return
        errors = (record["targets"] - record["detected"]) + record["false_alarm_objects"]
        iou = record["iou"] if record["targets"] or record["objects"] else 1.0
        key = (float(errors), -float(np.nan_to_num(iou, nan=1.0)))  # larger = worse
        self._count += 1
        if len(self._heap) == self.k and key <= self._heap[0][0]:
            return  # not worse than the best of the kept ones: skip drawing the overlay
        item = GalleryItem(
            image_id=image_id,
            overlay=overlay(image, gt, prob > self.threshold),
            caption=(
                f"{image_id}: {record['detected']}/{record['targets']} detected, "
                f"{record['false_alarm_objects']} false objects ({record['false_alarm_pixels']} px), "
                f"IoU {iou:.3f}"
            ),
        )
        entry = (key, -self._count, item)  # -count: on ties keep the earlier image
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list[GalleryItem]:
        return [e[2] for e in sorted(self._heap, reverse=True)]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (recorded as facts.weights_sha256; the release tool reuses it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import cv2
    import scipy
    import skimage

    from istd import __version__

    return {
        "istd": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "opencv": cv2.__version__,
        "platform": platform.platform(),
    }


def weights_sha256(folder: Path) -> str | None:
    """sha256 of a weights folder's model.safetensors; for an ensemble folder, of its members'
    labels and weights sha256, one ``name[@scale] sha256`` line each (None: no weights there)."""
    from istd.models.ensemble import ENSEMBLE_FILE, ensemble_members
    from istd.models.hub import WEIGHTS_FILE

    if (folder / ENSEMBLE_FILE).is_file():
        lines = [
            f"{m} {weights_sha256(folder.parent / m.name)}\n" for m in ensemble_members(folder)
        ]
        return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
    weights = folder / WEIGHTS_FILE
    return sha256_file(weights) if weights.is_file() else None


def _model_facts(source: str, model: nn.Module) -> dict[str, Any]:
    from istd.models.ensemble import ENSEMBLE_FILE
    from istd.models.hub import WEIGHTS_FILE, weights_dir

    folder = Path(source) if Path(source).is_dir() else weights_dir() / source
    ensemble = (folder / ENSEMBLE_FILE).is_file()
    weights = folder / (ENSEMBLE_FILE if ensemble else WEIGHTS_FILE)
    facts: dict[str, Any] = {"source": source, "model": getattr(model, "model_name", source)}
    if getattr(model, "requires_weights", True) and weights.is_file():
        facts.update(weights=str(weights), weights_sha256=weights_sha256(folder))
        if ensemble:
            facts["members"] = list(model.config.members)
    else:
        facts.update(weights=None, weights_sha256=None)  # a weight-free detector
    facts["parameters"] = int(sum(p.numel() for p in model.parameters()))
    facts["input_scale"] = getattr(getattr(model, "config", None), "input_scale", None)
    return facts


def _resolve_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise BackendError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise BackendError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"--device {device} asked for, but torch sees no CUDA device here")
    return dev


def _label(source: str, used: set[str]) -> str:
    """A short, unique name for a source; it names the run's sub-folder, so it holds no path
    separator and is never '.' or '..'."""
    name = Path(source).name
    if not name.strip("."):  # '', '.', '..': name the folder the source points to
        name = Path(source).resolve().name
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if not base.strip("."):
        base = "model"
    label, n = base, 2
    while label in used:
        label, n = f"{base}-{n}", n + 1
    used.add(label)
    return label


@dataclass
class EvalSummary:
    """What `run_evaluation` did: one `EvalRun` per model, the files written and, for several
    models, each later one's differences from the first (`istd.metrics.report.differences_table`;
    empty for one model)."""

    runs: list[EvalRun]
    out_dir: Path
    files: list[Path]
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)


def _distinct(sources: Sequence[str]) -> list[str]:
    """`sources` without repeats of one model: a weights folder named twice (by path or by its
    name under weights/, e.g. the default weights again in --compare) is evaluated once."""
    from istd.models.hub import weights_folder

    seen, out = set(), []
    for source in sources:
        folder = weights_folder(source)
        key = str(folder.resolve()) if folder is not None else str(source)
        if key not in seen:
            seen.add(key)
            out.append(source)
    return out


def run_evaluation(
    sources: Sequence[str],
    data: str | Path,
    out: str | Path,
    split: str | None = None,
    layout: str = "auto",
    threshold: float = 0.5,
    matching: str = "first",
    device: str = "cpu",
    precision: str = "float32",
    input_scale: float | None = None,
    tta: bool = False,
    limit: int | None = None,
    gallery: int = 8,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> EvalSummary:
    """Evaluate models on one dataset split and write the report(s) into `out`.

    Args:
        sources: weights folders, names under weights/, or weight-free model names (e.g.
            `tophat`), as `istd.models.from_pretrained` accepts. One source: the report goes in
            `out`; several: one sub-folder each plus comparison.md / .csv and one Pd-Fa plot.
        data: the dataset folder.
        out: the report folder; it must be absent or empty unless `overwrite`.
        split: split name; None takes the layout's usual test split.
        layout: dataset layout (`auto` detects it).
        threshold: probability threshold of the headline metrics.
        matching: `first` (BasicIRSTD) or `optimal` target matching.
        device: `cpu` or `cuda`.
        precision: the dense convolutions' precision (`istd.models.precision`); float32, the
            default, gives the figures comparable across machines.
        input_scale: run every network on frames resized by this factor; None: each
            network's own (`MiMConfig.input_scale`). Metrics are always at native resolution.
        tta: average each model's probabilities over the image and its flips
            (`istd.models.tta.FlipTTA`; four times the compute).
        limit: evaluate only the first `limit` ids of the split.
        gallery: how many worst images to draw.
        overwrite: replace files of an existing report.
        progress: called as progress(label, done, total) while images are evaluated.

    Returns:
        The runs and the files written.

    Raises:
        IstdError: missing weights or data, an unknown split, or a non-empty `out`.
    """
    from torch.utils.data import DataLoader

    from istd.data import IRSTDDataset, open_dataset
    from istd.engine.train_data import ids_sha256
    from istd.models import MiMISTD, from_pretrained, set_input_scale
    from istd.models.tta import FlipTTA

    if not sources:
        raise DataError("no model to evaluate: pass --weights, --model or --compare")
    sources = _distinct(sources)
    dev = _resolve_device(device)
    conv_dtype = resolve_precision(precision, dev)
    index = open_dataset(data, layout=layout)
    split = split or index.test_split
    samples = index.samples(split, limit=limit)
    if not samples:  # checked before --out is created, so that no empty folder is left behind
        raise DataError(f"{data}: split {split!r} holds no samples")
    # Load every model before writing anything, so a bad source fails fast and leaves no files.
    models = [(s, from_pretrained(s, device=dev)) for s in sources]
    if input_scale is not None:  # networks only: weight-free detectors in --compare run as ever
        networks = [m for _, m in models if isinstance(m, MiMISTD)]
        if not networks:
            raise ConfigError(f"input scale {input_scale}: none of {', '.join(sources)} has one")
        for model in networks:
            set_input_scale(model, input_scale)
    out_dir = prepare_out_dir(out, overwrite)
    dataset = IRSTDDataset(samples, split=split)
    data_facts = {
        "dataset": str(Path(data)),
        "layout": index.layout,
        "split": split,
        "n_images": len(samples),
        "ids_sha256": ids_sha256(samples),
        "ids": [s.id for s in samples],
        "fixed_masks": sorted(index.fixed & {s.id for s in samples}),
    }
    runs: list[EvalRun] = []
    files: list[Path] = []
    used: set[str] = set()
    for source, model in models:
        label = _label(source, used)
        metrics = Metrics(threshold=threshold, matching=matching)
        worst = _WorstImages(gallery, threshold)
        done = 0

        def step(n: int, label: str = label) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(label, done, len(samples))

        loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
        began = time.perf_counter()
        dtype = conv_dtype if has_dense_convs(model) else torch.float32  # weight-free: none
        result = evaluate(
            FlipTTA(model) if tta else model,
            loader,
            metrics,
            dev,
            on_image=worst,
            on_step=step,
            conv_dtype=dtype,
        )
        seconds = time.perf_counter() - began
        facts = {
            **_model_facts(source, model),
            **data_facts,
            "tta": tta,
            "threshold": threshold,
            "distance": metrics.distance,
            "matching": matching,
            "niou_empty": metrics.niou_empty,
            "device": str(dev),
            "conv_dtype": str(dtype).removeprefix("torch."),
            "device_name": torch.cuda.get_device_name(dev)
            if dev.type == "cuda"
            else platform.processor() or "cpu",
            "seconds": round(seconds, 3),
            "images_per_second": round(len(samples) / seconds, 3) if seconds > 0 else None,
            "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(),
        }
        run = EvalRun(
            label=label,
            metrics=result,
            curves=metrics.curves() if metrics.has_curves else None,
            per_image=metrics.per_image(),
            facts=facts,
            gallery=worst.items(),
        )
        runs.append(run)
        run_dir = out_dir if len(models) == 1 else out_dir / label
        files += write_run_report(run_dir, run, overwrite=overwrite)
    differences = differences_table(runs) if len(models) > 1 else pd.DataFrame()
    if len(models) > 1:
        files += write_comparison(out_dir, runs, overwrite=overwrite, differences=differences)
    return EvalSummary(runs=runs, out_dir=out_dir, files=files, differences=differences)
