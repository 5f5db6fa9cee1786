"""tfod.data.dicom on the real RSNA DICOMs, the edge cases, and damaged copies built from them.

The ``write_*`` helpers (``dicom_files``) build bad or unusual DICOMs from a real one.
"""
import hashlib
import io

import numpy as np
import pydicom
import pytest
from conftest import EDGE_CASES
from dicom_files import (
    damaged_frames,
    write_bytes,
    write_compressed,
    write_frame,
    write_not_dicom,
    write_retagged,
    write_truncated,
    write_uncompressed,
    write_without_pixel_data,
    write_without_rows,
)
from PIL import Image
from pydicom import uid
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian

from tfod.data import dicom

MONOCHROME1 = EDGE_CASES / "monochrome1_chest.dcm"
MONOCHROME2 = EDGE_CASES / "siim_chest_no_boxes.dcm"


def decode(encoded: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(encoded)))


def test_load_image_8bit_equals_pixel_array(sample_dicoms):
    for path in sample_dicoms[:4]:
        image = dicom.load_image_8bit(path)
        assert image.dtype == np.uint8 and image.shape == (1024, 1024)
        np.testing.assert_array_equal(image, dicom.pixel_array(pydicom.dcmread(path)))


def test_monochrome1_is_inverted():
    inverted, plain = dicom.load_image_8bit(MONOCHROME1), dicom.load_image_8bit(MONOCHROME2)
    np.testing.assert_array_equal(inverted, 255 - plain)
    assert inverted.std() > 10  # a real image, not a constant


def test_monochrome1_is_not_passed_through():
    prepared = dicom.prepare_image(MONOCHROME1, "passthrough")
    assert not prepared.passthrough and prepared.image_format == "png"
    expected = 255 - dicom.load_image_8bit(MONOCHROME2)
    np.testing.assert_array_equal(decode(prepared.encoded), expected)


def test_passthrough_copies_the_jpeg_frame(sample_dicoms):
    path = sample_dicoms[0]
    dataset = pydicom.dcmread(path)
    prepared = dicom.prepare_image(path, "passthrough")
    frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
    assert prepared.passthrough and prepared.image_format == "jpeg"
    assert prepared.encoded == frame
    assert prepared.sha256 == hashlib.sha256(frame).hexdigest()
    assert prepared.patient_id == path.stem
    assert (prepared.width, prepared.height) == (1024, 1024)
    assert prepared.header == dicom.DicomHeader(
        rows=1024, columns=1024, view_position=dataset.ViewPosition,
        sex=dataset.PatientSex, age=int(dataset.PatientAge))


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_reencoded_formats(sample_dicoms, image_format):
    path = sample_dicoms[1]
    prepared = dicom.prepare_image(path, image_format)
    pixels = dicom.pixel_array(pydicom.dcmread(path))
    assert prepared.image_format == image_format and not prepared.passthrough
    error = np.abs(decode(prepared.encoded).astype(int) - pixels)
    assert error.max() == 0 if image_format == "png" else error.mean() < 2


