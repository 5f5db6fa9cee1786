"""Configure: the model registry and the builder of a run's OD API ``pipeline.config``.

Each supported model has a readable base config in ``pipeline_configs/`` (tuned for RSNA: one
class, grayscale augmentation, one-GPU batch and learning rate, low-score post-processing). The
builder loads it with the OD API's ``config_util``, edits the protos (data paths for a fold of a
converted folder, number of classes from its label map, image size, batch, schedule, checkpoint,
then ``key=value`` overrides) and writes it with ``config_util.save_pipeline_config``. Text is
never edited. The defaults shown by :func:`list_models` are read from the base configs
themselves, so each number lives in one place.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import tensorflow as tf
from google.protobuf import descriptor, text_format
from google.protobuf.message import Message
from tensorflow.core.protobuf import trackable_object_graph_pb2

import tfod.compat  # noqa: F401  (fixes the stack; must precede the OD API imports)

# isort: split
from object_detection.protos import train_pb2
from object_detection.utils import config_util, label_map_util

from tfod.data import records
from tfod.data.manifest import MANIFEST_NAME, check_converted, split_images
from tfod.errors import BadInput

CONFIG_DIR = Path(__file__).resolve().parents[2] / "pipeline_configs"
PLACEHOLDER = "PATH_TO_BE_CONFIGURED"
IMAGE_SIZE_RANGE = (32, 4096)  # pixels: outside it a typo, not a model


class ConfigError(BadInput):
    """A config cannot be built as asked (bad flag, override, data folder or checkpoint)."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registry entry: what the base config file cannot say about itself."""

    name: str
    config_file: str
    summary: str
    size_multiple: int  # image sizes must be a multiple of this (the backbone's total stride)
    min_image_size: int = 128  # the smallest size the feature extractor accepts

    @property
    def path(self) -> Path:
        return CONFIG_DIR / self.config_file


@dataclasses.dataclass(frozen=True)
class ModelDefaults:
    """The defaults of a model, as written in its base config."""

    image_size: int
    batch_size: int
    num_steps: int
    learning_rate: float
    checkpoint_type: str  # fine_tune_checkpoint_type expected of a zoo checkpoint


_SPECS = [
    ModelSpec("ssd_mobilenet_v2", "ssd_mobilenet_v2.config",
              "SSD, MobileNet v2", 32),
    ModelSpec("ssd_mobilenet_v2_fpnlite", "ssd_mobilenet_v2_fpnlite.config",
              "SSD, MobileNet v2 FPN-lite, focal loss", 128),
    ModelSpec("retinanet_resnet50", "retinanet_resnet50.config",
              "RetinaNet (SSD ResNet-50 v1 FPN, focal loss)", 128, 256),
    ModelSpec("retinanet_resnet101", "retinanet_resnet101.config",
              "RetinaNet (SSD ResNet-101 v1 FPN, focal loss)", 128, 256),
    ModelSpec("faster_rcnn_resnet50", "faster_rcnn_resnet50.config",
              "Faster R-CNN, ResNet-50 v1", 32),
    ModelSpec("faster_rcnn_resnet101", "faster_rcnn_resnet101.config",
              "Faster R-CNN, ResNet-101 v1", 32),
    ModelSpec("faster_rcnn_resnet152", "faster_rcnn_resnet152.config",
              "Faster R-CNN, ResNet-152 v1", 32),
    ModelSpec("faster_rcnn_inception_resnet_v2", "faster_rcnn_inception_resnet_v2.config",
              "Faster R-CNN, Inception-ResNet v2", 32),
    ModelSpec("centernet_resnet50_fpn", "centernet_resnet50_fpn.config",
              "CenterNet, ResNet-50 v1 FPN", 32),
    ModelSpec("centernet_hourglass104", "centernet_hourglass104.config",
              "CenterNet, Hourglass-104", 128),
    ModelSpec("mask_rcnn_inception_resnet_v2", "mask_rcnn_inception_resnet_v2.config",
              "Mask R-CNN, Inception-ResNet v2 (needs box masks)", 32),
]
REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


