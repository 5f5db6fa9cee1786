"""tfod.data.labels on the official label tables and on bad rows written from real ones."""
import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import CLASS_INFO_CSV, LABELS_CSV, RSNA

from tfod.data import labels as L
from tfod.errors import BadInput
from tfod.labelrows import BadRow, read_label_rows

HEADERS_CSV = RSNA / "stage_2_train_dicom_headers.csv.gz"
POSITIVE = "00436515-870c-4b36-a041-de91049b9ab4"  # lines 6, 7 of the official labels
NEGATIVE = "0004cfab-14fd-4e49-80ba-63a80b6bddd6"  # line 2


@pytest.fixture(scope="module")
def official() -> L.LabelSet:
    return L.load_labels(LABELS_CSV, CLASS_INFO_CSV)


def test_official_labels_parse_cleanly(official):
    patients = official.patients
    assert official.issues == []
    assert len(patients) == 26684
    assert sum(p.target for p in patients.values()) == 6012
    assert sum(len(p.boxes) for p in patients.values()) == 9555
    assert sum(len(p.rows) for p in patients.values()) == 30227
    assert pd.Series([p.label_class for p in patients.values()]).value_counts().to_dict() == {
        "No Lung Opacity / Not Normal": 11821, "Normal": 8851, "Lung Opacity": 6012}


def test_official_boxes_and_lines(official):
    table = pd.read_csv(LABELS_CSV)
    positive = official.patients[POSITIVE]
    expected = table[table.patientId == POSITIVE][["x", "y", "width", "height"]].to_numpy()
    np.testing.assert_array_equal(positive.boxes, expected)
    assert positive.box_rows == positive.rows == (6, 7)
    negative = official.patients[NEGATIVE]
    assert negative.target == 0 and negative.boxes.shape == (0, 4) and negative.rows == (2,)
    assert negative.stratum == "No Lung Opacity / Not Normal"


def test_headers_table_gives_view_positions(tmp_path):
    with gzip.open(HEADERS_CSV, "rt") as stream:
        head = [next(stream) for _ in range(6)]
    ids = pd.read_csv(HEADERS_CSV, nrows=5).PatientID.tolist()
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("patientId,x,y,width,height,Target\n"
                          + "".join(f"{pid},,,,,0\n" for pid in ids))
    headers = tmp_path / "headers.csv"
    headers.write_text("".join(head))
    labels = L.load_labels(labels_csv, headers_csv=headers)
    assert labels.issues == []
    assert [labels.patients[pid].view_position for pid in ids] == \
        pd.read_csv(HEADERS_CSV, nrows=5).ViewPosition.tolist()


def _official_lines(*patient_ids) -> list[str]:
    lines = LABELS_CSV.read_text().splitlines()
    return [line for line in lines[1:] if line.split(",")[0] in patient_ids]


def test_every_bad_row_is_reported_with_its_line(tmp_path):
    good_positive = _official_lines(POSITIVE)
    rows = [
        *good_positive,                                    # 2, 3
        good_positive[0],                                  # 4 duplicate of 2
        _official_lines(NEGATIVE)[0],                      # 5
        "p-nan,100,100,,50,1",                             # 6 missing width
        "p-neg,100,100,-5,50,1",                           # 7 negative width
        "p-zero,100,100,40,0,1",                           # 8 zero height
        "p-text,abc,100,40,40,1",                          # 9 non-numeric
        "p-two,,,,,2",                                     # 10 bad Target
        ",,,,,0",                                          # 11 empty id
        "p-both,,,,,0",                                    # 12 conflicts with 13
        "p-both,10,20,30,40,1",                            # 13
        "p-negbox,10,20,30,40,0",                          # 14 Target 0 with a box
    ]
    path = tmp_path / "labels.csv"
    path.write_text("patientId,x,y,width,height,Target\n" + "\n".join(rows) + "\n")
    labels = L.read_label_set(path)
    reasons = {issue.rows: issue.reason for issue in labels.issues}
    assert all(issue.source == str(path) for issue in labels.issues)
    assert set(reasons) == {(4,), (6,), (7,), (8,), (9,), (10,), (11,), (12,), (14,)}
    assert "duplicate of line 2" in reasons[(4,)]
    assert "width" in reasons[(6,)] and "width must be positive" in reasons[(7,)]
    assert "height must be positive" in reasons[(8,)] and "'abc'" in reasons[(9,)]
    assert "Target must be 0 or 1" in reasons[(10,)] and "empty patientId" in reasons[(11,)]
    assert "also has Target 1" in reasons[(12,)] and "box values" in reasons[(14,)]
    both = labels.patients["p-both"]
    assert both.target == 1 and both.rows == (13,)
    np.testing.assert_array_equal(both.boxes, [[10, 20, 30, 40]])
    # nothing lost: every line is either kept by a patient or reported
    kept = {line for p in labels.patients.values() for line in p.rows}
    reported = {line for issue in labels.issues for line in issue.rows}
    assert kept | reported == set(range(2, 2 + len(rows))) and not kept & reported


