"""The evaluator process: score every new checkpoint of a run with COCO and the competition metric.

:func:`evaluate` waits for new checkpoints and scores each once with a
:class:`CheckpointScorer`: one inference pass over the eval fold (the detection model's own
``predict``/``loss``/``postprocess``, through public OD API calls) whose detections feed both the
OD API's COCO evaluator (``eval_util.get_evaluators``) and a
:class:`CompetitionMetricAccumulator`, the competition metric of :mod:`tfod.scoring.metric` at
its best detection threshold. Both go to ``eval/`` TensorBoard events (``rsna/score``,
``rsna/threshold`` next to ``DetectionBoxes_Precision/mAP``...). It keeps the best checkpoint by
``rsna/score`` (``best_checkpoint.json``, ``best/``) and stops after the final step, when the
trainer reports a terminal state, or when the trainer's heartbeat stops.

Boxes of the competition metric and of ``predictions/val-step{N}.csv`` are in pixels of each
image's own original (the DICOM's), read per image from the records' ``image/original_height``
and ``image/original_width`` (``image/height``/``image/width`` where those are absent).

A pass runs in batches of ``eval_config.batch_size`` (ground truth padded to the reader's
``max_number_of_boxes``; the last batch may be smaller) and logs the images done, images/s and
the ETA every :data:`PROGRESS_SECONDS` and at its end, as the trainer logs its steps. The
evaluator lets TensorFlow grow its GPU memory as needed, so that it can share the trainer's GPU.
"""
from __future__ import annotations

import copy
import logging
import math
import shutil
import time
from collections.abc import Mapping

import numpy as np

import tfod.compat  # noqa: F401  (before object_detection)
from tfod import boxes as box_ops
from tfod import detections as det
from tfod.config.pipeline import read_configs
from tfod.data.records import ORIGINAL_HEIGHT_KEY, ORIGINAL_WIDTH_KEY
from tfod.detections import ImageBoxes
from tfod.progress import format_duration
from tfod.runfolder import (
    TERMINAL_STATES,
    Checkpoint,
    RunFolder,
    list_checkpoints,
    read_json,
    read_status,
    write_json,
)
from tfod.scoring import metric as score
from tfod.train import early_stop
from tfod.train.odapi import TrainError, build_variables, losses_and_predictions
from tfod.train.settings import TrainSettings

log = logging.getLogger("tfod.train")
PROGRESS_SECONDS = 15.0  # a progress line of a pass this often
MAX_BOXES = 100  # ground-truth padding when the eval reader sets no max_number_of_boxes

# An eval image: its patientId and the (width, height) of its original, by the OD API's hash key.
EvalImages = Mapping[int, tuple[str, tuple[int, int]]]


def eval_boxes_to_xywh(boxes: np.ndarray, image_shape, original_size) -> np.ndarray:
    """The OD API's eval boxes (pixel ``ymin, xmin, ymax, xmax`` of the ``(height, width)``
    image in the records) -> pixel ``x, y, w, h`` of the ``(width, height)`` original."""
    height, width = image_shape
    normalized = np.asarray(boxes, dtype=np.float64) / np.array([height, width, height, width])
    return box_ops.yxyx_to_xywh(normalized, *original_size)


