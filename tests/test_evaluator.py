"""The evaluator at scale: a batched pass scores every eval image exactly once, as one image at a
time does, and logs images done, images/s and the ETA as it goes. On the session's trained run
(``test_export``'s fixture): its latest checkpoint, its eval fold of the real sample."""
import logging
import re

import numpy as np
import pytest
import tensorflow as tf

import tfod.compat  # noqa: F401

# isort: split
from object_detection.utils import config_util

from tfod import detections as det
from tfod.config import pipeline
from tfod.runfolder import RunFolder, latest_checkpoint
from tfod.train.evaluator import CheckpointScorer

PROGRESS = re.compile(r"^evaluating (ckpt-\d+): (\d+)/(\d+) images, [\d.]+ images/s, ETA "
                      r"\d+m\d\ds$")
DONE = re.compile(r"^evaluating (ckpt-\d+): (\d+) images in \d+m\d\ds, [\d.]+ images/s$")


def score_with_batch(run, batch_size: int, folder, caplog):
    """The latest checkpoint of ``run`` scored with ``eval_config.batch_size`` set, a progress
    line after every batch; the metrics, the scorer and its log lines."""
    configs = config_util.get_configs_from_pipeline_file(str(run.pipeline_config))
    configs["eval_config"].batch_size = batch_size
    configs["eval_config"].num_visualizations = 4  # batches of 3: part of the second is drawn
    config = pipeline.write_config(configs, folder / f"batch{batch_size}.config")
    scorer = CheckpointScorer(config, RunFolder(folder / f"run{batch_size}").create(),
                              progress_seconds=0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tfod.train"):
        metrics = scorer.score(latest_checkpoint(run.root))
    return metrics, scorer, [r.getMessage() for r in caplog.records if r.name == "tfod.train"]


def images_drawn(folder) -> int:
    """The side-by-side images in a folder of TensorBoard events."""
    return sum(value.metadata.plugin_data.plugin_name == "images"
               for path in folder.glob("events.out.tfevents.*")
               for event in tf.compat.v1.train.summary_iterator(str(path))
               for value in event.summary.value)


@pytest.mark.slow
def test_a_batched_pass_scores_every_image_once_and_logs_its_progress(
        trained_run, tmp_path, caplog):
    single, _, _ = score_with_batch(trained_run, 1, tmp_path, caplog)
    batched, scorer, lines = score_with_batch(trained_run, 3, tmp_path, caplog)
    images = len(scorer.accumulator.images)
    assert scorer.batch_size == 3 and images % 3  # the last batch is smaller
    progress = [PROGRESS.match(line) for line in lines[:-1]]
    assert all(progress), lines
    done = [int(match.group(2)) for match in progress]
    assert done == [*range(3, images, 3), images]  # every record once, batch by batch
    assert {int(match.group(3)) for match in progress} == {images}
    assert DONE.match(lines[-1]) and DONE.match(lines[-1]).group(2) == str(images), lines
    assert batched["rsna/images"] == single["rsna/images"] == images
    assert len(scorer.accumulator.truth) == images
    assert images_drawn(scorer.run.eval_events) == 4
    # Every image once in both evaluators: the same metrics as one image at a time.
    for name, value in single.items():
        if not name.startswith("Loss/"):  # a batch's loss is normalized over the batch
            assert batched[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    step = latest_checkpoint(trained_run.root).step
    one, three = (det.read_detections(RunFolder(tmp_path / f"run{b}").val_detections(step))
                  for b in (1, 3))
    assert sorted(one.ids) == sorted(three.ids) and len(one.ids) == images
    for image in one.ids:
        np.testing.assert_allclose(np.sort(three[image].scores), np.sort(one[image].scores),
                                   atol=1e-4)