def test_missing_column_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("patientId,x,y,width,Target\nabc,,,,0\n")
    with pytest.raises(BadInput, match=r"labels\.csv.*height"):
        L.read_label_set(path)
    with pytest.raises(BadInput, match="not found"):
        L.read_label_set(tmp_path / "absent.csv")


def test_class_info_problems(tmp_path):
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("patientId,x,y,width,height,Target\n"
                          + "\n".join(_official_lines(POSITIVE, NEGATIVE)) + "\np-x,,,,,0\n")
    class_csv = tmp_path / "classes.csv"
    class_csv.write_text("patientId,class\n"
                         f"{NEGATIVE},Normal\n"            # 2 ok
                         f"{NEGATIVE},Lung Opacity\n"      # 3 contradicts line 2
                         f"{POSITIVE},Normal\n"            # 4 contradicts Target 1
                         f"{POSITIVE},Lung Opacity\n"      # 5 ok
                         "unknown-id,Normal\n"             # 6 no label row
                         "p-x,Pneumonia\n")                # 7 unknown class
    labels = L.load_labels(labels_csv, class_csv)
    by_rows = {issue.rows: issue.reason for issue in labels.issues if issue.rows}
    assert set(by_rows) == {(3,), (4,), (6,), (7,)}
    assert "contradicts 'Normal' on line 2" in by_rows[(3,)]
    assert "contradicts Target 1" in by_rows[(4,)]
    assert "no usable label row" in by_rows[(6,)] and "unknown class" in by_rows[(7,)]
    assert labels.patients[NEGATIVE].label_class == "Normal"
    assert labels.patients[POSITIVE].label_class == "Lung Opacity"
    assert all(issue.rows for issue in labels.issues)  # every dropped row is named
    assert [(i.patient_id, labels.patients[i.patient_id].stratum) for i in labels.notes] == \
        [("p-x", "Target 0")]  # kept, stratified by its target


def test_issue_text_names_file_and_lines():
    issue = L.Issue("labels.csv", (6, 7), "abc", "bad box")
    assert str(issue) == "labels.csv:6,7 [abc]: bad box"
    assert issue.as_dict() == {"source": "labels.csv", "rows": [6, 7], "patientId": "abc",
                               "reason": "bad box"}


def test_one_row_parser_two_policies(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("patientId,x,y,width,height,Target\n"
                    + "\n".join(_official_lines(POSITIVE)) + "\np-zero,100,100,40,0,1\n")
    rows, bad = read_label_rows(path, strict=False)
    assert [row.line for row in rows] == [2, 3]
    assert bad == [BadRow(4, "p-zero", "box height must be positive, got 0")]
    with pytest.raises(BadInput, match=r"labels\.csv, row 4: box height must be positive"):
        read_label_rows(path, strict=True)
    assert L.read_label_set(path).issues[0].reason == bad[0].reason  # the same rule in convert


def test_trailing_commas_and_spaced_header_read_like_the_plain_file(tmp_path):
    plain = tmp_path / "plain.csv"
    lines = LABELS_CSV.read_text().splitlines()[:30]
    plain.write_text("\n".join(lines) + "\n")
    messy = tmp_path / "messy.csv"
    messy.write_text(" , ".join(lines[0].split(",")) + ",\n"
                     + "\n".join(line + "," for line in lines[1:]) + "\n")
    assert read_label_rows(messy, strict=True) == read_label_rows(plain, strict=True)
    assert read_label_rows(plain, strict=True)[0][0].box is None
