"""Torch datasets for training and evaluation, and normalisation statistics.

`IRSTDDataset` yields ``(image, mask, id)`` with the image as read (float32 in [0, 1], not
normalised: networks normalise inside ``forward`` with statistics saved in their config) and
the mask binarised. `compute_norm_stats` measures those statistics on a training split only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from istd.data.io import read_image, read_mask
from istd.data.layouts import DatasetIndex, Sample, open_dataset
from istd.data.transforms import PairTransform, apply_transform
from istd.errors import ConfigError, DataError

if TYPE_CHECKING:
    import albumentations as A

__all__ = ["IRSTDDataset", "compute_norm_stats", "load_pair"]


def load_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Read a sample's image and mask and check that their sizes agree.

    Args:
        sample: the files to read.

    Returns:
        Image (H, W) float32 in [0, 1] and mask (H, W) uint8 in {0, 1}.

    Raises:
        DataError: an unreadable file, or a mask whose size differs from the image's.
    """
    image = read_image(sample.image_path)  # (H, W)
    mask = read_mask(sample.mask_path)  # (H, W)
    if image.shape != mask.shape:
        raise DataError(
            f"{sample.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but image "
            f"{sample.image_path} is {image.shape[1]}x{image.shape[0]}"
        )
    return image, mask.astype(np.uint8)


class IRSTDDataset(Dataset):
    """Images and masks of one split, for a `torch.utils.data.DataLoader`.

    Each item is ``(image (1, H, W) float32 in [0, 1], mask (1, H, W) float32 in {0, 1}, id)``.
    Without a transform the images keep their native size, so evaluation loaders need
    ``batch_size=1`` unless all images of the split share one size.

    Args:
        source: a `DatasetIndex`, a dataset folder, or a list of samples.
        split: the split name (see `DatasetIndex.splits`); ignored for a list of samples.
        transform: an albumentations pipeline (`train_transform`), a plain
            ``(image, mask) -> (image, mask)`` callable, or None for native resolution.
        limit: keep only the first ``limit`` ids of the split.
        layout: the layout when ``source`` is a folder.
        fixes: whether to apply mask fixes when ``source`` is a folder (see `open_dataset`).
        cache: keep decoded images in memory after the first read (for small datasets).

    Example:
        >>> ds = IRSTDDataset("../shared/datasets/NUDT-SIRST", "test")  # doctest: +SKIP
        >>> image, mask, sample_id = ds[0]  # doctest: +SKIP
        >>> image.shape, mask.shape, sample_id  # doctest: +SKIP
        (torch.Size([1, 256, 256]), torch.Size([1, 256, 256]), '000002')
    """

    def __init__(
        self,
        source: DatasetIndex | str | os.PathLike[str] | Sequence[Sample],
        split: str = "all",
        transform: A.Compose | PairTransform | None = None,
        limit: int | None = None,
        layout: str = "auto",
        fixes: bool | str | os.PathLike[str] = True,
        cache: bool = False,
    ) -> None:
        if isinstance(source, (str, os.PathLike)):
            source = open_dataset(source, layout=layout, fixes=fixes)
        if isinstance(source, DatasetIndex):
            self.samples: list[Sample] = source.samples(split, limit=limit)
            self.split = split
        else:
            if limit is not None and limit < 1:  # as DatasetIndex.samples: no slice from the end
                raise DataError(f"limit must be at least 1, got {limit}")
            self.samples = list(source)[:limit]
            self.split = split
        if not self.samples:
            raise DataError(f"split {split!r} holds no samples")
        self.transform = transform
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def ids(self) -> list[str]:
        """The sample ids, in order."""
        return [s.id for s in self.samples]

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        pair = load_pair(self.samples[index])
        if self._cache is not None:
            self._cache[index] = pair
        return pair

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        image, mask = self._load(index)  # (H, W) float32, (H, W) uint8
        image, mask = apply_transform(self.transform, image, mask)
        image_t = torch.from_numpy(np.ascontiguousarray(image))[None]  # (H, W) -> (1, H, W)
        mask_t = torch.from_numpy(np.ascontiguousarray(mask)).float()[None]  # (1, H, W)
        return image_t, mask_t, self.samples[index].id


def _looks_held_out(split: str) -> bool:
    name = split.rsplit("/", 1)[-1].lower()
    return "test" in name or name in ("val", "valid", "validation")


def compute_norm_stats(
    source: DatasetIndex | IRSTDDataset | Sequence[Sample], split: str | None = None
) -> tuple[float, float]:
    """Mean and standard deviation of the image pixels of a training split.

    The statistics are taken over every pixel of every image at native resolution (images are
    read from disk, transforms are not applied), accumulated in float64.

    Args:
        source: a dataset index (then ``split`` is required), a dataset, or a list of samples.
        split: the training split of an index (defaults to ``index.train_split``).

    Returns:
        ``(mean, std)`` of the pixel values in [0, 1].

    Raises:
        ConfigError: the split is a test or validation split (statistics must come from
            training data only).
        DataError: an unreadable image or an empty split.
    """
    if isinstance(source, DatasetIndex):
        split = split or source.train_split
    elif isinstance(source, IRSTDDataset):
        split = split or source.split
    if split is not None and _looks_held_out(split):
        raise ConfigError(
            f"normalisation statistics must come from the training split, not {split!r}"
        )
    if isinstance(source, DatasetIndex):
        samples = source.samples(split)
    elif isinstance(source, IRSTDDataset):
        samples = source.samples
    else:
        samples = list(source)
    if not samples:
        raise DataError("cannot compute normalisation statistics of an empty split")
    total = total_sq = 0.0
    count = 0
    for sample in samples:
        image = read_image(sample.image_path).astype(np.float64)  # (H, W)
        total += float(image.sum())
        total_sq += float(np.square(image).sum())
        count += image.size
    mean = total / count
    std = max(total_sq / count - mean * mean, 0.0) ** 0.5
    return mean, std