class CompetitionMetricAccumulator:
    """Accumulates ground truth and detections of eval batches and computes the competition
    metric over them. It takes the OD API evaluators' ``add_eval_dict`` / ``evaluate`` /
    ``clear``, so it reads the same eval dicts as the COCO evaluator.

    ``images`` maps the OD API's hashed keys to ``(patientId, (width, height))`` of the
    original image, so boxes come out in the original's pixels as in the labels CSV; an
    unknown key keeps its number as id and the record image's size. After ``evaluate``,
    ``truth``, ``detections`` and ``curve`` (minimum score -> metric) hold the last pass.
    """

    def __init__(self, images: EvalImages | None = None):
        self.images = images or {}
        self.curve: dict[float, float] = {}
        self.clear()

    def clear(self):
        self.truth: det.Detections = {}
        self.detections: det.Detections = {}

    def _image(self, key, record_shape) -> tuple[str, tuple[int, int]]:
        fallback = (str(int(key)), (int(record_shape[1]), int(record_shape[0])))
        return self.images.get(int(key), fallback)

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
            image_id, original_size = self._image(key, shapes[i])
            truth = gt_boxes[i, : n_gt[i]]
            truth = truth[(truth[:, 2] > truth[:, 0]) & (truth[:, 3] > truth[:, 1])]  # padding
            self.truth[image_id] = ImageBoxes.ground_truth(
                eval_boxes_to_xywh(truth, shapes[i], original_size))
            self.detections[image_id] = ImageBoxes(
                eval_boxes_to_xywh(boxes[i, : n_det[i]], shapes[i], original_size),
                np.clip(scores[i, : n_det[i]], 0.0, 1.0))

    def evaluate(self) -> dict[str, float]:
        """``rsna/score`` at the best minimum detection score, that score, and the images."""
        matching = score.match(self.truth, self.detections)
        curve = matching.curve(score.MIN_SCORES)
        threshold, best = score.best_threshold(score.MIN_SCORES, curve)
        self.curve = dict(zip(score.MIN_SCORES.tolist(), curve.tolist(), strict=True))
        return {"rsna/score": best, "rsna/threshold": threshold,
                "rsna/images": float(len(self.truth))}


def eval_images(eval_input_config) -> dict[int, tuple[str, tuple[int, int]]]:
    """The OD API's hash key (``inputs.HASH_KEY``) -> ``(image/source_id, (width, height))`` of
    each eval record, the size being the original's (the record's own when not recorded)."""
    import tensorflow as tf

    from tfod.train.inputs import HASH_BINS

    patterns = list(eval_input_config.tf_record_input_reader.input_path)
    files = sorted({name for pattern in patterns for name in tf.io.gfile.glob(pattern)})
    if not files:
        raise TrainError(f"no evaluation records match {patterns}")
    size = {key: tf.io.FixedLenFeature([], tf.int64, default_value=-1) for key in (
        "image/height", "image/width", ORIGINAL_HEIGHT_KEY, ORIGINAL_WIDTH_KEY)}
    spec = {"image/source_id": tf.io.FixedLenFeature([], tf.string, default_value=""), **size}
    images = {}
    for batch in tf.data.TFRecordDataset(files).batch(1024):
        parsed = {key: value.numpy() for key, value in
                  tf.io.parse_example(batch, spec).items()}
        source_ids = parsed["image/source_id"]
        hashes = tf.cast(tf.strings.to_hash_bucket_fast(source_ids, HASH_BINS), tf.int32)
        width = np.where(parsed[ORIGINAL_WIDTH_KEY] > 0, parsed[ORIGINAL_WIDTH_KEY],
                         parsed["image/width"])
        height = np.where(parsed[ORIGINAL_HEIGHT_KEY] > 0, parsed[ORIGINAL_HEIGHT_KEY],
                          parsed["image/height"])
        for key, source_id, w, h in zip(hashes.numpy().tolist(), source_ids, width, height,
                                        strict=True):
            images[key] = (source_id.decode(), (int(w), int(h)))
    return images


class PassProgress:
    """Logs an evaluation pass's images done, images/s and ETA every ``seconds``, and its
    total at the end (``tfod.train`` log lines, which the launcher echoes)."""

    def __init__(self, what: str, total: int, seconds: float = PROGRESS_SECONDS):
        self.what, self.total, self.seconds = what, total, seconds
        self.done = 0
        self.started = self.logged = time.monotonic()

    def update(self, images: int) -> None:
        self.done += images
        if time.monotonic() - self.logged >= self.seconds:
            self.logged = time.monotonic()
            rate = self.done / max(self.logged - self.started, 1e-9)
            log.info("%s: %d/%d images, %.1f images/s, ETA %s", self.what, self.done,
                     self.total, rate, format_duration(max(self.total - self.done, 0) / rate))

    def finish(self) -> None:
        seconds = time.monotonic() - self.started
        log.info("%s: %d images in %s, %.1f images/s", self.what, self.done,
                 format_duration(seconds), self.done / max(seconds, 1e-9))


