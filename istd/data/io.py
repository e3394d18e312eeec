"""Image and mask reading, and atomic PNG writing.

Every image format the ISTD datasets use (PNG, TIFF, BMP, JPEG; 8 or 16 bits; grey, RGB, RGBA or
palette) becomes one float32 channel in [0, 1]. Decoding is done by OpenCV on bytes read with
Python, so file names with spaces or non-ASCII characters work on every platform. OpenCV can
accept a damaged file without complaint (older releases fill a cut JPEG with grey), so PNG and
JPEG files are also validated with Pillow; a zero-byte, truncated, multi-page or non-image file
raises one `DataError` naming it.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin

from istd._atomic import write_atomic
from istd.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "RawImage",
    "decode_image",
    "read_image",
    "read_mask",
    "to_grey",
    "binarise_mask",
    "exists_error",
    "write_bytes_atomic",
    "write_png_atomic",
]

#: File extensions (lower case) treated as images when a folder is scanned.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"})

# ITU-R BT.601 luma weights, the ones OpenCV and Pillow use for RGB -> grey.
_LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class RawImage:
    """A decoded file before any conversion.

    Attributes:
        pixels: the array OpenCV returns with IMREAD_UNCHANGED: (H, W) grey, (H, W, 3) BGR or
            (H, W, 4) BGRA; uint8 or uint16. Palette images arrive expanded to BGR(A); JPEG
            and TIFF arrive turned by their EXIF orientation.
        mode: a readable description such as ``"RGB 8-bit"`` or ``"palette 8-bit"``.
        full_scale: 255 for 8-bit data, 65535 for 16-bit data.
    """

    pixels: np.ndarray
    mode: str
    full_scale: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


_QUIET_LOCK = threading.Lock()
_quiet_depth = 0
_saved_level = 0


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    # OpenCV logs its own warning for every broken file; we raise a clearer error instead. The
    # level is process-wide, so concurrent readers share one save/restore (counted under a lock).
    global _quiet_depth, _saved_level
    with _QUIET_LOCK:
        if _quiet_depth == 0:
            _saved_level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                cv2.utils.logging.setLogLevel(_saved_level)


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected an image file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise DataError(f"{path}: file is empty (0 bytes)")
    return data


def _validate_with_pillow(data: bytes, path: Path) -> str | None:
    """Check that a PNG or JPEG is complete and that no file holds several pages or frames
    (OpenCV would silently keep the first); return Pillow's mode string when it can tell."""
    is_png = data.startswith(_PNG_MAGIC)
    is_jpeg = data.startswith(_JPEG_MAGIC)
    # PNG and JPEG are opened by their plugin classes: the decompression-bomb guard lives in
    # Image.open and would call a large valid image corrupt (OpenCV has decoded it already).
    # This leaves Pillow's global MAX_IMAGE_PIXELS as it is for other code and threads.
    opener = Image.open
    if is_png:
        opener = PngImagePlugin.PngImageFile
    elif is_jpeg:
        opener = JpegImagePlugin.JpegImageFile
    try:
        with opener(io.BytesIO(data)) as im:
            mode = im.mode
            try:
                pages = getattr(im, "n_frames", 1)  # multi-page TIFF, animated PNG
            except Exception as exc:  # a cut page chain raises KeyError, TypeError, EOFError...
                raise DataError(f"{path}: truncated or corrupt list of pages ({exc!r})") from None
            if is_png:
                # verify() walks every chunk and its CRC up to IEND without inflating pixels.
                im.verify()
            elif is_jpeg:
                # JPEG has no checksums: only a full decode shows a missing tail, and a file cut
                # right before its end-of-image marker decodes completely, so look for that too.
                im.load()
                if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
                    raise OSError("no end-of-image marker after the last scan")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if is_png or is_jpeg:
            kind = "PNG" if is_png else "JPEG"
            raise DataError(f"{path}: truncated or corrupt {kind} file ({exc})") from None
        return None  # e.g. 16-bit RGB TIFF, which OpenCV reads but Pillow cannot open
    if pages > 1:
        raise DataError(f"{path}: holds {pages} pages or frames; expected a single image")
    return mode


def decode_image(path: str | os.PathLike[str]) -> RawImage:
    """Decode an image file without converting it.

    Args:
        path: the image file (PNG, TIFF, BMP or JPEG).

    Returns:
        The decoded pixels with their mode and full-scale value.

    Raises:
        DataError: the file is missing, empty, truncated, not an image, not 8/16-bit, or holds
            several pages or frames.
    """
    path = Path(path)
    data = _read_bytes(path)
    # IMREAD_UNCHANGED ignores a JPEG's EXIF orientation (TIFF's it applies); these flags turn
    # the picture as viewers show it, on which masks are drawn. JPEG has no alpha to lose.
    is_jpeg = data.startswith(_JPEG_MAGIC)
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR if is_jpeg else cv2.IMREAD_UNCHANGED
    with _quiet_opencv():
        try:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        except cv2.error:
            pixels = None
    if pixels is None or pixels.size == 0:
        raise DataError(f"{path}: not a readable image (truncated, corrupt or not an image file)")
    pil_mode = _validate_with_pillow(data, path)
    if pixels.dtype not in _FULL_SCALE:
        raise DataError(
            f"{path}: unsupported pixel type {pixels.dtype}; expected 8-bit or 16-bit integers"
        )
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels not in (1, 3, 4):
        raise DataError(f"{path}: unsupported number of channels ({channels})")
    bits = 8 if pixels.dtype == np.uint8 else 16
    if pil_mode == "P":
        kind = "palette"
    elif pil_mode == "1":
        kind = "bilevel"
    else:
        kind = {1: "grey", 3: "RGB", 4: "RGBA"}[channels]
        if pil_mode == "LA":  # OpenCV expands grey + alpha to BGRA
            kind = "grey+alpha"
    return RawImage(pixels=pixels, mode=f"{kind} {bits}-bit", full_scale=_FULL_SCALE[pixels.dtype])


