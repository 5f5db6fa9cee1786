"""Training and evaluation entry points that drive the OD API's ``model_lib_v2`` ourselves.

Why not ``model_main_tf2``: its trainer runs in chunks of 100 steps (so it stops at the next
multiple of 100, not at the step asked), ``train_loop`` saves only every ``checkpoint_every_n``
steps with no final save, and its evaluator polls every 300 s and never stops. Here:

* :func:`train` calls ``model_lib_v2.train_loop`` with ``num_steps_per_iteration`` dividing both
  the steps left and the checkpoint interval, so it stops exactly at ``num_steps``; it saves
  the final step when the loop did not; it resumes from the latest checkpoint of the run
  folder (``train_loop`` restores ``tf.train.latest_checkpoint(model_dir)`` itself); it uses
  ``MirroredStrategy`` when several GPUs are visible (``MultiWorkerMirroredStrategy`` with
  ``num_workers > 1`` and ``TF_CONFIG``); a non-finite loss stops it with :class:`NonFiniteLoss`
  (exit code :data:`NAN_EXIT_CODE`) instead of training on NaN weights.
* :func:`evaluate` waits for new checkpoints and evaluates each once with one inference pass
  (``model_lib_v2.eager_eval_loop``) that feeds both the OD API's COCO evaluator and
  :class:`RsnaEvaluator`, the competition metric of :mod:`tfod.scoring.metric` at its best detection
  threshold. Both go to ``eval/`` TensorBoard events (``rsna/score``, ``rsna/threshold`` next
  to ``DetectionBoxes_Precision/mAP``...). It keeps the best checkpoint by ``rsna/score``, and
  stops after the final step, when the trainer reports a terminal state, or when the trainer's
  heartbeat stops.

Run ``python -m tfod.train train|eval --help``; the launchers in :mod:`tfod.train.launch` do.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import math
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

import tfod.compat  # noqa: F401  (before object_detection)
from tfod import boxes as box_ops
from tfod import detections as det
from tfod.data.convert import EXPECTED_SIZE as RSNA_IMAGE_SIZE
from tfod.detections import ImageBoxes
from tfod.errors import NAN_LOSS as NAN_EXIT_CODE
from tfod.runfolder import (
    FAILED,
    FINISHED,
    NAN_LOSS,
    RUNNING,
    TERMINAL_STATES,
    Checkpoint,
    RunFolder,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    read_json,
    read_status,
    read_stop_request,
    write_json,
    write_status,
)
from tfod.scoring import metric as score
from tfod.train import early_stop

NAN_MESSAGE = "tfod: the training loss is not finite"
RSNA_METRICS = "rsna_metrics"
LOSS_KEY = "Loss/total_loss"

log = logging.getLogger("tfod.train")


class TrainError(RuntimeError):
    """A training run that cannot start or go on."""


class NonFiniteLoss(TrainError):
    """The training loss became NaN or infinite."""


class StopRequested(Exception):  # noqa: N818  (a request, not an error)
    """The run folder holds a stop request (early stopping): the checkpoint is saved, stop."""


# ---------------------------------------------------------------------------------- training


def finite_loss_step(train_step):
    """Wrap ``model_lib_v2.eager_train_step`` so that a NaN/Inf total loss fails the step.

    ``tf.debugging.Assert`` is stateful, so ``tf.function`` runs it even inside the loop of
    ``num_steps_per_iteration`` steps whose results are dropped.
    """
    import tensorflow as tf

    @functools.wraps(train_step)
    def checked(*args, **kwargs):
        losses = train_step(*args, **kwargs)
        total = losses[LOSS_KEY]
        tf.debugging.Assert(tf.math.is_finite(total), [NAN_MESSAGE, total])
        return losses

    return checked


def steps_per_iteration(start: int, target: int, checkpoint_every: int) -> int:
    """Steps per ``tf.function`` call that land exactly on ``target`` and on each checkpoint."""
    from object_detection import model_lib_v2

    return math.gcd(target - start, checkpoint_every, model_lib_v2.NUM_STEPS_PER_ITERATION)


@contextlib.contextmanager
def _od_api_hooks(log_every: int, run: RunFolder):
    """Patch model_lib_v2 for one train_loop call: NaN check, log interval, and a
    CheckpointManager that we keep a handle on (train_loop does not return it) to save the
    final step, and that stops training after a save when the run holds a stop request.
    Everything is put back on exit."""
    from object_detection import model_lib_v2

    train_module = model_lib_v2.tf.compat.v2.train
    managers = []

    class RecordingCheckpointManager(train_module.CheckpointManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            managers.append(self)

        def save(self, *args, **kwargs):
            path = super().save(*args, **kwargs)
            request = read_stop_request(run)
            if request:
                raise StopRequested(request.get("reason", "stop requested"))
            return path

    saved = (model_lib_v2.eager_train_step, model_lib_v2.LOG_EVERY, train_module.CheckpointManager)
    model_lib_v2.eager_train_step = finite_loss_step(saved[0])
    model_lib_v2.LOG_EVERY = log_every
    train_module.CheckpointManager = RecordingCheckpointManager
    try:
        yield managers
    finally:
        model_lib_v2.eager_train_step, model_lib_v2.LOG_EVERY = saved[:2]
        train_module.CheckpointManager = saved[2]


def _save_final_step(manager, should_checkpoint: bool) -> int:
    """Save the model at its current step unless the latest checkpoint holds that step."""
    import tensorflow as tf

    step = int(manager.checkpoint.step.numpy())
    latest = manager.latest_checkpoint
    if latest is None or checkpoint_step(latest) != step:
        with contextlib.suppress(StopRequested):  # raised after the save
            manager.save()
        if not should_checkpoint:  # a non-chief worker saved into a temporary folder
            tf.io.gfile.rmtree(manager.directory)
    return step


class Heartbeat:
    """Writes ``train_status.json`` (state ``running``, the current step) every few seconds."""

    def __init__(self, run: RunFolder, target: int, seconds: float, step_fn):
        self.run, self.target, self.seconds, self.step_fn = run, target, seconds, step_fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="tfod-heartbeat", daemon=True)

    def _beat(self):
        while True:
            write_status(self.run, RUNNING, step=self.step_fn(), target=self.target)
            if self._stop.wait(self.seconds):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def choose_strategy(num_workers: int = 1):
    """MultiWorkerMirrored for several workers, Mirrored for several GPUs, else the default."""
    import tensorflow as tf

    if num_workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def read_configs(pipeline_config) -> dict:
    from object_detection.utils import config_util

    path = Path(pipeline_config)
    if not path.is_file():
        raise TrainError(f"pipeline config {path} does not exist")
    return config_util.get_configs_from_pipeline_file(str(path))


def target_steps(configs: Mapping, num_steps: int | None) -> int:
    steps = num_steps or configs["train_config"].num_steps
    if steps <= 0:
        raise TrainError("no step count: pass num_steps or set train_config.num_steps")
    return int(steps)


def train(pipeline_config, run_dir, num_steps: int | None = None, checkpoint_every: int = 1000,
          max_to_keep: int = 7, num_workers: int = 1, log_every: int = 100,
          heartbeat_seconds: float = 10.0) -> int:
    """Train to ``num_steps`` (default: the config's), resuming from the run folder; return
    the final step, which is always saved as a checkpoint."""
    import tensorflow as tf
    from object_detection import model_lib_v2

    run = RunFolder(run_dir).create()
    target = target_steps(read_configs(pipeline_config), num_steps)
    latest = latest_checkpoint(run.root)
    start = latest.step if latest else 0
    request = read_stop_request(run)
    if request:
        log.info("the run was stopped early (%s): nothing to train", request.get("reason"))
        write_status(run, FINISHED, step=start, target=target, stopped_early=True,
                     reason=request.get("reason"))
        return start
    if start >= target:
        log.info("%s is at step %d, which reaches the %d steps asked: nothing to train",
                 latest.name, start, target)
        write_status(run, FINISHED, step=start, target=target)
        return start
    if latest:
        log.info("resuming from %s at step %d, training to step %d", latest.name, start, target)
    else:
        log.info("training from step 0 to step %d", target)
    per_iteration = steps_per_iteration(start, target, checkpoint_every)
    strategy = choose_strategy(num_workers)
    log.info("strategy %s with %d replica(s); %d step(s) per iteration",
             type(strategy).__name__, strategy.num_replicas_in_sync, per_iteration)

    stopped = {}
    with _od_api_hooks(log_every, run) as managers:
        def current_step():
            return int(managers[-1].checkpoint.step.numpy()) if managers else start

        with Heartbeat(run, target, heartbeat_seconds, current_step), strategy.scope():
            try:
                model_lib_v2.train_loop(
                    pipeline_config_path=str(pipeline_config), model_dir=str(run.root),
                    train_steps=target, checkpoint_every_n=checkpoint_every,
                    checkpoint_max_to_keep=max_to_keep, num_steps_per_iteration=per_iteration,
                )
            except StopRequested as request:
                stopped = {"stopped_early": True, "reason": str(request)}
                log.info("stopped early at step %d: %s", current_step(), request)
            except tf.errors.InvalidArgumentError as error:
                if NAN_MESSAGE in str(error):
                    good = latest_checkpoint(run.root)
                    raise NonFiniteLoss(
                        f"the training loss is not finite near step {current_step()}; the last "
                        f"good checkpoint is {good.name} (step {good.step}). Lower the "
                        "learning rate or check the data."
                    ) from None
                raise
            step = _save_final_step(managers[-1], strategy.extended.should_checkpoint)
    write_status(run, FINISHED, step=step, target=target, **stopped)
    log.info("training finished at step %d", step)
    return step


# -------------------------------------------------------------------------------- evaluation


def _eval_boxes_to_xywh(boxes: np.ndarray, image_shape, original_size) -> np.ndarray:
    """The OD API's eval boxes (pixel ``ymin, xmin, ymax, xmax`` of the ``(height, width)``
    image in the records) -> pixel ``x, y, w, h`` of the ``(width, height)`` original."""
    height, width = image_shape
    normalized = np.asarray(boxes, dtype=np.float64) / np.array([height, width, height, width])
    return box_ops.yxyx_to_xywh(normalized, *original_size)


class RsnaEvaluator:
    """An OD API evaluator (``add_eval_dict`` / ``evaluate``) for the competition metric.

    Registered in ``eval_util.EVAL_METRICS_CLASS_DICT`` as ``rsna_metrics``, so that
    ``eager_eval_loop`` feeds it the same detections as the COCO evaluator.
    ``image_ids`` maps the OD API's hashed keys back to patientIds; ``original_size``
    (width, height) gives boxes in the pixels of the original image (the records may hold
    resized images), as the labels CSV; ``sink`` receives the last ground truth, detections and
    threshold curve.
    """

    def __init__(self, categories, image_ids: Mapping[int, str] | None = None,
                 sink: dict | None = None, original_size: tuple[int, int] | None = None):
        del categories  # one class: every detection is an opacity
        self.image_ids = image_ids or {}
        self.sink = sink if sink is not None else {}
        self.original_size = original_size
        self.clear()

    def clear(self):
        self.truth: det.Detections = {}
        self.detections: det.Detections = {}

    def _image_id(self, key) -> str:
        return self.image_ids.get(int(key), str(int(key)))

    def add_eval_dict(self, eval_dict):
        from object_detection.core import standard_fields as fields

        inputs, outputs = fields.InputDataFields, fields.DetectionResultFields
        values = {name: np.asarray(value) for name, value in eval_dict.items()
                  if name in (inputs.key, inputs.original_image_spatial_shape,
                              inputs.groundtruth_boxes, inputs.num_groundtruth_boxes,
                              outputs.detection_boxes, outputs.detection_scores,
                              outputs.num_detections)}
        keys = np.atleast_1d(values[inputs.key])
        shapes = values[inputs.original_image_spatial_shape].reshape(len(keys), 2)
        gt_boxes = values[inputs.groundtruth_boxes].reshape(len(keys), -1, 4)
        n_gt = values.get(inputs.num_groundtruth_boxes,
                          np.full(len(keys), gt_boxes.shape[1])).reshape(-1)
        boxes = values[outputs.detection_boxes].reshape(len(keys), -1, 4)
        scores = values[outputs.detection_scores].reshape(len(keys), -1)
        n_det = values[outputs.num_detections].reshape(-1).astype(int)
        for i, key in enumerate(keys):
            original_size = self.original_size or tuple(shapes[i][::-1])
            image_id = self._image_id(key)
            truth = gt_boxes[i, : n_gt[i]]
            truth = truth[(truth[:, 2] > truth[:, 0]) & (truth[:, 3] > truth[:, 1])]  # padding
            self.truth[image_id] = ImageBoxes.ground_truth(
                _eval_boxes_to_xywh(truth, shapes[i], original_size))
            self.detections[image_id] = ImageBoxes(
                _eval_boxes_to_xywh(boxes[i, : n_det[i]], shapes[i], original_size),
                np.clip(scores[i, : n_det[i]], 0.0, 1.0))

    def evaluate(self) -> dict[str, float]:
        """``rsna/score`` at the best minimum detection score, that score, and the images."""
        matching = score.match(self.truth, self.detections)
        curve = matching.curve(score.MIN_SCORES)
        threshold, best = score.best_threshold(score.MIN_SCORES, curve)
        self.sink.update(truth=dict(self.truth), detections=dict(self.detections),
                         curve=dict(zip(score.MIN_SCORES.tolist(), curve.tolist(), strict=True)))
        return {"rsna/score": best, "rsna/threshold": threshold,
                "rsna/images": float(len(self.truth))}


def eval_image_ids(eval_input_config) -> dict[int, str]:
    """The OD API's hash key (``inputs.HASH_KEY``) -> ``image/source_id`` of the eval records."""
    import tensorflow as tf
    from object_detection import inputs

    patterns = list(eval_input_config.tf_record_input_reader.input_path)
    files = sorted({name for pattern in patterns for name in tf.io.gfile.glob(pattern)})
    if not files:
        raise TrainError(f"no evaluation records match {patterns}")
    spec = {"image/source_id": tf.io.FixedLenFeature([], tf.string, default_value="")}
    source_ids = tf.data.TFRecordDataset(files).map(
        lambda record: tf.io.parse_single_example(record, spec)["image/source_id"])
    ids = {}
    for batch in source_ids.batch(1024):
        hashes = tf.cast(tf.strings.to_hash_bucket_fast(batch, inputs.HASH_BINS), tf.int32)
        ids.update(zip(hashes.numpy().tolist(), (b.decode() for b in batch.numpy()), strict=True))
    return ids


