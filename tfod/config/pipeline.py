"""The builder of a run's OD API ``pipeline.config`` from a model of the registry and a fold of a
converted folder.

It loads the model's base config with the OD API's ``config_util``, edits the protos (data
paths for a fold, number of classes from the label map, image size, batch, schedule,
checkpoint, augmentations, then ``key=value`` overrides) and writes it with
``config_util.save_pipeline_config``. Text is never edited.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import tensorflow as tf
from google.protobuf import descriptor, text_format
from google.protobuf.message import Message
from tensorflow.core.protobuf import trackable_object_graph_pb2

from tfod import compat  # fixes the stack; must precede the OD API imports

# isort: split
from object_detection.protos import train_pb2
from object_detection.utils import config_util, label_map_util

from tfod.config import ConfigError, registry, schedule
from tfod.config.overrides import apply_overrides
from tfod.config.registry import ModelSpec, meta_architecture
from tfod.data import records
from tfod.data.manifest import MANIFEST_NAME, check_converted, split_images
from tfod.errors import BadInput

PLACEHOLDER = "PATH_TO_BE_CONFIGURED"
IMAGE_SIZE_RANGE = (32, 4096)  # pixels: outside it a typo, not a model


def read_configs(path: str | os.PathLike) -> dict:
    """A ``pipeline.config`` as ``config_util``'s dict of protos: the one reader of the file for
    every stage. :class:`ConfigError` naming the file when it is missing or not a pipeline
    config (text that does not parse, or no model)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("no such pipeline config", path)
    try:
        configs = config_util.get_configs_from_pipeline_file(str(path))
    except (text_format.ParseError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"not a pipeline config ({error})", path) from None
    if not configs["model"].WhichOneof("model"):
        raise ConfigError("not a pipeline config (it defines no model)", path)
    return configs


# ---------------------------------------------------------------- converted folder


def read_label_map(data_dir: str | os.PathLike) -> tuple[Path, int]:
    """(absolute label map path, number of classes) of a converted folder."""
    path = Path(data_dir).resolve() / records.LABEL_MAP_NAME
    if not path.is_file():
        raise ConfigError(f"{path}: no label map; is {data_dir} a converted folder?")
    try:
        ids = label_map_util.get_label_map_dict(str(path)).values()
    except Exception as error:  # the OD API raises ValueError or protobuf ParseError
        raise ConfigError(f"{path}: unreadable label map: {error}") from error
    if not ids:
        raise ConfigError(f"{path}: the label map has no classes")
    return path, max(ids)


def fold_patterns(data_dir: str | os.PathLike, fold: int) -> tuple[list[str], list[str]]:
    """(train globs, eval globs): train on every other fold, evaluate on ``fold``.

    ``fold=-1`` trains on all folds; its evaluation then reads all folds too (training data,
    so its scores only show that the model learns).
    """
    folder = Path(data_dir).resolve()
    folds = records.find_folds(folder)
    if not folds:
        raise ConfigError(f"{folder}: no fold*-NNNNN-of-NNNNN.tfrecord files")
    if fold == -1:
        every = records.train_globs(folder, -1, folds)
        return every, every
    if fold not in folds:
        raise ConfigError(f"{folder}: no records for fold {fold}; folds present: {folds}")
    if len(folds) < 2:
        raise ConfigError(f"{folder}: only fold {fold}; nothing left to train on (use --fold -1)")
    return records.train_globs(folder, fold, folds), [records.eval_glob(folder, fold)]


# ---------------------------------------------------------------- checkpoints


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """An object-based TF2 checkpoint, as the OD API's fine-tuning will restore it."""

    prefix: str
    checkpoint_type: str  # 'detection' (top object 'model') or 'classification'
    num_variables: int


def resolve_checkpoint(path: str | os.PathLike) -> str:
    """A checkpoint prefix from a prefix, a folder, or a zoo model folder (``checkpoint/``)."""
    path = Path(path).resolve()
    if path.is_dir():
        for folder in (path, path / "checkpoint"):
            if folder.is_dir() and (found := _checkpoint_in(folder)):
                return found
        raise ConfigError(f"{path}: no checkpoint in this folder or in its checkpoint/ folder")
    if not Path(f"{path}.index").is_file():
        raise ConfigError(f"{path}: not a checkpoint prefix (no {path.name}.index beside it)")
    return str(path)


