"""Convert RSNA DICOMs (and their labels) into sharded OD API records with patient-level folds.

:func:`convert` is the whole stage: match DICOMs with label rows, split patients into folds,
read and encode the images in worker processes, write shards atomically, and record what
happened in ``manifest.json``. Output folder::

    label_map.pbtxt                        one class, 'opacity', id 1
    fold{k}-{i:05d}-of-{n:05d}.tfrecord    training set: every image in one fold
    test-{i:05d}-of-{n:05d}.tfrecord       test set (no labels)
    folds.csv                              patientId,fold,target,class,view_position
    manifest.json                          flags, counts, skipped inputs, shard sha256

Everything is written into ``<output>/.converting/`` and moved into place at the end, the old
manifest removed first and the new one moved last (:func:`swap_in`): a killed run leaves the
folder without a manifest, which :func:`tfod.data.manifest.check_converted` refuses, and never
a mix of two runs' shards.

A bad image or label row never stops the run: each becomes a ``skipped`` (dropped) or
``notes`` (kept but changed, e.g. a clipped box) entry naming its file and CSV line;
``strict=True`` turns any of them into :class:`StrictModeError`. What stops the whole run
(no DICOM folder, an unreadable labels file, more folds than patients, an unwritable output
folder) raises :class:`tfod.errors.BadInput`.

The worker pool starts first, so that its processes boot while this one imports TensorFlow,
reads the labels and splits the folds. Workers are spawned (a fresh interpreter: TensorFlow's
threads make forking unsafe) and re-import the caller's main module, so this module imports
neither TensorFlow nor scikit-learn at the top.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

import tfod
from tfod import boxes as box_ops
from tfod.data.dicom import (
    DEFAULT_JPEG_QUALITY,
    IMAGE_FORMATS,
    DicomError,
    PreparedImage,
    prepare_in_worker,
    restore_frame,
    try_prepare_image,
)
from tfod.data.input_files import by_patient, duplicate_reason
from tfod.data.labels import Issue, LabelSet, PatientLabels, load_labels
from tfod.data.manifest import (
    LABEL_MAP_NAME,
    MANIFEST_NAME,
    SHARD_FILE,
    file_sha256,
    split_images,
    write_manifest,
)
from tfod.errors import BadInput, RunFailed

log = logging.getLogger(__name__)

DEFAULT_IMAGES_PER_SHARD = 1000
EXPECTED_SIZE = (1024, 1024)
FOLDS_NAME = "folds.csv"
ISSUES_LOGGED = 20
MAX_CHUNK = 64  # images a worker reads per task: fewer, larger messages between processes
STAGING_NAME = ".converting"  # inside the output folder, so the final moves are renames
_OUR_FILES = {FOLDS_NAME, LABEL_MAP_NAME, MANIFEST_NAME}


class StrictModeError(RunFailed):
    """Raised by ``strict=True`` when any input was skipped or changed."""

    def __init__(self, issues: list[Issue], when: str):
        shown = "\n  ".join(str(issue) for issue in issues[:ISSUES_LOGGED])
        hidden = len(issues) - ISSUES_LOGGED
        more = f"\n  ... and {hidden} more" if hidden > 0 else ""
        super().__init__(f"--strict: {len(issues)} bad input(s) {when}:\n  {shown}{more}")
        self.issues = issues


@dataclass(frozen=True)
class Shard:
    """One output file and the patients that go into it, in order."""

    prefix: str  # 'fold{k}' or 'test'
    index: int
    count: int
    patient_ids: tuple[str, ...]

    @property
    def name(self) -> str:
        from tfod.data.records import shard_name

        return shard_name(self.prefix, self.index, self.count)


@dataclass
class SplitCounts:
    """What one fold (or the test set) holds."""

    images: int = 0
    positives: int = 0
    boxes: int = 0
    clipped_boxes: int = 0
    dropped_boxes: int = 0
    shards: int = 0


@dataclass
class Plan:
    """What to convert: shards in writing order plus the issues found while matching inputs."""

    shards: list[Shard]
    folds: dict[str, int] = field(default_factory=dict)
    skipped: list[Issue] = field(default_factory=list)
    notes: list[Issue] = field(default_factory=list)


@dataclass
class DicomFolder:
    """The DICOMs of a folder by patientId (the file name without its extension), and the
    patientIds that more than one file resolves to (``a.dcm`` and ``a.DCM``): none is used."""

    found: dict[str, Path]
    duplicates: dict[str, list[Path]]

    def issues(self) -> list[Issue]:
        return [Issue(str(path), (), patient_id, duplicate_reason(paths, "converted"))
                for patient_id, paths in sorted(self.duplicates.items()) for path in paths]


def find_dicoms(dicom_dir) -> DicomFolder:
    """Every ``*.dcm`` (any case) in ``dicom_dir``; :class:`BadInput` if none or no folder."""
    dicom_dir = Path(dicom_dir)
    if not dicom_dir.is_dir():
        raise BadInput("no such folder (--dicom_dir)", dicom_dir)
    paths = [path for path in sorted(dicom_dir.iterdir()) if path.suffix.lower() == ".dcm"]
    if not paths:
        raise BadInput("the folder holds no .dcm files (--dicom_dir)", dicom_dir)
    unique, duplicates = by_patient(paths)
    return DicomFolder({path.stem: path for path in unique}, duplicates)


def split_into_shards(prefix: str, patient_ids: list[str], images_per_shard: int) -> list[Shard]:
    """Spread ``patient_ids`` over as few shards as hold ``images_per_shard`` each, evenly."""
    count = max(1, math.ceil(len(patient_ids) / images_per_shard))
    parts = np.array_split(np.asarray(patient_ids, dtype=object), count)
    return [Shard(prefix, i, count, tuple(part)) for i, part in enumerate(parts)]


def plan_test_set(dicoms: DicomFolder, images_per_shard: int) -> Plan:
    """Every DICOM into ``test-*`` shards, in patientId order."""
    from tfod.data.records import TEST_PREFIX

    shards = split_into_shards(TEST_PREFIX, sorted(dicoms.found), images_per_shard)
    return Plan(shards, skipped=dicoms.issues())


def plan_training_set(dicoms: DicomFolder, labels: LabelSet, labels_csv, num_folds: int,
                      seed: int, images_per_shard: int) -> Plan:
    """Match DICOMs with labels, split the matched patients into folds, and lay out shards."""
    from tfod.data import splits
    from tfod.data.records import fold_prefix

    skipped = list(labels.issues) + dicoms.issues()
    for patient_id in sorted(set(labels.patients) - set(dicoms.found)):
        rows = labels.patients[patient_id].rows
        reason = (f"unused: {len(dicoms.duplicates[patient_id])} DICOM files for this patientId"
                  if patient_id in dicoms.duplicates
                  else f"label rows but no DICOM {patient_id}.dcm in the DICOM folder")
        skipped.append(Issue(str(labels_csv), rows, patient_id, reason))
    for patient_id in sorted(set(dicoms.found) - set(labels.patients)):
        skipped.append(Issue(str(dicoms.found[patient_id]), (), patient_id,
                             "DICOM has no usable label row; not converted (training mode)"))
    matched = [labels.patients[p] for p in sorted(set(dicoms.found) & set(labels.patients))]
    if num_folds > len(matched):
        raise BadInput(f"--num_folds={num_folds} is more than the {len(matched)} patient(s) "
                       "that have both a DICOM and a usable label row", labels_csv)
    try:
        folds = splits.folds_for_patients(matched, num_folds, seed)
    except BadInput as error:
        raise BadInput(error.reason, labels_csv) from None
    shards = []
    for fold in range(num_folds):
        members = [p for p, k in folds.items() if k == fold]
        shards += split_into_shards(fold_prefix(fold), members, images_per_shard)
    return Plan(shards, folds, skipped, notes=list(labels.notes))


class ImageReader:
    """Reads and encodes DICOMs in order, in ``workers`` spawned processes (or in this one).

    Create it before slow set-up work: the processes boot meanwhile. Use as a context manager.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None

    def read(self, paths: list[Path], *options) -> Iterator[PreparedImage | DicomError]:
        """One result per path, in the order of ``paths``; ``options``: the rest of
        :func:`~tfod.data.dicom.prepare_image`'s arguments."""
        tasks = [(str(path), *options) for path in paths]
        if self._pool is None:
            return map(try_prepare_image, tasks)
        chunksize = max(1, min(MAX_CHUNK, len(tasks) // (self.workers * 8)))
        return map(restore_frame, self._pool.imap(prepare_in_worker, tasks, chunksize=chunksize))

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *error) -> None:
        if self._pool is not None:
            self._pool.terminate()


class _Recorder:
    """Turns prepared images into serialized records, counting boxes and collecting issues."""

    def __init__(self, labels: LabelSet | None, labels_csv, plan: Plan, box_masks: bool = False):
        self.box_masks = box_masks
        self.labels = labels
        self.labels_csv = str(labels_csv)
        self.plan = plan
        self.counts: dict[str, SplitCounts] = {}
        self.view_positions: dict[str, str] = {}

    def record(self, shard: Shard, result: PreparedImage | DicomError) -> bytes | None:
        """The serialized example for ``result``, or None when the image is skipped."""
        from tfod.data.records import RecordImage, encode_example

        patient = self.labels.patients[_patient_id(result)] if self.labels else None
        if isinstance(result, DicomError):
            self._skip_dicom(result, patient)
            return None
        self._check_size(result)
        self.plan.notes += [Issue(result.path, (), result.patient_id, note)
                            for note in result.notes]
        boxes_yxyx = self._boxes(shard.prefix, result, patient) if patient else np.zeros((0, 4))
        if patient and patient.target == 1 and len(boxes_yxyx) == 0:
            self.plan.skipped.append(Issue(self.labels_csv, patient.rows, patient.patient_id,
                                           "every box lies outside the image: image skipped"))
            return None
        counts = self.counts.setdefault(shard.prefix, SplitCounts())
        counts.images += 1
        counts.positives += int(len(boxes_yxyx) > 0)
        counts.boxes += len(boxes_yxyx)
        self.view_positions[result.patient_id] = result.header.view_position
        image = RecordImage(result.encoded, result.image_format, result.height, result.width,
                            result.patient_id, result.sha256, result.source_height,
                            result.source_width)
        return encode_example(image, boxes_yxyx, box_masks=self.box_masks)

    def _skip_dicom(self, error: DicomError, patient: PatientLabels | None) -> None:
        """Skip the DICOM and, in training mode, its label rows (one entry for each input)."""
        self.plan.skipped.append(Issue(error.path, (), Path(error.path).stem, error.reason))
        if patient:
            self.plan.skipped.append(Issue(self.labels_csv, patient.rows, patient.patient_id,
                                           f"unused: its DICOM was skipped ({error.reason})"))

    def _check_size(self, result: PreparedImage) -> None:
        size = (result.source_width, result.source_height)
        if size != EXPECTED_SIZE:
            self.plan.notes.append(Issue(
                result.path, (), result.patient_id,
                f"image is {size[0]}x{size[1]}, not 1024x1024: boxes normalized by its own size"))

    def _boxes(self, prefix: str, result: PreparedImage, patient: PatientLabels) -> np.ndarray:
        width, height = result.source_width, result.source_height
        clip = box_ops.clip_xywh(patient.boxes, width, height)
        counts = self.counts.setdefault(prefix, SplitCounts())
        counts.clipped_boxes += int(clip.clipped.sum())
        counts.dropped_boxes += int(clip.outside.sum())
        for box, line, clipped, outside in zip(patient.boxes, patient.box_rows, clip.clipped,
                                               clip.outside, strict=True):
            where = f"box {box.tolist()} {{}} the {width}x{height} image"
            if clipped:
                self.plan.notes.append(Issue(self.labels_csv, (line,), patient.patient_id,
                                             where.format("partly outside") + ": clipped"))
            if outside:
                self.plan.skipped.append(Issue(self.labels_csv, (line,), patient.patient_id,
                                               where.format("wholly outside") + ": dropped"))
        return box_ops.xywh_to_yxyx(clip.boxes, width, height)


def _patient_id(result: PreparedImage | DicomError) -> str:
    return Path(result.path).stem if isinstance(result, DicomError) else result.patient_id


def write_shards(output_dir: Path, plan: Plan, results: Iterable, recorder: _Recorder,
                 progress: bool) -> list[dict]:
    """Write every shard of ``plan`` from ``results`` (in plan order); their manifest entries."""
    from tfod.data.records import ShardWriter

    results = iter(results)
    entries = []
    total = sum(len(shard.patient_ids) for shard in plan.shards)
    with tqdm(total=total, unit="img", desc="convert", disable=not progress) as bar:
        for shard in plan.shards:
            with ShardWriter(output_dir / shard.name) as writer:
                for _ in shard.patient_ids:
                    serialized = recorder.record(shard, next(results))
                    if serialized is not None:
                        writer.write(serialized)
                    bar.update()
            recorder.counts.setdefault(shard.prefix, SplitCounts()).shards += 1
            entries.append({"file": shard.name, "split": shard.prefix, "images": writer.count,
                            "bytes": writer.path.stat().st_size,
                            "sha256": file_sha256(writer.path)})
    return entries


def staging_folder(output_dir: Path) -> Path:
    """A fresh, empty staging folder inside ``output_dir`` (a killed run's one is removed);
    :class:`BadInput` when ``output_dir`` cannot be written."""
    staging = output_dir / STAGING_NAME
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    except OSError as error:
        raise BadInput(f"cannot write the output folder ({error.strerror or error})",
                       output_dir) from error
    return staging


def swap_in(staging: Path, output_dir: Path) -> None:
    """Replace the converter's files in ``output_dir`` by those of ``staging``, manifest last.

    The old manifest goes first, so that from then until the new one arrives the folder does
    not look finished; other files in ``output_dir`` are left alone.
    """
    (output_dir / MANIFEST_NAME).unlink(missing_ok=True)
    new = {path.name for path in staging.iterdir()}
    for path in output_dir.iterdir():
        if path.name in _OUR_FILES or SHARD_FILE.match(path.name):
            if path.name not in new:
                log.warning("removing %s: left by an earlier run, not part of this one", path)
            path.unlink()
    for name in sorted(new - {MANIFEST_NAME}) + [MANIFEST_NAME]:
        os.replace(staging / name, output_dir / name)
    staging.rmdir()


def convert(
    dicom_dir,
    output_dir,
    labels_csv=None,
    class_info_csv=None,
    headers_csv=None,
    *,
    num_folds: int = 5,
    seed: int = 42,
    images_per_shard: int = DEFAULT_IMAGES_PER_SHARD,
    image_format: str = "passthrough",
    max_size: int = 0,
    workers: int | None = None,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    verify_frames: bool = True,
    box_masks: bool = False,
    strict: bool = False,
    progress: bool = True,
) -> dict:
    """Convert the DICOMs of ``dicom_dir`` into records in ``output_dir``; return the manifest.

    With ``labels_csv`` the images are a training set split into ``num_folds`` patient-level
    folds (stratified by ``class_info_csv``'s class when given, else by Target); without it
    they are a test set. ``max_size`` > 0 resizes so the longer side has that many pixels.
    ``verify_frames`` decodes each passed-through JPEG frame once, in the workers, and skips a
    damaged one. ``box_masks`` adds a box-shaped PNG instance mask per box
    (``image/object/mask``, for Mask R-CNN), drawn in the parent process. ``workers`` defaults
    to all cores. Everything is written into a staging folder and swapped in at the end (see
    :func:`swap_in`). Raises :class:`tfod.errors.BadInput` for an input that stops the whole
    run, and :class:`StrictModeError` when ``strict`` and any input was skipped or changed (the
    label check happens before any image is read).
    """
    flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}
    _check_options(image_format, images_per_shard, max_size, num_folds)
    output_dir = Path(output_dir)
    with ImageReader(workers or os.cpu_count() or 1) as reader:  # boots during the set-up
        dicoms = find_dicoms(dicom_dir)
        labels = load_labels(labels_csv, class_info_csv, headers_csv) if labels_csv else None
        if labels:
            plan = plan_training_set(dicoms, labels, labels_csv, num_folds, seed,
                                     images_per_shard)
        else:
            plan = plan_test_set(dicoms, images_per_shard)
        if strict and plan.skipped:
            raise StrictModeError(plan.skipped, "found before converting; nothing written")
        staging = staging_folder(output_dir)
        recorder = _Recorder(labels, labels_csv, plan, box_masks)
        ordered = [dicoms.found[p] for shard in plan.shards for p in shard.patient_ids]
        results = reader.read(ordered, image_format, max_size, jpeg_quality, verify_frames)
        shards = write_shards(staging, plan, results, recorder, progress)
    manifest = _finish(staging, flags, plan, recorder, shards, labels)
    swap_in(staging, output_dir)
    _log_issues(plan)
    if strict and (plan.skipped or plan.notes):
        raise StrictModeError(plan.skipped + plan.notes, f"while converting (see {MANIFEST_NAME})")
    return manifest