class EvalSession:
    """The evaluator's model, eval dataset and summary writer, built once for every checkpoint."""

    def __init__(self, pipeline_config, run: RunFolder):
        import tensorflow as tf
        from object_detection import eval_util, inputs, model_lib_v2
        from object_detection.builders import model_builder, optimizer_builder
        from object_detection.utils import config_util

        configs = read_configs(pipeline_config)
        self.configs = config_util.merge_external_params_with_configs(
            configs, None, kwargs_dict={"eval_num_epochs": 1})
        eval_config = self.configs["eval_config"]
        if not eval_config.metrics_set:
            eval_config.metrics_set.append(eval_util.EVAL_DEFAULT_METRIC)
        if RSNA_METRICS not in eval_config.metrics_set:
            eval_config.metrics_set.append(RSNA_METRICS)
        eval_input_config = self.configs["eval_input_configs"][0]
        self.results: dict = {}
        eval_util.EVAL_METRICS_CLASS_DICT[RSNA_METRICS] = functools.partial(
            RsnaEvaluator, image_ids=eval_image_ids(eval_input_config), sink=self.results,
            original_size=RSNA_IMAGE_SIZE)

        self.run = run
        self.model = model_builder.build(model_config=self.configs["model"], is_training=True)
        self.dataset = tf.distribute.get_strategy().experimental_distribute_dataset(
            inputs.eval_input(eval_config=eval_config, eval_input_config=eval_input_config,
                              model_config=self.configs["model"], model=self.model))
        self.global_step = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.optimizer, _ = optimizer_builder.build(
            self.configs["train_config"].optimizer, global_step=self.global_step)
        if eval_config.use_moving_averages:
            model_lib_v2._ensure_model_is_built(self.model, self.dataset,
                                                eval_config.batch_size == 1)
            self.optimizer.shadow_copy(self.model)
        self.checkpoint = tf.train.Checkpoint(
            step=self.global_step, model=self.model, optimizer=self.optimizer)
        self.writer = tf.summary.create_file_writer(str(run.eval_events))

    def evaluate(self, checkpoint: Checkpoint) -> dict[str, float]:
        """Restore ``checkpoint``, run one pass over the eval fold, write and return metrics."""
        from object_detection import model_lib_v2

        self.checkpoint.restore(str(checkpoint.path)).expect_partial()
        if self.configs["eval_config"].use_moving_averages:
            self.optimizer.swap_weights()
        self.results.clear()
        with self.writer.as_default():
            metrics = model_lib_v2.eager_eval_loop(
                self.model, self.configs, self.dataset, global_step=self.global_step)
        self.writer.flush()
        metrics = {name: float(value) for name, value in metrics.items()}
        if "detections" in self.results:
            det.write_detections(self.results["detections"],
                                 self.run.val_detections(checkpoint.step))
        return metrics


