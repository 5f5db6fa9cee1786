"""Patient-level stratified k-fold split and the ``folds.csv`` that records it.

The split is scikit-learn's :class:`~sklearn.model_selection.StratifiedGroupKFold`, grouped
by patient and stratified by :attr:`PatientLabels.stratum` (the 3-way class when the
class-info table is given, else the target). With the same patients and seed it gives the same
folds on any machine.

We do not use its ``shuffle=True``: in the pinned scikit-learn 1.5 it shuffles the per-group class
counts without their group ids, so the folds come out unstratified (scikit-learn issue
#32478, fixed by PR #32540). Instead the seed draws a random order of the patients, passed
as integer group labels, which the unshuffled splitter uses to break its ties.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from tfod.data.labels import PatientLabels
from tfod.errors import BadInput

FOLDS_COLUMNS = ("patientId", "fold", "target", "class", "view_position")
REQUIRED_COLUMNS = ("patientId", "fold")


def assign_folds(patient_ids, strata, num_folds: int, seed: int) -> dict[str, int]:
    """``{patientId: fold}`` with every patient in exactly one of ``num_folds`` folds.

    ``patient_ids`` may repeat (one entry per image or label row); a patient's entries always
    land in the same fold. ``num_folds=1`` puts everyone in fold 0.
    """
    ids = np.asarray(list(patient_ids), dtype=object)
    strata = np.asarray(list(strata), dtype=object)
    if num_folds < 1:
        raise ValueError(f"num_folds must be at least 1, got {num_folds}")
    unique = len(set(ids))
    if num_folds > unique:
        raise ValueError(f"cannot split {unique} patients into {num_folds} folds")
    if num_folds == 1:
        return {patient_id: 0 for patient_id in sorted(set(ids))}
    _check_strata(ids, strata, num_folds)
    splitter = StratifiedGroupKFold(n_splits=num_folds)
    groups = _seeded_group_labels(ids, seed)
    folds: dict[str, int] = {}
    for fold, (_, members) in enumerate(splitter.split(np.zeros(len(ids)), strata, groups)):
        folds.update((patient_id, fold) for patient_id in ids[members])
    return dict(sorted(folds.items()))


def _check_strata(ids: np.ndarray, strata: np.ndarray, num_folds: int) -> None:
    """:class:`BadInput` where the splitter cannot stratify: every class (stratum) with fewer
    entries than folds (scikit-learn's "n_splits cannot be greater than the number of members
    in each class"), naming each class and its patients."""
    entries = pd.Series(strata).value_counts()
    if (entries >= num_folds).any():
        return
    patients = pd.DataFrame({"id": ids, "stratum": strata}).groupby("stratum")["id"].nunique()
    found = ", ".join(f"{stratum}: {count} patient(s)"
                      for stratum, count in patients.items())
    raise BadInput(f"every class has fewer patients than the {num_folds} folds asked ({found}):"
                   " a stratified split needs as many in a class; ask for fewer folds")


def _seeded_group_labels(ids: np.ndarray, seed: int) -> np.ndarray:
    """Integer group per entry: the patient's rank in a seeded random order of all patients."""
    unique = sorted(set(ids))
    ranks = np.random.RandomState(seed).permutation(len(unique))
    rank_of = dict(zip(unique, ranks, strict=True))
    return np.array([rank_of[patient_id] for patient_id in ids])


def folds_for_patients(patients: Iterable[PatientLabels], num_folds: int,
                       seed: int) -> dict[str, int]:
    """:func:`assign_folds` for labelled patients, stratified by their class or target."""
    patients = list(patients)
    return assign_folds([p.patient_id for p in patients], [p.stratum for p in patients],
                        num_folds, seed)


def folds_table(folds: Mapping[str, int], patients: Mapping[str, PatientLabels],
                view_positions: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per image: ``patientId,fold,target,class,view_position``, sorted by fold, id."""
    view_positions = view_positions or {}
    rows = [
        (patient_id, fold, patients[patient_id].target, patients[patient_id].label_class,
         view_positions.get(patient_id) or patients[patient_id].view_position)
        for patient_id, fold in folds.items()
    ]
    table = pd.DataFrame(rows, columns=list(FOLDS_COLUMNS))
    return table.sort_values(["fold", "patientId"], kind="stable").reset_index(drop=True)


def write_folds_csv(table: pd.DataFrame, path) -> Path:
    """Write a :func:`folds_table` to ``path``."""
    path = Path(path)
    table.to_csv(path, index=False, columns=list(FOLDS_COLUMNS))
    return path


def read_folds_csv(path) -> pd.DataFrame:
    """Read a ``folds.csv`` back (class and view position as strings, '' when empty).

    ``patientId`` and ``fold`` are required; a row without an id or an integer fold is an
    error naming the file and the row (the header is row 1).
    """
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [name for name in REQUIRED_COLUMNS if name not in table.columns]
    if missing:
        raise ValueError(f"{path}, row 1: missing column(s) {missing}")
    folds = pd.to_numeric(table["fold"], errors="coerce")
    bad = np.flatnonzero(folds.isna().to_numpy() | (table["patientId"] == "").to_numpy()
                         | (folds != folds.round()).to_numpy())
    if len(bad):
        raise ValueError(f"{path}, row {bad[0] + 2}: bad row {table.iloc[bad[0]].tolist()}")
    table["fold"] = folds.astype(int)
    if "target" in table.columns:
        table["target"] = pd.to_numeric(table["target"]).astype(int)
    return table[[name for name in FOLDS_COLUMNS if name in table.columns]]


def fold_ids(path, fold: int) -> list[str]:
    """The patientIds of ``fold`` in a ``folds.csv``; an error if the fold is empty."""
    table = read_folds_csv(path)
    ids = table.loc[table["fold"] == fold, "patientId"].tolist()
    if not ids:
        raise ValueError(f"{path}: no image in fold {fold} (folds: {sorted(set(table['fold']))})")
    return ids