def test_uncompressed_8bit_decodes_to_png(sample_dicoms, tmp_path):
    path = write_uncompressed(sample_dicoms[2], tmp_path / "raw.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    prepared = dicom.prepare_image(path, "passthrough")
    assert prepared.image_format == "png" and not prepared.passthrough
    np.testing.assert_array_equal(decode(prepared.encoded),
                                  dicom.pixel_array(pydicom.dcmread(sample_dicoms[2])))


def test_16bit_uses_its_window(sample_dicoms, tmp_path):
    pixels = dicom.pixel_array(pydicom.dcmread(sample_dicoms[3]))
    deep = pixels.astype(np.uint16) * 16  # 12 bits stored
    path = write_uncompressed(sample_dicoms[3], tmp_path / "deep.dcm", deep, bits_stored=12,
                              window=(2040, 4080))
    np.testing.assert_array_equal(dicom.load_image_8bit(path), pixels)


def test_16bit_without_window_uses_a_robust_window_and_says_so(sample_dicoms, tmp_path):
    pixels = dicom.pixel_array(pydicom.dcmread(sample_dicoms[3]))
    deep = pixels.astype(np.uint16) * 200 + 1000
    deep[:2, :3] = 65535  # a few extreme outliers (e.g. a burned-in marker)
    deep[-1, :3] = 0
    path = write_uncompressed(sample_dicoms[3], tmp_path / "deep.dcm", deep, bits_stored=16)
    image = dicom.load_image_8bit(path)
    low, high = np.percentile(deep.astype(np.float64), dicom.ROBUST_PERCENTILES)
    expected = np.clip(np.rint((deep - low) / (high - low) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(image, expected)
    # min..max scaling would squeeze the image into about 1/20 of the grey levels
    assert np.percentile(image, 99) - np.percentile(image, 1) > 150
    notes = dicom.prepare_image(path).notes
    assert any("no window in the header" in note for note in notes), notes


def test_16bit_monochrome1_is_windowed_then_inverted(sample_dicoms, tmp_path):
    pixels = dicom.pixel_array(pydicom.dcmread(sample_dicoms[3]))
    path = write_uncompressed(sample_dicoms[3], tmp_path / "deep.dcm",
                              pixels.astype(np.uint16) * 16, bits_stored=12,
                              photometric="MONOCHROME1", window=(2040, 4080))
    np.testing.assert_array_equal(dicom.load_image_8bit(path), 255 - pixels)


def test_max_size_resizes(sample_dicoms):
    prepared = dicom.prepare_image(sample_dicoms[0], "passthrough", max_size=256)
    assert (prepared.width, prepared.height) == (256, 256)
    assert (prepared.source_width, prepared.source_height) == (1024, 1024)
    assert prepared.image_format == "png" and decode(prepared.encoded).shape == (256, 256)


def test_non_square_resize_keeps_aspect(sample_dicoms, tmp_path):
    pixels = dicom.pixel_array(pydicom.dcmread(sample_dicoms[0]))[:, :512]
    path = write_uncompressed(sample_dicoms[0], tmp_path / "tall.dcm", np.ascontiguousarray(pixels))
    prepared = dicom.prepare_image(path, "png", max_size=512)
    assert (prepared.width, prepared.height) == (256, 512)
    assert (prepared.source_width, prepared.source_height) == (512, 1024)


@pytest.mark.parametrize("damage, reason", [
    (lambda src, dst: write_truncated(src, dst), "truncated"),
    (lambda src, dst: write_truncated(src, dst, keep=0.001), "not a readable DICOM"),
    (lambda src, dst: write_bytes(src, dst, 300), "truncated"),
    (lambda src, dst: write_not_dicom(dst), "not a readable DICOM"),
    (write_without_pixel_data, "no pixel data"),
    (write_without_rows, "missing or bad Rows/Columns"),
])
def test_damaged_files_raise_naming_the_file(sample_dicoms, tmp_path, damage, reason):
    path = damage(sample_dicoms[0], tmp_path / "bad.dcm")
    with pytest.raises(dicom.DicomError, match=reason) as caught:
        dicom.prepare_image(path)
    assert str(path) in str(caught.value)
    assert isinstance(dicom.try_prepare_image((str(path),)), dicom.DicomError)


def test_jpeg_frame_whose_size_disagrees_with_header(sample_dicoms, tmp_path):
    path = write_retagged(sample_dicoms[0], tmp_path / "wrong.dcm", Rows=512)
    with pytest.raises(dicom.DicomError, match="header says"):
        dicom.prepare_image(path, "passthrough")


@pytest.mark.parametrize("text, years", [("62", 62), ("062Y", 62), ("006M", 0), ("", None),
                                         ("abc", None)])
def test_parse_age(text, years):
    assert dicom.parse_age(text) == years


@pytest.mark.parametrize("damage", ["corrupted", "cut short"])
def test_damaged_jpeg_frame_is_refused_unless_unverified(sample_dicoms, tmp_path, damage):
    frame = damaged_frames(sample_dicoms[0])[damage]
    path = write_frame(sample_dicoms[0], tmp_path / "damaged.dcm", frame)
    with pytest.raises(dicom.DicomError, match="damaged JPEG frame .*Corrupt JPEG data"):
        dicom.prepare_image(path)
    unverified = dicom.prepare_image(path, verify_frames=False)
    assert unverified.passthrough and unverified.encoded[:len(frame)] == frame


# JPEG-LS and 12-bit JPEG Extended decode through pylibjpeg-libjpeg, JPEG 2000 through
# pylibjpeg-openjpeg, RLE through pydicom itself (see docs/convert.md).
@pytest.mark.parametrize("syntax", [uid.JPEGLSLossless, uid.JPEGExtended12Bit,
                                    uid.JPEG2000Lossless, uid.RLELossless])
def test_transfer_syntaxes_decode(sample_dicoms, tmp_path, syntax):
    path, deep = write_compressed(sample_dicoms[3], tmp_path / "compressed.dcm", syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    prepared = dicom.prepare_image(path)
    assert not prepared.passthrough and prepared.image_format == "png"
    expected = np.clip(np.rint(deep / 4080 * 255), 0, 255)
    image = decode(prepared.encoded).astype(np.float64)
    assert image.shape == deep.shape
    assert np.abs(image - expected).max() <= (0 if "Lossless" in syntax.name else 2)


def test_header_patient_id_that_differs_from_the_file_name_is_noted(sample_dicoms, tmp_path):
    same = write_retagged(sample_dicoms[0], tmp_path / f"{sample_dicoms[0].stem}.dcm")
    assert dicom.prepare_image(same).notes == ()
    other = write_retagged(sample_dicoms[0], tmp_path / "renamed.dcm")
    assert "PatientID differs from the file name" in " ".join(dicom.prepare_image(other).notes)
