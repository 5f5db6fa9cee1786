"""No input image disappears silently: every lost image is counted and named, and a run that
could read no image at all stops (exit 2) without writing anything.

Real files: copies of the sample DICOMs, broken symbolic links, two files of one patientId,
TFRecords cut short by real bytes, a text file named like a TFRecord.
"""
import os

import numpy as np
import pytest
from conftest import SAMPLE_DICOMS, one_line_error, run_tool

from tfod.data.convert import find_dicoms
from tfod.data.input_files import input_files
from tfod.errors import BadInput
from tfod.infer import predict as infer

DICOMS = sorted(SAMPLE_DICOMS.glob("*.dcm"))


class NoBoxes:
    """A detector with the ExportedModel interface that finds nothing (only the inputs matter
    here; the images are still decoded for real)."""

    input_size = None

    def resize(self, image):
        return np.zeros((8, 8, 3), np.float32)

    def __call__(self, images):
        return [np.zeros((0, 4))] * len(images), [np.zeros(0)] * len(images)


def predict(inputs):
    return infer.predict(NoBoxes(), inputs, progress=False, workers=1)


@pytest.fixture()
def folder(tmp_path):
    """Three real DICOMs, a broken link to a fourth, and two files of one more patientId."""
    folder = tmp_path / "dicoms"
    folder.mkdir()
    for path in DICOMS[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / DICOMS[3].name).symlink_to(tmp_path / "gone.dcm")
    (folder / DICOMS[4].name).write_bytes(DICOMS[4].read_bytes())
    (folder / (DICOMS[4].stem + ".DCM")).write_bytes(DICOMS[5].read_bytes())
    return folder


def test_broken_links_and_two_files_of_one_patient_are_skipped_by_name(folder):
    detections, skipped = predict(folder)
    assert list(detections) == [path.stem for path in DICOMS[:3]]
    reasons = {os.path.basename(item.input): item.reason for item in skipped}
    assert set(reasons) == {DICOMS[3].name, DICOMS[4].name, DICOMS[4].stem + ".DCM"}
    assert "cannot read the file" in reasons[DICOMS[3].name]
    assert reasons[DICOMS[4].name] == reasons[DICOMS[4].stem + ".DCM"]
    assert "2 files for one patientId" in reasons[DICOMS[4].name]
    assert infer.format_skipped(skipped).splitlines()[0] == "skipped 3 image(s)"


def test_predict_refuses_two_files_of_one_patient_as_convert_does(folder):
    convert_reasons = {issue.source: issue.reason for issue in find_dicoms(folder).issues()}
    _, skipped = predict(folder)
    for item in skipped:
        if item.input in convert_reasons:
            assert item.reason == convert_reasons[item.input].replace("none converted",
                                                                      "none read")
    assert len(convert_reasons) == 2
    kind, found = input_files(str(folder))
    assert kind == "dicom folder" and len(found) == 6  # the broken link is an input


def test_a_truncated_record_file_does_not_claim_one_lost_image(converted_sample, tmp_path):
    whole = sorted(converted_sample.glob("fold0-*.tfrecord"))[0]
    all_images, none_lost = predict(whole)
    assert none_lost == [] and len(all_images) >= 6
    cut = tmp_path / "cut.tfrecord"
    data = whole.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    detections, skipped = predict(cut)
    assert 0 < len(detections) < len(all_images)
    assert list(detections) == list(all_images)[:len(detections)]
    assert len(skipped) == 1 and skipped[0].images is None
    assert skipped[0].input == f"{cut}#{len(detections)}"
    assert "how many images is unknown" in skipped[0].reason
    summary = infer.format_skipped(skipped).splitlines()[0]
    assert summary == ("skipped 0 image(s) and the rest of 1 damaged record file(s) (how many "
                       "images is unknown)")


def test_nothing_readable_is_bad_input(tmp_path):
    fake = tmp_path / "fake.tfrecord"
    fake.write_text("patientId,x,y\n" * 50)
    with pytest.raises(BadInput, match="no image to predict .*not a TFRecord file"):
        predict(fake)
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    with pytest.raises(BadInput, match=r"no image to predict \(skipped 0 image\(s\)\)"):
        predict(empty)
    links = tmp_path / "links"
    links.mkdir()
    (links / "a.dcm").symlink_to(tmp_path / "gone.dcm")
    (links / "b.dcm").write_bytes(DICOMS[0].read_bytes()[:300])
    with pytest.raises(BadInput, match=r"links: no image to predict \(skipped 2 image"):
        predict(links)


@pytest.mark.slow
def test_tool_exits_2_and_writes_nothing_when_no_input_can_be_read(trained_run, exported_best,
                                                                   tmp_path):
    fake = tmp_path / "fake.tfrecord"
    fake.write_bytes(os.urandom(4096))
    output = tmp_path / "out" / "pred.csv"
    line = one_line_error(run_tool("predict", f"--model={trained_run.root}",
                                   f"--input={fake}", f"--output={output}",
                                   f"--submission={tmp_path / 'out' / 'sub.csv'}"))
    assert "no image to predict" in line and str(fake) in line
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
