"""Tests for istd/data/datasets.py and istd/data/transforms.py."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from istd.data import (
    IRSTDDataset,
    apply_transform,
    compute_norm_stats,
    eval_transform,
    open_dataset,
    read_image,
    seed_transform,
    train_transform,
)
from istd.data.layouts import Sample
from istd.errors import ConfigError, DataError


def test_items_native_resolution(make_tree) -> None:
    root = make_tree("dnanet")
    ds = IRSTDDataset(root, "test", transform=eval_transform())
    assert len(ds) == 2 and ds.ids == ["img_10", "img 3 ü"]
    image, mask, sample_id = ds[0]
    assert image.shape == (1, 24, 32) and mask.shape == (1, 24, 32)  # (1, H, W), no resizing
    assert image.dtype == torch.float32 and mask.dtype == torch.float32
    assert sample_id == "img_10"
    expected = read_image(root / "images" / "img_10.png")
    assert torch.equal(image[0], torch.from_numpy(expected))  # not normalised
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask.sum() == 9  # one 3 x 3 target (img_10 is the third id: 1 + 2 % 2)


def test_eval_keeps_each_image_size(make_tree, synth) -> None:
    root = make_tree("folder")
    image, mask = synth.pair(5, h=37, w=19)
    synth.write_png(root / "images" / "odd.png", image)
    synth.write_png(root / "masks" / "odd.png", mask)
    ds = IRSTDDataset(root, "all")
    shapes = {sample_id: tuple(img.shape) for img, _, sample_id in ds}
    assert shapes["odd"] == (1, 37, 19) and shapes["img_1"] == (1, 24, 32)


def test_limit_and_index_source(make_tree) -> None:
    index = open_dataset(make_tree("isnet"))
    assert IRSTDDataset(index, "test", limit=1).ids == ["img_10"]
    samples = index.samples("all")
    assert IRSTDDataset(samples, limit=3).ids == [s.id for s in samples[:3]]
    for source in (index, samples):  # a list is limited like an index, not sliced from the end
        with pytest.raises(DataError, match="limit must be at least 1, got -1"):
            IRSTDDataset(source, "all", limit=-1)


def test_size_mismatch_names_both_files(make_tree, synth) -> None:
    root = make_tree("folder")
    synth.write_png(root / "masks" / "img_2.png", np.zeros((10, 10), np.uint8))
    ds = IRSTDDataset(root, "all")
    with pytest.raises(
        DataError, match=r"img_2\.png: mask is 10x10 but image .*img_2\.png is 32x24"
    ):
        ds[ds.ids.index("img_2")]


def test_empty_sample_list_refused() -> None:
    with pytest.raises(DataError, match="no samples"):
        IRSTDDataset([], "train")


def test_train_crop_pads_small_images_and_batches(make_tree) -> None:
    ds = IRSTDDataset(make_tree("dnanet"), "train", transform=train_transform(48, seed=0))
    images, masks, ids = next(iter(DataLoader(ds, batch_size=2)))
    assert images.shape == (2, 1, 48, 48) and masks.shape == (2, 1, 48, 48)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert list(ids) == ["img_1", "img_2"]


def _one_target_sample(tmp_path: Path, synth, size: int = 160) -> Sample:
    image = np.full((size, size), 40, np.uint8)
    mask = np.zeros((size, size), np.uint8)
    image[100:103, 20:23], mask[100:103, 20:23] = 250, 255
    img = synth.write_png(tmp_path / "images" / "t.png", image)
    msk = synth.write_png(tmp_path / "masks" / "t.png", mask)
    return Sample("t", img, msk)


def test_target_aware_crop_keeps_target_in_view(tmp_path: Path, synth) -> None:
    sample = _one_target_sample(tmp_path, synth)
    seen = {}
    for p in (1.0, 0.0):
        ds = IRSTDDataset([sample], transform=train_transform(32, target_p=p, seed=3))
        seen[p] = sum(bool(ds[0][1].any()) for _ in range(60))
    assert seen[1.0] == 60  # centred (with jitter) on a target pixel: always in view
    assert seen[0.0] < 30  # a uniform 32 px crop of 160 px rarely holds a 3 px target


def test_transforms_keep_image_and_mask_aligned(tmp_path: Path, synth) -> None:
    sample = _one_target_sample(tmp_path, synth)
    ds = IRSTDDataset([sample], transform=train_transform(40, noise_p=0.0, blur_p=0.0, seed=1))
    for _ in range(20):
        image, mask, _ = ds[0]
        assert torch.equal(image > 0.5, mask > 0.5)  # flips/rotations moved both the same way


def test_noise_and_blur_are_mild(tmp_path: Path, synth) -> None:
    sample = _one_target_sample(tmp_path, synth)
    ds = IRSTDDataset(
        [sample], transform=train_transform(40, target_p=1.0, noise_p=1.0, blur_p=1.0, seed=2)
    )
    for _ in range(10):
        image, mask, _ = ds[0]
        assert image[mask > 0].max() > 0.6  # the target still stands out
        background = image[mask == 0]
        assert abs(float(background.mean()) - 40 / 255) < 0.02


def test_seeded_pipeline_repeats(tmp_path: Path, synth) -> None:
    sample = _one_target_sample(tmp_path, synth)
    runs = [
        [IRSTDDataset([sample], transform=train_transform(32, seed=9))[0][0] for _ in range(1)]
        for _ in range(2)
    ]
    assert torch.equal(runs[0][0], runs[1][0])


def _landing_spots(pipelines) -> collections.Counter:
    """Where a marker pixel at (0, 1) of an 8 x 8 frame lands, over the given pipelines."""
    image = np.zeros((8, 8), np.float32)
    image[0, 1] = 1.0
    seen: collections.Counter = collections.Counter()
    for pipeline in pipelines:
        out, _ = apply_transform(pipeline, image, np.zeros((8, 8), np.uint8))
        seen[tuple(int(v) for v in np.argwhere(out == out.max())[0])] += 1
    return seen


def test_seeded_flips_and_rotation_draw_independently() -> None:
    # albumentations' own seeding gives every child transform the same numbers, so the flips and
    # the rotation fired together (4 orientations, the identity 58 %); one shared stream: all 8.
    def reseeded(n: int):
        pipeline = train_transform(8, target_p=0.0, noise_p=0.0, blur_p=0.0)
        for s in range(n):
            seed_transform(pipeline, s)
            yield pipeline

    seen = _landing_spots(reseeded(400))
    assert len(seen) == 8, seen
    assert max(seen.values()) < 0.3 * 400, seen  # each orientation ~1/8 to 1/4
    built = (train_transform(8, target_p=0.0, noise_p=0.0, blur_p=0.0, seed=s) for s in range(400))
    assert len(_landing_spots(built)) == 8  # the seed= argument seeds the same way


def test_horizontal_flip_alone_keeps_up_up() -> None:
    # vflip_p = rot90_p = 0 (frames with a sky above the ground): the only orientations are the
    # identity and the left-right mirror, both drawn
    built = (
        train_transform(8, target_p=0.0, noise_p=0.0, blur_p=0.0, vflip_p=0.0, rot90_p=0.0, seed=s)
        for s in range(200)
    )
    seen = _landing_spots(built)
    assert len(seen) == 2, seen
    assert min(seen.values()) > 0.3 * 200, seen


@pytest.mark.parametrize(
    "kwargs",
    [
        {"crop_size": 0},
        {"target_p": 1.5},
        {"noise_p": -0.1},
        {"blur_p": 2.0},
        {"hflip_p": 1.1},
        {"vflip_p": -0.5},
        {"rot90_p": 2.0},
        {"scale_p": 1.5},
        {"scale_range": (0.0, 1.5)},
        {"scale_range": (1.5, 0.7)},
        {"scale_range": (0.7,)},
        {"scale_range": (0.7, float("inf"))},
        {"pad_value": -0.1},
        {"pad_value": 1.5},
    ],
)
def test_train_transform_rejects_bad_settings(kwargs) -> None:
    with pytest.raises(ConfigError):
        train_transform(**kwargs)


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_rescale_resizes_targets_with_their_masks(factor: float) -> None:
    image = np.zeros((64, 80), np.float32)
    mask = np.zeros((64, 80), np.uint8)
    mask[20:30, 30:40] = 1  # a 10 x 10 target
    image[mask > 0] = 1.0
    pipeline = train_transform(
        256, target_p=1.0, noise_p=0.0, blur_p=0.0, scale_p=1.0, scale_range=(factor, factor)
    )
    out_image, out_mask = apply_transform(pipeline, image, mask)
    assert out_image.shape == out_mask.shape == (256, 256)
    assert out_mask.sum() == round(10 * factor) ** 2
    assert np.all(out_image[out_mask > 0] > 0.5)  # the mask still covers the bright target


def test_rescale_off_keeps_the_pipeline_and_its_random_stream() -> None:
    # scale_p = 0 adds no transform, so runs started before the option resume identically
    plain = train_transform(32, seed=5)
    off = train_transform(32, seed=5, scale_p=0.0, scale_range=(0.5, 2.0))
    assert [type(t).__name__ for t in off.transforms] == [
        type(t).__name__ for t in plain.transforms
    ]
    image = np.random.default_rng(0).random((50, 60), dtype=np.float32)
    mask = (image > 0.95).astype(np.uint8)
    for _ in range(3):
        a, b = apply_transform(plain, image, mask), apply_transform(off, image, mask)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_norm_stats_match_numpy_on_training_split(make_tree) -> None:
    index = open_dataset(make_tree("dnanet"))
    pixels = np.concatenate([read_image(s.image_path).ravel() for s in index.samples("train")])
    mean, std = compute_norm_stats(index, "train")
    assert mean == pytest.approx(float(pixels.mean()), rel=1e-6)
    assert std == pytest.approx(float(pixels.std()), rel=1e-6)
    assert compute_norm_stats(index) == (mean, std)  # default: index.train_split
    ds = IRSTDDataset(index, "train", transform=train_transform(16))
    assert compute_norm_stats(ds) == pytest.approx((mean, std))  # raw images, not crops


@pytest.mark.parametrize("split", ["test", "50_50/test", "val", "trainvaltest"])
def test_norm_stats_refuse_held_out_splits(make_tree, split: str) -> None:
    index = open_dataset(make_tree("dnanet"))
    with pytest.raises(ConfigError, match="training split"):
        compute_norm_stats(index, split)


def test_real_nuaa_fix_makes_misc111_loadable(nuaa_sirst: Path) -> None:
    fixed = IRSTDDataset(nuaa_sirst, "all", fixes=True)
    index = fixed.ids.index("Misc_111")
    image, mask, _ = fixed[index]
    assert image.shape == mask.shape == (1, 220, 325) and mask.sum() > 0
    raw = IRSTDDataset(nuaa_sirst, "all", fixes=False)
    with pytest.raises(DataError, match="Misc_111_pixels0.png: mask is 592x400"):
        raw[index]


def test_real_nudt_train_items(nudt_sirst: Path) -> None:
    ds = IRSTDDataset(nudt_sirst, "train", transform=train_transform(128, seed=0), limit=8)
    images, masks, _ = next(iter(DataLoader(ds, batch_size=8)))
    assert images.shape == (8, 1, 128, 128)
    assert (masks.flatten(1).sum(1) > 0).float().mean() >= 0.75  # most crops show a target