class CheckpointScorer:
    """Scores checkpoints of one run: the model, eval dataset, evaluators and summary writer
    are built once; :meth:`score` restores a checkpoint and runs one pass over the eval fold.

    ``use_moving_averages`` is honoured: the model is built by running one batch through it,
    the optimizer shadows its variables, and each restored checkpoint's averages are swapped in.
    """

    def __init__(self, pipeline_config, run: RunFolder,
                 progress_seconds: float = PROGRESS_SECONDS):
        import tensorflow as tf
        from object_detection.builders import model_builder
        from object_detection.utils import config_util


        self.configs = config_util.merge_external_params_with_configs(
            read_configs(pipeline_config), None, kwargs_dict={"eval_num_epochs": 1})
        self.eval_config = self.configs["eval_config"]
        self.eval_input_config = self.configs["eval_input_configs"][0]
        self.run = run
        self.progress_seconds = progress_seconds
        self.accumulator = CompetitionMetricAccumulator(eval_images(self.eval_input_config))
        self.model = model_builder.build(self.configs["model"], is_training=False)
        self.batch_size = self._batch_size()
        self.dataset = self._dataset()
        self.global_step = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.checkpoint = tf.train.Checkpoint(step=self.global_step, model=self.model,
                                              **self._moving_averages())
        self.writer = tf.summary.create_file_writer(str(run.eval_events))
        self.class_agnostic = False  # set when the pass function is traced
        self._detect = tf.function(self._detect_batch)

    def _batch_size(self) -> int:
        """``eval_config.batch_size``; 1 when the model's input size is not fixed (images of
        different sizes cannot share a batch)."""
        from object_detection.utils import config_util

        height, width = config_util.get_spatial_image_size(
            config_util.get_image_resizer_config(self.configs["model"]))
        if min(height, width) < 0 and self.eval_config.batch_size > 1:
            log.info("the image resizer keeps no fixed size: evaluating one image at a time")
            return 1
        return max(1, self.eval_config.batch_size)

    def _dataset(self):
        """The eval fold as ``(features, labels)`` batches of :attr:`batch_size`: every
        record once (the last batch may be smaller), ground truth padded to the reader's
        ``max_number_of_boxes`` (:data:`MAX_BOXES` when unset) so that images batch, hash keys
        as :func:`eval_images` computes them. The one place the evaluator builds its input."""
        from tfod.train.inputs import eval_dataset

        reader = copy.deepcopy(self.eval_input_config)
        reader.drop_remainder = False
        reader.max_number_of_boxes = reader.max_number_of_boxes or MAX_BOXES
        eval_config = copy.deepcopy(self.eval_config)
        eval_config.batch_size = self.batch_size
        return eval_dataset(eval_config=eval_config, eval_input_config=reader,
                            model_config=self.configs["model"], model=self.model)

    def _moving_averages(self) -> dict:
        """The optimizer to restore with the model when ``use_moving_averages`` is set."""
        from object_detection.builders import optimizer_builder

        if not self.eval_config.use_moving_averages:
            return {}
        train_config = self.configs["train_config"]
        if not train_config.optimizer.use_moving_average:
            raise TrainError("eval_config.use_moving_averages is set but the training optimizer "
                             "keeps no moving averages (optimizer.use_moving_average: false)")
        import tensorflow as tf

        features, labels = next(iter(self.dataset))
        build_variables(tf.distribute.get_strategy(), self.model, (features, labels),
                        self._unpad_groundtruth(labels))
        self.optimizer, _ = optimizer_builder.build(train_config.optimizer,
                                                    global_step=self.global_step)
        self.optimizer.shadow_copy(self.model)
        return {"optimizer": self.optimizer}

    @staticmethod
    def _unpad_groundtruth(labels) -> bool:
        """Padded ground truth is cut to each image's boxes for the loss (the batch size is
        static: each batch size traces its own function)."""
        from object_detection.core import standard_fields as fields

        boxes = labels[fields.InputDataFields.groundtruth_boxes].get_shape().as_list()
        return boxes[1] is not None

    def _detect_batch(self, features, labels):
        """Losses and the OD API's eval dict (:func:`tfod.train.odapi.prepare_eval_dict`) of
        one batch, in one graph."""
        from object_detection.core import standard_fields as fields

        from tfod.train.inputs import HASH_KEY
        from tfod.train.odapi import prepare_eval_dict

        losses, predictions = losses_and_predictions(
            self.model, features, labels, self._unpad_groundtruth(labels),
            self.configs["train_config"].add_regularization_loss)
        detections = self.model.postprocess(
            predictions, features[fields.InputDataFields.true_image_shape])
        wanted = (fields.InputDataFields.image, fields.InputDataFields.original_image,
                  fields.InputDataFields.original_image_spatial_shape,
                  fields.InputDataFields.true_image_shape, HASH_KEY)
        eval_features = {name: features[name] for name in wanted if name in features}
        eval_dict, self.class_agnostic = prepare_eval_dict(
            detections, dict(labels), eval_features)
        return losses, eval_dict

    def score(self, checkpoint: Checkpoint) -> dict[str, float]:
        """Restore ``checkpoint``, run one pass over the eval fold, write and return metrics."""
        self.checkpoint.restore(str(checkpoint.path)).expect_partial()
        if self.eval_config.use_moving_averages:  # (swap_weights needs a non-default strategy)
            self.optimizer.assign_average_vars(self.model.trainable_variables)
        metrics = self.evaluate_model(f"evaluating {checkpoint.name}")
        with self.writer.as_default(step=int(self.global_step.numpy())):
            write_scalars(metrics)
        self.writer.flush()
        det.write_detections(self.accumulator.detections,
                             self.run.val_detections(checkpoint.step))
        return metrics

    def evaluate_model(self, what: str = "evaluating") -> dict[str, float]:
        """One pass over the eval fold with the weights the model holds now: COCO metrics,
        the competition metric and the mean eval losses (each batch's mean, weighted by its
        images)."""
        from tfod.train.inputs import HASH_KEY

        evaluators, losses, weights = None, {}, []
        self.accumulator.clear()
        progress = PassProgress(what, len(self.accumulator.images), self.progress_seconds)
        for features, labels in self.dataset:
            batch_losses, eval_dict = self._detect(features, labels)
            if evaluators is None:
                evaluators = self._coco_evaluators(self.class_agnostic)
            for evaluator in evaluators:
                evaluator.add_eval_dict(eval_dict)
            self.accumulator.add_eval_dict(eval_dict)
            self._draw(progress.done, eval_dict, self.class_agnostic)
            for name, value in batch_losses.items():
                losses.setdefault(name, []).append(float(value))
            weights.append(len(features[HASH_KEY]))
            progress.update(weights[-1])
        if evaluators is None:
            raise TrainError(f"the evaluation records {self._patterns()} hold no example")
        progress.finish()
        metrics = {}
        for evaluator in evaluators:
            metrics.update(evaluator.evaluate())
        metrics.update(self.accumulator.evaluate())
        metrics.update({name: float(np.average(values, weights=weights))
                        for name, values in losses.items()})
        return {str(name): float(value) for name, value in metrics.items()}

    def _patterns(self) -> list[str]:
        return list(self.eval_input_config.tf_record_input_reader.input_path)

    def _coco_evaluators(self, class_agnostic: bool) -> list:
        """The config's ``metrics_set`` evaluators (COCO by default), by class or agnostic."""
        from object_detection import eval_util

        return eval_util.get_evaluators(
            self.eval_config, list(self._categories(class_agnostic).values()),
            eval_util.evaluator_options_from_eval_config(self.eval_config))

    def _categories(self, class_agnostic: bool) -> dict:
        from object_detection.utils import label_map_util

        if class_agnostic:
            return label_map_util.create_class_agnostic_category_index()
        return label_map_util.create_category_index_from_labelmap(
            self.eval_input_config.label_map_path)

    def _draw(self, index: int, eval_dict, class_agnostic: bool) -> None:
        """Side-by-side images (detections | ground truth) of the first
        ``eval_config.num_visualizations`` images of a pass, as the OD API's evaluator draws
        them; ``eval_dict`` is the batch starting at image ``index``."""
        import tensorflow as tf
        from object_detection.core import standard_fields as fields
        from object_detection.utils import visualization_utils as vis

        wanted = self.eval_config.num_visualizations - index
        if wanted <= 0 or fields.InputDataFields.original_image not in eval_dict:
            return
        batch = len(eval_dict[fields.InputDataFields.key])
        if wanted < batch:  # draw no more images than asked (each costs a PNG of the original)
            eval_dict = {name: value[:wanted] if value.shape.rank and value.shape[0] == batch
                         else value for name, value in eval_dict.items()}
        images = vis.draw_side_by_side_evaluation_image(
            eval_dict, category_index=self._categories(class_agnostic),
            max_boxes_to_draw=self.eval_config.max_num_boxes_to_visualize,
            min_score_thresh=self.eval_config.min_score_threshold,
            use_normalized_coordinates=False)
        with self.writer.as_default(step=int(self.global_step.numpy())):
            for j, image in enumerate(images):
                tf.summary.image(f"eval_side_by_side_{index}_{j}", image,
                                 max_outputs=self.eval_config.num_visualizations)


