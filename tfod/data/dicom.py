"""Read one DICOM: its encapsulated JPEG frame as bytes, or its pixels as 8-bit grayscale.

The RSNA images are JPEG Baseline, 8-bit, MONOCHROME2: their single encapsulated frame is a
plain grayscale JPEG, so :func:`prepare_image` copies it into the record untouched (the
``passthrough`` format). Anything else (uncompressed, JPEG-LS, JPEG 2000, RLE, MONOCHROME1,
more than 8 bits stored) is decoded by pydicom, inverted where needed, windowed to 8 bits and
encoded as PNG.

Only the fields the harness needs leave this module (view position, sex, age, size): no
names, birth dates or other identifying header fields are kept.

This module imports neither TensorFlow nor the OD API, so worker processes that run
:func:`prepare_image` start fast.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import simplejpeg
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut
from pydicom.uid import JPEGBaseline8Bit

IMAGE_FORMATS = ("passthrough", "png", "jpeg")
DEFAULT_JPEG_QUALITY = 95
# PNG through libpng (imagecodecs): zlib level 1, Huffman coding only, one Paeth filter for every
# row instead of trying all five per row. For a 1024x1024 radiograph that is 8 ms of CPU against
# 128 ms with Pillow's defaults (level 6, adaptive filters) and 17 ms with OpenCV at level 1,
# and a file as small (bench/convert.py).
PNG_OPTIONS = {"level": 1, "strategy": imagecodecs.PNG.STRATEGY.HUFFMAN_ONLY,
               "filter": imagecodecs.PNG.FILTER.PAETH}
ROBUST_PERCENTILES = (0.5, 99.5)


class DicomError(ValueError):
    """A DICOM file that cannot be turned into an image; the message names the file."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):  # keep both fields when sent back from a worker process
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class DicomHeader:
    """The non-identifying header fields the harness uses."""

    rows: int
    columns: int
    view_position: str  # 'AP', 'PA' or '' when absent
    sex: str  # 'M', 'F' or ''
    age: int | None  # years; None when absent or unreadable


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for a record: encoded bytes plus the sizes boxes are normalized by."""

    patient_id: str
    encoded: bytes
    image_format: str  # 'jpeg' or 'png': the OD API's image/format
    width: int  # of the encoded image
    height: int
    source_width: int  # of the DICOM (the labels' pixel space)
    source_height: int
    sha256: str
    header: DicomHeader
    passthrough: bool  # True when ``encoded`` is the DICOM's own JPEG frame
    path: str = ""  # the DICOM file
    frame_span: tuple[int, int] | None = None  # (offset, length) of a passthrough frame in the file
    notes: tuple[str, ...] = ()  # what was noticed but did not stop the conversion


def read_dataset(path, data: bytes | None = None) -> pydicom.Dataset:
    """Read a DICOM with its pixel data; :class:`DicomError` if truncated, foreign or empty.

    ``data``: the file's bytes, when already read.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = pydicom.dcmread(path if data is None else io.BytesIO(data))
    except Exception as error:  # pydicom raises many types for a damaged file
        raise DicomError(path, f"not a readable DICOM file ({error})") from error
    if any("End of file reached" in str(w.message) for w in caught):
        raise DicomError(path, "truncated DICOM file (end of file inside the data)")
    if "PixelData" not in dataset and "Rows" not in dataset:
        raise DicomError(path, "truncated DICOM file (it ends before the image header)")
    if "PixelData" not in dataset:
        raise DicomError(path, "DICOM has no pixel data")
    return dataset


def read_header(dataset: pydicom.Dataset, path="<dataset>") -> DicomHeader:
    """The view position, sex, age and size of ``dataset``."""
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except (AttributeError, TypeError, ValueError) as error:
        raise DicomError(path, f"missing or bad Rows/Columns ({error})") from error
    return DicomHeader(
        rows=rows,
        columns=columns,
        view_position=str(dataset.get("ViewPosition", "") or "").strip().upper(),
        sex=str(dataset.get("PatientSex", "") or "").strip().upper(),
        age=parse_age(str(dataset.get("PatientAge", "") or "")),
    )


def parse_age(value: str) -> int | None:
    """DICOM age string ('062Y', '62', '006M') -> whole years; None when unreadable."""
    value = value.strip().upper()
    digits = value.rstrip("YMWD")
    if not digits.isdigit():
        return None
    unit = value[len(digits):] or "Y"
    return int(digits) if unit == "Y" else 0


def can_pass_through(dataset: pydicom.Dataset) -> bool:
    """True when the DICOM's frame is already a display-ready 8-bit grayscale JPEG."""
    return (
        dataset.file_meta.get("TransferSyntaxUID") == JPEGBaseline8Bit
        and dataset.get("PhotometricInterpretation") == "MONOCHROME2"
        and int(dataset.get("SamplesPerPixel", 1)) == 1
        and int(dataset.get("NumberOfFrames", 1) or 1) == 1
        and int(dataset.get("BitsStored", 8)) == 8
    )


