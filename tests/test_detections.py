"""Reading and writing detections, labels and submission CSVs, with their validation."""
import numpy as np
import pytest
from conftest import LABELS_CSV, RSNA

from tfod import detections as det
from tfod.detections import BoxTable, FormatError, ImageBoxes

HEADER = "patientId,x,y,width,height,score\n"


def _example() -> dict:
    return {
        "a": ImageBoxes([[10.5, 20, 30, 40], [0, 0, 1e-3, 1024]], [0.9, 0.123456789012345]),
        "b": ImageBoxes.empty(),
        "c": ImageBoxes([[1, 2, 3, 4]], [1.0]),
    }


def _assert_same(read: BoxTable, expected: dict):
    assert list(read) == list(expected)
    for key, image in expected.items():
        np.testing.assert_array_equal(read[key].boxes, image.boxes)
        np.testing.assert_array_equal(read[key].scores, image.scores)


def test_detections_round_trip_exactly(tmp_path):
    path = det.write_detections(_example(), tmp_path / "d.csv")
    assert path.read_text().splitlines()[3] == "b,,,,,"
    _assert_same(det.read_detections(path), _example())


def test_submission_round_trip_sorted_by_score(tmp_path):
    path = det.write_submission(_example(), tmp_path / "s.csv", ids=["c", "z", "a", "b"])
    lines = path.read_text().splitlines()
    assert lines[0] == "patientId,PredictionString"
    assert lines[1] == "c,1.0 1.0 2.0 3.0 4.0"
    assert lines[2] == "z," and lines[4] == "b,"
    assert lines[3].startswith("a,0.9 10.5 20.0 30.0 40.0 0.123456789012345 ")
    read = det.read_submission(path)
    assert list(read) == ["c", "z", "a", "b"] and len(read["z"]) == 0
    _assert_same(read.subset(["a", "b", "c"]), _example())


def test_write_submission_refuses_ids_it_cannot_place(tmp_path):
    with pytest.raises(ValueError, match="not in ids"):
        det.write_submission(_example(), tmp_path / "s.csv", ids=["a", "b"])
    with pytest.raises(ValueError, match="twice"):
        det.write_submission(_example(), tmp_path / "s.csv", ids=["a", "b", "c", "a"])


def test_official_labels_read_completely():
    labels = det.read_labels(LABELS_CSV)
    assert len(labels) == 26_684
    assert det.count_boxes(labels) == 9_555
    assert np.count_nonzero(labels.counts()) == 6_012
    assert (labels.scores == 1).all()
    first = labels["00436515-870c-4b36-a041-de91049b9ab4"]
    np.testing.assert_array_equal(first.boxes, [[264, 152, 213, 379], [562, 152, 256, 453]])
    assert len(labels["0004cfab-14fd-4e49-80ba-63a80b6bddd6"]) == 0


def test_official_sample_submission_reads():
    sample = det.read_submission(RSNA / "stage_2_sample_submission.csv")
    assert len(sample) == 3_000
    np.testing.assert_array_equal(np.unique(sample.boxes, axis=0), [[0, 0, 100, 100]])


@pytest.mark.parametrize(("row", "message"), [
    ("a,1,2,3,4", "5 fields, expected 6"),
    ("a,1,2,3,4,0.5,7", "7 fields"),
    ("a,1,two,3,4,0.5", "y 'two' is not a number"),
    ("a,1,2,-3,4,0.5", "negative box size"),
    ("a,1,2,3,-0.5,0.5", "negative box size"),
    ("a,1,2,3,4,1.5", "outside \\[0, 1\\]"),
    ("a,1,2,3,4,-0.1", "outside \\[0, 1\\]"),
    ("a,1,2,3,4,nan", "not finite"),
    ("a,1,2,,4,0.5", "some box fields are empty"),
    (",1,2,3,4,0.5", "empty patientId"),
    ("b,,,,,", "has boxes \\(row 2\\) and an empty row"),
])
def test_malformed_detection_row_names_file_and_row(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "b,1,2,3,4,0.5\n" + row + "\n")
    with pytest.raises(FormatError, match=message) as error:
        det.read_detections(path)
    assert str(path) in str(error.value) and "row 3" in str(error.value)
    assert error.value.row == 3


def test_wrong_header_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("patientId,x,y,w,h,score\n")
    with pytest.raises(FormatError, match="row 1: header"):
        det.read_detections(path)


@pytest.mark.parametrize("row", ["a,1,2,3,4,0", "a,,,,,1", "a,1,2,3,4,2", "a,1,2,3,4,"])
def test_label_rows_must_agree_with_target(tmp_path, row):
    path = tmp_path / "labels.csv"
    path.write_text("patientId,x,y,width,height,Target\n" + row + "\n")
    with pytest.raises(FormatError, match="row 2: Target"):
        det.read_labels(path)


@pytest.mark.parametrize(("text", "message"), [
    ("a,0.5 1 2 3", "4 values, not groups of 5"),
    ("a,1.5 1 2 3 4", "outside"),
    ("a,0.5 1 2 3 -4", "negative"),
    ("a,0.5 1 2 x 4", "not a number"),
])
def test_malformed_submission_row(tmp_path, text, message):
    path = tmp_path / "s.csv"
    path.write_text("patientId,PredictionString\nb,\n" + text + "\n")
    with pytest.raises(FormatError, match=f"row 3: .*{message}"):
        det.read_submission(path)


def test_submission_with_an_id_twice_is_refused(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("patientId,PredictionString\na,\nb,0.5 1 2 3 4\na,0.5 1 2 3 4\n")
    with pytest.raises(FormatError, match="row 4: a already listed in row 2"):
        det.read_submission(path)


def test_box_table_is_a_mapping_of_image_boxes():
    table = BoxTable.of(_example())
    assert BoxTable.of(table) is table
    assert len(table) == 3 and "b" in table and "x" not in table
    assert table.counts().tolist() == [2, 0, 1]
    _assert_same(table, _example())
    _assert_same(table.subset(["c", "b"]), {"c": _example()["c"], "b": ImageBoxes.empty()})
    assert table.above(0.5).counts().tolist() == [1, 0, 1]
    with pytest.raises(KeyError):
        table.subset(["x"])
