"""Decoding odd image files: what becomes RGB, what is refused, and the cheap pre-run scan."""
from __future__ import annotations

import io
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from kaggle_tl.data import images
from kaggle_tl.data.images import (ImageError, find_bad_images, image_problem, iter_image_batches, load_resized,
                                   read_image)
from kaggle_tl.data.jpeg import jpeg_segments
from kaggle_tl.errors import KaggleTLError


def jpeg_bytes(rgb: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


@pytest.fixture
def noisy_rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)


# -- files that must be refused ---------------------------------------------------------------
def test_zero_byte_file_is_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert image_problem(path) == "empty file (0 bytes)"
    with pytest.raises(ImageError, match=r"empty\.jpg: empty file \(0 bytes\)"):
        read_image(path)


def test_text_file_named_jpg_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n")
    assert "not an image" in image_problem(path)
    with pytest.raises(ImageError, match="notes.jpg: not an image"):
        read_image(path)


@pytest.mark.parametrize("cut", [0.5, 0.9, -2], ids=["half", "most", "all-but-EOI"])
def test_truncated_jpeg_is_refused(tmp_path, noisy_rgb, cut):
    data = jpeg_bytes(noisy_rgb)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:int(len(data) * cut)] if cut > 0 else data[:cut])
    assert image_problem(path) == "truncated JPEG (no end-of-image marker)"
    with pytest.raises(ImageError, match="truncated JPEG"):
        read_image(path)


def test_truncated_jpeg_is_refused_even_by_a_lenient_decoder(tmp_path, noisy_rgb, monkeypatch):
    # Some OpenCV builds return the decodable part of a truncated JPEG (grey rows) without failing.
    monkeypatch.setattr(images.cv2, "imdecode", lambda data, flags: np.full((48, 64, 3), 128, np.uint8))
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg_bytes(noisy_rgb, progressive=True)[:600])
    with pytest.raises(ImageError, match="truncated JPEG"):
        read_image(path)