def write_scalars(metrics: Mapping[str, float]) -> None:
    """Every metric as a scalar of the default summary writer."""
    import tensorflow as tf

    for name, value in metrics.items():
        tf.summary.scalar(name, value)


def keep_best(run: RunFolder, checkpoint: Checkpoint, metrics: Mapping[str, float]) -> bool:
    """Copy ``checkpoint`` to ``best/`` and record it in ``best_checkpoint.json`` if it scores
    best.

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


def grow_gpu_memory() -> None:
    """Let TensorFlow take each visible GPU's memory as it needs it (the launcher also sets
    ``TF_FORCE_GPU_ALLOW_GROWTH``), so that the evaluator can share the trainer's GPU. Call it
    before anything runs on a GPU."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def evaluate(run_dir, settings: TrainSettings) -> dict | None:
    """Score each new checkpoint of ``run_dir`` once; return the best (``best_checkpoint.json``).

    Stops after the checkpoint at ``settings.num_steps``, when the trainer's state is terminal
    (finished, NaN loss, stopped by the launcher) and every checkpoint is scored, or when no
    checkpoint and no heartbeat came for ``settings.trainer_timeout`` seconds. Step-0
    checkpoints (untrained weights) are skipped. With ``settings.patience``, after each
    evaluation it asks the trainer to stop once the run stopped improving
    (:mod:`tfod.train.early_stop`), and goes on until the trainer has stopped.
    """
    run = RunFolder(run_dir).create()
    target = settings.num_steps
    done = read_json(run.evaluated, default={}) or {}
    if any(step >= target for step in _evaluated_steps(done)):
        log.info("step %d is already evaluated: nothing to do", target)
        return read_json(run.best_checkpoint)
    grow_gpu_memory()
    scorer = CheckpointScorer(run.pipeline_config, run)
    last_progress = time.time()
    while True:
        status = read_status(run)  # read before listing: a final checkpoint precedes its state
        pending = [c for c in list_checkpoints(run.root) if c.name not in done and c.step > 0]
        for checkpoint in pending:
            if not _score_one(scorer, run, checkpoint, done):
                continue
            last_progress = time.time()
            early_stop.request_if_stale(run, done, settings.patience, settings.min_delta)
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
        if quiet > settings.trainer_timeout:
            log.warning("no new checkpoint and no trainer heartbeat for %.0f s: evaluator stops",
                        quiet)
            return read_json(run.best_checkpoint)
        time.sleep(settings.eval_poll_seconds)


def _score_one(scorer: CheckpointScorer, run: RunFolder, checkpoint: Checkpoint,
               done: dict) -> bool:
    import tensorflow as tf

    log.info("evaluating %s (step %d)", checkpoint.name, checkpoint.step)
    started = time.time()
    try:
        metrics = scorer.score(checkpoint)
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
