"""Atomic file and folder writes: the one implementation every `istd` package uses.

A file is written under a temporary name in its destination folder, flushed and fsynced, given
the mode a plain `open()` would give it (``0o666 & ~umask``; `tempfile.mkstemp` creates 0600
files), moved into place with `os.replace` (or a hard link when it must not overwrite), and the
folder is fsynced so the rename itself survives a crash. A reader, or a run killed at any moment,
therefore sees the old file or the new one, never a torn one; a killed run leaves at most a
``.<name>.<random characters>.tmp`` file (a streaming writer's keeps the name's own extension
instead of ``.tmp``) that `remove_stale_temps` deletes.

Without ``overwrite`` an existing destination raises, both before anything is written and at the
final move (a file that appeared meanwhile is never replaced): `FileExistsError`, or the caller's
own `istd.errors` error built by ``on_exists``. This module sits beside `istd.errors`, below every package,
so data, models, engine and CLI share it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = [
    "AtomicFile",
    "OnExists",
    "atomic_open",
    "file_mode",
    "fsync_dir",
    "recover_dir",
    "remove_stale_temps",
    "replace_dir_atomic",
    "temp_destination",
    "write_atomic",
]


def _umask() -> int:
    # /proc gives the umask without changing it; os.umask() must set one to read it, which
    # races with threads creating files meanwhile, so it is only the fallback.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain `open(path, "w")` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder so a rename inside it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


OnExists = Callable[[Path], Exception]
"""Builds the error raised for an existing destination (the caller's `istd.errors` type)."""


def _exists_error(path: Path, on_exists: OnExists | None) -> Exception:
    if on_exists is not None:
        return on_exists(path)
    return FileExistsError(errno.EEXIST, "already exists; not overwritten", str(path))


def _move_no_overwrite(tmp: Path, path: Path, on_exists: OnExists | None) -> None:
    # link() fails when the name exists, so a file that appeared meanwhile is never replaced.
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path, on_exists) from None
    except OSError:
        # File systems without hard links: check, then rename (a small race is accepted).
        if path.exists():
            raise _exists_error(path, on_exists) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


class AtomicFile:
    """A temporary file beside `path` that becomes `path` on `commit()`, or vanishes on `discard()`.

    Writers that stream (OpenCV's video writer) write to `.tmp` by name. As a
    context manager it commits when the block ends normally and discards on an exception.

    Args:
        path: the destination file; its folder must exist.
        overwrite: replace an existing file; without it one raises, here and again at
            `commit()`.
        suffix: ending of the temporary name (a video writer needs the real extension to pick
            its container).
        on_exists: builds the error for an existing file (default `FileExistsError`).

    Raises:
        FileExistsError: `path` exists and `overwrite` is false (or `on_exists`'s error).
        OSError: the temporary file cannot be created.

    Example:
        >>> with AtomicFile("out.mp4", overwrite=True, suffix=".mp4") as target:
        ...     write_video(target.tmp)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        suffix: str = ".tmp",
        on_exists: OnExists | None = None,
    ) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self._on_exists = on_exists
        if not overwrite and self.path.exists():
            raise _exists_error(self.path, on_exists)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=suffix, dir=self.path.parent
        )
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> Path:
        """fsync the temporary file, give it the usual mode and move it to `path`."""
        try:
            with open(self.tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(self.tmp, file_mode())
            if self.overwrite:
                os.replace(self.tmp, self.path)
            else:
                _move_no_overwrite(self.tmp, self.path, self._on_exists)
        except BaseException:
            self.discard()
            raise
        fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Delete the temporary file (the destination is left as it was)."""
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    overwrite: bool = False,
    on_exists: OnExists | None = None,
    **open_kwargs: Any,
) -> Iterator[IO[Any]]:
    """Open a file for writing that appears under `path` only once the block ends normally.

    Args:
        path: the destination file; its folder must exist.
        mode: a write mode for `open` (``"wb"``, ``"w"``).
        overwrite: replace an existing file instead of raising.
        on_exists: builds the error for an existing file (default `FileExistsError`).
        **open_kwargs: passed to `open` (``encoding``, ``newline``).

    Raises:
        FileExistsError: `path` exists and `overwrite` is false (or `on_exists`'s error).
    """
    target = AtomicFile(path, overwrite=overwrite, on_exists=on_exists)
    try:
        with open(target.tmp, mode, **open_kwargs) as handle:
            yield handle
    except BaseException:
        target.discard()
        raise
    target.commit()


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    overwrite: bool = False,
    on_exists: OnExists | None = None,
) -> Path:
    """Write bytes (or UTF-8 text) to `path` atomically, creating its folder if needed.

    Args:
        path: the destination file.
        data: the content; a `str` is encoded as UTF-8.
        overwrite: replace an existing file instead of raising.
        on_exists: builds the error for an existing file (default `FileExistsError`).

    Returns:
        The destination path.

    Raises:
        FileExistsError: `path` exists and `overwrite` is false (or `on_exists`'s error).
        OSError: the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_open(path, "wb", overwrite=overwrite, on_exists=on_exists) as handle:
        handle.write(data)
    return path


def replace_dir_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Fill a fresh temporary folder with `write(tmp)` and swap it in place of `path`.

    The old folder is renamed aside before the new one is renamed in, then deleted; if the
    process dies between the two renames, `recover_dir` restores the old one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700 folders
        write(tmp)
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(path: str | os.PathLike[str]) -> None:
    """Undo a `replace_dir_atomic` cut short between its renames, and drop stale temp folders."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        if path.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, path)
    remove_stale_temps(path.parent, path.name)


# A temporary name: "." + destination name + "." + tempfile's random characters + suffix.
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.\w+(?P<suffix>\.[^.]*)")


def temp_destination(filename: str) -> str | None:
    """The destination name whose atomic write `filename` is the temporary of, else None."""
    match = _TEMP_NAME.fullmatch(filename)
    if match is None or match["suffix"] not in (".tmp", Path(match["name"]).suffix):
        return None
    return match["name"]


def remove_stale_temps(folder: str | os.PathLike[str], *names: str) -> None:
    """Delete the temp files or folders that killed atomic writes of `folder/<name>` left behind.

    One pass over `folder` for all `names` (a resumed prediction run checks thousands); the
    temporaries of other files, which a concurrent writer may own, are left alone.
    """
    folder, wanted = Path(folder), set(names)
    if not folder.is_dir():
        return
    for stale in folder.iterdir():
        if temp_destination(stale.name) not in wanted:
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
