"""Dataset layouts: where the images, masks and split lists of an ISTD dataset live.

The public ISTD toolboxes store the same kind of data in five ways; each is detected in this
order, or chosen with ``layout=``:

* ``sirst`` (SIRST / ACM, Dai et al., WACV 2021): ``images/<id>.png``,
  ``masks/<id>_pixels0.png``, split lists in ``idx_427/`` (also ``idx_320/``);
* ``basicirstd`` (BasicIRSTD toolbox): ``images/``, ``masks/``, ``img_idx/{train,test}_<NAME>.txt``;
* ``dnanet`` (DNANet, Li et al., TIP 2023): ``images/``, ``masks/``, ``<split>/{train,test}.txt``,
  often with CRLF line endings;
* ``isnet`` (ISNet / IRSTD-1k): ``images/``, ``masks/``, ``trainval.txt`` and ``test.txt``;
* ``folder``: any folder of images beside a folder of masks, paired by file stem.

Images and masks are always paired by looking the id up in the folder listing (a mask may carry
the SIRST ``_pixels0`` suffix), so a split id never becomes a path: ids holding a path separator
or ``..`` are rejected. Dataset folders are only read. Corrected masks in ``<root>/fixes/``
(same file name as the mask they replace) are used when ``fixes`` is on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from istd.data.io import IMAGE_EXTENSIONS
from istd.errors import DataError

__all__ = ["LAYOUTS", "Sample", "DatasetIndex", "open_dataset", "read_split_file"]

#: Known layouts in detection order.
LAYOUTS: tuple[str, ...] = ("sirst", "basicirstd", "dnanet", "isnet", "folder")

ALL_SPLIT = "all"
_IMAGE_DIRS = ("images", "image", "imgs", "img", "Images")
_MASK_DIRS = ("masks", "mask", "labels", "label", "gt", "Masks")
_MASK_SUFFIXES = ("", "_pixels0")  # SIRST names masks <id>_pixels0.png
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Sample:
    """One image with its mask.

    Attributes:
        id: the split id (the image file's stem).
        image_path: the image file.
        mask_path: the mask file (the corrected one when a fix applies).
    """

    id: str
    image_path: Path
    mask_path: Path


def _natural_key(text: str) -> list[object]:
    # Misc_2 before Misc_10, as people number their files. isdecimal, not isdigit: "²" is a
    # digit that int() refuses.
    return [int(part) if part.isdecimal() else part for part in re.split(r"(\d+)", text)]


def read_split_file(path: str | os.PathLike[str]) -> list[str]:
    """Read a split list: one id per line.

    CR and LF line endings and a UTF-8 byte-order mark are accepted; blank lines are skipped;
    surrounding white space is removed.

    Args:
        path: the split file.

    Returns:
        The ids in file order.

    Raises:
        DataError: unreadable file, or an id that is absolute, holds a path separator or
            ``..``, or appears twice (the message names the file and line).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: split file is not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read split file ({exc.strerror or exc})") from None
    ids: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.strip()
        if not item:
            continue
        if "/" in item or "\\" in item or ".." in item or "\0" in item or _DRIVE.match(item):
            raise DataError(
                f"{path}, line {number}: split id {item!r} is a path; ids must be plain file "
                "stems without '/', '\\' or '..'"
            )
        if item in seen:
            raise DataError(f"{path}, line {number}: split id {item!r} repeats line {seen[item]}")
        seen[item] = number
        ids.append(item)
    return ids


def _list_images(folder: Path) -> dict[str, Path]:
    """Map file stem -> image file for the image files directly inside ``folder``."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.suffix.lower() not in IMAGE_EXTENSIONS or not entry.is_file():
            continue
        if entry.stem in found:
            raise DataError(
                f"{folder}: two images share the stem {entry.stem!r} "
                f"({found[entry.stem].name}, {entry.name}); remove one"
            )
        found[entry.stem] = entry
    return found


def _pick_dir(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(
        f"{root}: no {what} folder found (looked for {', '.join(n + '/' for n in names)})"
    )


@dataclass
class DatasetIndex:
    """The files of one dataset: images, masks (with fixes applied) and split lists.

    Build it with `open_dataset`. Split names come from the split files: the layout's main split
    folder gives plain names (``train``, ``test``, ...), other folders give ``<folder>/<name>``
    (e.g. ``50_50/train``); ``all`` is every image in the images folder.

    Attributes:
        root: the dataset folder.
        layout: the layout name (one of `LAYOUTS`).
        images_dir: the images folder.
        masks_dir: the masks folder.
        images: image file stem -> image file.
        masks: id -> mask file (fixes applied).
        fixed: ids whose mask was replaced by a file in the fixes folder.
        split_files: split name -> split file.
        train_split: the split a model of this dataset is usually trained on.
        test_split: the split it is usually tested on (``all`` when it has none; see
            `has_test_split`).
    """

    root: Path
    layout: str
    images_dir: Path
    masks_dir: Path
    images: dict[str, Path]
    masks: dict[str, Path]
    fixed: set[str] = field(default_factory=set)
    split_files: dict[str, Path] = field(default_factory=dict)
    train_split: str = ALL_SPLIT
    test_split: str = ALL_SPLIT

    @property
    def has_test_split(self) -> bool:
        """Whether the dataset names a test split (else `test_split` is ``all``)."""
        return self.test_split != ALL_SPLIT

    def splits(self) -> list[str]:
        """Names accepted by `ids` and `samples`: the split files' names, then ``all``."""
        return [*self.split_files, ALL_SPLIT]

    def split_file(self, split: str) -> Path | None:
        """The file behind a split name (None for ``all``)."""
        if split == ALL_SPLIT:
            return None
        if split not in self.split_files:
            raise DataError(
                f"{self.root}: unknown split {split!r}; known splits: {', '.join(self.splits())}"
            )
        return self.split_files[split]

    def ids(self, split: str = ALL_SPLIT) -> list[str]:
        """The ids of a split, in file order (``all``: every image stem, naturally sorted)."""
        path = self.split_file(split)
        if path is None:
            return sorted(self.images, key=_natural_key)
        return read_split_file(path)

    def image_for(self, sample_id: str) -> Path | None:
        """The image file of an id, or None. An id may also carry its image extension."""
        if sample_id in self.images:
            return self.images[sample_id]
        stem, ext = os.path.splitext(sample_id)
        found = self.images.get(stem)
        return found if found is not None and found.suffix.lower() == ext.lower() else None

    def mask_for(self, sample_id: str) -> Path | None:
        """The mask file of an id (the fixed one when a fix applies), or None."""
        image = self.image_for(sample_id)
        return self.masks.get(image.stem if image is not None else sample_id)

    def samples(self, split: str = ALL_SPLIT, limit: int | None = None) -> list[Sample]:
        """The samples of a split.

        Args:
            split: a name from `splits`.
            limit: keep only the first ``limit`` ids (for quick runs and tests).

        Returns:
            One `Sample` per id, in split order.

        Raises:
            DataError: unknown split, or an id without its image or mask file.
        """
        ids = self.ids(split)
        if limit is not None:
            if limit < 1:
                raise DataError(f"limit must be at least 1, got {limit}")
            ids = ids[:limit]
        where = self.split_file(split) or self.images_dir
        out: list[Sample] = []
        for sample_id in ids:
            image = self.image_for(sample_id)
            if image is None:
                raise DataError(f"{where}: id {sample_id!r} has no image in {self.images_dir}")
            mask = self.masks.get(image.stem)
            if mask is None:
                raise DataError(f"{image}: no mask for id {sample_id!r} in {self.masks_dir}")
            out.append(Sample(id=image.stem, image_path=image, mask_path=mask))
        return out

    def __len__(self) -> int:
        return len(self.images)


def _index_masks(
    masks_dir: Path, fixes_dir: Path | None, image_stems: set[str]
) -> tuple[dict[str, Path], set[str]]:
    masks: dict[str, Path] = {}
    for stem, path in _list_images(masks_dir).items():
        sample_id = stem
        for suffix in _MASK_SUFFIXES[1:]:
            # An image of the same stem wins: folder datasets pair x_pixels0 with x_pixels0.
            if stem.endswith(suffix) and stem not in image_stems:
                sample_id = stem[: -len(suffix)]
        if sample_id in masks:
            raise DataError(
                f"{masks_dir}: two masks for id {sample_id!r} ({masks[sample_id].name}, {path.name})"
            )
        masks[sample_id] = path
    fixed: set[str] = set()
    if fixes_dir is not None:
        for sample_id, path in masks.items():
            fix = fixes_dir / path.name
            if fix.is_file():
                masks[sample_id] = fix
                fixed.add(sample_id)
    return masks, fixed


def _txt_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.txt") if p.is_file())


def _detect(root: Path, masks_dir: Path, subdirs: list[Path]) -> str:
    has_pixels0 = any(p.stem.endswith("_pixels0") for p in masks_dir.iterdir())
    if has_pixels0 and any(d.name.startswith("idx_") and _txt_files(d) for d in subdirs):
        return "sirst"
    if (root / "img_idx").is_dir() and _txt_files(root / "img_idx"):
        return "basicirstd"
    if any((d / "train.txt").is_file() and (d / "test.txt").is_file() for d in subdirs):
        return "dnanet"
    if (root / "trainval.txt").is_file() and (root / "test.txt").is_file():
        return "isnet"
    return "folder"


def _main_split_dir(root: Path, layout: str, subdirs: list[Path]) -> Path | None:
    """The folder whose split files get plain names, checked against the layout."""
    if layout == "sirst":
        found = [d for d in subdirs if d.name.startswith("idx_") and _txt_files(d)]
        if not found:
            raise DataError(f"{root}: layout 'sirst' needs an idx_*/ folder of split lists")
        preferred = [d for d in found if d.name == "idx_427"]
        return (preferred or found)[0]
    if layout == "basicirstd":
        if not (root / "img_idx").is_dir():
            raise DataError(f"{root}: layout 'basicirstd' needs an img_idx/ folder")
        return root / "img_idx"
    if layout == "dnanet":
        found = [d for d in subdirs if (d / "train.txt").is_file() and (d / "test.txt").is_file()]
        if not found:
            raise DataError(f"{root}: layout 'dnanet' needs a <split>/train.txt and test.txt")
        preferred = [d for d in found if d.name == "50_50"]
        return (preferred or found)[0]
    if layout == "isnet":
        if not ((root / "trainval.txt").is_file() and (root / "test.txt").is_file()):
            raise DataError(f"{root}: layout 'isnet' needs trainval.txt and test.txt")
        return root
    return None


def _split_names(
    root: Path, main: Path | None, subdirs: list[Path], layout: str
) -> dict[str, Path]:
    names: dict[str, Path] = {}
    if main is not None:
        files = _txt_files(main)
        if layout == "basicirstd":
            # train_<NAME>.txt -> "train" when the folder holds one dataset name only.
            tails = {p.stem.split("_", 1)[1] for p in files if "_" in p.stem}
            for p in files:
                head, _, tail = p.stem.partition("_")
                names[head if len(tails) == 1 and tail in tails else p.stem] = p
        else:
            names.update({p.stem: p for p in files})
    for d in subdirs:
        if d != main:
            names.update({f"{d.name}/{p.stem}": p for p in _txt_files(d)})
    return names


# Usual (train, test) split names per layout; a missing train split falls back to "train".
_DEFAULT_SPLITS = {
    "sirst": ("trainval", "test"),
    "basicirstd": ("train", "test"),
    "dnanet": ("train", "test"),
    "isnet": ("trainval", "test"),
}


def _default_splits(layout: str, split_files: dict[str, Path]) -> tuple[str, str]:
    """The (train, test) defaults present in `split_files`, each falling back on its own.

    A missing test split gives ``all`` (no test split): callers that evaluate by default must
    say so, since ``all`` includes the training images.
    """
    train, test = _DEFAULT_SPLITS.get(layout, (ALL_SPLIT, ALL_SPLIT))
    train = next((s for s in (train, "train") if s in split_files), ALL_SPLIT)
    return train, (test if test in split_files else ALL_SPLIT)


def open_dataset(
    root: str | os.PathLike[str], layout: str = "auto", fixes: bool | str | os.PathLike[str] = True
) -> DatasetIndex:
    """Index a dataset folder.

    Args:
        root: the dataset folder.
        layout: ``"auto"`` to detect, or one of `LAYOUTS`.
        fixes: True to use ``<root>/fixes/`` when it exists, False to use the masks as shipped,
            or a folder of corrected masks (named like the masks they replace).

    Returns:
        The index of images, masks and splits.

    Raises:
        DataError: missing folders, an unknown layout, a layout that does not fit, or two files
            claiming the same id.

    Example:
        >>> index = open_dataset("../shared/datasets/NUAA-SIRST")  # doctest: +SKIP
        >>> index.layout, len(index.samples("test"))  # doctest: +SKIP
        ('sirst', 86)
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if layout != "auto" and layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; choose auto or one of {', '.join(LAYOUTS)}")
    images_dir = _pick_dir(root, _IMAGE_DIRS, "images")
    masks_dir = _pick_dir(root, _MASK_DIRS, "masks")
    if fixes is True:
        fixes_dir = root / "fixes" if (root / "fixes").is_dir() else None
    elif fixes is False:
        fixes_dir = None
    else:
        fixes_dir = Path(fixes)
        if not fixes_dir.is_dir():
            raise DataError(f"{fixes_dir}: fixes folder not found")
    skip = {images_dir, masks_dir, root / "fixes"}
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and d not in skip)
    if layout == "auto":
        layout = _detect(root, masks_dir, subdirs)
    main = _main_split_dir(root, layout, subdirs)
    images = _list_images(images_dir)
    if not images:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"{images_dir}: no image files ({exts})")
    masks, fixed = _index_masks(masks_dir, fixes_dir, set(images))
    split_files = _split_names(root, main, [d for d in subdirs if d != root], layout)
    train_split, test_split = _default_splits(layout, split_files)
    return DatasetIndex(
        root=root,
        layout=layout,
        images_dir=images_dir,
        masks_dir=masks_dir,
        images=images,
        masks=masks,
        fixed=fixed,
        split_files=split_files,
        train_split=train_split,
        test_split=test_split,
    )