def to_grey(raw: RawImage) -> np.ndarray:
    """Convert decoded pixels to one float32 channel in [0, 1].

    Colour uses the BT.601 luma weights (0.299 R + 0.587 G + 0.114 B); an alpha channel is
    ignored (the colour values are used as they are, not composited on a background).

    Args:
        raw: a decoded image.

    Returns:
        (H, W) float32 in [0, 1]; 16-bit data keeps its full range (divided by 65535).
    """
    pixels = raw.pixels.astype(np.float32)
    if pixels.ndim == 3:
        pixels = pixels[..., :3] @ _LUMA_BGR  # (H, W, 3) BGR -> (H, W)
    return np.clip(pixels / raw.full_scale, 0.0, 1.0).astype(np.float32, copy=False)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as one float32 channel in [0, 1].

    Args:
        path: a PNG, TIFF, BMP or JPEG file; 8 or 16 bits; grey, RGB, RGBA or palette.

    Returns:
        (H, W) float32 in [0, 1]. Colour is converted with the BT.601 luma weights, alpha is
        ignored, 16-bit data is divided by 65535.

    Raises:
        DataError: the file is missing, empty, truncated or not a supported image.

    Example:
        >>> image = read_image("data/samples/Misc_1.png")  # doctest: +SKIP
    """
    return to_grey(decode_image(path))


def binarise_mask(raw: RawImage, path: str | os.PathLike[str] = "<mask>") -> np.ndarray:
    """Binarise a decoded mask: a pixel is target when its grey value is above half full scale.

    The rule is ``grey > 0.5 * full_scale``: above 127 for 8-bit masks, above 32767 for 16-bit
    masks (colour masks are converted to grey first). A mask whose non-zero values all lie at or
    below half scale (for example a 0/1 mask) would silently become empty, so it is rejected.

    Args:
        raw: a decoded mask.
        path: the file name, used in the error message.

    Returns:
        (H, W) bool.

    Raises:
        DataError: the mask has non-zero values but none above half of full scale.
    """
    if raw.pixels.ndim == 2:
        # Integer compare: same rule as below, without a float copy of the mask.
        grey = raw.pixels
        mask = grey > int(raw.full_scale) // 2
        top = int(grey.max())
    else:
        grey = to_grey(raw)  # (H, W) in [0, 1]
        mask = grey > 0.5
        top = int(round(float(grey.max()) * raw.full_scale))
    if top > 0 and not mask.any():
        raise DataError(
            f"{path}: mask values reach only {top} of {int(raw.full_scale)}; targets must be above "
            f"half of full scale (> {int(raw.full_scale) // 2}), rescale the mask (e.g. 0/1 -> 0/255)"
        )
    return mask


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a ground-truth mask as a boolean array.

    A pixel is target when its grey value is above half of full scale: > 127 for 8-bit masks,
    > 32767 for 16-bit masks. Colour masks are converted to grey with the BT.601 weights first.

    Args:
        path: the mask file.

    Returns:
        (H, W) bool.

    Raises:
        DataError: unreadable file, or a mask whose values never exceed half of full scale.
    """
    return binarise_mask(decode_image(path), path)


def exists_error(path: Path) -> DataError:
    """The `DataError` for a destination that must not be overwritten (`istd._atomic` callers)."""
    return DataError(f"{path}: already exists; not overwritten")


def write_png_atomic(
    path: str | os.PathLike[str], array: np.ndarray, *, overwrite: bool = False
) -> Path:
    """Write a uint8 or uint16 array as a PNG, atomically.

    The PNG is written to a temporary file in the same folder and flushed to disk, then moved
    into place, so a reader never sees a half-written file. An existing file is kept unless
    ``overwrite`` is true.

    Args:
        path: destination ``.png`` file; its folder is created if needed.
        array: (H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA; uint8 or uint16. A bool array is
            written as 0/255.
        overwrite: replace an existing file instead of raising.

    Returns:
        The destination path.

    Raises:
        DataError: unsupported array type or shape, the file exists (and ``overwrite`` is
            false), or it cannot be written.
    """
    path = Path(path)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: cannot write {array.dtype} as PNG; expected uint8 or uint16")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise DataError(f"{path}: cannot write an array of shape {array.shape} as PNG")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    return write_bytes_atomic(path, encoded.tobytes(), overwrite=overwrite)


def write_bytes_atomic(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False
) -> Path:
    """Write bytes to a file atomically (`istd._atomic`: temp file, fsync, move into place).

    Args:
        path: destination file; its folder is created if needed.
        data: the file's content.
        overwrite: replace an existing file instead of raising.

    Returns:
        The destination path.

    Raises:
        DataError: the file exists (and ``overwrite`` is false) or cannot be written.
    """
    path = Path(path)
    try:
        return write_atomic(path, data, overwrite=overwrite, on_exists=exists_error)
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
