"""`split_samples` (the test split is never trained on or used to select best/) and the
training set's padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from istd.data.io import write_png_atomic
from istd.engine.config import load_config
from istd.engine.train_data import make_train_set, split_samples
from istd.errors import ConfigError, DataError

IDS = [f"{i:04d}" for i in range(10)]


def make_dataset(root: Path, splits: dict[str, list[str]]) -> Path:
    """images/ + masks/ of IDS and the given split files (``"50_50/train": [...]``)."""
    mask = np.zeros((8, 8), bool)
    mask[3:5, 3:5] = True
    for name in IDS:
        write_png_atomic(root / "images" / f"{name}.png", np.where(mask, 230, 40).astype(np.uint8))
        write_png_atomic(root / "masks" / f"{name}.png", mask)
    for split, ids in splits.items():
        path = root / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{i}\n" for i in ids))
    return root


# DNANet layout: 50_50/ is the main split folder, so its test.txt is the dataset's test split.
DNANET = {
    "50_50/train": IDS[:5],
    "50_50/val": IDS[5:7],
    "50_50/test": IDS[7:],
    "50_50/trainvaltest": IDS,
    "50_50/leaky_val": IDS[5:8],  # one test id
    "other/train": IDS[4:],  # a second protocol, with its own test split
    "other/test": IDS[:4],
}


def _split(root: Path, *overrides: str):
    return split_samples(load_config("mim-istd_nuaa-sirst", [f"data.root={root}", *overrides]))


@pytest.fixture
def dnanet(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds", DNANET)


def test_test_split_named_as_validation_or_training_is_refused(dnanet: Path) -> None:
    with pytest.raises(
        DataError, match=rf"{dnanet}.*validation split 'test' is the dataset's test"
    ):
        _split(dnanet, "data.val_split=test")
    with pytest.raises(DataError, match=r"training split 'test' is the dataset's test"):
        _split(dnanet, "data.train_split=test", "data.val_split=val")


def test_splits_sharing_test_ids_are_refused(dnanet: Path) -> None:
    with pytest.raises(DataError, match=r"training split 'trainvaltest' shares 3 ids.*'test'"):
        _split(dnanet, "data.train_split=trainvaltest", "data.val_split=null")
    with pytest.raises(DataError, match=r"training split 'all' shares 3 ids"):
        _split(dnanet, "data.train_split=all", "data.val_split=null")
    with pytest.raises(DataError, match=rf"{dnanet}.*validation split 'leaky_val' shares 1 ids"):
        _split(dnanet, "data.val_split=leaky_val")


def test_legitimate_splits_still_work(dnanet: Path, tmp_path: Path) -> None:
    train, val = _split(dnanet)  # train / val
    assert [s.id for s in train] == IDS[:5] and [s.id for s in val] == IDS[5:7]
    train, val = _split(dnanet, "data.val_split=null")  # val_fraction held out of train
    assert len(train) == 4 and len(val) == 1
    # A secondary folder's protocol keeps its own test split out, not the main one.
    train, val = _split(dnanet, "data.train_split=other/train", "data.val_split=null")
    assert {s.id for s in train + val} == set(IDS[4:])
    with pytest.raises(DataError, match=r"'other/test' is the dataset's test"):
        _split(dnanet, "data.train_split=other/train", "data.val_split=other/test")
    # No test split at all (images/ + masks/ only): nothing to protect.
    folder = make_dataset(tmp_path / "folder", {})
    train, val = _split(folder, "data.train_split=all", "data.val_split=null")
    assert len(train) == 9 and len(val) == 1


def test_real_nuaa_sirst_test_split_never_selects(nuaa_sirst: Path) -> None:
    with pytest.raises(DataError, match=r"NUAA-SIRST.*validation split 'test'"):
        _split(nuaa_sirst, "data.val_split=test")
    with pytest.raises(DataError, match=r"NUAA-SIRST.*'trainvaltest' shares 86 ids"):
        _split(nuaa_sirst, "data.train_split=trainvaltest", "data.val_split=null")
    train, val = _split(nuaa_sirst)  # the shipped idx_427 train / val
    assert (len(train), len(val)) == (256, 85)


@pytest.mark.parametrize(("pad_fill", "expected"), [("black", 0.0), ("mean", 0.3)])
def test_frames_smaller_than_the_crop_are_padded_with_the_chosen_fill(
    dnanet: Path, pad_fill: str, expected: float
) -> None:
    cfg = load_config(
        "mim-istd_nuaa-sirst",
        [
            f"data.root={dnanet}",
            "augment.crop_size=16",  # the 8 x 8 frames fill a quarter of the crop
            f"augment.pad_fill={pad_fill}",
            "augment.noise_p=0.0",
            "augment.blur_p=0.0",
        ],
    )
    train, _ = split_samples(cfg)
    image, mask = make_train_set(train, cfg, norm_mean=0.3)[0]
    assert image.shape == (1, 16, 16)
    pixels = image.numpy()
    frame = np.isclose(pixels, 40 / 255) | np.isclose(pixels, 230 / 255)
    assert frame.sum() == 64  # the whole frame, moved but not resized
    assert np.allclose(pixels[~frame], expected)
    assert mask.sum() == 4  # the padding holds no target


def test_unknown_pad_fill_is_refused() -> None:
    with pytest.raises(ConfigError, match="pad_fill"):
        load_config("mim-istd_nuaa-sirst", ["augment.pad_fill=reflect"])
