"""`istd data check`: read every image and mask of a dataset and report what is wrong.

The check decodes each file the way training will (`istd.data.io`), so a file it accepts is a
file training can read. Targets are 8-connected components of the binarised mask
(`skimage.measure.label` with ``connectivity=2``), the convention of the ISTD metrics (Pd/Fa).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from skimage.measure import label

from istd.data.io import binarise_mask, decode_image, to_grey, write_bytes_atomic
from istd.data.layouts import DatasetIndex, open_dataset, read_split_file
from istd.errors import DataError

__all__ = ["PROBLEM_KINDS", "Problem", "CheckReport", "check_dataset", "write_report_json"]

#: Every kind of problem the check reports.
PROBLEM_KINDS: tuple[str, ...] = (
    "unreadable",  # a file that cannot be decoded (empty, truncated, not an image)
    "missing_mask",  # an image without a mask
    "orphan_mask",  # a mask without an image (whole-dataset check only)
    "size_mismatch",  # mask and image sizes differ
    "non_binary_mask",  # mask values other than 0 and full scale
    "missing_files",  # a split id without an image
    "bad_split_file",  # a split file that cannot be used (path-like or repeated id)
)


@dataclass(frozen=True)
class Problem:
    """One problem: the file concerned, its kind (see `PROBLEM_KINDS`) and a readable detail."""

    path: str
    kind: str
    detail: str


@dataclass
class CheckReport:
    """What `check_dataset` found.

    Attributes:
        root: the dataset folder.
        layout: the detected or chosen layout.
        split: the split checked (``all``: every image in the images folder).
        images: images checked.
        masks: masks found for them.
        targets: 8-connected targets over all readable masks.
        fixed: ids whose mask came from the fixes folder.
        fixes_available: the dataset has a ``fixes/`` folder.
        sizes: image size ``"WxH"`` -> number of images.
        image_modes: e.g. ``"RGB 8-bit"`` -> number of images.
        mask_modes: the same for masks.
        mask_values: the set of grey values in a mask, e.g. ``"{0, 255}"`` -> number of masks.
        targets_per_image: number of targets -> number of images.
        target_area: statistics of the target areas in pixels (min, median, mean, p90, max).
        splits: split name -> number of ids in its file.
        problems: everything wrong, in file order.
    """

    root: str
    layout: str
    split: str
    images: int = 0
    masks: int = 0
    targets: int = 0
    fixed: list[str] = field(default_factory=list)
    fixes_available: bool = False
    sizes: dict[str, int] = field(default_factory=dict)
    image_modes: dict[str, int] = field(default_factory=dict)
    mask_modes: dict[str, int] = field(default_factory=dict)
    mask_values: dict[str, int] = field(default_factory=dict)
    targets_per_image: dict[int, int] = field(default_factory=dict)
    target_area: dict[str, float] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; ``images``, ``targets`` and ``problems`` are always present."""
        out = asdict(self)
        out["targets_per_image"] = {str(k): v for k, v in self.targets_per_image.items()}
        out["ok"] = self.ok
        return out


@dataclass
class _Item:
    """Per-image findings, merged into the report in order."""

    size: str | None = None
    image_mode: str | None = None
    mask_mode: str | None = None
    mask_values: str | None = None
    areas: list[int] = field(default_factory=list)
    has_mask: bool = False
    problems: list[Problem] = field(default_factory=list)


def _value_set(values: np.ndarray) -> str:
    if values.size <= 6:
        return "{" + ", ".join(str(int(v)) for v in values) + "}"
    return f"{{{int(values[0])}, ..., {int(values[-1])}}} ({values.size} values)"


def _check_one(image_path: Path, mask_path: Path | None) -> _Item:
    item = _Item()
    image_size = None
    try:
        raw = decode_image(image_path)
        image_size = raw.size
        item.size = f"{raw.size[0]}x{raw.size[1]}"
        item.image_mode = raw.mode
    except DataError as exc:
        item.problems.append(Problem(str(image_path), "unreadable", str(exc)))
    if mask_path is None:
        item.problems.append(
            Problem(str(image_path), "missing_mask", "no mask file for this image")
        )
        return item
    item.has_mask = True
    try:
        raw_mask = decode_image(mask_path)
    except DataError as exc:
        item.problems.append(Problem(str(mask_path), "unreadable", str(exc)))
        return item
    item.mask_mode = raw_mask.mode
    grey = raw_mask.pixels
    if grey.ndim == 3:  # colour mask: the values that binarisation sees
        grey = np.rint(to_grey(raw_mask) * raw_mask.full_scale)
    if grey.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(grey.ravel(), minlength=256))  # faster than unique
    else:
        values = np.unique(grey)
    item.mask_values = _value_set(values)
    if not set(values.tolist()) <= {0, int(raw_mask.full_scale)}:
        item.problems.append(
            Problem(
                str(mask_path),
                "non_binary_mask",
                f"values {item.mask_values}; expected only 0 and {int(raw_mask.full_scale)} "
                f"(pixels above {int(raw_mask.full_scale) // 2} count as target)",
            )
        )
    if image_size is not None and raw_mask.size != image_size:
        item.problems.append(
            Problem(
                str(mask_path),
                "size_mismatch",
                f"mask is {raw_mask.size[0]}x{raw_mask.size[1]}, "
                f"image {image_path.name} is {image_size[0]}x{image_size[1]}",
            )
        )
    try:
        mask = binarise_mask(raw_mask, mask_path)
    except DataError:
        return item  # already reported as non-binary
    labels, count = label(mask, connectivity=2, return_num=True)  # (H, W) int, 0 = background
    item.areas = np.bincount(labels.ravel(), minlength=count + 1)[1:].tolist()
    return item