def jpeg_frame(dataset: pydicom.Dataset, path="<dataset>", verify: bool = True) -> bytes:
    """The single encapsulated JPEG frame of ``dataset``, checked; with ``verify``, decoded once.

    The decode is libjpeg-turbo's (simplejpeg) with its warnings as errors: a frame with damaged
    entropy-coded data ("Corrupt JPEG data: ...") or cut short with an end marker appended
    decodes to an image with grey or garbage blocks and only a warning from Pillow or TF.
    """
    try:
        frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
        with Image.open(io.BytesIO(frame)) as image:  # parses the JPEG header only
            mode, size = image.mode, image.size
    except Exception as error:
        raise DicomError(path, f"damaged JPEG frame ({error})") from error
    if mode != "L" or size != (int(dataset.Columns), int(dataset.Rows)):
        raise DicomError(path, f"JPEG frame is {mode} {size}, header says grayscale "
                               f"{dataset.Columns}x{dataset.Rows}")
    if b"\xff\xd9" not in frame[-4:]:
        raise DicomError(path, "JPEG frame is cut short (no end-of-image marker)")
    if verify:
        verify_jpeg(frame, path)
    return frame


def verify_jpeg(frame: bytes, path="<frame>") -> None:
    """Decode ``frame`` fully; :class:`DicomError` on any libjpeg error or warning."""
    try:
        simplejpeg.decode_jpeg(frame, colorspace="GRAY", strict=True)
    except ValueError as error:
        raise DicomError(path, f"damaged JPEG frame ({error})") from error


