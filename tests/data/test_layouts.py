"""Tests for istd/data/layouts.py: detection, overrides, split files, fixes, real datasets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from istd.data.io import read_mask
from istd.data.layouts import LAYOUTS, open_dataset, read_split_file
from istd.errors import DataError


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_detected(make_tree, synth, layout: str) -> None:
    root = make_tree(layout)
    index = open_dataset(root)
    assert index.layout == layout
    assert index.ids("all") == ["img 3 ü", "img_1", "img_2", "img_10"]  # natural order
    for sample in index.samples("all"):
        assert sample.image_path.parent.name == "images"
        assert sample.mask_path.parent.name == "masks"
        assert sample.image_path.stem == sample.id
    if layout != "folder":
        assert [s.id for s in index.samples(index.train_split)] == synth.ids[:2]
        assert [s.id for s in index.samples(index.test_split)] == synth.ids[2:]


def test_layout_specific_split_names(make_tree) -> None:
    assert open_dataset(make_tree("sirst")).splits() == ["test", "train", "trainval", "all"]
    assert open_dataset(make_tree("basicirstd")).splits() == ["test", "train", "all"]
    assert open_dataset(make_tree("dnanet")).splits() == ["test", "train", "all"]
    assert open_dataset(make_tree("isnet")).splits() == ["test", "trainval", "all"]
    assert open_dataset(make_tree("folder")).splits() == ["all"]


def test_sirst_masks_paired_through_pixels0(make_tree) -> None:
    index = open_dataset(make_tree("sirst"))
    sample = index.samples("train")[0]
    assert sample.mask_path.name == "img_1_pixels0.png"
    assert index.train_split == "trainval" and index.test_split == "test"


def test_default_splits_fall_back_one_at_a_time(make_tree) -> None:
    root = make_tree("sirst")
    (root / "idx_427" / "trainval.txt").unlink()  # train.txt and test.txt only
    index = open_dataset(root)
    assert (index.train_split, index.test_split) == ("train", "test")
    assert index.has_test_split
    # Without a test list the test default is "all" (said so by `istd eval`); train keeps its own.
    (root / "idx_427" / "test.txt").unlink()
    index = open_dataset(root)
    assert (index.train_split, index.test_split) == ("train", "all")
    assert not index.has_test_split
    root = make_tree("basicirstd")
    (root / "img_idx" / "train_TOY.txt").unlink()
    index = open_dataset(root)
    assert (index.train_split, index.test_split) == ("all", "test")
    assert not open_dataset(make_tree("folder")).has_test_split


def test_explicit_layout_overrides_detection(make_tree) -> None:
    root = make_tree("dnanet")
    (root / "trainval.txt").write_text("img_1\n")
    (root / "test.txt").write_text("img_2\n")
    assert open_dataset(root).layout == "dnanet"  # dnanet comes before isnet in the order
    index = open_dataset(root, layout="isnet")
    assert index.layout == "isnet"
    assert index.ids("trainval") == ["img_1"]
    assert index.ids("50_50/train") == ["img_1", "img_2"]  # other folders stay reachable
    assert open_dataset(root, layout="folder").layout == "folder"


def test_layout_that_does_not_fit_is_refused(make_tree) -> None:
    root = make_tree("folder")
    for layout in ("sirst", "basicirstd", "dnanet", "isnet"):
        with pytest.raises(DataError, match=layout):
            open_dataset(root, layout=layout)
    with pytest.raises(DataError, match="unknown layout 'coco'"):
        open_dataset(root, layout="coco")


def test_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset folder not found"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no masks folder"):
        open_dataset(tmp_path)
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no image files"):
        open_dataset(tmp_path)


def test_crlf_split_files(make_tree) -> None:
    index = open_dataset(make_tree("dnanet", crlf=True))
    assert index.ids("train") == ["img_1", "img_2"]
    assert len(index.samples("test")) == 2


def test_split_file_blank_lines_bom_and_spaces(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_bytes("\ufeffa\r\n\r\n  b  \n\n\nc".encode())
    assert read_split_file(path) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "bad",
    ["../secret", "sub/img_1", "sub\\img_1", "/etc/passwd", "..", "a..b", "C:evil", "C:\\x"],
)
def test_path_like_split_ids_rejected(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "train.txt"
    path.write_text(f"ok\r\n{bad}\r\n")
    with pytest.raises(DataError) as info:
        read_split_file(path)
    assert str(path) in str(info.value) and "line 2" in str(info.value)


def test_traversal_id_never_reaches_outside_file(make_tree, tmp_path: Path) -> None:
    root = make_tree("isnet")
    outside = tmp_path / "outside.png"
    shutil.copy(root / "images" / "img_1.png", outside)
    (root / "test.txt").write_text("../outside\n")
    index = open_dataset(root)
    with pytest.raises(DataError, match="is a path"):
        index.samples("test")


def test_repeated_id_rejected(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("a\nb\na\n")
    with pytest.raises(DataError, match="line 3.*repeats line 1"):
        read_split_file(path)


def test_split_id_without_files(make_tree) -> None:
    root = make_tree("isnet")
    (root / "test.txt").write_text("img_1\nghost\n")
    with pytest.raises(DataError, match=r"test\.txt.*'ghost' has no image"):
        open_dataset(root).samples("test")


def test_image_without_mask(make_tree) -> None:
    root = make_tree("folder")
    os.remove(root / "masks" / "img_2.png")
    with pytest.raises(DataError, match=r"img_2\.png: no mask"):
        open_dataset(root).samples("all")


def test_unknown_split_lists_known_ones(make_tree) -> None:
    with pytest.raises(DataError, match="unknown split 'val'.*test, train, all"):
        open_dataset(make_tree("dnanet")).samples("val")


def test_limit_keeps_first_ids(make_tree) -> None:
    index = open_dataset(make_tree("folder"))
    assert [s.id for s in index.samples("all", limit=2)] == ["img 3 ü", "img_1"]
    with pytest.raises(DataError, match="limit"):
        index.samples("all", limit=0)


def test_superscript_digits_in_names_sort(make_tree, synth) -> None:
    # "²" is a digit to str.isdigit but not to int(); it must not break the natural order.
    ids = ["img_2", "img_1²", "img_10"]
    index = open_dataset(make_tree("folder", ids=ids))
    assert index.ids("all") == ["img_1²", "img_2", "img_10"]


def test_mask_named_like_sirst_pairs_with_same_named_image(make_tree, synth) -> None:
    # Paired by stem first: only a mask without a same-named image drops its "_pixels0".
    index = open_dataset(make_tree("folder", ids=["a_pixels0", "b"]))
    assert [s.mask_path.name for s in index.samples("all")] == ["a_pixels0.png", "b.png"]
    assert set(index.masks) == {"a_pixels0", "b"}


def test_duplicate_stems_refused(make_tree, synth) -> None:
    root = make_tree("folder")
    image, _ = synth.pair(0)
    synth.write_png(root / "images" / "img_1.bmp", image)  # .bmp beside img_1.png
    with pytest.raises(DataError, match="img_1"):
        open_dataset(root)


def test_mask_fixes(make_tree, synth) -> None:
    root = make_tree("sirst")
    fixed = np.zeros((24, 32), np.uint8)
    fixed[10:12, 10:12] = 255
    synth.write_png(root / "fixes" / "img_2_pixels0.png", fixed)
    plain = open_dataset(root, fixes=False)
    assert plain.fixed == set() and plain.mask_for("img_2").parent.name == "masks"
    index = open_dataset(root)  # fixes=True: use <root>/fixes when present
    assert index.fixed == {"img_2"}
    assert np.array_equal(read_mask(index.mask_for("img_2")), fixed > 0)
    assert "fixes" not in index.splits()
    other = root.parent / "my fixes"
    synth.write_png(other / "img_1_pixels0.png", fixed)
    assert open_dataset(root, fixes=other).fixed == {"img_1"}
    with pytest.raises(DataError, match="fixes folder not found"):
        open_dataset(root, fixes=root / "nope")


def test_dataset_folder_only_read(make_tree) -> None:
    root = make_tree("sirst")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    index = open_dataset(root)
    for split in index.splits():
        index.samples(split)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_real_nuaa_sirst(nuaa_sirst: Path) -> None:
    index = open_dataset(nuaa_sirst)
    assert index.layout == "sirst"
    assert len(index) == 427 and len(index.masks) == 427
    counts = {s: len(index.ids(s)) for s in ("train", "val", "trainval", "test", "trainvaltest")}
    assert counts == {"train": 256, "val": 85, "trainval": 341, "test": 86, "trainvaltest": 427}
    assert len(index.samples("50_50/train")) == 213 and len(index.samples("50_50/test")) == 214
    assert index.fixed == {"Misc_111"}
    assert open_dataset(nuaa_sirst, fixes=False).fixed == set()


def test_real_nudt_sirst(nudt_sirst: Path) -> None:
    index = open_dataset(nudt_sirst)
    assert index.layout == "dnanet"
    train, test = index.ids("train"), index.ids("test")
    assert (len(train), len(test)) == (663, 664)
    assert not set(train) & set(test) and len(set(train) | set(test)) == 1327
    assert all(s.mask_path.name == f"{s.id}.png" for s in index.samples("test"))


_SAFE = (
    st.text(
        alphabet=st.characters(
            blacklist_characters="/\\\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\0",
            blacklist_categories=("Cs",),
        ),
        min_size=1,
        max_size=12,
    )
    .map(str.strip)
    .filter(lambda s: s and ".." not in s and not (len(s) > 1 and s[1] == ":"))
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ids=st.lists(_SAFE, min_size=1, max_size=8, unique=True), crlf=st.booleans())
def test_split_file_round_trip(tmp_path: Path, ids: list[str], crlf: bool) -> None:
    path = tmp_path / "split.txt"
    eol = "\r\n" if crlf else "\n"
    path.write_bytes((eol.join(ids) + eol).encode())
    assert read_split_file(path) == ids


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(head=_SAFE, tail=_SAFE, sep=st.sampled_from(["/", "\\", "/../", ".."]))
def test_split_ids_with_separators_always_rejected(
    tmp_path: Path, head: str, tail: str, sep: str
) -> None:
    path = tmp_path / "split.txt"
    path.write_bytes(f"{head}{sep}{tail}\n".encode())
    with pytest.raises(DataError, match="line 1"):
        read_split_file(path)
