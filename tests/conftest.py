"""Shared test fixtures: paths to the real RSNA data in ../shared/data."""

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
