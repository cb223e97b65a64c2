"""Decoding odd image files: what becomes RGB, what is refused, and the cheap pre-run scan."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from kaggle_tl import images
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.images import ImageError, find_bad_images, image_problem, iter_image_batches, load_resized, read_image


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


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high, left half red, right half blue, EXIF orientation 6 ("rotate 90 CW
    # to display"): a viewer shows it 20 wide x 40 high, red on top. So does read_image.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20, 0] = 255
    stored[:, 20:, 2] = 255
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    image.save(path, "JPEG", exif=exif.tobytes(), quality=95)
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
    small = load_resized(path, [32])[32]
    assert small.shape == (32, 32, 3)
    assert small[:, :15].max() < 10 and small[:, 17:].min() > 245


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