def keep_best(run: RunFolder, checkpoint: Checkpoint, metrics: Mapping[str, float]) -> bool:
    """Copy ``checkpoint`` to ``best/`` and record it in ``best_checkpoint`` if it scores best.

    The copy is staged and checked first: if the trainer has already deleted the checkpoint
    (it keeps only the latest few), the previous best stays as it was.
    """
    value = metrics.get("rsna/score", float("nan"))
    best = read_json(run.best_checkpoint)
    if not math.isfinite(value) or (best and value <= best["score"]):
        return False
    staging = run.root / ".best.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for file in checkpoint.path.parent.glob(checkpoint.name + ".*"):
        shutil.copy2(file, staging / file.name)
    names = [path.name for path in staging.iterdir()]
    if f"{checkpoint.name}.index" not in names or not any(".data-" in name for name in names):
        shutil.rmtree(staging)
        log.warning("%s scored best (%.4f) but the trainer had already deleted it; keeping %s",
                    checkpoint.name, value, best["checkpoint"] if best else "no best checkpoint")
        return False
    shutil.rmtree(run.best_dir, ignore_errors=True)
    staging.rename(run.best_dir)
    if run.val_detections(checkpoint.step).exists():
        shutil.copy2(run.val_detections(checkpoint.step), run.val_detections())
    write_json(run.best_checkpoint, {
        "checkpoint": checkpoint.name, "step": checkpoint.step, "score": value,
        "threshold": metrics.get("rsna/threshold"), "path": str(run.best_dir / checkpoint.name),
    })
    return True