# ---------------------------------------------------------------- registry


def get_spec(model: str) -> ModelSpec:
    """The registry entry of ``model``; a :class:`ConfigError` lists the known names."""
    try:
        return REGISTRY[model]
    except KeyError:
        raise ConfigError(
            f"unknown model {model!r}; known models: {', '.join(REGISTRY)}"
        ) from None


def load_base_configs(model: str) -> dict:
    """The base config of ``model`` as ``config_util``'s dict of protos."""
    return read_configs(get_spec(model).path)


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


def model_defaults(configs: Mapping) -> ModelDefaults:
    """Image size, batch size, steps and peak learning rate of a configs dict."""
    train_config = configs["train_config"]
    return ModelDefaults(
        image_size=_get_image_size(configs["model"]),
        batch_size=train_config.batch_size,
        num_steps=train_config.num_steps,
        learning_rate=_peak_learning_rate(_learning_rate_proto(train_config)),
        checkpoint_type=train_config.fine_tune_checkpoint_type,
    )


def list_models() -> list[tuple[ModelSpec, ModelDefaults]]:
    """Every supported model with the defaults read from its base config."""
    return [(spec, model_defaults(load_base_configs(spec.name))) for spec in _SPECS]


def format_model_table() -> str:
    """A plain-text table of :func:`list_models` for ``tfod-config --list_models``."""
    header = ("model", "image", "batch", "steps", "lr", "checkpoint", "architecture")
    rows = [header] + [
        (spec.name, str(d.image_size), str(d.batch_size), str(d.num_steps),
         f"{d.learning_rate:g}", d.checkpoint_type, spec.summary)
        for spec, d in list_models()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


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

_PIPELINE_ALIASES = {  # config_util's dict keys -> the pipeline proto's field names
    "train_input_config": "train_input_reader",
    "eval_input_config": "eval_input_reader",
    "eval_input_configs": "eval_input_reader",
    "graph_rewriter_config": "graph_rewriter",
}
_PART = re.compile(r"^([A-Za-z_]\w*)(?:\[(\d+)\])?$")
_INT_TYPES = {
    descriptor.FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    descriptor.FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    descriptor.FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    descriptor.FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def parse_override(text: str) -> tuple[str, str]:
    """'a.b.c=value' -> ('a.b.c', 'value')."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value")
    return key.strip(), value.strip()


def apply_overrides(target, overrides: Iterable):
    """Set dotted fields of the pipeline proto, strictly; returns ``target`` edited in place.

    ``target`` is a ``TrainEvalPipelineConfig`` or ``config_util``'s configs dict. Each
    override is ``"key=value"`` or a ``(key, value)`` pair. Keys are paths of proto fields
    from the pipeline (``train_config.optimizer.momentum_optimizer.momentum_optimizer_value``);
    ``name[i]`` picks an element of a repeated message, and a repeated message without index
    is set in every element. A repeated scalar takes a comma-separated list. A key that names
    no field, a value of the wrong type, or a key that would switch a ``oneof`` to another
    branch is a :class:`ConfigError` naming the key, and then nothing is changed.
    """
    pipeline = (config_util.create_pipeline_proto_from_configs(target)
                if isinstance(target, Mapping) else _copy(target))
    for override in overrides:
        key, value = parse_override(override) if isinstance(override, str) else override
        _apply_override(pipeline, key, value)
    if isinstance(target, Mapping):
        target.clear()
        target.update(config_util.create_configs_from_pipeline_proto(pipeline))
    else:
        target.CopyFrom(pipeline)
    return target


def _copy(message: Message) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _apply_override(pipeline: Message, key: str, value) -> None:
    parts = key.split(".")
    head = _PART.match(parts[0])
    if head and head.group(1) in _PIPELINE_ALIASES:
        parts[0] = _PIPELINE_ALIASES[head.group(1)] + parts[0][len(head.group(1)):]
    messages = [pipeline]
    for depth, part in enumerate(parts):
        match = _PART.match(part)
        if not match:
            raise ConfigError(f"override {key!r}: {part!r} is not a field name")
        name, index = match.group(1), match.group(2)
        last = depth == len(parts) - 1
        next_messages = []
        for message in messages:
            field = _field(message, name, key)
            if last:
                _set_field(message, field, index, value, key)
            else:
                next_messages.extend(_descend(message, field, index, key))
        messages = next_messages


def _field(message: Message, name: str, key: str) -> descriptor.FieldDescriptor:
    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        known = ", ".join(sorted(message.DESCRIPTOR.fields_by_name))
        raise ConfigError(
            f"override {key!r}: {message.DESCRIPTOR.full_name} has no field {name!r} "
            f"(its fields: {known})"
        )
    return field


def _descend(message: Message, field, index, key: str) -> list[Message]:
    if field.cpp_type != descriptor.FieldDescriptor.CPPTYPE_MESSAGE:
        raise ConfigError(f"override {key!r}: {field.full_name} is not a message")
    if field.label == descriptor.FieldDescriptor.LABEL_REPEATED:
        items = getattr(message, field.name)
        if index is None:
            if not items:
                raise ConfigError(f"override {key!r}: {field.full_name} has no elements")
            return list(items)
        if int(index) >= len(items):
            raise ConfigError(
                f"override {key!r}: {field.full_name} has {len(items)} elements, "
                f"no [{index}]"
            )
        return [items[int(index)]]
    if index is not None:
        raise ConfigError(f"override {key!r}: {field.full_name} is not repeated")
    _check_oneof(message, field, key)
    return [getattr(message, field.name)]


def _check_oneof(message: Message, field, key: str) -> None:
    oneof = field.containing_oneof
    if oneof is None:
        return
    current = message.WhichOneof(oneof.name)
    if current is not None and current != field.name:
        raise ConfigError(
            f"override {key!r}: {message.DESCRIPTOR.full_name}.{oneof.name} is {current!r}; "
            f"setting {field.name!r} would replace it. Switch it in a base config instead."
        )


def _set_field(message: Message, field, index, value, key: str) -> None:
    if field.cpp_type == descriptor.FieldDescriptor.CPPTYPE_MESSAGE:
        raise ConfigError(
            f"override {key!r}: {field.full_name} is a message; name a field inside it"
        )
    if index is not None:
        raise ConfigError(f"override {key!r}: indexing a repeated scalar is not supported; "
                          "give the whole list as a,b,c")
    _check_oneof(message, field, key)
    if field.label == descriptor.FieldDescriptor.LABEL_REPEATED:
        raw = value if isinstance(value, list | tuple) else _split_list(str(value))
        values = [_coerce(field, item, key) for item in raw]
        del getattr(message, field.name)[:]
        getattr(message, field.name).extend(values)
    else:
        setattr(message, field.name, _coerce(field, value, key))


def _split_list(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [item.strip() for item in text.split(",") if item.strip()]


def _coerce(field, value, key: str):
    """``value`` (a string from the command line, or a Python value) as the field's type."""
    cpp = field.cpp_type
    kind = descriptor.FieldDescriptor
    try:
        if cpp == kind.CPPTYPE_BOOL:
            return _to_bool(value)
        if cpp in _INT_TYPES:
            number = _to_int(value)
            low, high = _INT_TYPES[cpp]
            if not low <= number <= high:
                raise ValueError(f"out of range [{low}, {high}]")
            return number
        if cpp in (kind.CPPTYPE_FLOAT, kind.CPPTYPE_DOUBLE):
            if isinstance(value, bool):
                raise ValueError("a bool is not a number")
            return float(value)
        if cpp == kind.CPPTYPE_ENUM:
            return _to_enum(field, value)
        if cpp == kind.CPPTYPE_STRING:
            return _unquote(str(value)) if field.type == kind.TYPE_STRING else (
                _unquote(str(value)).encode())
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"override {key!r}: {value!r} is not a valid {_type_name(field)} for "
            f"{field.full_name}: {error}"
        ) from None
    raise ConfigError(f"override {key!r}: unsupported field type of {field.full_name}")


def _to_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError("expected true or false")
    return text == "true"


def _to_int(value) -> int:
    if isinstance(value, bool):
        raise ValueError("a bool is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        return int(value)
    return int(str(value).strip(), 0)


def _to_enum(field, value) -> int:
    names = field.enum_type.values_by_name
    text = str(value).strip()
    if text in names:
        return names[text].number
    raise ValueError(f"expected one of {', '.join(names)}")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _type_name(field) -> str:
    kind = descriptor.FieldDescriptor
    if field.cpp_type == kind.CPPTYPE_ENUM:
        return f"{field.enum_type.name} name"
    names = {kind.CPPTYPE_BOOL: "bool", kind.CPPTYPE_FLOAT: "number",
             kind.CPPTYPE_DOUBLE: "number", kind.CPPTYPE_STRING: "string"}
    return names.get(field.cpp_type, "integer")


# ---------------------------------------------------------------- proto edits


def _meta_architecture(model_config) -> Message:
    return getattr(model_config, model_config.WhichOneof("model"))


def _get_image_size(model_config) -> int:
    resizer = _meta_architecture(model_config).image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    if kind == "fixed_shape_resizer":
        return resizer.fixed_shape_resizer.height
    if kind == "keep_aspect_ratio_resizer":
        return resizer.keep_aspect_ratio_resizer.max_dimension
    raise ConfigError(f"unsupported image resizer {kind!r}")


def set_image_size(model_config, size: int) -> None:
    """Square input size: RSNA images are square, so both resizers get ``size``."""
    resizer = _meta_architecture(model_config).image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    if kind == "fixed_shape_resizer":
        resizer.fixed_shape_resizer.height = size
        resizer.fixed_shape_resizer.width = size
    elif kind == "keep_aspect_ratio_resizer":
        resizer.keep_aspect_ratio_resizer.min_dimension = size
        resizer.keep_aspect_ratio_resizer.max_dimension = size
    else:
        raise ConfigError(f"unsupported image resizer {kind!r}")


def _learning_rate_proto(train_config) -> Message:
    optimizer = getattr(train_config.optimizer, train_config.optimizer.WhichOneof("optimizer"))
    return optimizer.learning_rate


def _schedule(learning_rate) -> tuple[str, Message]:
    kind = learning_rate.WhichOneof("learning_rate")
    return kind, getattr(learning_rate, kind)


def _peak_learning_rate(learning_rate) -> float:
    kind, schedule = _schedule(learning_rate)
    if kind == "cosine_decay_learning_rate":
        return schedule.learning_rate_base
    if kind == "constant_learning_rate":
        return schedule.learning_rate
    return schedule.initial_learning_rate  # manual_step and exponential_decay


def scale_learning_rate(learning_rate, factor: float) -> None:
    """Multiply every rate of the schedule by ``factor`` (keeps warm-up and step ratios)."""
    kind, schedule = _schedule(learning_rate)
    if kind == "cosine_decay_learning_rate":
        schedule.learning_rate_base *= factor
        schedule.warmup_learning_rate *= factor
    elif kind == "constant_learning_rate":
        schedule.learning_rate *= factor
    elif kind == "manual_step_learning_rate":
        schedule.initial_learning_rate *= factor
        for step in schedule.schedule:
            step.learning_rate *= factor
    elif kind == "exponential_decay_learning_rate":
        schedule.initial_learning_rate *= factor
        schedule.min_learning_rate *= factor
    else:
        raise ConfigError(f"unsupported learning rate schedule {kind!r}")


def scale_schedule(train_config, num_steps: int) -> None:
    """Set the total steps; the schedule's warm-up and step boundaries keep their fractions."""
    ratio = num_steps / train_config.num_steps
    train_config.num_steps = num_steps
    kind, schedule = _schedule(_learning_rate_proto(train_config))
    if kind == "cosine_decay_learning_rate":
        schedule.total_steps = num_steps
        schedule.warmup_steps = min(round(schedule.warmup_steps * ratio), num_steps - 1)
    elif kind == "manual_step_learning_rate":
        previous = 0
        for step in schedule.schedule:
            step.step = max(round(step.step * ratio), previous + 1)
            previous = step.step
    elif kind == "exponential_decay_learning_rate":
        schedule.decay_steps = max(1, round(schedule.decay_steps * ratio))
        schedule.burnin_steps = round(schedule.burnin_steps * ratio)


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
        values = value if field.label == descriptor.FieldDescriptor.LABEL_REPEATED else [value]
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
    size = _get_image_size(configs["model"])
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
    spec = get_spec(model)
    configs = load_base_configs(model)
    label_map, num_classes = read_label_map(data_dir)
    train_patterns, eval_patterns = fold_patterns(data_dir, fold)
    _meta_architecture(configs["model"]).num_classes = num_classes
    _set_input_reader(configs["train_input_config"], label_map, train_patterns)
    for reader in configs["eval_input_configs"]:
        _set_input_reader(reader, label_map, eval_patterns)

    train_config = configs["train_config"]
    if image_size is not None:
        set_image_size(configs["model"], _image_size(image_size))
    if batch_size is not None:
        base_batch = train_config.batch_size
        train_config.batch_size = _positive("batch_size", batch_size)
        if learning_rate is None:
            scale_learning_rate(_learning_rate_proto(train_config), batch_size / base_batch)
    if learning_rate is not None:
        rates = _learning_rate_proto(train_config)
        scale_learning_rate(rates, _positive("learning_rate", learning_rate) /
                            _peak_learning_rate(rates))
    if num_steps is not None:
        scale_schedule(train_config, _positive("num_steps", num_steps))
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


def _image_size(size: int) -> int:
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
    defaults = model_defaults(configs)
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


@dataclasses.dataclass
class ConfigRequest:
    """Where a run's config comes from: a model of the registry and a fold of a converted folder
    (built by :func:`build_config`), or an existing ``pipeline_config`` (copied as it is).

    The one description of a config request: ``tfod-config`` and ``tfod-train`` fill it from
    the flag group :func:`tfod.cli.define_config_flags`, the demo and the launcher take it.
    """

    model: str | None = None
    data_dir: str | None = None
    fold: int = 0
    image_size: int | None = None
    batch_size: int | None = None
    num_steps: int | None = None
    learning_rate: float | None = None
    fine_tune_checkpoint: str | None = None
    overrides: Sequence[str] = dataclasses.field(default_factory=tuple)
    pipeline_config: str | None = None
    augmentations: Sequence[str] | None = None  # None: the model's own

    def __post_init__(self):
        self.overrides = tuple(self.overrides)  # flags and JSON give lists: one form to compare
        if self.augmentations is not None:
            self.augmentations = tuple(self.augmentations)
        if bool(self.model) == bool(self.pipeline_config):
            raise ConfigError("give either --model (with --data_dir and --fold) or "
                              "--pipeline_config")
        if self.model and not self.data_dir:
            raise ConfigError("--model needs --data_dir (a converted folder)")

    def write(self, output: str | os.PathLike) -> Path:
        """Write the asked-for config to ``output`` (a ``.config`` file, or a folder)."""
        if self.pipeline_config:
            source = Path(self.pipeline_config)
            if not source.is_file():
                raise ConfigError(f"--pipeline_config {source} does not exist")
            read_configs(source)  # a damaged file is named here, not as the run's copy
            output = Path(output)
            if output.suffix != ".config":
                output = output / "pipeline.config"
            output.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, output)
            return output
        return build_config(
            self.model, self.data_dir, self.fold, output, image_size=self.image_size,
            batch_size=self.batch_size, num_steps=self.num_steps,
            learning_rate=self.learning_rate, fine_tune_checkpoint=self.fine_tune_checkpoint,
            overrides=self.overrides, augmentations=self.augmentations,
        )
