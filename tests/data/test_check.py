"""Tests for istd/data/check.py: statistics, every problem kind, JSON, and the real datasets."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest

from istd.data.check import PROBLEM_KINDS, check_dataset, write_report_json
from istd.errors import DataError


def test_clean_synthetic_dataset(make_tree) -> None:
    root = make_tree("dnanet")
    calls = []
    report = check_dataset(root, progress=lambda done, total: calls.append((done, total)))
    assert report.ok and report.problems == []
    assert (report.images, report.masks) == (4, 4)
    assert report.targets == 6  # ids alternate 1 and 2 targets
    assert report.targets_per_image == {1: 2, 2: 2}
    assert report.sizes == {"32x24": 4}
    assert report.image_modes == {"grey 8-bit": 4} and report.mask_modes == {"grey 8-bit": 4}
    assert report.mask_values == {"{0, 255}": 4}
    assert report.target_area == {"min": 9.0, "median": 9.0, "mean": 9.0, "p90": 9.0, "max": 9.0}
    assert report.splits == {"test": 2, "train": 2}
    assert calls[-1] == (4, 4)


def test_eight_connected_targets(make_tree, synth) -> None:
    root = make_tree("folder", ids=["a"])
    mask = np.zeros((24, 32), np.uint8)
    mask[5, 5] = mask[6, 6] = 255  # diagonal neighbours: one target under 8-connectivity
    mask[15, 20] = 255
    synth.write_png(root / "masks" / "a.png", mask)
    report = check_dataset(root)
    assert report.targets == 2 and report.target_area["max"] == 2.0


def _broken_tree(make_tree, synth) -> Path:
    root = make_tree("isnet", ids=["ok", "nomask", "badimg", "badmask", "big", "grey", "low"])
    (root / "masks" / "nomask.png").unlink()
    (root / "images" / "badimg.png").write_bytes(b"")
    data = (root / "masks" / "badmask.png").read_bytes()
    (root / "masks" / "badmask.png").write_bytes(data[: len(data) // 2])
    synth.write_png(root / "masks" / "big.png", np.zeros((40, 50), np.uint8))
    half = np.zeros((24, 32), np.uint8)
    half[2:4, 2:4], half[8:10, 8:10] = 128, 255
    synth.write_png(root / "masks" / "grey.png", half)
    synth.write_png(root / "masks" / "low.png", (half > 0).astype(np.uint8))  # 0/1 mask
    synth.write_png(root / "masks" / "orphan.png", np.zeros((24, 32), np.uint8))
    (root / "test.txt").write_text("ok\r\nghost\r\n")
    (root / "extra").mkdir()
    (root / "extra" / "evil.txt").write_text("ok\n../../etc/passwd\n")
    return root


def test_every_problem_kind_reported(make_tree, synth) -> None:
    root = _broken_tree(make_tree, synth)
    report = check_dataset(root)
    assert not report.ok
    found = {(Path(p.path).name, p.kind) for p in report.problems}
    assert found == {
        ("nomask.png", "missing_mask"),
        ("badimg.png", "unreadable"),
        ("badmask.png", "unreadable"),
        ("big.png", "size_mismatch"),
        ("grey.png", "non_binary_mask"),
        ("low.png", "non_binary_mask"),
        ("orphan.png", "orphan_mask"),
        ("test.txt", "missing_files"),
        ("evil.txt", "bad_split_file"),
    }
    assert {p.kind for p in report.problems} == set(PROBLEM_KINDS)
    details = {Path(p.path).name: p.detail for p in report.problems}
    assert "empty" in details["badimg.png"] and "truncated" in details["badmask.png"]
    assert "mask is 50x40, image big.png is 32x24" in details["big.png"]
    assert "{0, 128, 255}" in details["grey.png"]
    assert "'ghost'" in details["test.txt"]
    assert report.images == 7 and report.masks == 6


def test_split_only(make_tree, synth) -> None:
    root = _broken_tree(make_tree, synth)
    report = check_dataset(root, split="test")
    assert report.split == "test" and report.images == 1
    assert [(Path(p.path).name, p.kind) for p in report.problems] == [("test.txt", "missing_files")]
    with pytest.raises(DataError, match="unknown split"):
        check_dataset(root, split="nope")
    bad = check_dataset(root, split="extra/evil")
    assert [p.kind for p in bad.problems] == ["bad_split_file"] and bad.images == 0


def test_fixes_resolve_problem(make_tree, synth) -> None:
    root = make_tree("sirst")
    synth.write_png(root / "masks" / "img_1_pixels0.png", np.zeros((7, 7), np.uint8))
    mask = synth.pair(0)[1]
    synth.write_png(root / "fixes" / "img_1_pixels0.png", mask)
    plain = check_dataset(root)
    assert [p.kind for p in plain.problems] == ["size_mismatch"] and plain.fixes_available
    fixed = check_dataset(root, fixes=True)
    assert fixed.ok and fixed.fixed == ["img_1"]


def test_json_report(make_tree, synth, tmp_path: Path) -> None:
    report = check_dataset(_broken_tree(make_tree, synth))
    out = write_report_json(report, tmp_path / "out" / "report.json")
    data = json.loads(out.read_text())
    assert data["images"] == 7 and isinstance(data["targets"], int)
    assert data["ok"] is False
    assert {"path", "kind", "detail"} == set(data["problems"][0])
    assert len(data["problems"]) == len(report.problems)
    with pytest.raises(DataError, match="already exists"):
        write_report_json(report, out)
    write_report_json(report, out, overwrite=True)


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="file names must be UTF-8 there")
def test_json_report_with_non_utf8_file_name(make_tree, synth, tmp_path: Path) -> None:
    # A Latin-1 name (e.g. from an old zip) reaches Python as a surrogate escape.
    root = make_tree("folder")
    name = os.fsdecode(b"caf\xe9.png")
    synth.write_png(root / "images" / name, synth.pair(0)[0])  # no mask
    report = check_dataset(root)
    out = write_report_json(report, tmp_path / "report.json")
    data = json.loads(out.read_bytes().decode("utf-8"))  # valid UTF-8 JSON
    assert data["problems"] == [
        {"path": str(root / "images" / name), "kind": "missing_mask", "detail": ANY}
    ]


def test_real_nuaa_sirst_counts_and_misc111(nuaa_sirst: Path) -> None:
    report = check_dataset(nuaa_sirst)
    assert (report.images, report.masks, report.targets) == (427, 427, 533)
    assert [(Path(p.path).name, p.kind) for p in report.problems] == [
        ("Misc_111_pixels0.png", "size_mismatch")
    ]
    assert report.image_modes == {
        "RGB 8-bit": 379,
        "grey 8-bit": 28,
        "RGBA 8-bit": 15,
        "palette 8-bit": 5,
    }
    assert report.mask_values == {"{0, 255}": 427}
    assert max(report.targets_per_image) == 7
    fixed = check_dataset(nuaa_sirst, fixes=True)
    assert fixed.ok and fixed.images == 427 and fixed.targets == 533


@pytest.mark.slow  # reads all 2 x 1,327 files: about 5 s of CPU, longer on a busy machine
def test_real_nudt_sirst_counts_clean(nudt_sirst: Path) -> None:
    report = check_dataset(nudt_sirst)
    assert report.ok, report.problems[:5]
    assert (report.images, report.masks, report.targets) == (1327, 1327, 1863)
    assert report.sizes == {"256x256": 1327}
    assert max(report.targets_per_image) == 4
    assert report.splits == {"test": 664, "train": 663}
