"""Shared test fixtures: paths to the real RSNA data in ../shared/data."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RSNA = SHARED_DATA / "rsna"
SAMPLE_DICOMS = RSNA / "stage_2_train_images_sample"
LABELS_CSV = RSNA / "stage_2_train_labels.csv"
CLASS_INFO_CSV = RSNA / "stage_2_detailed_class_info.csv"
EDGE_CASES = SHARED_DATA / "dicom_edge_cases"


@pytest.fixture(scope="session")
def sample_dicoms() -> list[Path]:
    """The 16 real RSNA training DICOMs."""
    paths = sorted(SAMPLE_DICOMS.glob("*.dcm"))
    assert len(paths) == 16, f"expected 16 real DICOMs in {SAMPLE_DICOMS}"
    return paths


CONVERTED_SAMPLE_FOLDS = 2


@pytest.fixture(scope="session")
def converted_sample(tmp_path_factory) -> Path:
    """The 16 real DICOMs converted (official labels + class info, 2 folds, passthrough).

    The folder holds label_map.pbtxt, fold{0,1}-00000-of-00001.tfrecord, folds.csv and
    manifest.json (its ``skipped`` list names the labelled patients without a DICOM here).
    """
    from tfod.data.convert import convert

    output_dir = tmp_path_factory.mktemp("converted_sample")
    convert(SAMPLE_DICOMS, output_dir, LABELS_CSV, CLASS_INFO_CSV,
            num_folds=CONVERTED_SAMPLE_FOLDS, seed=42, workers=1, progress=False)
    return output_dir


def prepare_run(run, pipeline_config: Path, **settings):
    """What the launcher writes before it starts a run's trainer and evaluator
    (``python -m tfod.train train|eval --run_dir``): the run's ``pipeline.config`` and its
    ``settings.json`` (``settings``: TrainSettings fields; ``num_steps`` defaults to the
    config's). Returns the run folder."""
    import shutil

    from tfod.train.launch.common import config_steps
    from tfod.train.settings import TrainSettings

    run.create()
    if Path(pipeline_config).resolve() != run.pipeline_config:
        shutil.copyfile(pipeline_config, run.pipeline_config)
    settings.setdefault("num_steps", config_steps(run.pipeline_config))
    TrainSettings(**settings).write(run)
    return run


# ------------------------------------------------------------------ tools and a trained run

TOOL_ENV = {**os.environ, "PYTHONPATH": str(REPO)}
TRAINED_STEPS, TRAINED_CHECKPOINT_EVERY = 15, 5  # the session's tiny trained run


def run_tool(tool: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m tools.<tool> args...`` from the repository, as a user runs ``tfod-<tool>``."""
    return subprocess.run([sys.executable, "-m", f"tools.{tool}", *args], cwd=REPO,
                          env=TOOL_ENV, capture_output=True, text=True, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The stderr line of a tool that failed on bad input (exit 2), checked to be the only one
    from tfod (TensorFlow's own start-up logging aside) and without a traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


def tiny_run(folder: Path, model: str, converted: Path, roles=("train", "eval"),
             checkpoint_every: int = TRAINED_CHECKPOINT_EVERY, **options):
    """A run of ``model`` evaluated on fold 0 of ``converted`` (``options``: ``build_config``'s,
    e.g. ``image_size``, ``batch_size``, ``num_steps``), prepared as the launcher prepares it,
    then its trainer and its evaluator (``roles``) run in turn (not beside each other)."""
    from tfod.config import pipeline as configs
    from tfod.runfolder import RunFolder

    run = RunFolder(folder).create()
    configs.build_config(model, converted, 0, run.pipeline_config, **options)
    prepare_run(run, run.pipeline_config, checkpoint_every=checkpoint_every, log_every=5,
                trainer_timeout=30, eval_poll_seconds=1)
    for role in roles:
        done = subprocess.run([sys.executable, "-m", "tfod.train", role, f"--run_dir={run.root}"],
                              cwd=REPO, env=TOOL_ENV, capture_output=True, text=True,
                              timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.fixture(scope="session")
def trained_run(converted_sample, tmp_path_factory):
    """A tiny SSD (128 px, batch 2) trained 15 steps on fold 1 of the converted sample, with
    checkpoints every 5 steps, each scored by the evaluator (run in turn, not beside it)."""
    return tiny_run(tmp_path_factory.mktemp("trained") / "run", "ssd_mobilenet_v2",
                    converted_sample, image_size=128, batch_size=2, num_steps=TRAINED_STEPS)


@pytest.fixture(scope="session")
def exported_best(trained_run) -> Path:
    """``tfod-export --run_dir <run>``: the best checkpoint into ``<run>/exported``."""
    done = run_tool("export", f"--run_dir={trained_run.root}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(trained_run.exported) in done.stdout
    return trained_run.exported
