"""Small synthetic dataset trees, one per layout, built in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

IDS = ["img_1", "img_2", "img_10", "img 3 ü"]


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".png", array)[1].tobytes())
    return path


def synthetic_pair(seed: int, h: int = 24, w: int = 32, targets: int = 1):
    """A noisy background with `targets` bright 3 x 3 squares; returns (image uint8, mask uint8 0/255)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(20, 90, (h, w), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for k in range(targets):
        y, x = 3 + 6 * k, 4 + 7 * k
        image[y : y + 3, x : x + 3] = 240
        mask[y : y + 3, x : x + 3] = 255
    return image, mask


def build_tree(root: Path, layout: str, ids: list[str] = IDS, crlf: bool = False) -> Path:
    """Write images/, masks/ and the split files of `layout` under root."""
    eol = "\r\n" if crlf else "\n"
    for k, sample_id in enumerate(ids):
        image, mask = synthetic_pair(k, targets=1 + k % 2)
        write_png(root / "images" / f"{sample_id}.png", image)
        suffix = "_pixels0" if layout == "sirst" else ""
        write_png(root / "masks" / f"{sample_id}{suffix}.png", mask)
    train, test = ids[: len(ids) // 2], ids[len(ids) // 2 :]

    def split(path: Path, items: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((eol.join(items) + eol).encode())

    if layout == "sirst":
        (root / "masks" / f"{ids[0]}.xml").write_text("<annotation/>")  # SIRST ships XML boxes
        split(root / "idx_427" / "train.txt", train)
        split(root / "idx_427" / "test.txt", test)
        split(root / "idx_427" / "trainval.txt", train)
    elif layout == "basicirstd":
        split(root / "img_idx" / "train_TOY.txt", train)
        split(root / "img_idx" / "test_TOY.txt", test)
    elif layout == "dnanet":
        split(root / "50_50" / "train.txt", train)
        split(root / "50_50" / "test.txt", test)
    elif layout == "isnet":
        split(root / "trainval.txt", train)
        split(root / "test.txt", test)
    return root


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[..., Path]:
    """make_tree(layout, **kw) -> root of a fresh synthetic dataset of that layout."""

    def make(layout: str, **kwargs) -> Path:
        return build_tree(tmp_path / f"ds {layout}", layout, **kwargs)

    return make


class Synth:
    """Helpers handed to tests through the `synth` fixture."""

    ids = IDS
    write_png = staticmethod(write_png)
    pair = staticmethod(synthetic_pair)
    build_tree = staticmethod(build_tree)


@pytest.fixture
def synth() -> type[Synth]:
    """The synthetic-data helpers (write_png, pair, build_tree, ids)."""
    return Synth
