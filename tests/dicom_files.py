"""Bad or unusual DICOMs written from a real one, for the tests of every stage that reads DICOMs
(test_dicom, test_convert, test_manifest...)."""
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
from PIL import Image
from pydicom import uid
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import ExplicitVRLittleEndian

from tfod.data import dicom
from tfod.data.dicom import load_image_8bit


def write_truncated(source: Path, target: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def write_bytes(source: Path, target: Path, count: int) -> Path:
    target.write_bytes(source.read_bytes()[:count])
    return target


def write_frame(source: Path, target: Path, frame: bytes) -> Path:
    """Copy ``source`` with its JPEG frame replaced by ``frame``."""
    dataset = pydicom.dcmread(source)
    dataset.PixelData = encapsulate([frame])
    dataset.save_as(target)
    return target


def damaged_frames(source: Path) -> dict[str, bytes]:
    """The real frame of ``source`` damaged two ways: bytes in the middle overwritten, and cut
    in half with an end-of-image marker appended (each decodes, with a libjpeg warning only)."""
    frame = next(generate_frames(pydicom.dcmread(source).PixelData, number_of_frames=1))
    middle = bytearray(frame)
    middle[len(frame) // 3:len(frame) // 3 + 500] = bytes(500)
    return {"corrupted": bytes(middle), "cut short": frame[:len(frame) // 2] + b"\xff\xd9"}


def write_compressed(source: Path, target: Path, syntax: str) -> tuple[Path, np.ndarray]:
    """``source``'s pixels x 16 (12 bits stored, window 2040/4080) in ``syntax``; the file and
    the 12-bit pixels a correct decoder gives back."""
    dataset = pydicom.dcmread(source)
    deep = (dicom.pixel_array(dataset).astype(np.uint16) * 16)[:256, :320].copy()
    dataset.set_pixel_data(deep, "MONOCHROME2", 12, generate_instance_uid=False)
    dataset.WindowCenter, dataset.WindowWidth = 2040, 4080
    if syntax in (uid.RLELossless, uid.JPEG2000Lossless):
        dataset.compress(syntax, generate_instance_uid=False)
    else:
        encoded = (imagecodecs.jpegls_encode(deep) if syntax == uid.JPEGLSLossless else
                   imagecodecs.jpeg8_encode(deep, level=95, bitspersample=12))
        dataset.PixelData = encapsulate([encoded])
        dataset.file_meta.TransferSyntaxUID = syntax
        deep = imagecodecs.imread(encoded) if syntax != uid.JPEGLSLossless else deep
    dataset.save_as(target, enforce_file_format=True)
    return target, deep


def write_not_dicom(target: Path) -> Path:
    target.write_text("patientId,x,y,width,height,Target\n")
    return target


def write_without_pixel_data(source: Path, target: Path) -> Path:
    dataset = pydicom.dcmread(source)
    del dataset.PixelData
    dataset.save_as(target)
    return target


def write_without_rows(source: Path, target: Path) -> Path:
    dataset = pydicom.dcmread(source)
    del dataset.Rows
    dataset.save_as(target)
    return target


def write_uncompressed(source: Path, target: Path, pixels: np.ndarray | None = None,
                       bits_stored: int = 8, photometric: str = "MONOCHROME2",
                       window: tuple[float, float] | None = None) -> Path:
    """Re-encode ``source`` as Explicit VR Little Endian with ``pixels`` (default: its own)."""
    dataset = pydicom.dcmread(source)
    pixels = dicom.pixel_array(dataset) if pixels is None else pixels
    dataset.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    if window:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.save_as(target)
    return target


def write_retagged(source: Path, target: Path, **tags) -> Path:
    """Copy ``source`` with header ``tags`` changed (pixel data untouched)."""
    dataset = pydicom.dcmread(source)
    for name, value in tags.items():
        setattr(dataset, name, value)
    dataset.save_as(target)
    return target


def write_dicom(template, pixels: np.ndarray, path):
    """A DICOM at ``path``: ``template``'s header with uncompressed 8-bit ``pixels`` (HxW)."""
    dataset = pydicom.dcmread(template)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation, dataset.SamplesPerPixel = 0, 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.PixelData = np.ascontiguousarray(pixels, np.uint8).tobytes()
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = False
    dataset.save_as(path, enforce_file_format=True)
    return path


def resized_dicom(template, width: int, height: int, path):
    """A real radiograph resized to ``width`` x ``height``, with a bright off-centre patch."""
    pixels = np.array(Image.fromarray(load_image_8bit(template)).resize((width, height)))
    pixels[height // 8: height // 3, width // 10: width // 3] = 255
    return write_dicom(template, pixels, path)
