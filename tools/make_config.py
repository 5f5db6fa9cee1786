"""tfod-config: write a run's OD API pipeline.config for a model and a fold of a converted folder.

tfod-config --list_models
tfod-config --model ssd_mobilenet_v2 --data_dir tfrecords/rsna --fold 0 \\
    --output runs/ssd-fold0/pipeline.config --image_size 384 --num_steps 20000 \\
    --override train_config.optimizer.momentum_optimizer.momentum_optimizer_value=0.8

Other tools that build a config (tfod-train) import this module for the same flags and call
:func:`config_kwargs`.
"""

import sys

from absl import app, flags

from tfod.config import pipeline as configs

_MODEL = flags.DEFINE_enum("model", None, list(configs.REGISTRY), "Model to configure.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "A converted folder (label_map.pbtxt, "
                                "fold*-*.tfrecord).")
_FOLD = flags.DEFINE_integer("fold", 0, "Evaluate on this fold and train on the others; "
                             "-1 trains on all folds.", lower_bound=-1)
_OUTPUT = flags.DEFINE_string("output", None, "pipeline.config path to write (or a folder).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Square input size in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Batch size; the learning rate scales "
                                   "with it unless --learning_rate is given.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", None, "Training steps; warm-up and schedule "
                                  "boundaries scale with it.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Peak learning rate.")
_FINE_TUNE_CHECKPOINT = flags.DEFINE_string(
    "fine_tune_checkpoint", None,
    "TF2 zoo checkpoint prefix or folder; its type (detection/classification) is detected.")
_OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "key=value of any pipeline proto field (repeatable), e.g. "
    "train_config.optimizer.momentum_optimizer.momentum_optimizer_value=0.8")
_LIST_MODELS = flags.DEFINE_bool("list_models", False, "Print the models and their defaults.")


def config_kwargs() -> dict:
    """The keyword arguments of :func:`tfod.config.pipeline.build_configs` given by the flags."""
    for flag in (_MODEL, _DATA_DIR):
        if flag.value is None:
            raise app.UsageError(f"--{flag.name} is required")
    return {
        "model": _MODEL.value,
        "data_dir": _DATA_DIR.value,
        "fold": _FOLD.value,
        "image_size": _IMAGE_SIZE.value,
        "batch_size": _BATCH_SIZE.value,
        "num_steps": _NUM_STEPS.value,
        "learning_rate": _LEARNING_RATE.value,
        "fine_tune_checkpoint": _FINE_TUNE_CHECKPOINT.value,
        "overrides": list(_OVERRIDE.value),
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _LIST_MODELS.value:
        print(configs.format_model_table())
        return 0
    if _OUTPUT.value is None:
        raise app.UsageError("--output is required")
    try:
        path = configs.build_config(output=_OUTPUT.value, **config_kwargs())
    except configs.ConfigError as error:
        print(f"tfod-config: error: {error}", file=sys.stderr)
        return 2
    print(configs.describe_config(path))
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
