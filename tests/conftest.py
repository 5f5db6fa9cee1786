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
