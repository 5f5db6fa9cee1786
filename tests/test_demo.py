"""The end-to-end demo (what `make demo` runs) on the real sample."""
import json

import pandas as pd
import pytest
from conftest import CLASS_INFO_CSV, LABELS_CSV, SAMPLE_DICOMS

from tfod import demo


def test_rows_of_present_patients_keeps_every_row_of_the_sample(tmp_path, sample_dicoms):
    output = demo.rows_of_present_patients(LABELS_CSV, SAMPLE_DICOMS, tmp_path / "labels.csv")
    kept = pd.read_csv(output, dtype=str, keep_default_na=False)
    official = pd.read_csv(LABELS_CSV, dtype=str, keep_default_na=False)
    ids = {path.stem for path in sample_dicoms}
    assert set(kept["patientId"]) == ids
    assert len(kept) == official["patientId"].isin(ids).sum() == 21  # 5 x 2 boxes + 11 negatives
    assert output.read_text().splitlines()[0] == "patientId,x,y,width,height,Target"


def test_a_folder_without_dicoms_is_an_error(tmp_path):
    with pytest.raises(demo.DemoError, match="no .dcm files"):
        demo.rows_of_present_patients(LABELS_CSV, tmp_path, tmp_path / "labels.csv")


@pytest.mark.slow
def test_demo_runs_every_stage_end_to_end(tmp_path):
    plan = demo.DemoPlan(output_dir=tmp_path, num_steps=6, dicom_dir=SAMPLE_DICOMS,
                         labels_csv=LABELS_CSV, class_info_csv=CLASS_INFO_CSV)
    lines = []
    metrics = demo.run_demo(plan, echo=lines.append)
    manifest = json.loads((plan.data_dir / "manifest.json").read_text())
    assert manifest["skipped"] == []
    run = plan.run_dir
    assert json.loads((run / "best_checkpoint.json").read_text())["step"] in (2, 4, 6)
    assert (run / "predictions" / "val.csv").is_file()
    on_disk = json.loads((run / "metrics" / "metrics.json").read_text())
    assert on_disk["score"] == metrics["score"] and on_disk["images_total"] == 8
    assert len(list((run / "metrics" / "gallery").glob("*.jpg"))) == 8
    assert any(line.startswith("== 4/4") for line in lines)