def _evaluated_steps(done: Mapping) -> list[int]:
    return [entry["step"] for entry in done.values()]


def evaluate(pipeline_config, run_dir, num_steps: int | None = None, poll_seconds: float = 5.0,
             trainer_timeout: float = 300.0, patience: int = 0,
             min_delta: float = 0.0) -> dict | None:
    """Evaluate each new checkpoint of ``run_dir`` once; return the best (``best_checkpoint``).

    Stops after the checkpoint at ``num_steps`` (default: the config's), when the trainer's
    state is terminal (finished, NaN loss, stopped by the launcher) and every checkpoint is
    evaluated, or when no checkpoint and no heartbeat came for ``trainer_timeout`` seconds.
    Step-0 checkpoints (untrained weights) are skipped. With ``patience``, after each
    evaluation it asks the trainer to stop once the run stopped improving
    (:mod:`tfod.train.early_stop`), and goes on until the trainer has stopped.
    """
    run = RunFolder(run_dir).create()
    target = target_steps(read_configs(pipeline_config), num_steps)
    done = read_json(run.evaluated, default={}) or {}
    if any(step >= target for step in _evaluated_steps(done)):
        log.info("step %d is already evaluated: nothing to do", target)
        return read_json(run.best_checkpoint)
    session = EvalSession(pipeline_config, run)
    last_progress = time.time()
    while True:
        status = read_status(run)  # read before listing: a final checkpoint precedes its state
        pending = [c for c in list_checkpoints(run.root) if c.name not in done and c.step > 0]
        for checkpoint in pending:
            if not _evaluate_one(session, run, checkpoint, done):
                continue
            last_progress = time.time()
            early_stop.request_if_stale(run, done, patience, min_delta)
            if checkpoint.step >= target:
                log.info("evaluated the final step %d: evaluator done", checkpoint.step)
                return read_json(run.best_checkpoint)
        if pending:
            continue
        if status.get("state") in TERMINAL_STATES:
            log.info("trainer state %r and every checkpoint evaluated: evaluator done",
                     status["state"])
            return read_json(run.best_checkpoint)
        quiet = time.time() - max(float(status.get("time", 0)), last_progress)
        if quiet > trainer_timeout:
            log.warning("no new checkpoint and no trainer heartbeat for %.0f s: evaluator stops",
                        quiet)
            return read_json(run.best_checkpoint)
        time.sleep(poll_seconds)


