"""Tests for istd/data/paste.py and the copy-paste option of the training set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.measure import label

from istd.data import load_pair, open_dataset
from istd.data.io import write_png_atomic
from istd.data.layouts import Sample
from istd.data.paste import MARGIN, TargetBank
from istd.engine.config import load_config
from istd.engine.train_data import EpochSeededDataset, make_train_set
from istd.errors import ConfigError


def frame_with_targets(level: float = 0.3, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A flat frame with a 3 x 3 target (+0.4) and a single-pixel target (+0.2)."""
    image = np.full((size, size), level, np.float32)
    mask = np.zeros((size, size), np.uint8)
    image[5:8, 5:8] += 0.4
    mask[5:8, 5:8] = 1
    image[20, 30] += 0.2
    mask[20, 30] = 1
    return image, mask


def test_bank_keeps_each_targets_contrast_and_mask() -> None:
    bank = TargetBank.from_pairs([frame_with_targets()])
    assert len(bank) == 2
    sizes = sorted(int(p.mask.sum()) for p in bank.patches)
    assert sizes == [1, 9]
    for patch in bank.patches:
        on = patch.contrast[patch.mask > 0]
        assert np.allclose(on, on[0]) and on[0] in (pytest.approx(0.4), pytest.approx(0.2))
        # the margin's outer ring is background: nothing of the frame's level is carried over
        assert np.abs(patch.contrast[0]).max() < 1e-6


def test_paste_adds_targets_with_their_contrast_and_masks() -> None:
    bank = TargetBank.from_pairs([frame_with_targets()])
    image = np.full((64, 64), 0.1, np.float32)
    mask = np.zeros((64, 64), np.uint8)
    before = image.copy(), mask.copy()
    out_image, out_mask = bank.paste(image, mask, 5, np.random.default_rng(0))
    assert np.array_equal(image, before[0]) and np.array_equal(mask, before[1])  # not in place
    labels = label(out_mask, connectivity=2)
    assert labels.max() > 0
    for k in range(1, labels.max() + 1):
        step = out_image[labels == k] - 0.1  # the target's own contrast, whole
        expected = 0.4 if step.size == 9 else 0.2
        assert np.allclose(step, expected, atol=1e-6)
    changed = np.abs(out_image - 0.1) > 1e-6
    assert not (changed & ~_dilate(out_mask, MARGIN)).any()  # only targets and their margins


def test_pasted_targets_never_touch_other_targets() -> None:
    bank = TargetBank.from_pairs([frame_with_targets()])
    image, mask = frame_with_targets(size=48)
    _, out_mask = bank.paste(image, mask, 40, np.random.default_rng(1))  # more than fit
    pasted = out_mask.sum() - mask.sum()
    assert pasted > 0
    # Every component is one bank target (9 or 1 pixels): none merged with another.
    sizes = np.bincount(label(out_mask, connectivity=2).ravel())[1:]
    assert set(sizes.tolist()) <= {1, 9}


def test_nothing_is_pasted_where_the_target_would_clip() -> None:
    bank = TargetBank.from_pairs([frame_with_targets()])  # positive contrasts only
    image = np.ones((32, 32), np.float32)  # saturated
    out_image, out_mask = bank.paste(
        image, np.zeros((32, 32), np.uint8), 3, np.random.default_rng(2)
    )
    assert out_mask.sum() == 0 and np.array_equal(out_image, image)


def test_bank_without_targets_is_refused() -> None:
    empty = (np.zeros((8, 8), np.float32), np.zeros((8, 8), np.uint8))
    with pytest.raises(ConfigError, match="paste_p"):
        TargetBank.from_pairs([empty])


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = np.zeros_like(mask, bool)
    for y, x in zip(*np.nonzero(mask), strict=True):
        out[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1] = True
    return out


@pytest.fixture
def samples(tmp_path: Path) -> list[Sample]:
    out = []
    for k in range(3):
        image, mask = frame_with_targets(level=0.2 + 0.1 * k, size=48)
        image_path, mask_path = tmp_path / f"{k}.png", tmp_path / f"{k}_mask.png"
        write_png_atomic(image_path, (image * 255).round().astype(np.uint8))
        write_png_atomic(mask_path, mask.astype(bool))
        out.append(Sample(str(k), image_path, mask_path))
    return out


def _config(*overrides: str):
    return load_config("mim-istd_nuaa-sirst", ["augment.crop_size=48", *overrides])


def _epoch(dataset: EpochSeededDataset, epoch: int) -> list[torch.Tensor]:
    dataset.epoch = epoch
    return [dataset[i][1] for i in range(len(dataset))]


def test_paste_p_zero_keeps_earlier_runs_crops(samples: list[Sample]) -> None:
    plain = make_train_set(samples, _config())
    off = make_train_set(samples, _config("augment.paste_p=0.0", "augment.paste_max=7"))
    assert off.bank is None
    for a, b in zip(_epoch(plain, 3), _epoch(off, 3), strict=True):
        assert torch.equal(a, b)


def test_paste_is_seeded_by_epoch_and_index(samples: list[Sample]) -> None:
    cfg = _config("augment.paste_p=1.0", "augment.paste_max=4", "augment.target_p=0.0")
    first, again = make_train_set(samples, cfg), make_train_set(samples, cfg)
    assert len(first.bank) == 6
    masks = _epoch(first, 2)
    assert all(torch.equal(a, b) for a, b in zip(masks, _epoch(again, 2), strict=True))
    plain = _epoch(make_train_set(samples, _config("augment.target_p=0.0")), 2)
    assert sum(m.sum() for m in masks) > sum(m.sum() for m in plain)  # targets were added


@pytest.mark.parametrize("override", ["augment.paste_p=1.5", "augment.paste_max=0"])
def test_bad_paste_settings_are_refused(override: str) -> None:
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        _config(override)


def test_nuaa_sirst_training_targets_form_the_bank(nuaa_sirst: Path) -> None:
    samples = open_dataset(nuaa_sirst).samples("train")
    bank = TargetBank.from_pairs(load_pair(s) for s in samples)
    assert len(bank) == 327  # 8-connected targets of the 256 training masks
    image, mask = load_pair(samples[0])
    _, out_mask = bank.paste(image, mask, 3, np.random.default_rng(0))
    assert label(out_mask, connectivity=2).max() > label(mask, connectivity=2).max()