def _check_split_files(
    index: DatasetIndex, names: Iterable[str]
) -> tuple[dict[str, int], list[Problem]]:
    counts: dict[str, int] = {}
    problems: list[Problem] = []
    for name in names:
        path = index.split_file(name)
        if path is None:
            continue
        try:
            ids = read_split_file(path)
        except DataError as exc:
            problems.append(Problem(str(path), "bad_split_file", str(exc)))
            continue
        counts[name] = len(ids)
        for sample_id in ids:
            if index.image_for(sample_id) is None:
                problems.append(
                    Problem(str(path), "missing_files", f"id {sample_id!r} has no image file")
                )
    return counts, problems


def check_dataset(
    root: str | os.PathLike[str],
    split: str | None = None,
    layout: str = "auto",
    fixes: bool | str | os.PathLike[str] = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Read every image and mask of a dataset (or of one split) and collect statistics and problems.

    Args:
        root: the dataset folder.
        split: check only this split's ids; None checks every image and every split file.
        layout: ``"auto"`` or a layout name (see `istd.data.layouts.LAYOUTS`).
        fixes: apply mask fixes (see `open_dataset`); off by default so that the data is checked
            as shipped.
        workers: threads decoding files (None: up to 4, bounded by the CPU count).
        progress: called as ``progress(done, total)`` after each image.

    Returns:
        The report; ``report.ok`` is False when any problem was found.

    Raises:
        DataError: the folder is not a dataset (no images/masks folder, unknown split, ...).

    Example:
        >>> report = check_dataset("../shared/datasets/NUDT-SIRST")  # doctest: +SKIP
        >>> report.images, report.targets, report.ok  # doctest: +SKIP
        (1327, 1863, True)
    """
    index = open_dataset(root, layout=layout, fixes=fixes)
    report = CheckReport(
        root=str(index.root),
        layout=index.layout,
        split=split or "all",
        fixed=sorted(index.fixed),
        fixes_available=(index.root / "fixes").is_dir(),
    )
    names = index.splits() if split is None else [split]
    report.splits, report.problems = _check_split_files(index, names)
    if split is None:
        image_paths = [index.images[i] for i in index.ids("all")]
        orphans = sorted(set(index.masks) - set(index.images))
        for sample_id in orphans:
            report.problems.append(
                Problem(str(index.masks[sample_id]), "orphan_mask", "no image with this id")
            )
    elif split in report.splits or index.split_file(split) is None:
        image_paths = [p for p in map(index.image_for, index.ids(split)) if p is not None]
    else:
        image_paths = []  # its split file is unusable, already reported as bad_split_file
    jobs = [(p, index.masks.get(p.stem)) for p in image_paths]
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    sizes, image_modes, mask_modes, mask_values = Counter(), Counter(), Counter(), Counter()
    per_image: Counter[int] = Counter()
    areas: list[int] = []
    # OpenCV and scikit-image release the GIL while decoding and labelling, so threads help.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, item in enumerate(pool.map(lambda job: _check_one(*job), jobs), start=1):
            report.images += 1
            report.masks += item.has_mask
            for counter, key in (
                (sizes, item.size),
                (image_modes, item.image_mode),
                (mask_modes, item.mask_mode),
                (mask_values, item.mask_values),
            ):
                if key is not None:
                    counter[key] += 1
            if item.mask_values is not None:
                per_image[len(item.areas)] += 1
            areas.extend(item.areas)
            report.problems.extend(item.problems)
            if progress is not None:
                progress(done, len(jobs))
    report.targets = len(areas)
    report.sizes = dict(sizes.most_common())
    report.image_modes = dict(image_modes.most_common())
    report.mask_modes = dict(mask_modes.most_common())
    report.mask_values = dict(mask_values.most_common())
    report.targets_per_image = dict(sorted(per_image.items()))
    if areas:
        a = np.asarray(areas, dtype=np.float64)
        report.target_area = {
            "min": float(a.min()),
            "median": float(np.median(a)),
            "mean": round(float(a.mean()), 2),
            "p90": float(np.percentile(a, 90)),
            "max": float(a.max()),
        }
    return report


def write_report_json(
    report: CheckReport, path: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write a report as JSON, atomically; an existing file is kept unless ``overwrite``."""
    text = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    # A file name that is not UTF-8 holds surrogate escapes; "backslashreplace" writes each as a
    # JSON \udcXX escape, which json.loads turns back into the same str.
    data = text.encode("utf-8", "backslashreplace")
    return write_bytes_atomic(path, data, overwrite=overwrite)
