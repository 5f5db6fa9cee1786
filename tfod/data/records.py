"""OD API ``tf.train.Example`` records: encode, decode, sharded atomic writing, label map.

Besides the OD API's keys, every record holds the DICOM's own size (``image/original_height``,
``image/original_width``, int64; equal to ``image/height``/``width`` unless resized), the pixel
frame in which labels and predictions are given, so boxes can be mapped back to it.

Shard names: ``fold{k}-{i:05d}-of-{n:05d}.tfrecord`` for fold ``k`` of a training set and
``test-{i:05d}-of-{n:05d}.tfrecord`` for a test set, so that training on fold ``k`` reads the
other folds' globs and evaluation reads fold ``k``'s. A shard is written under a hidden
temporary name (``.<name>.incomplete``) and renamed when complete, so an interrupted run never
leaves a file that a glob mistakes for a finished shard.

With ``box_masks`` an example also carries box-shaped instance masks for Mask R-CNN under
``image/object/mask``, in the form the OD API's ``TfExampleDecoder`` reads with
``load_instance_masks: true`` and ``mask_type: PNG_MASKS``: one image-sized PNG per object
(1-bit grayscale, 1 inside the box; the decoder keeps pixels > 0), an empty list for an image
without objects.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image

import tfod.compat  # noqa: F401  (fixes the stack; must precede the OD API imports)

# isort: split
from object_detection.protos import string_int_label_map_pb2
from object_detection.utils import dataset_util

from tfod import boxes as box_ops
from tfod.data.manifest import LABEL_MAP_NAME

IMAGE_KEY = "image/encoded"
FORMAT_KEY = "image/format"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"
FILENAME_KEY = "image/filename"
SOURCE_ID_KEY = "image/source_id"  # the patientId
SHA256_KEY = "image/key/sha256"
BOX_KEYS = ("image/object/bbox/ymin", "image/object/bbox/xmin", "image/object/bbox/ymax",
            "image/object/bbox/xmax")  # normalized, in this order
CLASS_TEXT_KEY = "image/object/class/text"
CLASS_LABEL_KEY = "image/object/class/label"
MASK_KEY = "image/object/mask"
ORIGINAL_HEIGHT_KEY = "image/original_height"  # the DICOM's size, before --max_size
ORIGINAL_WIDTH_KEY = "image/original_width"
CLASS_NAME = "opacity"
CLASS_ID = 1
TEST_PREFIX = "test"
SHARD_SUFFIX = ".tfrecord"
INCOMPLETE_SUFFIX = ".incomplete"
FOLD_SHARD = re.compile(r"^fold(\d+)-\d{5}-of-\d{5}\.tfrecord$")


@dataclass(frozen=True)
class RecordImage:
    """The image part of a record."""

    encoded: bytes
    image_format: str  # 'jpeg' or 'png'
    height: int
    width: int
    source_id: str  # the patientId
    sha256: str  # hex digest of ``encoded``
    original_height: int | None = None  # of the DICOM, before any resize; None: height
    original_width: int | None = None

    @property
    def original_size(self) -> tuple[int, int]:
        """(height, width) of the DICOM, the pixel frame of the labels and the submission."""
        return (self.original_height or self.height, self.original_width or self.width)

    @property
    def filename(self) -> str:
        return f"{self.source_id}.dcm"


def box_mask_png(rect, width: int, height: int) -> bytes:
    """A ``width`` x ``height`` 1-bit PNG, 1 inside ``rect`` (``top, left, bottom, right``,
    bottom and right exclusive, as :func:`tfod.boxes.yxyx_to_pixel_rects` gives) and 0 outside.
    """
    top, left, bottom, right = (int(edge) for edge in rect)
    mask = Image.new("1", (width, height), 0)
    mask.paste(1, (left, top, right, bottom))
    stream = io.BytesIO()
    mask.save(stream, format="PNG")
    return stream.getvalue()


def box_masks_png(boxes_yxyx, width: int, height: int) -> list[bytes]:
    """One :func:`box_mask_png` per normalized ``ymin, xmin, ymax, xmax`` box."""
    rects = box_ops.yxyx_to_pixel_rects(boxes_yxyx, width, height).reshape(-1, 4)
    return [box_mask_png(rect, width, height) for rect in rects]


def encode_example(image: RecordImage, boxes_yxyx=(), box_masks: bool = False) -> bytes:
    """Serialize one image and its normalized ``ymin, xmin, ymax, xmax`` boxes (class opacity).

    ``box_masks`` adds one box-shaped PNG instance mask per box (see the module docstring),
    drawn from the float32 boxes the record stores. Serialization is deterministic (sorted
    feature keys), so equal inputs give equal bytes.
    """
    boxes = np.asarray(boxes_yxyx, dtype=np.float32).reshape(-1, 4)
    count = len(boxes)
    feature = {
        IMAGE_KEY: dataset_util.bytes_feature(image.encoded),
        FORMAT_KEY: dataset_util.bytes_feature(image.image_format.encode()),
        HEIGHT_KEY: dataset_util.int64_feature(image.height),
        WIDTH_KEY: dataset_util.int64_feature(image.width),
        ORIGINAL_HEIGHT_KEY: dataset_util.int64_feature(image.original_size[0]),
        ORIGINAL_WIDTH_KEY: dataset_util.int64_feature(image.original_size[1]),
        FILENAME_KEY: dataset_util.bytes_feature(image.filename.encode()),
        SOURCE_ID_KEY: dataset_util.bytes_feature(image.source_id.encode()),
        SHA256_KEY: dataset_util.bytes_feature(image.sha256.encode()),
        **{key: dataset_util.float_list_feature(boxes[:, i].tolist())
           for i, key in enumerate(BOX_KEYS)},
        CLASS_TEXT_KEY: dataset_util.bytes_list_feature([CLASS_NAME.encode()] * count),
        CLASS_LABEL_KEY: dataset_util.int64_list_feature([CLASS_ID] * count),
    }
    if box_masks:
        feature[MASK_KEY] = dataset_util.bytes_list_feature(
            box_masks_png(boxes, image.width, image.height))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def decode_example(serialized: bytes) -> dict:
    """A record back as plain Python: image fields, ``boxes`` (N, 4) normalized yxyx and
    ``masks`` (the PNG instance masks; empty without ``box_masks``)."""
    features = tf.train.Example.FromString(serialized).features.feature

    def first(key):
        values = features[key]
        return (values.bytes_list.value or values.int64_list.value)[0]

    boxes = np.stack([np.asarray(features[key].float_list.value, dtype=np.float32)
                      for key in BOX_KEYS], axis=-1).reshape(-1, 4)
    return {
        "encoded": first(IMAGE_KEY),
        "format": first(FORMAT_KEY).decode(),
        "height": int(first(HEIGHT_KEY)),
        "width": int(first(WIDTH_KEY)),
        "original_height": int(first(ORIGINAL_HEIGHT_KEY)),
        "original_width": int(first(ORIGINAL_WIDTH_KEY)),
        "filename": first(FILENAME_KEY).decode(),
        "source_id": first(SOURCE_ID_KEY).decode(),
        "sha256": first(SHA256_KEY).decode(),
        "boxes": boxes,
        "class_text": [v.decode() for v in features[CLASS_TEXT_KEY].bytes_list.value],
        "class_label": list(features[CLASS_LABEL_KEY].int64_list.value),
        "masks": list(features[MASK_KEY].bytes_list.value) if MASK_KEY in features else [],
    }


def fold_prefix(fold: int) -> str:
    return f"fold{fold}"


def shard_name(prefix: str, index: int, count: int) -> str:
    """``('fold0', 1, 3)`` -> ``'fold0-00001-of-00003.tfrecord'``."""
    return f"{prefix}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def shard_glob(prefix: str) -> str:
    """The glob matching every shard of ``prefix`` (e.g. 'fold2' or 'test')."""
    return f"{prefix}-?????-of-?????{SHARD_SUFFIX}"


def find_folds(output_dir) -> list[int]:
    """The fold numbers that have finished ``fold{k}-*`` shards in a converted folder."""
    names = (path.name for path in Path(output_dir).glob(shard_glob("fold*")))
    return sorted({int(match.group(1)) for name in names if (match := FOLD_SHARD.match(name))})


def train_globs(output_dir, fold: int, folds) -> list[str]:
    """Input globs to train on while fold ``fold`` is held out: every other fold of ``folds``."""
    return [str(Path(output_dir) / shard_glob(fold_prefix(k))) for k in folds if k != fold]


def eval_glob(output_dir, fold: int) -> str:
    """Input glob to evaluate on fold ``fold``."""
    return str(Path(output_dir) / shard_glob(fold_prefix(fold)))


def read_records(paths, limit: int | None = None) -> list[bytes]:
    """Every serialized record of ``paths`` (files or globs), in file order (the first
    ``limit`` of them, with a limit)."""
    files = sorted({f for p in ([paths] if isinstance(paths, str | Path) else paths)
                    for f in tf.io.gfile.glob(str(p))})
    dataset = tf.data.TFRecordDataset(files)
    return [record.numpy() for record in (dataset if limit is None else dataset.take(limit))]


class ShardWriter:
    """Write one shard under a temporary name; rename it into place only when closed cleanly.

    Use as a context manager: leaving the block by an exception deletes the temporary file.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.temporary = self.path.with_name(f".{self.path.name}{INCOMPLETE_SUFFIX}")
        self._writer = tf.io.TFRecordWriter(str(self.temporary))
        self.count = 0

    def write(self, serialized: bytes) -> None:
        self._writer.write(serialized)
        self.count += 1

    def close(self) -> Path:
        """Finish the shard and give it its final name."""
        self._writer.close()
        os.replace(self.temporary, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the unfinished shard."""
        self._writer.close()
        self.temporary.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.close()
        else:
            self.abort()


def write_label_map(output_dir, classes: dict[int, str] | None = None) -> Path:
    """Write the OD API label map (``{1: 'opacity'}`` by default; ids start at 1)."""
    classes = classes or {CLASS_ID: CLASS_NAME}
    label_map = string_int_label_map_pb2.StringIntLabelMap()
    for class_id, name in sorted(classes.items()):
        if class_id < 1:
            raise ValueError(f"label map ids start at 1, got {class_id} for {name!r}")
        label_map.item.add(id=class_id, name=name)
    path = Path(output_dir) / LABEL_MAP_NAME
    path.write_text(text_format.MessageToString(label_map))
    return path
