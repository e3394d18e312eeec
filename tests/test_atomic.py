"""The one atomic-write implementation: modes, overwrite rules, streaming form, cleanup."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from istd._atomic import (
    AtomicFile,
    atomic_open,
    file_mode,
    remove_stale_temps,
    temp_destination,
    write_atomic,
)
from istd.errors import DataError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_atomic_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        assert file_mode() == 0o640
        path = write_atomic(tmp_path / "sub" / "a.bin", b"abc")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"abc"
    assert _mode(path) == 0o640  # not mkstemp's 0600
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.bin"]


def test_write_atomic_text_is_utf8(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "t.txt", "ü")
    assert path.read_bytes() == "ü".encode()


def test_overwrite_flag(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "a.txt", b"one")
    with pytest.raises(FileExistsError):
        write_atomic(path, b"two")
    with pytest.raises(DataError, match="a.txt"):
        write_atomic(path, b"two", on_exists=lambda p: DataError(f"{p}: exists"))
    assert path.read_bytes() == b"one"
    write_atomic(path, b"two", overwrite=True)
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_file_appearing_during_write_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "late.txt"
    with pytest.raises(FileExistsError), atomic_open(path, "w") as handle:
        handle.write("mine")
        path.write_text("theirs")  # another writer wins the name meanwhile
    assert path.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.txt"]


def test_failed_stream_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "c.txt", b"old")
    with pytest.raises(RuntimeError), atomic_open(path, "wb", overwrite=True) as handle:
        handle.write(b"partial")
        raise RuntimeError("writer died")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_atomic_file_by_name_keeps_suffix(tmp_path: Path) -> None:
    with AtomicFile(tmp_path / "v.mp4", suffix=".mp4") as target:
        assert target.tmp.parent == tmp_path and target.tmp.suffix == ".mp4"
        assert not target.path.exists()  # invisible until commit
        target.tmp.write_bytes(b"frames")
    assert (tmp_path / "v.mp4").read_bytes() == b"frames"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_remove_stale_temps(tmp_path: Path) -> None:
    target = AtomicFile(tmp_path / "x.ckpt")  # never committed: as a SIGKILL would leave it
    (tmp_path / "keep.txt").write_text("k")
    assert target.tmp.exists()
    remove_stale_temps(tmp_path, "x.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_remove_stale_temps_of_streamed_writes_and_several_names(tmp_path: Path) -> None:
    video = AtomicFile(tmp_path / "v_overlay.mp4", suffix=".mp4")  # a video writer's temp
    text = AtomicFile(tmp_path / "a.csv")
    other = AtomicFile(tmp_path / "b.csv")  # another writer's: left alone
    assert temp_destination(video.tmp.name) == "v_overlay.mp4"
    assert temp_destination("v_overlay.mp4") is None
    remove_stale_temps(tmp_path, "v_overlay.mp4", "a.csv")
    assert not video.tmp.exists() and not text.tmp.exists() and other.tmp.exists()
    remove_stale_temps(tmp_path / "missing", "a.csv")  # no folder: nothing to do
