"""Train the classifier into a run folder shaped like the detectors' (:class:`RunFolder`).

::

    <run_dir>/
      classifier.json        the config the run used (flags, versions): what predict reads
      logs/train.log         one line per evaluation: step, losses, AUCs, ETA
      train/  eval/          TensorBoard events: loss and AUC (eval: the validation fold's)
      best/weights.*         the weights with the best validation AUC
      best_checkpoint.json   that checkpoint, its step and AUC ("score")
      train_status.json      running / finished / nan_loss, with the step
      exported/saved_model/  the best weights as a SavedModel (encoded images -> probability)
      predictions/val_probabilities.csv, metrics/   see :mod:`tfod.classify.evaluate`

Training runs ``num_steps`` steps in chunks of ``eval_every``; after each chunk the validation
fold is scored and the best weights kept. A rerun into the same folder trains from scratch
and replaces the best weights and the export.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import tensorflow as tf

import tfod
from tfod import runfolder
from tfod.classify import data
from tfod.classify.evaluate import evaluate_run
from tfod.classify.model import (
    BACKBONES,
    DEFAULT_BACKBONE,
    MIN_IMAGE_SIZE,
    OpacityAUC,
    build_classifier,
    check_weights_file,
    export_saved_model,
)
from tfod.classify.runpaths import best_weights, config_path, saved_model_path
from tfod.errors import BadInput
from tfod.runfolder import RunFolder

log = logging.getLogger(__name__)

MAX_IMAGE_SIZE = 2048


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything a training run depends on (written to ``classifier.json``)."""

    data_dir: str
    run_dir: str
    fold: int = 0
    backbone: str = DEFAULT_BACKBONE
    image_size: int = 224
    num_steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    eval_every: int = 0  # 0: ten evaluations per run
    weights: str | None = None
    class_info: str | None = None
    batchnorm_momentum: float | None = None  # None: the backbone's own
    gpus: str = ""
    seed: int = 42

    def check(self) -> None:
        """:class:`BadInput` for a value no run can use (before anything is written)."""
        if self.backbone not in BACKBONES:
            raise BadInput(f"--backbone={self.backbone} is not one of {sorted(BACKBONES)}")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise BadInput(f"--image_size={self.image_size} is outside "
                           f"{MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate < 10):
            raise BadInput(f"--learning_rate={self.learning_rate} must be finite, in (0, 10)")
        for name in ("num_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name}={getattr(self, name)} must be at least 1")
        momentum = self.batchnorm_momentum
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise BadInput(f"--batchnorm_momentum={momentum} must be in [0, 1)")
        if self.eval_every < 0:
            raise BadInput(f"--eval_every={self.eval_every} must be 0 (auto) or positive")
        check_weights_file(self.weights)

    @property
    def steps_per_evaluation(self) -> int:
        return self.eval_every or max(1, math.ceil(self.num_steps / 10))


def make_strategy(gpus: str) -> tf.distribute.Strategy:
    """CPU for ``''``; the listed GPUs (``'0'``, ``'0,1'``, ``'all'``); Mirrored when several."""
    found = tf.config.list_physical_devices("GPU")
    if gpus == "all":
        chosen = found
    else:
        try:
            indices = [int(index) for index in gpus.split(",") if index.strip()]
        except ValueError as error:
            raise BadInput(f"--gpus={gpus!r}: expected '', 'all' or indices like '0,1'") from error
        if any(not 0 <= index < len(found) for index in indices):
            raise BadInput(f"--gpus={gpus!r}: this machine has {len(found)} GPU(s)")
        chosen = [found[index] for index in indices]
    tf.config.set_visible_devices(chosen, "GPU")
    if len(chosen) > 1:
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(len(chosen))])
    return tf.distribute.get_strategy()


