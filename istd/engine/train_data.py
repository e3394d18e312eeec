"""Training data: the train/validation split, the epoch-seeded augmented set and its loader.

Reproducibility (see `istd.engine.train`): the data order comes from a `DistributedSampler`
seeded with (seed, epoch), each sample's augmentation is seeded with (seed, epoch, index), and
`seed_everything` seeds Python, NumPy and torch with (seed, epoch, rank) at every epoch, so an
epoch's randomness depends on nothing that came before it.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from istd.data import apply_transform, load_pair, open_dataset, seed_transform, train_transform
from istd.data.layouts import DatasetIndex, Sample
from istd.data.paste import TargetBank
from istd.engine.config import DataConfig, TrainConfig
from istd.errors import DataError

__all__ = [
    "EpochSeededDataset",
    "ids_sha256",
    "make_train_loader",
    "make_train_set",
    "seed_everything",
    "split_samples",
]

_PASTE_STREAM = 1  # extra SeedSequence key of the copy-paste draws


def seed_everything(seed: int, *keys: int) -> None:
    """Seed Python, NumPy and torch from `seed` and extra keys (epoch, rank) via SeedSequence."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2)
    random.seed(int(state[0]))
    np.random.seed(int(state[0]))
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))


class EpochSeededDataset(Dataset):
    """Training samples whose augmentation is seeded by (seed, epoch, index).

    Set `epoch` before each epoch's iterator is created (DataLoader workers copy the dataset
    then), so the augmented crop of a sample never depends on worker count or history.
    """

    def __init__(
        self,
        samples: list[Sample],
        transform: Any,
        seed: int,
        paste_p: float = 0.0,
        paste_max: int = 3,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        # Decoded images, kept per process: the train splits are a few hundred small frames.
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.paste_p, self.paste_max = paste_p, paste_max
        self.bank: TargetBank | None = None
        if paste_p > 0:
            self.bank = TargetBank.from_pairs(self._pair(i) for i in range(len(samples)))

    def __len__(self) -> int:
        return len(self.samples)

    def _pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._cache:
            self._cache[index] = load_pair(self.samples[index])
        return self._cache[index]  # (H, W) float32, (H, W) uint8

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self._pair(index)  # (H, W) float32, (H, W) uint8
        if self.bank is not None:
            # A stream of its own, so that paste_p = 0 leaves the crops of earlier runs as
            # they were.
            rng = np.random.default_rng([self.seed, self.epoch, index, _PASTE_STREAM])
            if rng.random() < self.paste_p:
                count = int(rng.integers(1, self.paste_max + 1))
                image, mask = self.bank.paste(image, mask, count, rng)
        sub = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
        seed_transform(self.transform, int(sub))
        image, mask = apply_transform(self.transform, image, mask)  # (S, S) each
        image_t = torch.from_numpy(np.ascontiguousarray(image))[None]  # (1, S, S)
        mask_t = torch.from_numpy(np.ascontiguousarray(mask)).float()[None]  # (1, S, S)
        return image_t, mask_t


def split_samples(cfg: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    """The training and validation samples the config names.

    Without a validation split, a fixed `val_fraction` of the training ids (the lowest
    sha256 of the id, so independent of seed and file order) is held out for validation.

    The dataset's test split (see `_test_split_of`) is never trained on or used to select
    best/: a training or validation split that is the test split, or shares ids with it, is
    refused. Datasets without a test split are not checked.

    Raises:
        DataError: missing dataset, unknown split, a split overlapping the test split, or
            overlapping train and validation ids.
    """
    root = Path(cfg.data.root).expanduser()
    checkout = Path(__file__).resolve().parents[2] / root
    if not root.is_absolute() and not root.exists() and checkout.exists():
        root = checkout  # shipped configs name ../shared/datasets relative to the checkout
    index = open_dataset(root, layout=cfg.data.layout)
    train = index.samples(cfg.data.train_split)
    val = index.samples(cfg.data.val_split) if cfg.data.val_split is not None else []
    # Before the hold-out, so that messages count the whole training split.
    _refuse_test_images(index, root, cfg.data, train, val)
    if cfg.data.val_split is None:
        ranked = sorted(train, key=lambda s: hashlib.sha256(s.id.encode()).hexdigest())
        held = {s.id for s in ranked[: max(1, math.ceil(cfg.data.val_fraction * len(train)))]}
        val = [s for s in train if s.id in held]
        train = [s for s in train if s.id not in held]
    overlap = {s.id for s in train} & {s.id for s in val}
    if overlap:
        raise DataError(
            f"{cfg.data.root}: validation split {cfg.data.val_split!r} shares "
            f"{len(overlap)} ids with {cfg.data.train_split!r} (e.g. {sorted(overlap)[0]})"
        )
    val_limit = cfg.data.val_limit if cfg.data.val_limit is not None else cfg.data.limit
    train = train[: cfg.data.limit] if cfg.data.limit else train
    val = val[:val_limit] if val_limit else val
    if not train or not val:
        raise DataError(f"{cfg.data.root}: empty training or validation split")
    return train, val


def _refuse_test_images(
    index: DatasetIndex, root: Path, data: DataConfig, train: list[Sample], val: list[Sample]
) -> None:
    """Raise DataError if the training or validation split is, or shares ids with, the test
    split that belongs with the training split."""
    test = _test_split_of(index, data.train_split)
    if test is None:
        return
    test_ids = set(index.ids(test))
    for role, split, samples in (
        ("training", data.train_split, train),
        ("validation", data.val_split, val),
    ):
        if split == test:
            raise DataError(
                f"{root}: the {role} split {split!r} is the dataset's test split; "
                "train and select best/ on other splits"
            )
        leaked = test_ids.intersection(s.id for s in samples)
        if leaked:
            raise DataError(
                f"{root}: the {role} split {split!r} shares {len(leaked)} ids with the test "
                f"split {test!r} (e.g. {sorted(leaked)[0]}); test images must not be trained "
                "on or used to select best/"
            )


def _test_split_of(index: DatasetIndex, train_split: str) -> str | None:
    """The test split that belongs with `train_split`, or None when the dataset has none.

    A split from a secondary folder (``50_50/train``) is an alternative protocol: its own
    ``50_50/test`` is the one to keep out, not the main folder's test split.
    """
    folder, sep, _ = train_split.rpartition("/")
    if sep and f"{folder}/test" in index.split_files:
        return f"{folder}/test"
    return index.test_split if index.has_test_split else None


def ids_sha256(samples: Sequence[Sample]) -> str:
    """sha256 of the ids, one per line in order: identifies exactly which images were used.

    Ids from non-UTF-8 file names hold surrogate escapes; they hash as the name's own bytes.
    """
    text = "".join(f"{s.id}\n" for s in samples)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def make_train_loader(
    dataset: EpochSeededDataset, cfg: TrainConfig, epoch: int, rank: int, world_size: int
) -> DataLoader:
    """This epoch's loader: order from (seed, epoch), sharded over ranks."""
    dataset.epoch = epoch
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.train.seed
    )
    sampler.set_epoch(epoch)
    # The loader's own generator only seeds workers; tie it to (seed, epoch) too.
    generator = torch.Generator().manual_seed(cfg.train.seed * 100_003 + epoch)
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        generator=generator,
        drop_last=False,
        persistent_workers=False,
    )


def make_train_set(
    samples: list[Sample], cfg: TrainConfig, norm_mean: float = 0.0
) -> EpochSeededDataset:
    """The augmented training set of `samples`.

    `norm_mean` (the network's normalisation mean, intensity in [0, 1]) fills the padding
    when ``cfg.augment.pad_fill`` is ``mean``.
    """
    pipeline = asdict(cfg.augment)
    paste = {key: pipeline.pop(key) for key in ("paste_p", "paste_max")}  # before the pipeline
    pad_fill = pipeline.pop("pad_fill")
    pad_value = norm_mean if pad_fill == "mean" else 0.0
    transform = train_transform(**pipeline, pad_value=pad_value, seed=0)
    return EpochSeededDataset(samples, transform, cfg.train.seed, **paste)
