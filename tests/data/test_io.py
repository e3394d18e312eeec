"""Tests for istd/data/io.py: every format, depth and colour mode; every broken file kind."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from istd.data.io import decode_image, read_image, read_mask, write_bytes_atomic, write_png_atomic
from istd.errors import DataError

RNG = np.random.default_rng(7)
GREY8 = RNG.integers(0, 256, (13, 17), dtype=np.uint8)
GREY16 = RNG.integers(0, 65536, (13, 17), dtype=np.uint16)
BGR8 = RNG.integers(0, 256, (13, 17, 3), dtype=np.uint8)
BGR16 = RNG.integers(0, 65536, (13, 17, 3), dtype=np.uint16)


def _luma(bgr: np.ndarray, full: float) -> np.ndarray:
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    return (0.299 * r + 0.587 * g + 0.114 * b) / full


def _write(path: Path, array: np.ndarray) -> Path:
    ok, buf = cv2.imencode(path.suffix, array)
    assert ok, path
    path.write_bytes(buf.tobytes())
    return path


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp"])
def test_grey8_lossless_formats_exact(tmp_path: Path, ext: str) -> None:
    image = read_image(_write(tmp_path / f"g{ext}", GREY8))
    assert image.dtype == np.float32 and image.shape == (13, 17)
    np.testing.assert_allclose(image, GREY8 / 255.0, atol=1e-7)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_grey16_keeps_full_range(tmp_path: Path, ext: str) -> None:
    raw = decode_image(_write(tmp_path / f"g16{ext}", GREY16))
    assert raw.mode == "grey 16-bit" and raw.full_scale == 65535.0
    image = read_image(tmp_path / f"g16{ext}")
    # Values differing by one 16-bit step stay distinct: no reduction to 8 bits.
    np.testing.assert_allclose(image, GREY16 / 65535.0, atol=1e-7)
    assert len(np.unique(image)) == len(np.unique(GREY16))


@pytest.mark.parametrize(
    ("ext", "array", "full"),
    [
        (".png", BGR8, 255.0),
        (".tif", BGR8, 255.0),
        (".bmp", BGR8, 255.0),
        (".png", BGR16, 65535.0),
        (".tif", BGR16, 65535.0),
    ],
)
def test_rgb_becomes_bt601_luma(tmp_path: Path, ext: str, array: np.ndarray, full: float) -> None:
    image = read_image(_write(tmp_path / f"c{ext}", array))
    np.testing.assert_allclose(image, _luma(array, full), atol=1e-6)
    assert decode_image(tmp_path / f"c{ext}").mode.startswith("RGB")


def test_rgba_ignores_alpha(tmp_path: Path) -> None:
    bgra = np.dstack([BGR8, np.zeros((13, 17), np.uint8)])  # fully transparent
    image = read_image(_write(tmp_path / "a.png", bgra))
    np.testing.assert_allclose(image, _luma(BGR8, 255.0), atol=1e-6)
    assert decode_image(tmp_path / "a.png").mode == "RGBA 8-bit"


def test_grey_alpha_png(tmp_path: Path) -> None:
    la = np.dstack([GREY8, np.full_like(GREY8, 9)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(read_image(tmp_path / "la.png"), GREY8 / 255.0, atol=1e-6)
    assert decode_image(tmp_path / "la.png").mode == "grey+alpha 8-bit"


def test_palette_png_uses_palette_colours(tmp_path: Path) -> None:
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    indices = RNG.integers(0, 256, (13, 17), dtype=np.uint8)
    im = Image.fromarray(indices, "P")
    im.putpalette(palette.ravel().tolist())
    im.save(tmp_path / "p.png")
    rgb = palette[indices]  # (H, W, 3) RGB
    expected = _luma(rgb[..., ::-1], 255.0)
    np.testing.assert_allclose(read_image(tmp_path / "p.png"), expected, atol=1e-6)
    assert decode_image(tmp_path / "p.png").mode == "palette 8-bit"


@pytest.mark.parametrize("array", [GREY8, BGR8], ids=["grey", "rgb"])
def test_jpeg_close_to_source(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "j.jpg"
    path.write_bytes(cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes())
    expected = GREY8 / 255.0 if array.ndim == 2 else _luma(array, 255.0)
    image = read_image(path)
    assert image.shape == (13, 17)
    assert np.abs(image - expected).mean() < 0.03  # lossy, but the same picture


def test_exif_rotated_jpeg_read_as_displayed(tmp_path: Path) -> None:
    # Orientation 6: the stored 13 x 17 picture is shown turned 90 degrees clockwise, and masks
    # are drawn on what is shown (TIFF orientation is applied by OpenCV already).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(GREY8).save(tmp_path / "rot.jpg", quality=100, exif=exif.tobytes())
    image = read_image(tmp_path / "rot.jpg")
    assert image.shape == (17, 13)
    assert np.abs(image - np.rot90(GREY8, -1) / 255.0).mean() < 0.03


def test_multi_page_tiff_refused(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    Image.fromarray(GREY8).save(path, save_all=True, append_images=[Image.fromarray(255 - GREY8)])
    with pytest.raises(DataError, match=r"pages\.tif: holds 2 pages"):
        read_image(path)


def test_unicode_and_spaces_in_names(tmp_path: Path) -> None:
    folder = tmp_path / "dir with space" / "ünïcødé 目标"
    folder.mkdir(parents=True)
    path = _write(folder / "frame 01 ✓.png", GREY8)
    np.testing.assert_allclose(read_image(path), GREY8 / 255.0, atol=1e-7)
    write_png_atomic(folder / "mask ü.png", GREY8 > 127)
    assert np.array_equal(read_mask(folder / "mask ü.png"), GREY8 > 127)


def _broken(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "nowhere.png"
    if kind == "zero-byte":
        path = tmp_path / "empty.png"
        path.write_bytes(b"")
    elif kind == "truncated-png":
        path = tmp_path / "cut.png"
        path.write_bytes(cv2.imencode(".png", GREY8)[1].tobytes()[:-30])
    elif kind == "png-without-iend":
        path = tmp_path / "noiend.png"
        path.write_bytes(cv2.imencode(".png", GREY8)[1].tobytes()[:-12])
    elif kind == "truncated-jpeg":
        path = tmp_path / "cut.jpg"
        data = cv2.imencode(".jpg", BGR8)[1].tobytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "jpeg-without-eoi":
        # Every pixel is there; only the end marker is missing, which decoders accept.
        path = tmp_path / "noeoi.jpg"
        path.write_bytes(cv2.imencode(".jpg", BGR8)[1].tobytes()[:-2])
    elif kind == "truncated-tiff":
        path = tmp_path / "cut.tif"
        path.write_bytes(cv2.imencode(".tif", GREY16)[1].tobytes()[:100])
    elif kind == "truncated-bmp":
        path = tmp_path / "cut.bmp"
        data = cv2.imencode(".bmp", BGR8)[1].tobytes()
        path.write_bytes(data[: len(data) - 50])
    elif kind == "text":
        path = tmp_path / "notes.png"
        path.write_text("this is not an image\n")
    elif kind == "folder":
        path = tmp_path / "folder.png"
        path.mkdir()
    else:
        raise AssertionError(kind)
    return path


BROKEN = [
    "missing",
    "zero-byte",
    "truncated-png",
    "png-without-iend",
    "truncated-jpeg",
    "jpeg-without-eoi",
    "truncated-tiff",
    "truncated-bmp",
    "text",
    "folder",
]


@pytest.mark.parametrize("reader", [read_image, read_mask], ids=["image", "mask"])
@pytest.mark.parametrize("kind", BROKEN)
def test_broken_file_one_line_error_naming_it(tmp_path: Path, kind: str, reader) -> None:
    path = _broken(tmp_path, kind)
    with pytest.raises(DataError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("missing", "not found"),
        ("zero-byte", "empty"),
        ("truncated-png", "truncated"),
        ("jpeg-without-eoi", "truncated"),
        ("text", "not a readable image"),
    ],
)
def test_broken_file_message_says_what(tmp_path: Path, kind: str, words: str) -> None:
    with pytest.raises(DataError, match=words):
        read_image(_broken(tmp_path, kind))


@pytest.mark.parametrize("kind", ["png", "jpg", "palette"])
def test_large_image_is_not_called_a_decompression_bomb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # A small limit stands in for Pillow's 89 M pixels: 30 x 40 is beyond twice of it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / f"large.{'jpg' if kind == 'jpg' else 'png'}"
    if kind == "palette":
        Image.fromarray(BGR8[..., 0]).convert("P").resize((40, 30)).save(path)
    else:
        _write(path, cv2.resize(BGR8, (40, 30)))
    raw = decode_image(path)
    assert raw.size == (40, 30)
    assert raw.mode == ("palette 8-bit" if kind == "palette" else "RGB 8-bit")
    assert Image.MAX_IMAGE_PIXELS == 100  # Pillow's own setting is left alone
    with pytest.raises(DataError, match="truncated"):
        read_image(_broken(tmp_path, "truncated-png"))
    with pytest.raises(DataError, match="truncated"):
        read_image(_broken(tmp_path, "jpeg-without-eoi"))


def test_float_tiff_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.tif", (GREY8 / 255.0).astype(np.float32))
    with pytest.raises(DataError, match="8-bit or 16-bit"):
        read_image(path)


@pytest.mark.parametrize(
    ("dtype", "threshold"), [(np.uint8, 127), (np.uint16, 32767)], ids=["8bit", "16bit"]
)
def test_mask_binarised_above_half_scale(tmp_path: Path, dtype, threshold: int) -> None:
    full = np.iinfo(dtype).max
    values = np.array([[0, threshold, threshold + 1, full]], dtype=dtype)
    mask = read_mask(_write(tmp_path / "m.png", values))
    assert mask.dtype == np.bool_
    assert mask.tolist() == [[False, False, True, True]]


def test_rgb_mask_binarised_on_luma(tmp_path: Path) -> None:
    bgr = np.zeros((1, 3, 3), np.uint8)
    bgr[0, 1] = 255  # white -> target
    bgr[0, 2] = (0, 0, 255)  # pure red: luma 76 -> background
    assert read_mask(_write(tmp_path / "m.png", bgr)).tolist() == [[False, True, False]]


def test_low_valued_mask_refused_not_emptied(tmp_path: Path) -> None:
    path = _write(tmp_path / "zero_one.png", np.array([[0, 1], [1, 0]], np.uint8))
    with pytest.raises(DataError, match=r"zero_one\.png.*half of full scale"):
        read_mask(path)


def test_empty_mask_is_valid(tmp_path: Path) -> None:
    assert not read_mask(_write(tmp_path / "bg.png", np.zeros((4, 5), np.uint8))).any()


@pytest.mark.parametrize(
    "array", [GREY8, GREY16, BGR8, GREY8 > 100], ids=["u8", "u16", "bgr", "bool"]
)
def test_write_png_atomic_round_trip(tmp_path: Path, array: np.ndarray) -> None:
    path = write_png_atomic(tmp_path / "sub" / "out.png", array)
    back = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    expected = array.astype(np.uint8) * 255 if array.dtype == np.bool_ else array
    assert np.array_equal(back, expected)
    assert [p.name for p in path.parent.iterdir()] == ["out.png"]  # no temp file left


def test_write_never_overwrites_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"user data")
    with pytest.raises(DataError, match="already exists"):
        write_png_atomic(path, GREY8)
    assert path.read_bytes() == b"user data"
    write_png_atomic(path, GREY8, overwrite=True)
    np.testing.assert_allclose(read_image(path), GREY8 / 255.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    with pytest.raises(DataError, match="already exists"):
        write_bytes_atomic(path, b"x")


@pytest.mark.parametrize("bad", [np.zeros((3, 3), np.float32), np.zeros((3, 3, 2), np.uint8)])
def test_write_rejects_bad_arrays(tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises(DataError, match="cannot write"):
        write_png_atomic(tmp_path / "x.png", bad)
    assert not list(tmp_path.iterdir())


def test_real_nuaa_modes_read_as_grey(nuaa_sirst: Path) -> None:
    # Misc_138 is a palette PNG, Misc_1 RGB; both must equal Pillow's 'L' luminance (+-1 level).
    for name in ("Misc_138.png", "Misc_1.png"):
        path = nuaa_sirst / "images" / name
        expected = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        image = read_image(path)
        assert image.shape == expected.shape
        assert np.abs(image - expected).max() <= 1.0 / 255 + 1e-6
    assert decode_image(nuaa_sirst / "images" / "Misc_138.png").mode == "palette 8-bit"


def test_opencv_log_level_restored_after_concurrent_reads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    good = _write(tmp_path / "g.png", GREY8)
    bad = _broken(tmp_path, "text")
    before = cv2.utils.logging.getLogLevel()

    def read(path: Path) -> bool:
        try:
            read_image(path)
        except DataError:
            return False
        return True

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(read, [good, bad] * 50))
    assert results == [True, False] * 50
    assert cv2.utils.logging.getLogLevel() == before
