"""Export one checkpoint of a run folder as an OD API detection SavedModel.

:func:`export` picks the checkpoint (``best``: the evaluator's best by ``rsna/score``, kept
in ``best/``; ``latest``; or ``ckpt-N``), applies export-time overrides to the run's
``pipeline.config`` (post-processing: score threshold, number of boxes) with
:func:`tfod.config.overrides.apply_overrides`, and calls the OD API's
``exporter_lib_v2.export_inference_graph`` unchanged.

* Input signature ``float_image_tensor``: a float32 ``[None, None, None, 3]`` batch. In
  ``exporter_lib_v2`` the ``image_tensor`` signature is ``[1, None, None, 3]`` (one image per
  call), and ``encoded_image_string_tensor``/``tf_example`` would make the model decode JPEG
  or PNG, which DICOMs are not; with floats the host decodes DICOMs as the converter does,
  resizes them and sends a batch.
* ``export_inference_graph`` restores the *latest* checkpoint of the folder it is given; the
  chosen checkpoint is linked into a temporary folder with its own ``checkpoint`` state file,
  so nothing of the OD API is patched and the run folder is not touched.
* One export at a time writes ``output_dir``: it holds the lock ``.<output_dir name>.lock``
  beside it (:class:`tfod.runfolder.PidLock`); a second export of the same folder is refused,
  naming the holder's pid (training the run is not blocked: exports read checkpoints only).
* The export is written to its own staging folder (``.<output_dir name>.incoming-<pid>``,
  staging folders left by killed exports are removed), smoke-tested (reloaded and run on one
  real image of the run's evaluation records) and only then moved to ``output_dir``, with
  ``export.json``: the checkpoint, its step, its ``rsna/score`` and threshold from the
  evaluator, the input size, the overrides and the versions.
* ``formats`` (``tfod-export --format``) adds ONNX and TFLite models and ``serving_input``
  a TF Serving SavedModel, converted in the staging folder (:mod:`tfod.infer.convert`); a
  model family that does not convert is refused before anything is built
  (:func:`tfod.infer.formats.check_formats`), and ``export.json``'s ``formats`` names the
  files written.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import tfod.compat  # noqa: F401  (before object_detection)
from tfod.errors import BadInput
from tfod.infer.convert import DEFAULT_CALIBRATION_IMAGES, write_formats
from tfod.infer.formats import SAVEDMODEL, SERVING_INPUTS, check_formats
from tfod.infer.inputs import decode_encoded
from tfod.infer.model import DETECTION_OUTPUTS, ExportedModel, fixed_input_size
from tfod.runfolder import (
    Checkpoint,
    ExportFolder,
    LockHeld,
    PidLock,
    RunFolder,
    checkpoint_step,
    checkpoint_variables,
    latest_checkpoint,
    list_checkpoints,
    read_best_checkpoint,
    read_json,
    write_json,
)

INPUT_TYPE = "float_image_tensor"
CHECKPOINT_NAME = re.compile(r"^ckpt-\d+$")


def export(run_dir, checkpoint: str = "best", output_dir=None, overrides: Sequence[str] = (),
           formats: Sequence[str] = (SAVEDMODEL,), serving_input: str = "float",
           calibration_images: int = DEFAULT_CALIBRATION_IMAGES) -> dict:
    """Export ``checkpoint`` of ``run_dir`` to ``output_dir`` (default ``<run_dir>/exported``);
    return the ``export.json`` record (also written into the export folder).

    The SavedModel is always written; ``formats`` adds ONNX and TFLite models and
    ``serving_input="encoded"`` a TF Serving SavedModel taking PNG/JPEG bytes
    (:mod:`tfod.infer.convert`)."""
    run = RunFolder(run_dir)
    if not run.pipeline_config.is_file():
        raise BadInput("not a run folder (no pipeline.config)", run.root)
    _check_format_options(run, formats, serving_input, calibration_images)
    pipeline = export_pipeline(run, overrides)
    chosen = pick_checkpoint(run, checkpoint)
    output = Path(output_dir).expanduser().resolve() if output_dir else run.exported
    with _export_lock(output):
        _check_replaceable(output)
        staging = _fresh(output)
        try:
            with tempfile.TemporaryDirectory(prefix="tfod-export-") as folder:
                staged = stage_checkpoint(chosen, Path(folder))
                _export_graph(pipeline, staged, staging, overrides)
                converted = write_formats(pipeline, staged, staging, formats, serving_input,
                                          calibration_images)
            record = {**export_record(run, chosen, pipeline, overrides), **converted}
            record["smoke_test"] = smoke_test(staging, pipeline)
            write_json(ExportFolder(staging).export_json, record)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # a failed export leaves nothing behind
            raise
        _replace(staging, output)
    record["output_dir"] = str(output)
    return record


@contextmanager
def _export_lock(output: Path) -> Iterator[None]:
    """Hold ``output``'s export lock, or raise :class:`BadInput` naming the export holding it."""
    lock = PidLock(output.with_name(f".{output.name}.lock"))
    try:
        lock.acquire()
    except LockHeld as held:
        raise BadInput(f"another tfod-export (pid {held.holder}) is writing this folder (lock "
                       f"{held.path}): wait for it to finish", output) from None
    try:
        yield
    finally:
        lock.release()


