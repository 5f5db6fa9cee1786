"""Several replicas and several workers without a GPU or a second machine.

``--cpu_replicas=2`` splits the CPU into two logical devices and trains with the same
``MirroredStrategy`` path that ``--gpus=0,1`` takes; two worker processes on 127.0.0.1 with
their own ``TF_CONFIG``, started by the launcher, train one run with
``MultiWorkerMirroredStrategy`` and stop together on a stop request. Each run reaches its
final step and its checkpoint restores in a single-device evaluator.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
from conftest import prepare_run

import tfod.compat  # noqa: F401
from tfod.config import pipeline as configs
from tfod.runfolder import (
    RunFolder,
    latest_checkpoint,
    list_checkpoints,
    read_status,
    request_stop,
)
from tfod.train.evaluator import CheckpointScorer

REPO = Path(__file__).resolve().parents[1]
STEPS, EVERY = 4, 2
pytestmark = [pytest.mark.slow, pytest.mark.multiworker]


def _pipeline(converted_sample: Path, folder: Path) -> Path:
    # fold -1: both folds' shards train, so that each of two workers gets a file
    return configs.build_config("ssd_mobilenet_v2", converted_sample, -1,
                                folder / "pipeline.config", image_size=128, batch_size=2,
                                num_steps=STEPS)


def _command(run: RunFolder) -> list[str]:
    return [sys.executable, "-m", "tfod.train", "train", "--run_dir", str(run.root)]


def _launch(pipeline: Path, run: RunFolder, *flags: str) -> subprocess.CompletedProcess:
    """tfod-train on the run's config: the launcher starts the workers itself."""
    return subprocess.run(
        [sys.executable, "-m", "tools.train", f"--pipeline_config={pipeline}",
         f"--run_dir={run.root}", "--eval_device=none", "--max_restarts=0",
         f"--checkpoint_every={EVERY}", f"--log_every={EVERY}", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=_env())


def _env(**extra) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", **extra}


def _assert_finished_and_restores(pipeline: Path, run: RunFolder) -> None:
    """Final step reached and saved; the checkpoint restores into a single-device model."""
    assert [c.step for c in list_checkpoints(run.root)] == [0, 2, 4]
    assert read_status(run)["state"] == "finished" and read_status(run)["step"] == STEPS
    assert not [p for p in run.root.iterdir() if "worker" in p.name]
    scorer = CheckpointScorer(pipeline, run)
    metrics = scorer.score(latest_checkpoint(run.root))
    assert int(scorer.global_step.numpy()) == STEPS
    assert 0.0 <= metrics["rsna/score"] <= 1.0
    tf.train.Checkpoint(model=scorer.model).read(
        str(latest_checkpoint(run.root).path)).assert_existing_objects_matched()


def test_two_cpu_replicas_train_through_the_mirrored_strategy_path(converted_sample, tmp_path):
    pipeline, run = _pipeline(converted_sample, tmp_path), RunFolder(tmp_path / "run")
    prepare_run(run, pipeline, checkpoint_every=EVERY, log_every=EVERY, cpu_replicas=2)
    done = subprocess.run(_command(run), cwd=REPO, capture_output=True, text=True, timeout=900,
                          env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "strategy MirroredStrategy with 2 replica(s)" in done.stderr
    _assert_finished_and_restores(pipeline, run)


def test_the_launcher_starts_two_worker_processes_that_train_one_run(converted_sample, tmp_path):
    pipeline, run = _pipeline(converted_sample, tmp_path), RunFolder(tmp_path / "run")
    done = _launch(pipeline, run, "--num_workers=2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pids = dict(re.findall(r"\[train\] worker (\d) started \(pid (\d+)\)", done.stdout))
    assert sorted(pids) == ["0", "1"], done.stdout
    # tf.distribute.MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy
    assert "strategy CollectiveAllReduceStrategy with 2 replica(s)" in run.train_log.read_text()
    assert "CollectiveAllReduceStrategy" in (run.logs / "train-worker1.log").read_text()
    assert read_status(run)["pid"] == int(pids["0"])  # the chief writes the status
    _assert_finished_and_restores(pipeline, run)


def test_two_workers_stop_together_on_a_stop_request(converted_sample, tmp_path):
    pipeline, run = _pipeline(converted_sample, tmp_path), RunFolder(tmp_path / "run")
    request_stop(run.create(), "patience: no better rsna/score in 2 evaluations")
    done = _launch(pipeline, run, "--num_workers=2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for log in (run.train_log, run.logs / "train-worker1.log"):
        assert f"stop requested at step {EVERY}: patience" in log.read_text()
    status = read_status(run)
    assert status["state"] == "finished" and status["step"] == EVERY
    assert status["stopped_early"] is True
    assert [c.step for c in list_checkpoints(run.root)] == [0, EVERY]
