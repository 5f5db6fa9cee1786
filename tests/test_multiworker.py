"""Several replicas and several workers without a GPU or a second machine.

``--cpu_replicas=2`` splits the CPU into two logical devices and trains with the same
``MirroredStrategy`` path that ``--gpus=0,1`` takes; two worker processes on 127.0.0.1 with
their own ``TF_CONFIG`` train one run with ``MultiWorkerMirroredStrategy``. Each run reaches its
final step and its checkpoint restores in a single-device evaluator.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

import tfod.compat  # noqa: F401
from tfod.config import pipeline as configs
from tfod.runfolder import RunFolder, latest_checkpoint, list_checkpoints, read_status
from tfod.train.evaluator import CheckpointScorer
from tfod.train.multiworker import worker_tf_configs

REPO = Path(__file__).resolve().parents[1]
STEPS, EVERY = 4, 2
pytestmark = [pytest.mark.slow, pytest.mark.multiworker]


def _pipeline(converted_sample: Path, folder: Path) -> Path:
    # fold -1: both folds' shards train, so that each of two workers gets a file
    return configs.build_config("ssd_mobilenet_v2", converted_sample, -1,
                                folder / "pipeline.config", image_size=128, batch_size=2,
                                num_steps=STEPS)


def _command(pipeline: Path, run: RunFolder, *flags: str) -> list[str]:
    return [sys.executable, "-m", "tfod.train", "train", "--pipeline_config", str(pipeline),
            "--run_dir", str(run.root), "--checkpoint_every", str(EVERY), "--log_every",
            str(EVERY), *flags]


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
    done = subprocess.run(_command(pipeline, run, "--cpu_replicas", "2"), cwd=REPO,
                          capture_output=True, text=True, timeout=900, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "strategy MirroredStrategy with 2 replica(s)" in done.stderr
    _assert_finished_and_restores(pipeline, run)


def _free_port_pair() -> int:
    """A port p with p and p + 1 free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", base))
                second.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    raise AssertionError("no two consecutive free ports on 127.0.0.1")


def test_two_worker_processes_train_one_run(converted_sample, tmp_path):
    pipeline, run = _pipeline(converted_sample, tmp_path), RunFolder(tmp_path / "run")
    logs = [tmp_path / f"worker{index}.log" for index in range(2)]
    workers = []
    for tf_config, log in zip(worker_tf_configs(2, "127.0.0.1", _free_port_pair()), logs,
                              strict=True):
        with open(log, "w") as out:
            workers.append(subprocess.Popen(
                _command(pipeline, run, "--num_workers", "2"), cwd=REPO, stdout=out,
                stderr=subprocess.STDOUT, env=_env(TF_CONFIG=tf_config)))
    try:
        codes = [worker.wait(timeout=900) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    # tf.distribute.MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy
    assert "strategy CollectiveAllReduceStrategy with 2 replica(s)" in logs[0].read_text()
    assert read_status(run)["pid"] == workers[0].pid  # the chief writes the status
    _assert_finished_and_restores(pipeline, run)