class _Progress:
    """TensorBoard events, the log line, the status file and the best weights of a run."""

    def __init__(self, run: RunFolder, config: ClassifierConfig):
        self.run, self.config, self.started = run, config, time.time()
        self.writers = {"train": tf.summary.create_file_writer(str(run.train_events)),
                        "eval": tf.summary.create_file_writer(str(run.eval_events))}
        self.best = -math.inf

    def record(self, step: int, train: dict, val: dict, model: tf.keras.Model) -> None:
        for role, values in (("train", train), ("eval", val)):
            with self.writers[role].as_default(step=step):
                for name, value in values.items():
                    tf.summary.scalar(f"classifier/{name}", value)
            self.writers[role].flush()
        elapsed = time.time() - self.started
        eta = elapsed / step * (self.config.num_steps - step)
        log.info("step %d/%d  loss %.4f  auc %.4f  val_loss %.4f  val_auc %.4f  eta %.0fs",
                 step, self.config.num_steps, train["loss"], train["auc"], val["loss"],
                 val["auc"], eta)
        runfolder.write_status(self.run, runfolder.RUNNING, step=step,
                               num_steps=self.config.num_steps)
        score = val["auc"] if math.isfinite(val["auc"]) else -1.0
        if score > self.best:
            self.best = score
            model.save_weights(str(best_weights(self.run)))
            runfolder.write_json(self.run.best_checkpoint, {
                "checkpoint": best_weights(self.run).name, "step": step, "score": val["auc"],
                "metric": "val/auc", "path": str(best_weights(self.run))})


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def _compiled(config: ClassifierConfig, num_outputs: int) -> tf.keras.Model:
    model = build_classifier(config.backbone, config.image_size, num_outputs, config.weights,
                             config.batchnorm_momentum)
    loss = (tf.keras.losses.BinaryCrossentropy() if num_outputs == 1
            else tf.keras.losses.CategoricalCrossentropy())
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate), loss=loss,
                  metrics=[OpacityAUC(name="auc")])
    return model


def _fit(model, config: ClassifierConfig, split: data.Split, labeler, progress) -> bool:
    """Train in chunks, scoring the validation fold after each; False on a non-finite loss."""
    train = data.training_dataset(split.train, config.image_size, config.batch_size, labeler,
                                  seed=config.seed)
    val = data.evaluation_dataset(split.eval, config.image_size, config.batch_size, labeler)
    step = 0
    for chunk in _chunks(config.num_steps, config.steps_per_evaluation):
        history = model.fit(train, epochs=1, steps_per_epoch=chunk, verbose=0)
        step += chunk
        losses = {name: values[-1] for name, values in history.history.items()}
        if not math.isfinite(losses["loss"]):
            log.error("non-finite loss %s at step %d: stopped", losses["loss"], step)
            runfolder.write_status(progress.run, runfolder.NAN_LOSS, step=step)
            return False
        progress.record(step, losses, model.evaluate(val, verbose=0, return_dict=True), model)
    return True


def _log_to(run: RunFolder) -> logging.Handler:
    handler = logging.FileHandler(run.train_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("tfod").addHandler(handler)
    logging.getLogger("tfod").setLevel(logging.INFO)
    return handler


def train(config: ClassifierConfig) -> dict:
    """Train, keep the best weights, export them, evaluate them; the run's summary.

    The summary: ``state`` (``finished`` or ``nan_loss``), ``run_dir``, ``best`` (the
    ``best_checkpoint.json``), ``saved_model`` and ``metrics`` (see
    :func:`tfod.classify.evaluate.evaluate_run`).
    """
    config.check()
    split = data.split_for(config.data_dir, config.fold)
    class_info = data.read_class_info(config.class_info) if config.class_info else None
    if class_info:
        data.check_class_info(class_info, config.data_dir, config.class_info)
    strategy = make_strategy(config.gpus)  # before any TensorFlow op fixes the devices
    labeler = data.Labeler(class_info)
    run = RunFolder(config.run_dir).create()
    tf.keras.utils.set_random_seed(config.seed)
    runfolder.write_json(config_path(run), {**asdict(config), "num_outputs": labeler.num_outputs,
                                            "folds": split.folds, "tfod_version": tfod.__version__,
                                            "tensorflow": tf.__version__})
    handler = _log_to(run)
    try:
        with strategy.scope():
            model = _compiled(config, labeler.num_outputs)
        progress = _Progress(run, config)
        if not _fit(model, config, split, labeler, progress):
            return {"state": runfolder.NAN_LOSS, "run_dir": str(run.root)}
        model.load_weights(str(best_weights(run))).expect_partial()
        export_saved_model(model, saved_model_path(run))
        metrics = evaluate_run(run.root)
        runfolder.write_status(run, runfolder.FINISHED, step=config.num_steps)
    finally:
        logging.getLogger("tfod").removeHandler(handler)
        handler.close()
    return {"state": runfolder.FINISHED, "run_dir": str(run.root), "saved_model":
            str(saved_model_path(run)), "best": runfolder.read_json(run.best_checkpoint),
            "metrics": metrics}

