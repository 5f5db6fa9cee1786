"""What an ``--input`` flag names: a DICOM folder, one DICOM file, a text file of DICOM paths, or
a TFRecord glob. One rule for every stage that reads images to predict (detections, image sizes
for the ensemble, the classifier's probabilities), so the same ``--input`` means the same images
to each.

Every ``*.dcm`` entry of a folder is an input, a broken symbolic link included: the stage that
reads it lists it as skipped ("cannot read the file"), as ``tfod-convert`` does, never drops it.
Two different files of one patientId (``x.dcm`` and ``x.DCM``) are both refused
(:func:`by_patient`), as ``tfod-convert`` refuses them: which one is meant is unknown.
"""
from __future__ import annotations

import glob
from pathlib import Path

from tfod.errors import BadInput

RECORD_SUFFIXES = (".tfrecord", ".record")
GLOB_CHARACTERS = frozenset("*?[")


def input_files(text: str) -> tuple[str, list]:
    """What ``--input`` names: its kind ('dicom folder', 'dicom list' (a list file, or one
    ``.dcm`` file) or 'tfrecords') and its DICOM paths or record files. The one rule for every
    stage that takes such an input."""
    path = Path(text).expanduser()
    if path.is_dir():
        return "dicom folder", _folder_dicoms(path)
    is_records = path.suffix in RECORD_SUFFIXES or GLOB_CHARACTERS & set(text)
    if path.is_file() and path.suffix.lower() == ".dcm":
        return "dicom list", [path]
    if path.is_file() and not is_records:
        return "dicom list", _listed_dicoms(path)
    files = sorted(glob.glob(str(path)))
    if not files:
        raise BadInput("matches no file (expected a DICOM folder, a text file of DICOM paths "
                       "or a TFRecord glob)", text)
    return "tfrecords", files


def _folder_dicoms(folder: Path) -> list[Path]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm" and not p.is_dir())
    if not paths:
        hint = " (for TFRecords give a glob: DIR/*.tfrecord)" if any(
            folder.glob("*.tfrecord")) else ""
        raise BadInput(f"holds no .dcm files{hint}", folder)
    return paths


def _listed_dicoms(list_file: Path) -> list[Path]:
    """One DICOM path per line (relative paths from the list's folder; ``#`` comments)."""
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"cannot read the list of DICOM paths ({error})", list_file) from error
    names = [line.split("#")[0].strip() for line in lines]
    paths = [list_file.parent / name for name in names if name]
    if not paths:
        raise BadInput("lists no DICOM path", list_file)
    return paths


def by_patient(paths) -> tuple[list[Path], dict[str, list[Path]]]:
    """``paths`` (in order) without the patientIds (file stems) that several different files
    claim; those patientIds and their files. A path listed twice is one file."""
    files: dict[str, list[Path]] = {}
    for path in paths:
        same = files.setdefault(path.stem, [])
        if not any(_same_file(path, other) for other in same):
            same.append(path)
    duplicates = {stem: found for stem, found in files.items() if len(found) > 1}
    return [path for path in paths if path.stem not in duplicates], duplicates


def duplicate_reason(paths: list[Path], refused: str) -> str:
    """Why the files of one patientId are refused (``refused``: 'converted', 'read')."""
    return (f"{len(paths)} files for one patientId ({', '.join(p.name for p in paths)}): none "
            f"{refused}")


def _same_file(a: Path, b: Path) -> bool:
    return a == b or a.resolve() == b.resolve()