def _finish(staging: Path, flags: dict, plan: Plan, recorder: _Recorder, shards: list[dict],
            labels: LabelSet | None) -> dict:
    """Write the label map, folds.csv and manifest into ``staging``; the manifest."""
    from tfod.data import records, splits

    records.write_label_map(staging)
    if labels:
        table = splits.folds_table(_converted_folds(plan, recorder), labels.patients,
                                   recorder.view_positions)
        splits.write_folds_csv(table, staging / FOLDS_NAME)
    for split, images in split_images({"shards": shards}).items():
        if images == 0:
            plan.notes.append(Issue(flags["output_dir"], (), "", f"{split} has no image: every "
                                    "input of it was skipped; training cannot hold it out"))
    manifest = _manifest(flags, plan, recorder, shards, mode="train" if labels else "test")
    write_manifest(manifest, staging)
    return manifest


def _check_options(image_format: str, images_per_shard: int, max_size: int, num_folds: int):
    if image_format not in IMAGE_FORMATS:
        raise BadInput(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if images_per_shard < 1:
        raise BadInput(f"images_per_shard must be at least 1, got {images_per_shard}")
    if max_size < 0:
        raise BadInput(f"max_size must be 0 (keep) or positive, got {max_size}")
    if num_folds < 1:
        raise BadInput(f"num_folds must be at least 1, got {num_folds}")


def _converted_folds(plan: Plan, recorder: _Recorder) -> dict[str, int]:
    return {p: fold for p, fold in plan.folds.items() if p in recorder.view_positions}


def _manifest(flags: dict, plan: Plan, recorder: _Recorder, shards: list[dict], mode: str) -> dict:
    per_split = {prefix: asdict(counts) for prefix, counts in sorted(recorder.counts.items())}
    totals = {key: sum(c[key] for c in per_split.values()) for key in asdict(SplitCounts())}
    return {
        "tfod_version": tfod.__version__,
        "mode": mode,
        "flags": flags,
        "label_map": "label_map.pbtxt",
        "folds_csv": FOLDS_NAME if mode == "train" else None,
        "counts": {**per_split, "total": {**totals, "skipped_inputs": len(plan.skipped),
                                          "notes": len(plan.notes)}},
        "shards": shards,
        "skipped": [issue.as_dict() for issue in plan.skipped],
        "notes": [issue.as_dict() for issue in plan.notes],
    }


def _log_issues(plan: Plan) -> None:
    for kind, issues in (("skipped", plan.skipped), ("note", plan.notes)):
        for issue in issues[:ISSUES_LOGGED]:
            log.warning("%s: %s", kind, issue)
        if len(issues) > ISSUES_LOGGED:
            log.warning("... and %d more %s entries in %s", len(issues) - ISSUES_LOGGED, kind,
                        MANIFEST_NAME)


def format_summary(manifest: dict) -> str:
    """The manifest's counts as a table, one row per fold (or the test set) plus a total."""
    columns = list(asdict(SplitCounts()))
    header = f"{'split':<8}" + "".join(f"{name.replace('_', ' '):>15}" for name in columns)
    lines = [header, "-" * len(header)]
    for split, counts in manifest["counts"].items():
        lines.append(f"{split:<8}" + "".join(f"{counts[name]:>15}" for name in columns))
    total = manifest["counts"]["total"]
    lines.append(f"skipped inputs: {total['skipped_inputs']}, notes: {total['notes']}"
                 f" (each listed in {MANIFEST_NAME})")
    return "\n".join(lines)
