"""DICOM files and scan folders of them (data.dicom): the pixel rule, real compressed files, bad files named,
the scan folder's picture and its digest."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import write_dicom  # noqa: E402
from kaggle_tl.data.dicom import TILE, middle_slices, scan_digest
from kaggle_tl.data.digests import file_digest
from kaggle_tl.data.images import ImageError, image_problem, read_image

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def ramp(height: int = 48, width: int = 64) -> np.ndarray:
    return (np.arange(height * width).reshape(height, width) % 1000).astype(np.uint16)


def test_grey_pixels_rescaled_windowed_and_stretched(tmp_path):
    write_dicom(tmp_path / "a.dcm", ramp(), window=(300, 200), rescale=(2.0, -100.0))
    image = read_image(tmp_path / "a.dcm")
    values = np.clip(2.0 * ramp() - 100.0, 200, 400)  # the modality rescale, then the window [200, 400]
    expected = (values - 200) * 255 / 200
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 2]).all() and np.abs(image[..., 0] - expected).max() <= 0.5 + 1e-9


def test_without_a_window_the_slice_spans_its_own_range(tmp_path):
    write_dicom(tmp_path / "a.dcm", ramp() + 5000)
    image = read_image(tmp_path / "a.dcm")[..., 0]
    values = (ramp() + 5000).astype(float)
    assert np.abs(image - (values - values.min()) * 255 / (values.max() - values.min())).max() <= 0.5 + 1e-9


def test_monochrome1_is_inverted(tmp_path):
    write_dicom(tmp_path / "m2.dcm", ramp())
    write_dicom(tmp_path / "m1.dcm", ramp(), photometric="MONOCHROME1")
    assert np.array_equal(read_image(tmp_path / "m1.dcm"), 255 - read_image(tmp_path / "m2.dcm"))


def test_a_file_of_frames_gives_its_middle_frame(tmp_path):
    frames = np.zeros((5, 16, 16), np.uint16)
    frames[2, 4:8, 4:8] = 900  # only the middle frame has a bright square
    write_dicom(tmp_path / "f.dcm", frames)
    image = read_image(tmp_path / "f.dcm")
    assert image.shape == (16, 16, 3) and image[5, 5, 0] == 255 and image[0, 0, 0] == 0


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_real_compressed_and_other_encodings_give_the_uncompressed_picture(name):
    # pydicom's own sample files: one MR slice in several transfer syntaxes (RLE, JPEG 2000, JPEG-LS lossless)
    reference = read_image(PYDICOM_FILES / "MR_small.dcm")
    assert reference.shape == (64, 64, 3) and reference.std() > 10
    assert np.array_equal(read_image(PYDICOM_FILES / name), reference)


def test_a_truncated_file_is_a_bad_image_named(tmp_path, capfd):
    write_dicom(tmp_path / "a.dcm", ramp())
    data = (tmp_path / "a.dcm").read_bytes()
    (tmp_path / "a.dcm").write_bytes(data[:-100])
    problem = image_problem(tmp_path / "a.dcm")
    assert problem == f"truncated DICOM ({48 * 64 * 2 - 100} of {48 * 64 * 2} bytes of pixel data)"
    with pytest.raises(ImageError, match="truncated DICOM"):
        read_image(tmp_path / "a.dcm")
    assert capfd.readouterr().err == ""


def test_a_file_without_pixels_and_a_damaged_header_are_named_without_a_library_line(capfd):
    assert "without pixel data" in image_problem(PYDICOM_FILES / "rtplan.dcm")
    assert image_problem(PYDICOM_FILES / "badVR.dcm").startswith("damaged DICOM header (invalid literal")
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def _scan(folder: Path, series: dict[str, int]) -> None:
    """A scan folder: ``series`` name -> slice count, Image-1.dcm ... Image-<n>.dcm, slice k a square at k."""
    for name, count in series.items():
        for k in range(1, count + 1):
            pixels = np.zeros((32, 32), np.uint16)
            pixels[k:k + 4, k:k + 4] = 100 * k
            write_dicom(folder / name / f"Image-{k}.dcm", pixels)


def test_a_scan_folder_is_the_middle_slice_of_each_series_side_by_side(tmp_path):
    _scan(tmp_path / "00012", {"FLAIR": 12, "T1w": 3, "T1wCE": 5, "T2w": 1})
    chosen = middle_slices(tmp_path / "00012")
    # natural order of the names: Image-7 is the middle of 12 (as text, "Image-10" would sort before "Image-2")
    assert [(name, count, path.name) for name, count, path in chosen] == [
        ("FLAIR", 12, "Image-7.dcm"), ("T1w", 3, "Image-2.dcm"), ("T1wCE", 5, "Image-3.dcm"), ("T2w", 1, "Image-1.dcm")]
    assert image_problem(tmp_path / "00012") is None
    picture = read_image(tmp_path / "00012")
    assert picture.shape == (2 * TILE, 2 * TILE, 3)
    scale = TILE // 32
    for cell, (_, _, path) in enumerate(chosen):  # each cell is its slice, enlarged to the cell
        top, left = (cell // 2) * TILE, (cell % 2) * TILE
        k = int(path.stem.split("-")[1])
        square = picture[top + (k + 1) * scale: top + (k + 3) * scale, left + (k + 1) * scale: left + (k + 3) * scale]
        assert (square == 255).all() and picture[top + TILE - 1, left:left + TILE].max() == 0


def test_one_series_directly_in_the_folder(tmp_path):
    for k in range(1, 4):
        write_dicom(tmp_path / "scan" / f"{k}.dcm", np.full((8, 8), k, np.uint16))
    assert [(name, count, path.name) for name, count, path in middle_slices(tmp_path / "scan")] == [(".", 3, "2.dcm")]
    assert read_image(tmp_path / "scan").shape == (TILE, TILE, 3)


def test_a_bad_middle_slice_is_named_by_its_path_in_the_scan(tmp_path):
    _scan(tmp_path / "00003", {"FLAIR": 3, "T2w": 3})
    (tmp_path / "00003" / "T2w" / "Image-2.dcm").write_bytes(b"")
    assert image_problem(tmp_path / "00003") == "T2w/Image-2.dcm: empty file (0 bytes)"
    (tmp_path / "empty").mkdir()  # a folder without a series is no image: as any folder
    assert image_problem(tmp_path / "empty").startswith("cannot read")


def test_the_scan_digest_covers_each_part_of_the_picture(tmp_path):
    _scan(tmp_path / "base", {"FLAIR": 3, "T2w": 3})
    base = scan_digest(tmp_path / "base")
    assert file_digest(tmp_path / "base") == base

    def variant(name: str, change) -> str:
        folder = tmp_path / name
        shutil.copytree(tmp_path / "base", folder)
        change(folder)
        return scan_digest(folder)

    assert variant("same", lambda f: None) == base  # the folder's own name is not a part
    # the middle slice's bytes
    assert variant("middle", lambda f: write_dicom(f / "T2w" / "Image-2.dcm", np.ones((32, 32), np.uint16))) != base
    # a series' name (the cells' order follows it)
    assert variant("renamed", lambda f: (f / "T2w").rename(f / "T1w")) != base
    # the slice count, with the same middle slice (Image-2 of 4 is Image-3: move it there)
    assert variant("count", lambda f: (shutil.copy(f / "T2w" / "Image-3.dcm", f / "T2w" / "Image-4.dcm"),
                                       shutil.copy(f / "T2w" / "Image-2.dcm", f / "T2w" / "Image-3.dcm"))) != base
    # a slice that is not a middle one is not read, so it is not a part: the picture is the same
    edge = variant("edge", lambda f: write_dicom(f / "T2w" / "Image-1.dcm", np.ones((32, 32), np.uint16)))
    assert edge == base and np.array_equal(read_image(tmp_path / "edge"), read_image(tmp_path / "base"))
