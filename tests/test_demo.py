"""The end-to-end demo (what `make demo` runs) on the real sample, checked as a user would.

One module-scoped run of the demo's own code path (two detectors trained to learn the 16
sample images, exported, predicting the DICOMs with flip TTA, fused and submitted) serves the
slow tests: the scores are the end-to-end correctness check (a box transposed, mis-scaled or
shifted at any stage keeps them near 0), and the report and gallery are opened in Chromium.
"""
import json

import pandas as pd
import pytest
from browser import broken_images, chromium
from conftest import CLASS_INFO_CSV, LABELS_CSV, SAMPLE_DICOMS

from tfod import demo
from tfod.errors import BadInput

pytestmark = pytest.mark.stack_lane  # the TF 2.21 stack's lane runs the demo too

# The targets: the submission >= 0.30 and each single exported model >= 0.25. Measured
# here (2 cores, the default plan) over six trainings: 0.48 to 0.98 at the evaluator; a box
# transposed, mis-scaled or shifted at any stage scores near 0.
SUBMISSION_TARGET, SINGLE_MODEL_TARGET = 0.30, 0.25


def test_rows_of_present_patients_keeps_every_row_of_the_sample(tmp_path, sample_dicoms):
    output = demo.rows_of_present_patients(LABELS_CSV, SAMPLE_DICOMS, tmp_path / "labels.csv")
    kept = pd.read_csv(output, dtype=str, keep_default_na=False)
    official = pd.read_csv(LABELS_CSV, dtype=str, keep_default_na=False)
    ids = {path.stem for path in sample_dicoms}
    assert set(kept["patientId"]) == ids
    assert len(kept) == official["patientId"].isin(ids).sum() == 21  # 5 x 2 boxes + 11 negatives
    assert output.read_text().splitlines()[0] == "patientId,x,y,width,height,Target"


def test_a_folder_without_dicoms_is_an_error(tmp_path):
    with pytest.raises(BadInput, match="no .dcm files"):
        demo.rows_of_present_patients(LABELS_CSV, tmp_path, tmp_path / "labels.csv")


def test_the_submission_ids_are_every_dicom(tmp_path, sample_dicoms):
    ids = pd.read_csv(demo.write_ids(SAMPLE_DICOMS, tmp_path / "ids.csv"), dtype=str)
    assert sorted(ids["patientId"]) == sorted(path.stem for path in sample_dicoms)


def test_the_second_detector_is_four_fifths_of_the_first_on_a_32_pixel_grid():
    assert [d.image_size for d in demo.detector_pair(160)] == [160, 128]
    assert [d.image_size for d in demo.detector_pair(512)] == [512, 384]
    assert demo.detector_pair(32)[1].image_size == 32


def test_the_sample_plan_keeps_the_flip_and_records_at_the_largest_input(tmp_path):
    sample = demo.DemoPlan(output_dir=tmp_path)
    assert sample.augmentations == ("random_horizontal_flip",)
    assert sample.record_size == max(d.image_size for d in sample.detectors)
    held_out = demo.DemoPlan(output_dir=tmp_path, fold=0, detectors=demo.detector_pair(512))
    assert held_out.augmentations is None  # the model's own when a fold is held out
    assert held_out.record_size == 512
    assert demo.DemoPlan(output_dir=tmp_path, max_size=1024).record_size == 1024


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo_output")
    plan = demo.DemoPlan(output_dir=output_dir, dicom_dir=SAMPLE_DICOMS, labels_csv=LABELS_CSV,
                         class_info_csv=CLASS_INFO_CSV)
    printed = []
    summary = demo.run_demo(plan, echo=printed.append)
    return plan, summary, "\n".join(printed).splitlines()


@pytest.mark.slow
def test_the_demo_finds_the_opacities_through_every_stage(demo_run):
    plan, summary, _ = demo_run
    scores = summary["scores"]
    singles = [scores[detector.name]["score"] for detector in plan.detectors]
    assert min(singles) >= SINGLE_MODEL_TARGET, singles
    assert scores["submission"]["score"] >= SUBMISSION_TARGET
    on_disk = json.loads((plan.metrics_dir("submission") / "metrics.json").read_text())
    assert on_disk["score"] == scores["submission"]["score"]


@pytest.mark.slow
def test_the_demo_leaves_every_artifact(demo_run):
    plan, summary, lines = demo_run
    assert plan.report.is_file() and plan.submission.is_file()
    submitted = pd.read_csv(plan.submission, dtype=str, keep_default_na=False)
    assert sorted(submitted["patientId"]) == sorted(p.stem for p in SAMPLE_DICOMS.glob("*.dcm"))
    for detector in plan.detectors:
        run = plan.run_dir(detector)
        assert (run / "exported" / "saved_model" / "saved_model.pb").is_file()
        assert list((run / "train").glob("events.out.tfevents.*"))
        assert list((run / "eval").glob("events.out.tfevents.*"))
    commands = [stage["command"] for stage in summary["stages"]]
    for tool in ("tfod-convert", "tfod-train", "tfod-export", "tfod-predict", "tfod-ensemble",
                 "tfod-evaluate"):
        assert any(command.startswith(tool) for command in commands), tool
        assert any(line.startswith(f"$ {tool}") for line in lines), tool
    trains = [command for command in commands if command.startswith("tfod-train")]
    assert len(trains) == 2 and all("--augmentations=random_horizontal_flip" in command
                                    for command in trains)
    assert all(stage["seconds"] >= 0 for stage in summary["stages"])


@pytest.mark.slow
def test_the_report_and_the_gallery_in_a_real_browser(demo_run, tmp_path):
    plan, _, _ = demo_run
    gallery = plan.metrics_dir("submission") / "gallery" / "index.html"
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(plan.report.as_uri())
        assert "tfod demo" in driver.title
        assert driver.execute_script("return document.images.length") >= 3
        assert broken_images(driver) == []
        driver.save_screenshot(str(plan.output_dir / "report.png"))
        driver.get(gallery.as_uri())
        assert broken_images(driver) == []
        assert _shown(driver) == 16
        filtered = []
        for name in ("fp", "fn"):
            button = driver.find_element("css selector", f'button[data-filter="{name}"]')
            expected = int(button.text.split("(")[1].rstrip(")"))
            button.click()
            filtered.append(_shown(driver))
            assert filtered[-1] == expected
        assert min(filtered) < 16  # the misses at least: 5 positives of 16
        driver.find_element("css selector", 'button[data-filter="all"]').click()
        assert _shown(driver) == 16
        driver.save_screenshot(str(plan.output_dir / "gallery.png"))
    finally:
        driver.quit()
    print(f"screenshots: {plan.output_dir / 'report.png'} {plan.output_dir / 'gallery.png'}")


def _shown(driver) -> int:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('figure'))"
        ".filter(f => f.style.display !== 'none').length")
