"""Generated configs train: a few steps of tfod's trainer on the converted real sample."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import tensorflow as tf
from conftest import LABELS_CSV, SAMPLE_DICOMS

from tfod.config import pipeline as configs
from tfod.data.convert import convert
from tfod.runfolder import RunFolder, latest_checkpoint
from tfod.train import odapi
from tfod.train.settings import TrainSettings
from tfod.train.trainer import train

STEPS = 3


def _scalars(event_dir: Path, tag: str) -> dict[int, float]:
    """step -> value of a scalar that TF2's tf.summary wrote into ``event_dir``."""
    values = {}
    for path in sorted(event_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def _train_a_few_steps(run: RunFolder) -> None:
    """``STEPS`` steps of tfod's trainer on the run's config; every logged loss is finite."""
    assert train(run.root, TrainSettings(num_steps=STEPS, checkpoint_every=STEPS,
                                         log_every=1)) == STEPS
    losses = _scalars(run.train_events, odapi.LOSS_KEY)
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert all(math.isfinite(loss) for loss in losses.values()), losses
    assert latest_checkpoint(run.root).step == STEPS


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ssd_mobilenet_v2", "faster_rcnn_resnet50",
                                   "centernet_resnet50_fpn"])
def test_generated_config_trains_with_a_finite_loss(model, converted_sample, tmp_path):
    run = RunFolder(tmp_path / "run").create()
    configs.build_config(model, converted_sample, 0, run.pipeline_config,
                         image_size=128, batch_size=2, num_steps=STEPS)
    _train_a_few_steps(run)


@pytest.mark.slow
def test_mask_rcnn_trains_on_box_masks_with_a_finite_loss(tmp_path):
    tf.keras.utils.set_random_seed(7)  # untrained proposals match a box only by chance
    labels = pd.read_csv(LABELS_CSV)
    sample = [path.stem for path in SAMPLE_DICOMS.glob("*.dcm")]
    positives = labels[labels.patientId.isin(sample) & (labels.Target == 1)]
    positives.to_csv(tmp_path / "positives.csv", index=False)  # every batch trains the masks
    data_dir = tmp_path / "masked"
    convert(SAMPLE_DICOMS, data_dir, tmp_path / "positives.csv", num_folds=1, workers=1,
            box_masks=True, progress=False)
    anchors = "model.faster_rcnn.first_stage_anchor_generator.grid_anchor_generator"
    # Anchors of 8-64 px and 300 barely suppressed proposals: enough untrained proposals match
    # a 128 px box for the mask loss to be trained (with 100 proposals it often stays 0).
    run = RunFolder(tmp_path / "run").create()
    configs.build_config(
        "mask_rcnn_inception_resnet_v2", data_dir, -1, run.pipeline_config,
        image_size=128, batch_size=2, num_steps=STEPS,
        overrides=[f"{anchors}.height=32", f"{anchors}.width=32",
                   "model.faster_rcnn.first_stage_max_proposals=300",
                   "model.faster_rcnn.first_stage_nms_iou_threshold=0.95"])
    _train_a_few_steps(run)
    losses = _scalars(run.train_events, "Loss/BoxClassifierLoss/mask_loss")
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert all(math.isfinite(loss) for loss in losses.values()), losses
    assert any(loss > 0 for loss in losses.values()), losses  # a proposal matched a box mask
