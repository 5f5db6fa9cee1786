"""The model registry: the supported models, their base configs in ``pipeline_configs/`` and the
defaults read from those configs, so each number lives in one place. Importing it imports no
TensorFlow: tools define their flags from :data:`REGISTRY` before TensorFlow loads."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from google.protobuf.message import Message

from tfod.config import ConfigError, schedule

CONFIG_DIR = Path(__file__).resolve().parents[2] / "pipeline_configs"


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
    from tfod.config.pipeline import read_configs  # TensorFlow: only when a config is read

    return read_configs(get_spec(model).path)


def model_defaults(configs: Mapping) -> ModelDefaults:
    """Image size, batch size, steps and peak learning rate of a configs dict."""
    train_config = configs["train_config"]
    return ModelDefaults(
        image_size=image_size(configs["model"]),
        batch_size=train_config.batch_size,
        num_steps=train_config.num_steps,
        learning_rate=schedule.peak_learning_rate(schedule.learning_rate_proto(train_config)),
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


def meta_architecture(model_config) -> Message:
    """The model config's one meta-architecture message (``ssd``, ``faster_rcnn``...)."""
    return getattr(model_config, model_config.WhichOneof("model"))


def image_size(model_config) -> int:
    """The square input size of a model config."""
    resizer = meta_architecture(model_config).image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    if kind == "fixed_shape_resizer":
        return resizer.fixed_shape_resizer.height
    if kind == "keep_aspect_ratio_resizer":
        return resizer.keep_aspect_ratio_resizer.max_dimension
    raise ConfigError(f"unsupported image resizer {kind!r}")


def set_image_size(model_config, size: int) -> None:
    """Square input size: RSNA images are square, so both resizers get ``size``."""
    resizer = meta_architecture(model_config).image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    if kind == "fixed_shape_resizer":
        resizer.fixed_shape_resizer.height = size
        resizer.fixed_shape_resizer.width = size
    elif kind == "keep_aspect_ratio_resizer":
        resizer.keep_aspect_ratio_resizer.min_dimension = size
        resizer.keep_aspect_ratio_resizer.max_dimension = size
    else:
        raise ConfigError(f"unsupported image resizer {kind!r}")
