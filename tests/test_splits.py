"""tfod.data.splits: patient-level stratified folds over the full official labels."""
import numpy as np
import pandas as pd
import pytest
from conftest import CLASS_INFO_CSV, LABELS_CSV

from tfod.data import splits
from tfod.data.labels import PatientLabels, load_labels


@pytest.fixture(scope="module")
def official():
    return load_labels(LABELS_CSV, CLASS_INFO_CSV).patients


@pytest.fixture(scope="module")
def official_folds(official):
    return splits.folds_for_patients(official.values(), num_folds=5, seed=42)


def test_full_labels_folds_are_balanced(official, official_folds):
    assert set(official_folds) == set(official)  # every patient in exactly one fold
    table = pd.DataFrame({"fold": pd.Series(official_folds),
                          "target": pd.Series({p: v.target for p, v in official.items()}),
                          "class": pd.Series({p: v.label_class for p, v in official.items()})})
    sizes = table.fold.value_counts()
    assert sorted(sizes.index) == [0, 1, 2, 3, 4]
    assert (sizes.max() - sizes.min()) / sizes.mean() <= 0.01
    overall = table.target.mean()
    assert abs(overall - 0.2253) < 1e-3
    assert (table.groupby("fold").target.mean() - overall).abs().max() <= 0.005
    shares = pd.crosstab(table.fold, table["class"], normalize="index")
    assert (shares - table["class"].value_counts(normalize=True)).abs().max().max() <= 0.005


def test_same_seed_same_folds_other_seed_other_folds(official, official_folds):
    subset = [official[p] for p in sorted(official)[:3000]]
    again = splits.folds_for_patients(subset, num_folds=5, seed=42)
    assert again == splits.folds_for_patients(list(reversed(subset)), num_folds=5, seed=42)
    other = splits.folds_for_patients(subset, num_folds=5, seed=7)
    assert sum(again[p] != other[p] for p in again) > 1000


def test_repeated_patient_stays_in_one_fold():
    ids = [f"p{i // 3}" for i in range(60)]  # 20 patients, three rows each
    strata = [str(i // 3 % 2) for i in range(60)]
    folds = splits.assign_folds(ids, strata, num_folds=4, seed=0)
    assert sorted(folds) == sorted(set(ids))
    assert np.bincount(list(folds.values())).tolist() == [5, 5, 5, 5]


def test_fold_count_limits():
    assert splits.assign_folds(["b", "a"], ["0", "1"], num_folds=1, seed=0) == {"a": 0, "b": 0}
    with pytest.raises(ValueError, match="cannot split 2 patients into 3 folds"):
        splits.assign_folds(["a", "b"], ["0", "1"], num_folds=3, seed=0)


def test_folds_csv_round_trip(tmp_path):
    patients = {
        "b": PatientLabels("b", 1, np.zeros((1, 4)), (3,), (3,), "Lung Opacity", "AP"),
        "a": PatientLabels("a", 0, np.zeros((0, 4)), (), (2,), "", ""),
    }
    table = splits.folds_table({"a": 1, "b": 0}, patients, {"a": "PA"})
    path = splits.write_folds_csv(table, tmp_path / "folds.csv")
    assert path.read_text().splitlines() == [
        "patientId,fold,target,class,view_position", "b,0,1,Lung Opacity,AP", "a,1,0,,PA"]
    pd.testing.assert_frame_equal(splits.read_folds_csv(path), table)


def test_fold_ids_reads_one_fold_and_names_bad_rows(tmp_path):
    path = tmp_path / "folds.csv"
    path.write_text("patientId,fold,target\na,0,1\nb,1,0\nc,0,0\n")
    assert splits.fold_ids(path, 0) == ["a", "c"]
    with pytest.raises(ValueError, match="no image in fold 3"):
        splits.fold_ids(path, 3)
    path.write_text("patientId,fold\na,0\nb,x\n")
    with pytest.raises(ValueError, match="row 3"):
        splits.fold_ids(path, 0)
    path.write_text("patientId,target\na,0\n")
    with pytest.raises(ValueError, match=r"row 1: missing column\(s\) \['fold'\]"):
        splits.fold_ids(path, 0)