def _check_format_options(run: RunFolder, formats, serving_input: str,
                          calibration_images: int) -> None:
    """Refuse a format the run's model family does not convert to, before any work."""
    from tfod.config.pipeline import read_configs

    if serving_input not in SERVING_INPUTS:
        raise BadInput(f"--serving_input must be one of {', '.join(SERVING_INPUTS)}, got "
                       f"{serving_input!r}")
    if calibration_images < 1:
        raise BadInput(f"--calibration_images must be at least 1, got {calibration_images}")
    model = read_configs(run.pipeline_config)["model"]
    check_formats(model, formats)


def _export_graph(pipeline, checkpoint_dir: Path, staging: Path, overrides) -> None:
    """``export_inference_graph``; a model the overrides made unbuildable is bad input."""
    from object_detection import exporter_lib_v2

    try:
        exporter_lib_v2.export_inference_graph(INPUT_TYPE, pipeline, str(checkpoint_dir),
                                               str(staging))
    except ValueError as error:
        if not overrides:
            raise
        raise BadInput(f"the OD API cannot build the model with these overrides ({error})",
                       "--config_override") from error


def pick_checkpoint(run: RunFolder, which: str) -> Checkpoint:
    """``best``, ``latest`` or ``ckpt-N`` of ``run`` -> the checkpoint, which holds weights."""
    checkpoint = _find_checkpoint(run, which)
    if not any(name.startswith("model/") for name in checkpoint_variables(checkpoint.path,
                                                                         verify=True)):
        raise BadInput(f"checkpoint {checkpoint.name} (step {checkpoint.step}) holds no model "
                       "weights (the trainer saves one before the model is built): export a "
                       "later one", run.root)
    return checkpoint


def _find_checkpoint(run: RunFolder, which: str) -> Checkpoint:
    if which == "best":
        best = read_best_checkpoint(run)
        if not best:
            raise BadInput(f"no evaluated best checkpoint ({run.best_checkpoint.name} is missing"
                           "): the evaluator has not scored a checkpoint of this run; export "
                           "--checkpoint=latest (or ckpt-N) instead", run.root)
        path = run.best_dir / best["checkpoint"]
        if not _exists(path):
            raise BadInput(f"the best checkpoint {best['checkpoint']} is not in {run.best_dir}",
                           run.root)
        return Checkpoint(path, int(best["step"]))
    if which == "latest":
        latest = latest_checkpoint(run.root)
        if latest is None:
            raise BadInput("no checkpoint in this run folder", run.root)
        return latest
    if not CHECKPOINT_NAME.match(which):
        raise BadInput(f"--checkpoint must be best, latest or ckpt-N, got {which!r}")
    for path in (run.root / which, run.best_dir / which):
        if _exists(path):
            return Checkpoint(path, checkpoint_step(path))
    available = [c.name for c in list_checkpoints(run.root)]
    raise BadInput(f"checkpoint {which} does not exist (available: "
                   f"{', '.join(available) or 'none'}, best, latest)", run.root)


def _exists(prefix: Path) -> bool:
    return prefix.with_name(prefix.name + ".index").is_file()