def to_8bit(dataset: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    """Decoded pixels -> uint8 for display: windowed if deeper than 8 bits, MONOCHROME1 inverted.

    8-bit images keep their values. Deeper images go through the modality LUT (rescale), then
    the first window of the header (center/width) or, without one, a robust window: the
    :data:`ROBUST_PERCENTILES` of the image's values, so a few extreme pixels cannot squeeze the
    whole image into a few grey levels.
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected one grayscale frame, got pixel array of shape {pixels.shape}")
    if int(dataset.get("BitsStored", 8)) <= 8 and pixels.dtype == np.uint8:
        image = pixels
    else:
        values = apply_modality_lut(pixels, dataset).astype(np.float64)
        low, high = _window(dataset, values)
        scaled = (values - low) / max(high - low, 1e-9) * 255.0
        image = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        image = 255 - image
    return image


def _window(dataset: pydicom.Dataset, values: np.ndarray) -> tuple[float, float]:
    if header_window(dataset):
        center, width = header_window(dataset)
        return center - width / 2, center + width / 2
    low, high = np.percentile(values, ROBUST_PERCENTILES)
    return float(low), float(high)


def header_window(dataset: pydicom.Dataset) -> tuple[float, float] | None:
    """The header's first (center, width) window, or None when absent or not positive."""
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    center = float(center[0] if isinstance(center, MultiValue) else center)
    width = float(width[0] if isinstance(width, MultiValue) else width)
    return (center, width) if width > 0 else None


def needs_window(dataset: pydicom.Dataset) -> bool:
    """True when the pixels are deeper than 8 bits, so :func:`to_8bit` windows them."""
    return int(dataset.get("BitsStored", 8)) > 8 or int(dataset.get("BitsAllocated", 8)) > 8


def pixel_array(dataset: pydicom.Dataset) -> np.ndarray:
    """``dataset.pixel_array``, JPEG Baseline decoded by Pillow (libjpeg-turbo, as TensorFlow
    decodes a passed-through frame) even where pydicom would pick pylibjpeg first (installed
    for JPEG-LS and 12-bit JPEG), so that both paths give the same pixels."""
    if dataset.file_meta.get("TransferSyntaxUID") == JPEGBaseline8Bit:
        dataset.pixel_array_options(decoding_plugin="pillow")
    return dataset.pixel_array


def decode_8bit(dataset: pydicom.Dataset, path="<dataset>") -> np.ndarray:
    """Decode ``dataset``'s pixels to a uint8 HxW display image."""
    try:
        return to_8bit(dataset, pixel_array(dataset))
    except Exception as error:
        raise DicomError(path, f"cannot decode pixel data ({error})") from error


def load_image_8bit(path) -> np.ndarray:
    """The image of the DICOM at ``path`` as uint8 HxW, MONOCHROME1 inverted, 16-bit windowed."""
    return decode_8bit(read_dataset(path), path)


def encode(image: np.ndarray, image_format: str, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """uint8 HxW -> PNG (libpng through imagecodecs) or JPEG (Pillow) bytes, deterministic."""
    buffer = io.BytesIO()
    if image_format == "png":
        return bytes(imagecodecs.png_encode(image, **PNG_OPTIONS))
    elif image_format == "jpeg":
        Image.fromarray(image).save(buffer, format="JPEG", quality=jpeg_quality)
    else:
        raise ValueError(f"unknown image format {image_format!r}; expected 'png' or 'jpeg'")
    return buffer.getvalue()


def resize_longer_side(image: np.ndarray, max_size: int) -> np.ndarray:
    """Resize so the longer side is ``max_size`` pixels (area filter); unchanged if already so."""
    height, width = image.shape
    scale = max_size / max(height, width)
    if max_size <= 0 or scale == 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


def prepare_image(
    path,
    image_format: str = "passthrough",
    max_size: int = 0,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    verify_frames: bool = True,
) -> PreparedImage:
    """Read the DICOM at ``path`` and encode it for a record.

    ``passthrough`` copies the JPEG frame (decoded once to check it unless ``verify_frames`` is
    False) when :func:`can_pass_through` and no resize is asked, and otherwise falls back to
    PNG; ``png`` and ``jpeg`` always decode and re-encode. Raises :class:`DicomError` naming
    the file when it cannot be used.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    path = Path(path)
    data = read_bytes(path)
    dataset = read_dataset(path, data)
    header = read_header(dataset, path)
    target_size = max_size if max_size > 0 else max(header.rows, header.columns)
    keep_size = target_size == max(header.rows, header.columns)
    passthrough = image_format == "passthrough" and keep_size and can_pass_through(dataset)
    frame_span = None
    if passthrough:
        encoded, out_format = jpeg_frame(dataset, path, verify_frames), "jpeg"
        height, width = header.rows, header.columns
        offset = find_in(data, encoded)
        frame_span = None if offset is None else (offset, len(encoded))
    else:
        image = resize_longer_side(decode_8bit(dataset, path), target_size)
        out_format = "jpeg" if image_format == "jpeg" else "png"
        encoded, (height, width) = encode(image, out_format, jpeg_quality), image.shape
    return PreparedImage(
        patient_id=path.stem,
        encoded=encoded,
        image_format=out_format,
        width=width,
        height=height,
        source_width=header.columns,
        source_height=header.rows,
        sha256=hashlib.sha256(encoded).hexdigest(),
        header=header,
        passthrough=passthrough,
        path=str(path),
        frame_span=frame_span,
        notes=header_notes(dataset, path, decoded=not passthrough),
    )


def header_notes(dataset: pydicom.Dataset, path: Path, decoded: bool) -> tuple[str, ...]:
    """What a reader should know about how this file was read (the header's PatientID is
    compared, never kept)."""
    notes = []
    header_id = str(dataset.get("PatientID", "") or "").strip()
    if header_id and header_id != path.stem:
        notes.append("the header's PatientID differs from the file name; the file name is used")
    if decoded and needs_window(dataset) and not header_window(dataset):
        low, high = ROBUST_PERCENTILES
        notes.append(f"deeper than 8 bits and no window in the header: windowed to the {low:g}th"
                     f"-{high:g}th percentiles of its pixels")
    return tuple(notes)


def read_bytes(path) -> bytes:
    """The bytes of the file at ``path``; :class:`DicomError` if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise DicomError(path, f"cannot read the file ({error})") from error


def find_in(data: bytes, part: bytes) -> int | None:
    """The offset of ``part`` in ``data`` (the first whole match), or None."""
    offset = data.find(part[:64])
    while offset >= 0 and data[offset:offset + len(part)] != part:
        offset = data.find(part[:64], offset + 1)
    return offset if offset >= 0 else None


def try_prepare_image(task: tuple) -> PreparedImage | DicomError:
    """:func:`prepare_image` for a worker pool: returns the error instead of raising it."""
    try:
        return prepare_image(*task)
    except DicomError as error:
        return error


def prepare_in_worker(task: tuple) -> PreparedImage | DicomError:
    """:func:`try_prepare_image`, leaving out a passthrough frame that lies in one piece in the
    file: a worker sends back only where it is (much less to copy between processes), and
    :func:`restore_frame` reads it back."""
    image = try_prepare_image(task)
    if isinstance(image, PreparedImage) and image.frame_span:
        return replace(image, encoded=b"")
    return image


def restore_frame(image: PreparedImage | DicomError) -> PreparedImage | DicomError:
    """Read a frame left out by :func:`prepare_in_worker` back from its file, checked by sha256."""
    if isinstance(image, DicomError) or image.encoded or not image.frame_span:
        return image
    offset, length = image.frame_span
    try:
        with open(image.path, "rb") as stream:
            stream.seek(offset)
            encoded = stream.read(length)
    except OSError as error:
        return DicomError(image.path, f"cannot read the JPEG frame back ({error})")
    if hashlib.sha256(encoded).hexdigest() != image.sha256:
        return DicomError(image.path, "file changed while it was being converted")
    return replace(image, encoded=encoded)
