"""The classifier's inputs: labels and images from a converted folder, as ``tf.data``.

A converted folder (``tfod-convert``) holds OD API records; the classifier reads three of their
keys: the encoded image, the patientId and one box coordinate list, whose length says whether
the image shows an opacity (the binary label). With a class-info CSV (``patientId,class``: the
official ``stage_2_detailed_class_info.csv`` or the folder's own ``folds.csv``) the label is the
3-way class instead, one-hot in :data:`CLASSES` order, whose last entry is the opacity.

:func:`decode_image` is the one image path of training, evaluation, prediction and the exported
SavedModel (encoded JPEG/PNG bytes -> grayscale -> resized -> 3 channels, 0..255), so a DICOM
and its record give the same probability.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from tfod.data import records, splits
from tfod.data.convert import FOLDS_NAME, MANIFEST_NAME
from tfod.detections import read_table
from tfod.errors import BadInput

CLASSES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")  # the opacity comes last
ALL_FOLDS = -1
_ENCODED, _SOURCE_ID, _BOX_COORDINATE = (
    "image/encoded", "image/source_id", "image/object/bbox/xmin")  # keys of records.encode_example
_FEATURES = {
    _ENCODED: tf.io.FixedLenFeature([], tf.string),
    _SOURCE_ID: tf.io.FixedLenFeature([], tf.string),
    _BOX_COORDINATE: tf.io.VarLenFeature(tf.float32),
}
SHUFFLE_BUFFER = 512
BRIGHTNESS_DELTA = 0.08 * 255  # light intensity jitter: +-8% brightness, +-10% contrast
CONTRAST_RANGE = (0.9, 1.1)


@dataclass(frozen=True)
class Split:
    """The record globs to train on and to evaluate on for one fold (-1: all, both)."""

    train: list[str]
    eval: list[str]
    folds: list[int]


def split_for(data_dir, fold: int) -> Split:
    """The globs of ``fold`` in a finished converted folder; :class:`BadInput` otherwise."""
    from tfod.config.pipeline import check_data_for_fold  # the check tfod-train makes

    data_dir = Path(data_dir)
    if not (data_dir / MANIFEST_NAME).is_file():
        raise BadInput(f"not a finished tfod-convert folder (no {MANIFEST_NAME})", data_dir)
    folds = records.find_folds(data_dir)
    if not folds:
        raise BadInput("no fold*.tfrecord shards (a test-set conversion has no labels)", data_dir)
    if fold != ALL_FOLDS and fold not in folds:
        raise BadInput(f"--fold={fold} is not among the folds {folds} (or -1 for all)", data_dir)
    if fold != ALL_FOLDS and len(folds) == 1:
        raise BadInput("a single fold leaves nothing to train on; use --fold=-1", data_dir)
    check_data_for_fold(data_dir, fold)
    if fold == ALL_FOLDS:
        every = records.train_globs(data_dir, ALL_FOLDS, folds)
        return Split(every, every, folds)
    return Split(records.train_globs(data_dir, fold, folds), [records.eval_glob(data_dir, fold)],
                 folds)


def read_class_info(path) -> dict[str, int]:
    """``{patientId: index in CLASSES}`` from a CSV with ``patientId`` and ``class`` columns."""
    table = read_table(path, ["patientId", "class"])
    bad = ~table["class"].isin(CLASSES)
    if bad.any():
        line = int(table.index[bad.to_numpy().argmax()])
        raise BadInput(f"class {table['class'][line]!r} is not one of {CLASSES}", path, line)
    table = table.drop_duplicates("patientId")
    return dict(zip(table["patientId"], table["class"].map(CLASSES.index), strict=True))


def check_class_info(class_info: dict[str, int], data_dir, path) -> None:
    """:class:`BadInput` when a patient of the converted folder has no class in ``path``."""
    patients = splits.read_folds_csv(Path(data_dir) / FOLDS_NAME)["patientId"]
    missing = sorted(set(patients) - set(class_info))
    if missing:
        raise BadInput(f"{len(missing)} patient(s) of {data_dir} have no class, e.g. "
                       f"{missing[:3]}", path)


def decode_image(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded JPEG/PNG bytes -> float32 ``image_size`` x ``image_size`` x 3 in 0..255."""
    image = tf.io.decode_image(encoded, channels=1, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], antialias=True)
    return tf.image.grayscale_to_rgb(tf.clip_by_value(image, 0.0, 255.0))


def augment(image: tf.Tensor) -> tf.Tensor:
    """Random horizontal flip and a light brightness/contrast jitter (training only)."""
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_brightness(image, BRIGHTNESS_DELTA)
    image = tf.image.random_contrast(image, *CONTRAST_RANGE)
    return tf.clip_by_value(image, 0.0, 255.0)


def _parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    example = tf.io.parse_single_example(serialized, _FEATURES)
    return {"encoded": example[_ENCODED], "patient_id": example[_SOURCE_ID],
            "has_box": tf.size(example[_BOX_COORDINATE].values) > 0}


def examples(globs: list[str]) -> tf.data.Dataset:
    """``{encoded, patient_id, has_box}`` per record of ``globs``, in file order."""
    files = sorted({name for pattern in globs for name in tf.io.gfile.glob(pattern)})
    if not files:
        raise BadInput(f"no TFRecord file matches {globs}")
    return tf.data.TFRecordDataset(files).map(_parse, num_parallel_calls=tf.data.AUTOTUNE)


def read_examples(globs: list[str]) -> Iterator[tuple[str, bytes, bool]]:
    """``(patientId, encoded image, has a box)`` per record of ``globs``, in file order."""
    for example in examples(globs).as_numpy_iterator():
        yield example["patient_id"].decode(), example["encoded"], bool(example["has_box"])


class Labeler:
    """The training target of an example: ``[has_box]`` or the one-hot 3-way class."""

    def __init__(self, class_info: dict[str, int] | None = None):
        self.table = None
        if class_info:
            self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                list(class_info), list(class_info.values()), tf.string, tf.int64), default_value=-1)

    @property
    def num_outputs(self) -> int:
        return 1 if self.table is None else len(CLASSES)

    def __call__(self, example: dict[str, tf.Tensor]) -> tf.Tensor:
        if self.table is None:
            return tf.cast(example["has_box"], tf.float32)[None]
        index = self.table.lookup(example["patient_id"])
        check = tf.debugging.assert_non_negative(
            index, message="a record's patientId has no row in the class-info CSV")
        with tf.control_dependencies([check]):
            return tf.one_hot(index, len(CLASSES))


def training_dataset(globs: list[str], image_size: int, batch_size: int, labeler: Labeler,
                     seed: int | None = None) -> tf.data.Dataset:
    """Shuffled, repeated, augmented ``(images, labels)`` batches."""
    def pair(example):
        return augment(decode_image(example["encoded"], image_size)), labeler(example)

    return (examples(globs).shuffle(SHUFFLE_BUFFER, seed=seed).repeat()
            .map(pair, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def evaluation_dataset(globs: list[str], image_size: int, batch_size: int,
                       labeler: Labeler) -> tf.data.Dataset:
    """``(images, labels)`` batches of every record once, unaugmented."""
    def pair(example):
        return decode_image(example["encoded"], image_size), labeler(example)

    return (examples(globs).map(pair, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))