def _checkpoint_in(folder: Path) -> str | None:
    """The latest checkpoint of a folder's ``checkpoint`` state file, else its only one."""
    if (folder / "checkpoint").is_file() and (latest := tf.train.latest_checkpoint(str(folder))):
        return latest
    indexes = sorted(folder.glob("*.index"))
    return str(indexes[0].with_suffix("")) if len(indexes) == 1 else None


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Check that ``path`` is a TF2 object-based checkpoint the OD API can fine-tune from.

    TF1 (name-based) checkpoints are refused: the TF2 OD API restores only object-based ones.
    The type comes from the checkpoint's top-level object: ``model`` for a detection
    checkpoint (the TF2 model zoo's), ``feature_extractor`` for a classification one.
    """
    prefix = resolve_checkpoint(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise ConfigError(f"{prefix}: unreadable checkpoint: {error}") from error
    names = reader.get_variable_to_shape_map()
    if "_CHECKPOINTABLE_OBJECT_GRAPH" not in names:
        raise ConfigError(
            f"{prefix}: a TF1 name-based checkpoint (no object graph, {len(names)} variables). "
            "The TF2 Object Detection API fine-tunes only from object-based TF2 checkpoints: "
            "use a model from the TF2 Detection Model Zoo (<model>/checkpoint/ckpt-0)."
        )
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    top = {child.local_name for child in graph.nodes[0].children}
    if "model" in top:
        checkpoint_type = "detection"
    elif "feature_extractor" in top:
        checkpoint_type = "classification"
    else:
        raise ConfigError(
            f"{prefix}: an object-based checkpoint whose top objects {sorted(top)} are neither "
            "'model' (an OD API detection checkpoint) nor 'feature_extractor' (a classification "
            "backbone); the OD API cannot fine-tune from it"
        )
    return CheckpointInfo(prefix, checkpoint_type, len(names) - 1)


# ---------------------------------------------------------------- overrides
def _set_input_reader(reader, label_map: Path, patterns: list[str]) -> None:
    reader.label_map_path = str(label_map)
    records = reader.tf_record_input_reader
    del records.input_path[:]
    records.input_path.extend(patterns)


def keep_augmentations(train_config, names: Sequence[str]) -> None:
    """Keep only the data augmentation steps named in ``names`` (each with the model's own
    settings, in the model's order); an empty ``names`` or ``["none"]`` keeps none.

    Why: a short run that must learn a few images (the demo, a smoke test) learns them far
    sooner without random crops and colour jitter; a name the model does not use is refused,
    since the OD API would take any step name and silently train without it.
    """
    wanted = set(names) - {"none"}
    options = list(train_config.data_augmentation_options)
    present = [option.WhichOneof("preprocessing_step") for option in options]
    if unknown := sorted(wanted - set(present)):
        raise ConfigError(f"augmentation {', '.join(unknown)} is not one of the model's: "
                          f"{', '.join(present) or 'none'}")
    del train_config.data_augmentation_options[:]
    train_config.data_augmentation_options.extend(
        option for option, name in zip(options, present, strict=True) if name in wanted)


def _set_checkpoint(train_config, checkpoint: str | os.PathLike | None) -> None:
    if checkpoint is None:
        train_config.ClearField("fine_tune_checkpoint")
        train_config.ClearField("fine_tune_checkpoint_type")
        return
    info = inspect_checkpoint(checkpoint)
    train_config.fine_tune_checkpoint = info.prefix
    train_config.fine_tune_checkpoint_type = info.checkpoint_type
    train_config.fine_tune_checkpoint_version = train_pb2.CheckpointVersion.V2


def _placeholders(message: Message, prefix: str = "") -> list[str]:
    """Dotted names of string fields that still hold ``PATH_TO_BE_CONFIGURED``."""
    found = []
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        values = value if compat.is_repeated(field) else [value]
        for item in values:
            if field.cpp_type == descriptor.FieldDescriptor.CPPTYPE_MESSAGE:
                found += _placeholders(item, name + ".")
            elif isinstance(item, str) and PLACEHOLDER in item:
                found.append(name)
    return found


def _validate(configs: Mapping, spec: ModelSpec, num_classes: int) -> None:
    model_num_classes = config_util.get_number_of_classes(configs["model"])
    if model_num_classes != num_classes:
        raise ConfigError(
            f"num_classes is {model_num_classes} but the label map has {num_classes} classes; "
            "num_classes comes from the label map, do not override it"
        )
    size = registry.image_size(configs["model"])
    if size < spec.min_image_size or size % spec.size_multiple:
        raise ConfigError(
            f"image size {size}: {spec.name} needs a multiple of {spec.size_multiple}, "
            f"at least {spec.min_image_size}"
        )
    pipeline = config_util.create_pipeline_proto_from_configs(configs)
    if unset := _placeholders(pipeline):
        raise ConfigError(f"{PLACEHOLDER} is still in: {', '.join(unset)}")


# ---------------------------------------------------------------- builder


def build_configs(
    model: str,
    data_dir: str | os.PathLike,
    fold: int,
    image_size: int | None = None,
    batch_size: int | None = None,
    num_steps: int | None = None,
    learning_rate: float | None = None,
    fine_tune_checkpoint: str | os.PathLike | None = None,
    overrides: Iterable = (),
    augmentations: Sequence[str] | None = None,
) -> dict:
    """The configs dict (``config_util``'s) of ``model`` for ``fold`` of a converted folder.

    Order: base config, data paths and ``num_classes`` from the label map, image size,
    batch size (the learning rate scales linearly with it unless ``learning_rate`` is given),
    steps (warm-up and boundaries scale with them), fine-tune checkpoint, the augmentation
    steps kept (``None``: the model's own), then overrides.
    """
    spec = registry.get_spec(model)
    configs = registry.load_base_configs(model)
    label_map, num_classes = read_label_map(data_dir)
    train_patterns, eval_patterns = fold_patterns(data_dir, fold)
    meta_architecture(configs["model"]).num_classes = num_classes
    _set_input_reader(configs["train_input_config"], label_map, train_patterns)
    for reader in configs["eval_input_configs"]:
        _set_input_reader(reader, label_map, eval_patterns)

    train_config = configs["train_config"]
    if image_size is not None:
        registry.set_image_size(configs["model"], _checked_image_size(image_size))
    if batch_size is not None:
        base_batch = train_config.batch_size
        train_config.batch_size = _positive("batch_size", batch_size)
        if learning_rate is None:
            schedule.scale_learning_rate(schedule.learning_rate_proto(train_config),
                                         batch_size / base_batch)
    if learning_rate is not None:
        rates = schedule.learning_rate_proto(train_config)
        schedule.scale_learning_rate(rates, _positive("learning_rate", learning_rate) /
                                     schedule.peak_learning_rate(rates))
    if num_steps is not None:
        schedule.scale_schedule(train_config, _positive("num_steps", num_steps))
    _set_checkpoint(train_config, fine_tune_checkpoint)
    if augmentations is not None:
        keep_augmentations(train_config, augmentations)
    apply_overrides(configs, overrides)
    _validate(configs, spec, num_classes)
    return configs


def _positive(name: str, value):
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value}")
    return value


def _checked_image_size(size: int) -> int:
    low, high = IMAGE_SIZE_RANGE
    if not low <= size <= high:
        raise ConfigError(f"image_size must be between {low} and {high} pixels, got {size}")
    return size


def check_data_for_fold(data_dir: str | os.PathLike, fold: int, verify: bool = False) -> None:
    """Refuse an unfinished or changed converted folder (see
    :func:`tfod.data.manifest.check_converted`) and an empty training or evaluation set."""
    try:
        images = split_images(check_converted(data_dir, verify))
    except BadInput as error:  # as a ConfigError, which the config tools report
        raise ConfigError(error.reason, error.file, error.row) from error
    folds = {int(split[4:]): count for split, count in images.items() if split.startswith("fold")}
    evaluated = list(folds) if fold == -1 else [fold]
    trained = [k for k in folds if fold == -1 or k != fold]
    for role, members in (("training", trained), ("evaluation", evaluated)):
        if members and not sum(folds.get(k, 0) for k in members):
            raise ConfigError(f"the {role} set of --fold={fold} has no image (folds "
                              f"{sorted(members)} are empty in {MANIFEST_NAME})", data_dir)


def write_config(configs: Mapping, output: str | os.PathLike) -> Path:
    """Write a configs dict as ``output`` (a ``.config`` file, or a folder for pipeline.config).

    Written by the OD API's ``save_pipeline_config`` into a temporary folder beside the
    target, then moved into place, so a reader never sees half a file.
    """
    output = Path(output).resolve()
    if output.suffix != ".config":
        output = output / "pipeline.config"
    output.parent.mkdir(parents=True, exist_ok=True)
    pipeline = config_util.create_pipeline_proto_from_configs(configs)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".tfod-config-") as tmp:
        config_util.save_pipeline_config(pipeline, tmp)
        os.replace(Path(tmp) / "pipeline.config", output)
    return output


def build_config(model: str, data_dir: str | os.PathLike, fold: int,
                 output: str | os.PathLike, verify: bool = False, **options) -> Path:
    """:func:`build_configs` (``options`` are its keyword arguments), written to ``output``,
    after :func:`check_data_for_fold` (``verify``: also compare the shards' sha256)."""
    check_data_for_fold(data_dir, fold, verify)
    return write_config(build_configs(model, data_dir, fold, **options), output)


def describe_config(path: str | os.PathLike) -> str:
    """A few lines that say what a written pipeline.config will do."""
    configs = read_configs(path)
    defaults = registry.model_defaults(configs)
    train_config = configs["train_config"]
    checkpoint = train_config.fine_tune_checkpoint or "none (from scratch)"
    if train_config.fine_tune_checkpoint:
        checkpoint += f" ({train_config.fine_tune_checkpoint_type})"
    lines = [
        f"wrote {path}",
        f"  model       {configs['model'].WhichOneof('model')}, "
        f"{config_util.get_number_of_classes(configs['model'])} class(es), "
        f"{defaults.image_size} px",
        f"  training    batch {defaults.batch_size}, {defaults.num_steps} steps, "
        f"peak learning rate {defaults.learning_rate:g}",
        f"  checkpoint  {checkpoint}",
        "  train on    "
        + " ".join(configs["train_input_config"].tf_record_input_reader.input_path),
        "  evaluate on " + " ".join(
            " ".join(reader.tf_record_input_reader.input_path)
            for reader in configs["eval_input_configs"]),
    ]
    return "\n".join(lines)
