"""tfod-classify: train, apply and evaluate the image-level pneumonia classifier.

tfod-classify --mode=train --data_dir=tfrecords/rsna --fold=0 --run_dir=runs/densenet121-fold0 \\
    --backbone=densenet121 --image_size=224 --num_steps=5000 --batch_size=16
tfod-classify --mode=predict --model=runs/densenet121-fold0 \\
    --input=stage_2_test_images --output=runs/densenet121-fold0/predictions/test_probabilities.csv
tfod-classify --mode=evaluate --model=runs/densenet121-fold0        # its validation fold again

--input: a DICOM folder, a text file listing DICOM paths, or a TFRecord glob. Unreadable
inputs are listed in <output>.skipped.json. See docs/classify.md.
"""
from __future__ import annotations

from absl import flags

from tfod import cli, runfolder
from tfod.classify import evaluate, predict, train
from tfod.classify.model import BACKBONES, DEFAULT_BACKBONE
from tfod.errors import NAN_LOSS

_MODE = flags.DEFINE_enum("mode", "train", ["train", "predict", "evaluate"], "What to do.")
_BACKBONE = flags.DEFINE_enum("backbone", DEFAULT_BACKBONE, sorted(BACKBONES),
                              "Keras applications backbone (built from scratch unless --weights).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "A tfod-convert folder (records, folds.csv, "
                                "manifest.json). evaluate: default the run's.")
_FOLD = flags.DEFINE_integer("fold", None, "Evaluate on this fold and train on the others; -1: "
                             "train and evaluate on all. train: default 0; evaluate: the run's.",
                             lower_bound=-1)
_RUN_DIR = flags.DEFINE_string("run_dir", None, "train: the run folder to write.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Images are resized to this square.",
                                   lower_bound=32, upper_bound=4096)
_NUM_STEPS = flags.DEFINE_integer("num_steps", 2000, "Training steps (batches).", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Images per step (over all GPUs); also the "
                                   "prediction batch.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
cli.require_positive(_LEARNING_RATE)
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 0, "Score the validation fold every this many "
                                   "steps; 0: ten times per run.", lower_bound=0)
_WEIGHTS = flags.DEFINE_string("weights", None, "A local weights file for the backbone (e.g. "
                               "Keras' ImageNet *_notop.h5); nothing is downloaded.")
_BATCHNORM_MOMENTUM = flags.DEFINE_float("batchnorm_momentum", None, "Replace the backbone's "
                                         "batch-norm momentum (short runs, small data).",
                                         lower_bound=0.0, upper_bound=1.0)
_CLASS_INFO = flags.DEFINE_string("class_info", None, "CSV with patientId,class (the official "
                                  "class-info CSV or folds.csv): train on the 3-way class.")
_GPUS = flags.DEFINE_string("gpus", "", "'' for CPU, 'all', or indices '0,1' (several: "
                            "MirroredStrategy).")
_SEED = flags.DEFINE_integer("seed", 42, "Seed of weights, shuffling and augmentation.",
                             lower_bound=0)
_MODEL = flags.DEFINE_string("model", None, "predict/evaluate: a classifier run folder or its "
                             "exported SavedModel (predict).")
_INPUT = flags.DEFINE_string("input", None, "predict: DICOM folder, DICOM list file or TFRecord "
                             "glob.")
_OUTPUT = flags.DEFINE_string("output", None, "predict: the patientId,probability CSV to write.")


def _config() -> train.ClassifierConfig:
    return train.ClassifierConfig(
        data_dir=_DATA_DIR.value, run_dir=_RUN_DIR.value,
        fold=0 if _FOLD.value is None else _FOLD.value, backbone=_BACKBONE.value,
        image_size=_IMAGE_SIZE.value, num_steps=_NUM_STEPS.value, batch_size=_BATCH_SIZE.value,
        learning_rate=_LEARNING_RATE.value, eval_every=_EVAL_EVERY.value, weights=_WEIGHTS.value,
        class_info=_CLASS_INFO.value, batchnorm_momentum=_BATCHNORM_MOMENTUM.value,
        gpus=_GPUS.value, seed=_SEED.value)


def main(argv) -> int:
    if _MODE.value == "train":
        cli.require(_DATA_DIR, _RUN_DIR)
        cli.check_outputs(folders=[_RUN_DIR])
        result = train.train(_config())
        if result["state"] == runfolder.NAN_LOSS:
            return cli.fail(f"non-finite loss; see {result['run_dir']}/logs/train.log", NAN_LOSS)
        print(evaluate.format_metrics(result["metrics"]))
        print(f"run folder {result['run_dir']}; SavedModel {result['saved_model']}")
    elif _MODE.value == "predict":
        cli.require(_MODEL, _INPUT, _OUTPUT)
        cli.check_outputs(files=[_OUTPUT])
        summary = predict.predict(_MODEL.value, _INPUT.value, _OUTPUT.value, _BATCH_SIZE.value)
        print(f"{summary['images']} probabilities -> {summary['output']}; {summary['skipped']} "
              f"skipped -> {summary['skipped_file']}")
    else:
        cli.require(_MODEL)
        print(evaluate.format_metrics(evaluate.evaluate_run(
            _MODEL.value, _DATA_DIR.value, _FOLD.value, _BATCH_SIZE.value)))
    return 0


run = cli.runner(main)

if __name__ == "__main__":
    run()