def declare_size(data: bytes, height: int, width: int) -> bytes:
    """The JPEG ``data`` with its frame header edited to declare height x width (the data itself intact)."""
    frame = next(offset for marker, offset in jpeg_segments(data) if marker in (0xC0, 0xC2))
    return data[:frame + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[frame + 9:]


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_declaring_more_pixels_than_its_data_codes_is_refused_without_a_libjpeg_line(
        tmp_path, noisy_rgb, capfd, progressive):
    path = tmp_path / "edited.jpg"
    path.write_bytes(declare_size(jpeg_bytes(noisy_rgb, progressive=progressive), 65000, 65000))
    for min_side in (None, 224):  # the reduced decode (1/8 of 65,000) decoded it grey before
        with pytest.raises(ImageError, match=r"edited\.jpg: damaged JPEG \(its header declares 65000 x 65000 "
                                             r"pixels, which need at least 8251953 bytes of image data; the file holds"):
            read_image(path, min_side=min_side)
    assert "Corrupt JPEG" not in capfd.readouterr().err  # libjpeg never saw it
    path.write_bytes(declare_size(jpeg_bytes(noisy_rgb, progressive=progressive), 48, 64))  # the true size: fine
    assert read_image(path).shape == (48, 64, 3)


def test_the_smallest_real_jpegs_pass_the_data_floor(tmp_path):
    # A constant image at the lowest quality codes the fewest bits a block: still above one bit a block.
    flat = np.full((3000, 4000, 3), 128, np.uint8)
    for options in ({"quality": 1}, {"quality": 1, "progressive": True, "optimize": True}):
        path = tmp_path / "flat.jpg"
        path.write_bytes(jpeg_bytes(flat, **options))
        assert read_image(path, min_side=224).shape[:2] == (375, 500)


def test_zero_filled_download_is_a_truncated_jpeg(tmp_path, noisy_rgb):
    data = jpeg_bytes(noisy_rgb)
    path = tmp_path / "partial.jpg"
    path.write_bytes(data[:len(data) // 2] + bytes(len(data) - len(data) // 2))  # full size, second half zeros
    assert image_problem(path) == "truncated JPEG (no end-of-image marker)"


def test_jpeg_with_trailing_data_is_accepted(tmp_path, noisy_rgb):
    # Cameras append data after the end-of-image marker; the image itself is whole.
    path = tmp_path / "trailer.jpg"
    path.write_bytes(jpeg_bytes(noisy_rgb) + b"MOTION-PHOTO-TRAILER" * 10)
    assert image_problem(path) is None
    assert read_image(path).shape == (48, 64, 3)


def test_truncated_png_is_refused(tmp_path, noisy_rgb):
    path = tmp_path / "cut.png"
    path.write_bytes(png_bytes(noisy_rgb)[:-20])
    assert image_problem(path) == "truncated PNG (no IEND chunk)"
    with pytest.raises(ImageError, match="truncated PNG"):
        read_image(path)


@pytest.mark.parametrize("ext", [".bmp", ".webp"])
def test_truncated_bmp_and_webp_are_refused(tmp_path, noisy_rgb, ext):
    ok, data = cv2.imencode(ext, noisy_rgb)
    path = tmp_path / f"cut{ext}"
    path.write_bytes(data.tobytes()[: len(data) // 2])
    assert image_problem(path).startswith("truncated")


ZERO_FILLED = {".jpg": "truncated JPEG", ".jpeg": "truncated JPEG", ".png": "truncated PNG",
               ".bmp": "zero-filled BMP", ".webp": "zero-filled WebP", ".tif": "zero-filled TIFF",
               ".tiff": "zero-filled TIFF"}


def zero_fill_second_half(data: bytes) -> bytes:
    """An interrupted download preallocated to full size: the second half never arrived."""
    return data[:len(data) // 2] + bytes(len(data) - len(data) // 2)


# Every format OpenCV encodes; in an .npy or uncompressed DICOM file zero bytes are zeros, legitimate values (their
# size is checked instead).
@pytest.mark.parametrize("ext, webp_quality", [(ext, None) for ext in images.IMAGE_EXTENSIONS
                                               if ext not in (".npy", ".dcm", ".dicom")]
                         + [(".webp", 80)])
def test_zero_filled_download_is_refused_in_every_format(tmp_path, ext, webp_quality):
    smooth = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8), (0, 0), 2)
    ok, data = cv2.imencode(ext, smooth, [cv2.IMWRITE_WEBP_QUALITY, webp_quality] if webp_quality else [])
    path = tmp_path / f"partial{ext}"
    path.write_bytes(data.tobytes())
    assert image_problem(path) is None
    path.write_bytes(zero_fill_second_half(data.tobytes()))
    assert image_problem(path).startswith(ZERO_FILLED[ext])
    with pytest.raises(ImageError, match=rf"partial\{ext}: {ZERO_FILLED[ext]}") as exc:
        read_image(path)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("compression, refused", [(5, True), (1, False)], ids=["lzw", "uncompressed"])
def test_zero_tail_of_a_tiff_whose_directory_comes_first(tmp_path, compression, refused):
    # A quarter of the file zero-filled after the directory: too much for compressed (LZW) data,
    # plausible black pixels when uncompressed.
    entry = (259).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little") + \
        compression.to_bytes(4, "little")
    head = b"II*\x00" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little") + entry + bytes(4)
    pixels = np.random.default_rng(0).integers(1, 255, 300, dtype=np.uint8).tobytes()
    path = tmp_path / "scan.tif"
    path.write_bytes(head + pixels + bytes((len(head) + len(pixels)) // 3))
    problem = image_problem(path)
    assert problem.startswith("zero-filled TIFF (its last 108 of 434 bytes") if refused else problem is None


def test_bmp_with_black_rows_is_not_called_zero_filled(tmp_path, noisy_rgb):
    # An uncompressed BMP stores its top row last, so a black top is a zero-byte tail: legal below
    # a third of the file (images.ZERO_TAIL_SHARE).
    rgb = noisy_rgb.copy()
    rgb[:12] = 0
    path = tmp_path / "dark_sky.bmp"
    path.write_bytes(cv2.imencode(".bmp", rgb)[1].tobytes())
    assert image_problem(path) is None
    np.testing.assert_array_equal(read_image(path), rgb[..., ::-1])


@pytest.mark.parametrize("quality", [10, 80, None], ids=["q10", "q80", "lossless"])
def test_constant_lossy_webp_ending_in_zeros_is_accepted(tmp_path, quality):
    # libwebp ends a constant image's data with zero bytes (about 5% of the file): not a zero-fill.
    rgb = np.full((512, 512, 3), 40, np.uint8)
    path = tmp_path / "flat.webp"
    path.write_bytes(cv2.imencode(".webp", rgb, [cv2.IMWRITE_WEBP_QUALITY, quality] if quality else [])[1].tobytes())
    assert image_problem(path) is None
    assert np.abs(read_image(path).astype(int) - 40).max() <= 2


def with_exif_thumbnail(jpeg: bytes, thumbnail: bytes) -> bytes:
    """``jpeg`` with an APP1 EXIF segment holding ``thumbnail`` (IFD1's JPEGInterchangeFormat), as cameras write."""
    def entry(tag: int, value: int) -> bytes:  # type LONG, count 1
        return b"".join(n.to_bytes(width, "little") for n, width in ((tag, 2), (4, 2), (1, 4), (value, 4)))

    ifd1 = 8 + 2 + 4  # after the header and an empty IFD0
    thumbnail_at = ifd1 + 2 + 2 * 12 + 4
    tiff = (b"II*\x00" + (8).to_bytes(4, "little") + (0).to_bytes(2, "little") + ifd1.to_bytes(4, "little")
            + (2).to_bytes(2, "little") + entry(0x0201, thumbnail_at) + entry(0x0202, len(thumbnail))
            + bytes(4) + thumbnail)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_exif_thumbnail_does_not_hide_a_missing_end_marker(tmp_path, noisy_rgb):
    # The thumbnail carries its own scan and end marker; only the main image's count.
    whole = with_exif_thumbnail(jpeg_bytes(np.repeat(noisy_rgb, 4, axis=1)), jpeg_bytes(noisy_rgb[:12, :16]))
    path = tmp_path / "camera.jpg"
    path.write_bytes(whole)
    assert image_problem(path) is None and read_image(path).shape == (48, 256, 3)
    path.write_bytes(zero_fill_second_half(whole))
    assert image_problem(path) == "truncated JPEG (no end-of-image marker)"
    with pytest.raises(ImageError, match=r"camera.jpg: truncated JPEG"):
        read_image(path)


@pytest.mark.parametrize("head, name", [(b"GIF89a", "GIF"), (b"\x00\x00\x00\x18ftypheic", "HEIC"),
                                        (b"\x00\x00\x00\x1cftypavif", "AVIF"),
                                        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000")])
def test_unsupported_format_is_named(tmp_path, head, name):
    path = tmp_path / "photo.jpg"  # whatever the extension says
    path.write_bytes(head + bytes(100))
    assert image_problem(path) == f"{name} is not supported; convert to PNG/JPEG"
    with pytest.raises(ImageError, match=f"photo.jpg: {name} is not supported"):
        read_image(path)


def test_unreadable_path_is_a_problem_not_a_crash(tmp_path):
    folder = tmp_path / "a_folder.jpg"
    folder.mkdir()
    assert image_problem(folder).startswith("cannot read")
    with pytest.raises(KaggleTLError, match="cannot read"):
        read_image(folder)


def test_scan_reports_every_bad_file_by_position(tmp_path, noisy_rgb):
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(noisy_rgb))
    empty, text = tmp_path / "empty.jpg", tmp_path / "text.jpg"
    empty.write_bytes(b"")
    text.write_text("hello")
    bad = find_bad_images([good, empty, good, text], threads=2)
    assert sorted(bad) == [1, 3]
    assert bad[1].startswith("empty") and bad[3].startswith("not an image")


# -- files that are handled ---------------------------------------------------------------------
def test_png_with_alpha_drops_alpha(tmp_path, noisy_rgb):
    rgba = np.dstack([noisy_rgb, np.full(noisy_rgb.shape[:2], 7, np.uint8)])
    path = tmp_path / "alpha.png"
    path.write_bytes(png_bytes(cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)))
    out = read_image(path)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, noisy_rgb)  # colour as stored, not composited


def test_16_bit_png_becomes_8_bit(tmp_path, noisy_rgb):
    path = tmp_path / "deep.png"
    path.write_bytes(png_bytes(cv2.cvtColor(noisy_rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257))
    out = read_image(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, noisy_rgb)


def test_grayscale_becomes_three_equal_channels(tmp_path, noisy_rgb):
    path = tmp_path / "gray.png"
    path.write_bytes(png_bytes(noisy_rgb[..., 0]))
    out = read_image(path)
    assert out.shape == (48, 64, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(path, "JPEG")  # pure red in CMYK
    out = read_image(path)
    assert out.shape == (30, 40, 3)
    r, g, b = out[15, 20].astype(int)
    assert r > 200 and g < 40 and b < 40


def rotated_photo(tmp_path: Path, height: int, width: int) -> Path:
    """A JPEG stored height x width, left half red, right half blue, EXIF orientation 6 (shown rotated 90 CW)."""
    stored = np.zeros((height, width, 3), np.uint8)
    stored[:, :width // 2, 0] = 255
    stored[:, width // 2:, 2] = 255
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    image.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high, left half red, right half blue, EXIF orientation 6 ("rotate 90 CW
    # to display"): a viewer shows it 20 wide x 40 high, red on top. So does read_image.
    path = rotated_photo(tmp_path, 20, 40)
    out = read_image(path)
    assert out.shape == (40, 20, 3)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60  # top: red
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60  # bottom: blue


def test_one_pixel_image_resizes(tmp_path):
    path = tmp_path / "dot.png"
    path.write_bytes(png_bytes(np.array([[[10, 20, 30]]], np.uint8)))
    out = load_resized(path, [32, 75])
    assert out[32].shape == (32, 32, 3) and out[75].shape == (75, 75, 3)
    np.testing.assert_array_equal(out[32][0, 0], [30, 20, 10])  # BGR file -> RGB


def test_very_large_image_decodes_and_shrinks(tmp_path):
    big = np.zeros((6000, 8000, 3), np.uint8)
    big[:, 4000:] = 255
    path = tmp_path / "big.jpg"
    ok, data = cv2.imencode(".jpg", big)
    path.write_bytes(data.tobytes())
    assert image_problem(path) is None
    small = load_resized(path, [32], resize="squash")[32]
    assert small.shape == (32, 32, 3)
    assert small[:, :15].max() < 10 and small[:, 17:].min() > 245


# -- reduced-resolution JPEG decoding (read_image(min_side=...)) ---------------------------------
@pytest.fixture
def photo() -> np.ndarray:
    """A smooth 600 x 800 RGB image with sharp edges, like a photo with text on it."""
    rng = np.random.default_rng(2)
    image = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (800, 600), interpolation=cv2.INTER_CUBIC)
    cv2.putText(image, "kaggle_tl", (40, 300), cv2.FONT_HERSHEY_SIMPLEX, 4, (255, 255, 255), 8)
    return image


@pytest.mark.parametrize("min_side, shape", [(75, (75, 100)), (100, (150, 200)), (299, (300, 400)),
                                             (300, (300, 400)), (301, (600, 800)), (None, (600, 800))])
def test_reduced_jpeg_decode_keeps_the_shorter_side_at_least_min_side(tmp_path, photo, min_side, shape):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(photo, quality=90))
    assert read_image(path, min_side=min_side).shape == (*shape, 3)


def test_reduced_jpeg_decode_resizes_close_to_a_full_decode(tmp_path, photo):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(photo, quality=90))
    full = cv2.resize(read_image(path), (64, 64), interpolation=cv2.INTER_AREA).astype(int)
    reduced = cv2.resize(read_image(path, min_side=64), (64, 64), interpolation=cv2.INTER_AREA).astype(int)
    assert read_image(path, min_side=64).shape == (75, 100, 3)  # 1/8 scale
    # Close on average; sharp text edges differ most (BENCHMARKS.md has the figures on 3000 x 4000 photos).
    assert np.abs(full - reduced).mean() < 2 and np.abs(full - reduced).max() < 80


def test_reduced_jpeg_decode_applies_exif_orientation(tmp_path):
    path = rotated_photo(tmp_path, 200, 400)
    out = read_image(path, min_side=50)
    assert out.shape == (100, 50, 3)  # 1/4 scale, then rotated as the full decode is
    assert out[10, 25, 0] > 200 and out[10, 25, 2] < 60 and out[90, 25, 2] > 200 and out[90, 25, 0] < 60


def test_min_side_leaves_other_formats_at_full_size(tmp_path, photo):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(photo))
    np.testing.assert_array_equal(read_image(path, min_side=64), photo[..., ::-1])


@pytest.mark.parametrize("name", ["café ünïcode.png", "with space.jpg", "日本語.jpg", "a,b'c.png"])
def test_non_ascii_and_space_file_names(tmp_path, noisy_rgb, name):
    path = tmp_path / name
    ok, data = cv2.imencode(Path(name).suffix, noisy_rgb)
    path.write_bytes(data.tobytes())
    assert image_problem(path) is None
    assert read_image(path).shape == (48, 64, 3)


def test_batches_mark_undecodable_images_when_asked(tmp_path, noisy_rgb):
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(noisy_rgb))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="bad.jpg"):
        list(iter_image_batches([good, bad], [16], batch_size=2, threads=1))
    seen: dict[int, str] = {}
    batches = list(iter_image_batches([good, bad, good], [16], batch_size=2, threads=2,
                                      on_error=lambda i, exc: seen.setdefault(i, exc.problem)))
    assert list(seen) == [1] and "not an image" in seen[1]
    assert [len(b[16]) for b in batches] == [2, 1]
    assert not batches[0][16][1].any()  # the failed image is zeros, the caller marks its rows


# -- views and resize policies ------------------------------------------------------------------
def test_view_transforms_on_a_known_array():
    image = np.arange(6, dtype=np.uint8).reshape(1, 2, 3, 1)  # [[0 1 2], [3 4 5]]
    expected = {"original": [[0, 1, 2], [3, 4, 5]], "hflip": [[2, 1, 0], [5, 4, 3]],
                "vflip": [[3, 4, 5], [0, 1, 2]], "rot90": [[2, 5], [1, 4], [0, 3]],  # counter-clockwise
                "rot180": [[5, 4, 3], [2, 1, 0]], "rot270": [[3, 0], [4, 1], [5, 2]]}
    assert list(images.VIEW_TRANSFORMS) == list(expected)
    for view, want in expected.items():
        np.testing.assert_array_equal(images.VIEW_TRANSFORMS[view](image)[0, ..., 0], want, err_msg=view)
    np.testing.assert_array_equal(image[0, ..., 0], expected["original"])  # views never write


@pytest.fixture
def blue_green_red() -> np.ndarray:
    """40 x 80 RGB: a blue quarter on the left, a green half in the middle, a red quarter right."""
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :20, 2], image[:, 20:60, 1], image[:, 60:, 0] = 255, 255, 255
    return image


def test_squash_keeps_everything_and_distorts(blue_green_red):
    out = images.resize_image(blue_green_red, 32, "squash")
    assert out.shape == (32, 32, 3)
    assert out[16, 2, 2] == 255 and out[16, 16, 1] == 255 and out[16, 29, 0] == 255


def test_crop_takes_the_centre(blue_green_red):
    out = images.resize_image(blue_green_red, 32, "crop")
    # Shorter side 40 -> round(32 / 0.875) = 37 (width 74), centre 32 columns: the green middle only.
    assert out.shape == (32, 32, 3)
    assert (out[..., 1] == 255).all() and out[..., [0, 2]].max() == 0


def test_pad_keeps_the_aspect_ratio(blue_green_red):
    out = images.resize_image(blue_green_red, 32, "pad")
    assert out.shape == (32, 32, 3)
    # 80 x 40 -> 32 x 16, centred: 8 rows of the padding colour above and below.
    assert (out[:8] == images.PAD_RGB).all() and (out[24:] == images.PAD_RGB).all()
    content = out[8:24]
    assert (content[:, 1:7, 2] == 255).all() and (content[:, 9:23, 1] == 255).all()
    assert (content[:, 25:, 0] == 255).all()


def test_pad_and_crop_on_square_and_tall_images(noisy_rgb):
    square = noisy_rgb[:, :48]
    np.testing.assert_array_equal(images.resize_image(square, 32, "pad"), images.resize_image(square, 32, "squash"))
    tall = np.ascontiguousarray(noisy_rgb.transpose(1, 0, 2))  # 64 x 48
    for policy in images.RESIZE_POLICIES:
        assert images.resize_image(tall, 224, policy).shape == (224, 224, 3)
        assert images.resize_image(np.zeros((1, 500, 3), np.uint8), 32, policy).shape == (32, 32, 3)
    with pytest.raises(KaggleTLError, match="resize: unknown policy 'stretch'"):
        images.resize_image(square, 32, "stretch")


def test_batches_follow_the_resize_policy(tmp_path, blue_green_red):
    path = tmp_path / "bgr.png"
    path.write_bytes(png_bytes(blue_green_red[..., ::-1]))
    (batch,) = iter_image_batches([path], [32], batch_size=1, threads=1, resize="crop")
    np.testing.assert_array_equal(batch[32][0], images.resize_image(blue_green_red, 32, "crop"))
    np.testing.assert_array_equal(load_resized(path, [32], "pad")[32], images.resize_image(blue_green_red, 32, "pad"))


# -- JPEG through libjpeg-turbo (data.jpeg): OpenCV's pixels, its warnings as bad images, nothing on the terminal
def _photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    return cv2.GaussianBlur(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 2)


def _opencv_pixels(data: bytes, factor: int) -> np.ndarray:
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), flag), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_pixels_are_opencvs_at_every_orientation_and_reduction(tmp_path, orientation, mode):
    image = Image.fromarray(_photo_like(203, 331, orientation))
    image = image.convert(mode)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "p.jpg"
    image.save(path, "JPEG", exif=exif.tobytes(), quality=90, subsampling=2)
    for min_side, factor in ((None, 1), (100, 2), (50, 4), (25, 8)):
        assert np.array_equal(read_image(path, min_side=min_side), _opencv_pixels(path.read_bytes(), factor))


def test_a_jpeg_libjpeg_warns_about_is_a_bad_image_and_prints_nothing(tmp_path, capfd):
    ok, data = cv2.imencode(".jpg", _photo_like(120, 160), [cv2.IMWRITE_JPEG_QUALITY, 90])
    data = data.tobytes()
    path = tmp_path / "rot.jpg"
    # A restart marker in the middle of a scan that has none: OpenCV's libjpeg prints "Corrupt JPEG data: premature
    # end of data segment" and returns the rest of the image grey.
    path.write_bytes(data[:len(data) // 2] + b"\xff\xd3" + data[len(data) // 2:])
    assert image_problem(path) is None  # whole, as far as its size and markers go
    with pytest.raises(ImageError, match=r"rot\.jpg: damaged JPEG \(libjpeg: ") as exc:
        read_image(path)
    assert "\n" not in str(exc.value)
    assert capfd.readouterr().err == ""


def test_junk_before_the_jpeg_end_marker_is_read_as_the_image_it_is_without_a_word(tmp_path, capfd):
    ok, data = cv2.imencode(".jpg", _photo_like(120, 160), [cv2.IMWRITE_JPEG_QUALITY, 90])
    clean = data.tobytes()
    end = clean.rfind(b"\xff\xd9")
    path = tmp_path / "junk.jpg"
    path.write_bytes(clean[:end] + b"\x00\x11\x22" + clean[end:])  # libjpeg: "3 extraneous bytes before marker 0xd9"
    assert np.array_equal(read_image(path), _opencv_pixels(clean, 1))
    assert capfd.readouterr().err == ""


def test_a_damaged_cmyk_jpeg_is_checked_before_opencv_decodes_it(tmp_path, capfd):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(_photo_like(60, 80)).convert("CMYK").save(path, "JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] + b"\xff\xd3" + data[len(data) // 2:])
    with pytest.raises(ImageError, match=r"cmyk\.jpg: damaged JPEG \(libjpeg: "):
        read_image(path)
    assert capfd.readouterr().err == ""


# -- PNG: libpng's warnings about ancillary chunks never print, and those chunks change no pixel
def _chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return len(body).to_bytes(4, "big") + kind + body + crc.to_bytes(4, "big")


def _with_chunks(png: bytes, *chunks: bytes) -> bytes:
    return png[:33] + b"".join(chunks) + png[33:]  # after the signature (8) and IHDR (25)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16"])
def test_png_pixels_are_opencvs_with_and_without_ancillary_chunks(tmp_path, mode):
    pixels = _photo_like(30, 40)
    image = Image.fromarray(pixels).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = Image.fromarray((np.asarray(image).astype(np.uint16) * 257))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "made by a camera")
    path = tmp_path / "p.png"
    extra = {"transparency": 3} if mode == "P" else {}
    image.save(path, "PNG", pnginfo=info, **extra)
    data = path.read_bytes()
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(read_image(path), expected)
    gamma = _chunk(b"gAMA", (45455).to_bytes(4, "big"))
    path.write_bytes(_with_chunks(data, gamma, _chunk(b"tIME", bytes(7))))
    assert np.array_equal(read_image(path), expected)


def test_libpng_warnings_about_ancillary_chunks_never_reach_the_terminal(tmp_path, capfd):
    ok, data = cv2.imencode(".png", _photo_like(20, 30))
    data = data.tobytes()
    path = tmp_path / "warned.png"
    # "libpng warning: tEXt: CRC error" and "libpng warning: iCCP: too short" from OpenCV's own decode
    path.write_bytes(_with_chunks(data, _chunk(b"tEXt", b"Comment\0hello", crc=0), _chunk(b"iCCP", b"icc\0\0x")))
    cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert "libpng warning" in capfd.readouterr().err  # what the file does to OpenCV
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(read_image(path), expected)
    assert capfd.readouterr().err == ""


def test_a_jpeg_that_breaks_a_rule_but_decodes_whole_is_read_as_it_is_without_a_word(tmp_path, capfd):
    # a baseline scan declaring a spectral end of 62: libjpeg warns "Invalid SOS parameters for sequential JPEG"
    # (OpenCV prints it) and decodes every pixel all the same
    ok, data = cv2.imencode(".jpg", _photo_like(120, 160), [cv2.IMWRITE_JPEG_QUALITY, 90])
    data = bytearray(data.tobytes())
    scan = next(offset for marker, offset in jpeg_segments(bytes(data)) if marker == 0xDA)
    spectral_end = scan + 4 + 1 + 2 * data[scan + 4] + 1  # after the length, the count and the components, Ss
    assert data[spectral_end] == 63
    data[spectral_end] = 62
    path = tmp_path / "odd.jpg"
    path.write_bytes(bytes(data))
    assert np.array_equal(read_image(path), _opencv_pixels(bytes(data), 1))
    assert "Invalid SOS parameters" in capfd.readouterr().err  # OpenCV's own decode, above, printed it
    read_image(path)
    assert capfd.readouterr().err == ""