def _evaluate_one(session: EvalSession, run: RunFolder, checkpoint: Checkpoint, done: dict) -> bool:
    import tensorflow as tf

    log.info("evaluating %s (step %d)", checkpoint.name, checkpoint.step)
    started = time.time()
    try:
        metrics = session.evaluate(checkpoint)
    except (tf.errors.NotFoundError, tf.errors.DataLossError) as error:
        log.warning("%s disappeared before it was evaluated (%s)", checkpoint.name, error)
        done[checkpoint.name] = {"step": checkpoint.step, "skipped": str(error)}
        write_json(run.evaluated, done)
        return False
    done[checkpoint.name] = {"step": checkpoint.step, "metrics": metrics,
                             "seconds": round(time.time() - started, 1)}
    write_json(run.evaluated, done)
    improved = keep_best(run, checkpoint, metrics)
    log.info("step %d: rsna/score %.4f at threshold %.2f, mAP %.4f%s (%.0f s)", checkpoint.step,
             metrics.get("rsna/score", float("nan")), metrics.get("rsna/threshold", float("nan")),
             metrics.get("DetectionBoxes_Precision/mAP", float("nan")),
             " - new best" if improved else "", time.time() - started)
    return True


# ---------------------------------------------------------------------------------- commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfod.train",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "eval"):
        command = commands.add_parser(name)
        command.add_argument("--pipeline_config", required=True)
        command.add_argument("--run_dir", required=True)
        command.add_argument("--num_steps", type=int, default=None)
    trainer = commands.choices["train"]
    trainer.add_argument("--checkpoint_every", type=int, default=1000)
    trainer.add_argument("--max_to_keep", type=int, default=7)
    trainer.add_argument("--num_workers", type=int, default=1)
    trainer.add_argument("--log_every", type=int, default=100)
    evaluator = commands.choices["eval"]
    evaluator.add_argument("--poll_seconds", type=float, default=5.0)
    evaluator.add_argument("--trainer_timeout", type=float, default=300.0)
    evaluator.add_argument("--patience", type=int, default=0)
    evaluator.add_argument("--min_delta", type=float, default=0.0)
    return parser


def _setup_logging() -> None:
    import tensorflow as tf

    tf.get_logger().setLevel(logging.INFO)
    tf.get_logger().propagate = False  # lvis adds a root handler: each line would show twice
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[tfod %(asctime)s] %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging()
    run = RunFolder(args.run_dir)
    if args.command == "eval":
        evaluate(args.pipeline_config, run.root, args.num_steps, args.poll_seconds,
                 args.trainer_timeout, args.patience, args.min_delta)
        return 0
    try:
        train(args.pipeline_config, run.root, args.num_steps, args.checkpoint_every,
              args.max_to_keep, args.num_workers, args.log_every)
    except NonFiniteLoss as error:
        write_status(run, NAN_LOSS, error=str(error))
        log.error("%s", error)
        return NAN_EXIT_CODE
    except BaseException as error:
        write_status(run, FAILED, error=repr(error))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