def export_pipeline(run: RunFolder, overrides: Sequence[str]):
    """The run's pipeline proto with the export-time ``overrides`` applied (strictly)."""
    from object_detection.utils import config_util

    from tfod.config import ConfigError
    from tfod.config.overrides import apply_overrides
    from tfod.config.pipeline import read_configs

    configs = read_configs(run.pipeline_config)
    trained = config_util.get_number_of_classes(configs["model"])
    try:
        apply_overrides(configs, overrides)
    except ConfigError as error:
        raise BadInput(str(error), "--config_override") from error
    if config_util.get_number_of_classes(configs["model"]) != trained:
        raise BadInput(f"num_classes {config_util.get_number_of_classes(configs['model'])} "
                       f"differs from the {trained} the run's checkpoints were trained with",
                       "--config_override")
    return config_util.create_pipeline_proto_from_configs(configs)


def stage_checkpoint(checkpoint: Checkpoint, folder: Path) -> Path:
    """Link ``checkpoint``'s files into ``folder`` and make it the folder's latest."""
    import tensorflow as tf

    for file in checkpoint.path.parent.glob(checkpoint.name + ".*"):
        (folder / file.name).symlink_to(file.resolve())
    tf.compat.v1.train.update_checkpoint_state(str(folder), checkpoint.name)
    return folder


def export_record(run: RunFolder, checkpoint: Checkpoint, pipeline, overrides) -> dict:
    """What ``export.json`` says about the export."""
    from tfod.train.launch.common import library_versions

    evaluated = (read_json(run.evaluated, default={}) or {}).get(checkpoint.name, {})
    metrics = evaluated.get("metrics", {})
    best = read_best_checkpoint(run) or {}
    size = fixed_input_size(pipeline.model)
    return {
        "run_dir": str(run.root),
        "checkpoint": checkpoint.name,
        "checkpoint_path": str(checkpoint.path),
        "step": checkpoint.step,
        "is_best": best.get("checkpoint") == checkpoint.name,
        "rsna/score": metrics.get("rsna/score"),
        "rsna/threshold": metrics.get("rsna/threshold"),
        "input_type": INPUT_TYPE,
        "image_size": {"height": size[0], "width": size[1]} if size else None,
        "overrides": list(overrides),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": library_versions(),
    }


def smoke_test(folder: Path, pipeline) -> dict:
    """Reload the export and run it on the first image of the run's evaluation records."""
    name, image = _first_record_image(pipeline)
    model = ExportedModel(folder)
    outputs = model.raw(model.resize(image)[np.newaxis])
    missing = [key for key in DETECTION_OUTPUTS if key not in outputs]
    if missing:
        raise RuntimeError(f"the exported model's outputs lack {missing}")
    return {"image": name, "num_detections": int(outputs["num_detections"][0]),
            "outputs": sorted(outputs)}


def _first_record_image(pipeline) -> tuple[str, np.ndarray]:
    """(source id, pixels) of the first record of the eval (or train) input; a mid-grey
    image when the records are not on this machine (named so in ``export.json``)."""
    import tensorflow as tf

    readers = [*pipeline.eval_input_reader, pipeline.train_input_reader]
    patterns = [p for reader in readers for p in reader.tf_record_input_reader.input_path]
    files = sorted({file for pattern in patterns for file in tf.io.gfile.glob(pattern)})
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value="")}
    for record in tf.data.TFRecordDataset(files[:1]).take(1):
        example = tf.io.parse_single_example(record, spec)
        return (example["image/source_id"].numpy().decode(),
                decode_encoded(example["image/encoded"].numpy()))
    return f"synthetic mid-grey (no records match {patterns})", np.full((256, 256, 3), 128,
                                                                          np.uint8)


def _fresh(output: Path) -> Path:
    """This export's own staging folder beside ``output``; those of killed exports removed
    (the caller holds the export lock, so no live export owns them)."""
    for left in output.parent.glob(f".{glob.escape(output.name)}.incoming*"):
        shutil.rmtree(left, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    return output.with_name(f".{output.name}.incoming-{os.getpid()}")


def _check_replaceable(output: Path) -> None:
    """An export replaces an earlier export or an empty folder, never another kind of folder."""
    if output.is_dir() and any(output.iterdir()):
        export = ExportFolder(output)
        if not (export.export_json.is_file() or export.saved_model.is_dir()):
            raise BadInput("exists and is not an export folder: not replacing it", output)
    elif output.exists() and not output.is_dir():
        raise BadInput("exists and is not a folder", output)


def _replace(staging: Path, output: Path) -> None:
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
