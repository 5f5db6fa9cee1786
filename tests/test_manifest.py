"""The config stage refuses an unfinished converted folder, an empty fold and absurd numbers."""
import json
import math
import shutil

import pytest
from conftest import LABELS_CSV, SAMPLE_DICOMS
from dicom_files import write_truncated

from tfod.config import pipeline as configs
from tfod.data.convert import convert
from tfod.errors import BadInput

MODEL = "ssd_mobilenet_v2"


@pytest.mark.parametrize("option, value, message", [
    ("learning_rate", math.nan, "learning_rate must be a positive finite number, got nan"),
    ("learning_rate", math.inf, "learning_rate must be a positive finite number, got inf"),
    ("image_size", 100000, "image_size must be between 32 and 4096 pixels, got 100000"),
    ("image_size", 8, "image_size must be between 32 and 4096"),
    ("batch_size", 0, "batch_size must be a positive finite number, got 0"),
    ("num_steps", -5, "num_steps must be a positive finite number, got -5"),
])
def test_absurd_numbers_are_refused(converted_sample, tmp_path, option, value, message):
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        configs.build_config(MODEL, converted_sample, 0, tmp_path / "pipeline.config",
                             **{option: value})
    assert not (tmp_path / "pipeline.config").exists()


def test_unfinished_folder_is_refused(converted_sample, tmp_path):
    copy = shutil.copytree(converted_sample, tmp_path / "data")
    configs.build_config(MODEL, copy, 0, tmp_path / "ok.config", verify=True)
    (copy / "manifest.json").unlink()
    with pytest.raises(BadInput, match="manifest.json: missing"):
        configs.build_config(MODEL, copy, 0, tmp_path / "pipeline.config")


def test_empty_fold_is_refused_with_one_line(tmp_path, sample_dicoms):
    dicom_dir = tmp_path / "dicoms"
    dicom_dir.mkdir()
    for path in sample_dicoms[:3]:
        shutil.copy(path, dicom_dir / path.name)
    write_truncated(sample_dicoms[0], dicom_dir / sample_dicoms[0].name)
    ids = {p.stem for p in sample_dicoms[:3]}
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("\n".join(line for i, line in enumerate(LABELS_CSV.read_text()
                                                                 .splitlines())
                                     if i == 0 or line.split(",")[0] in ids) + "\n")
    manifest = convert(dicom_dir, tmp_path / "data", labels_csv, num_folds=3, workers=1,
                       progress=False)
    empty = [k for k in range(3) if manifest["counts"][f"fold{k}"]["images"] == 0]
    assert len(empty) == 1
    with pytest.raises(BadInput, match=rf"evaluation set of --fold={empty[0]} has no image"):
        configs.build_config(MODEL, tmp_path / "data", empty[0], tmp_path / "pipeline.config")
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["notes"]
    assert SAMPLE_DICOMS.is_dir()
