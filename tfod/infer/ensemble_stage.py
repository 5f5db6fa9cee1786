"""The ensemble stage behind ``tfod-ensemble``: gather models, fit or apply, fuse, gate, write.

:func:`run_ensemble` takes an :class:`EnsembleRequest` (the tool's flags) and:

1. finds each image's size (:mod:`tfod.infer.sizes`; RSNA's 1024 x 1024 with a note when no
   source is given);
2. gathers the models: detections CSVs or run folders (their ``predictions/val.csv``), exported
   models run through the predict stage on ``input``, and outside models
   (``darknet:PATH``, ``csv:PATH``, :mod:`tfod.infer.outside`); all must cover the same images
   (Darknet files list only images with boxes, and are filled in);
3. with ``fit``: searches the parameters on ``labels_csv`` (:mod:`tfod.infer.fit`), writes
   ``ensemble.json`` and ``threshold_curves.png`` into ``fit_dir`` and uses the fitted values;
   with ``params_json``: reapplies such a file's fitted values;
4. fuses (:func:`tfod.infer.ensemble.fuse`), gates by the classifier's probabilities, and
   writes the fused detections CSV and the Kaggle submission.

Every input (test ids, image sizes, detections, classifier probabilities, ``ensemble.json``)
is read and checked before anything is written, and each file is written atomically, so a
refused run leaves no output behind.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tfod import detections as det
from tfod.data import splits
from tfod.detections import BoxTable, ImageBoxes
from tfod.errors import BadInput
from tfod.infer import ensemble, fit, outside, sizes
from tfod.infer.ensemble import FusionParams
from tfod.runfolder import RunFolder, write_json

OUTSIDE_KINDS = ("darknet", "csv")


@dataclass(frozen=True)
class CsvMapping:
    """How to read ``csv:`` outside models (see :func:`tfod.infer.outside.read_mapped_csv`)."""

    columns: Mapping[str, str] = field(default_factory=dict)
    box_format: str = "xywh"
    normalized: bool = False


@dataclass(frozen=True)
class EnsembleRequest:
    """Everything ``tfod-ensemble`` was asked to do (its flags, one field each)."""

    detections: Sequence[str] = ()
    models: Sequence[str] = ()
    input: str | None = None
    outside: Sequence[str] = ()
    csv_mapping: CsvMapping = CsvMapping()
    image_sizes: str | None = None
    params: FusionParams = FusionParams()
    threshold: float = 0.5
    box_scale: float = 1.0
    output: str | None = None
    submission: str | None = None
    test_ids: str | None = None
    fit: bool = False
    labels_csv: str | None = None
    folds_csv: str | None = None
    fit_dir: str | None = None
    params_json: str | None = None
    classifier_csv: str | None = None
    gate: str | None = None  # 'multiply', 'threshold' or 'threshold:T'
    tta: str = "none"
    workers: int = 1
    progress: bool = True


@dataclass(frozen=True)
class Model:
    name: str
    detections: BoxTable
    complete: bool = True  # False: lists only the images with boxes (Darknet)


def image_sizes(request: EnsembleRequest) -> dict[str, tuple[int, int]] | None:
    if request.image_sizes:
        return sizes.read_image_sizes(request.image_sizes)
    if request.input:
        found, skipped = sizes.sizes_of_inputs(request.input)
        if skipped:
            print(f"note: {request.input}: {len(skipped)} unreadable input(s) skipped, e.g. "
                  f"{skipped[0].input}: {skipped[0].reason}")
        return found
    print("note: no --image_sizes or --input: every image is taken as 1024 x 1024 (RSNA)")
    return None


def read_detections_input(text: str) -> Model:
    """A detections CSV, or a run folder's best-checkpoint validation detections."""
    path = Path(text)
    csv = RunFolder(path).val_detections() if path.is_dir() else path
    if not csv.is_file():
        raise BadInput("no such detections CSV" + (" in the run folder" if path.is_dir() else ""),
                       csv)
    return Model(path.name if path.is_dir() else path.stem, det.read_detections(csv))


def predicted_models(request: EnsembleRequest) -> list[Model]:
    """The exported models of ``request.models`` run through the predict stage."""
    if not request.models:
        return []
    if not request.input:
        raise BadInput("--models needs --input (DICOMs or TFRecords to predict)")
    from tfod.infer.predict import predict  # TensorFlow is only loaded when models run

    result = []
    for path in request.models:
        detections, skipped = predict(path, request.input, tta=request.tta,
                                      progress=request.progress)
        if skipped:
            print(f"note: {path}: {len(skipped)} input(s) skipped, e.g. {skipped[0]}")
        result.append(Model(Path(path).name, BoxTable.of(detections)))
    return result


def outside_model(text: str, mapping: CsvMapping, image_sizes) -> Model:
    kind, sep, path = text.partition(":")
    if not sep or kind not in OUTSIDE_KINDS or not path:
        raise BadInput(f"--outside {text!r} is not KIND:PATH with KIND one of "
                       f"{', '.join(OUTSIDE_KINDS)}")
    if kind == "darknet":
        return Model(f"darknet:{Path(path).stem}", outside.read_darknet(path), complete=False)
    table = outside.read_mapped_csv(path, mapping.columns, mapping.box_format,
                                    mapping.normalized, image_sizes)
    return Model(f"csv:{Path(path).stem}", table)


def aligned(models: Sequence[Model]) -> list[BoxTable]:
    """Every model's detections over one image list (see the module docstring)."""
    complete = [m for m in models if m.complete] or list(models)
    ids = complete[0].detections.ids
    for model in complete[1:]:
        differ = set(model.detections.ids) ^ set(ids)
        if differ:
            raise BadInput(f"{model.name} and {complete[0].name} cover different images "
                           f"({len(differ)} differ, e.g. {sorted(differ)[:3]}); give each "
                           "model's detections of the same images")
    result = []
    for model in models:
        unknown = set(model.detections.ids) - set(ids)
        if unknown:
            raise BadInput(f"{model.name} has images the other models lack, e.g. "
                           f"{sorted(unknown)[:3]}")
        present = model.detections
        filled = {i: present[i] if i in present else ImageBoxes.empty() for i in ids}
        result.append(BoxTable.of(filled))
    return result


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` with a repeated one numbered (``exported``, ``exported#2``), for the report."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return result


def gate_function(request: EnsembleRequest):
    """The classifier gate as a function of detections (None without a classifier)."""
    if not request.classifier_csv:
        if request.gate:
            raise BadInput("--gate needs --classifier_csv")
        return None
    mode, _, value = (request.gate or "multiply").partition(":")
    try:
        threshold = float(value) if value else 0.5
    except ValueError:
        raise BadInput(f"--gate {request.gate!r}: {value!r} is not a number") from None
    if value and mode != "threshold":
        raise BadInput(f"--gate {request.gate!r}: only threshold takes a value")
    if not 0.0 <= threshold <= 1.0:  # nan too
        raise BadInput(f"--gate {request.gate!r}: the threshold must be in [0, 1]")
    probabilities = outside.read_probabilities(request.classifier_csv)
    return lambda detections: ensemble.gate(detections, probabilities, mode, threshold)


def load_params(path, n_models: int) -> tuple[FusionParams, float, float]:
    """The fitted parameters, threshold and box scale of an ``ensemble.json``."""
    try:
        fitted = json.loads(Path(path).read_text())["fitted"]
        params = FusionParams(**fitted["params"])
        result = params.checked(n_models), float(fitted["threshold"]), float(fitted["box_scale"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadInput(f"not an ensemble.json with fitted values ({error})", path) from None
    return result


def _validation(models: list[BoxTable], folds_csv) -> tuple[list[BoxTable], dict | None]:
    if not folds_csv:
        return models, None
    try:
        table = splits.read_folds_csv(folds_csv)
    except ValueError as error:
        raise BadInput(str(error)) from None
    folds = dict(zip(table["patientId"], table["fold"], strict=True))
    ids = [i for i in models[0].ids if i in folds]
    if not ids:
        raise BadInput("no detected image is in the folds", folds_csv)
    return [m.subset(ids) for m in models], folds


def fit_models(request: EnsembleRequest, names, models, image_size, gate) -> fit.FitResult:
    """Run the search (:func:`write_fit` writes its result)."""
    if not request.labels_csv or not request.fit_dir:
        raise BadInput("--fit needs --labels_csv and --fit_dir")
    labels = det.read_labels(request.labels_csv)  # a FormatError is a BadInput: file and row
    models, folds = _validation(models, request.folds_csv)
    return fit.fit(models, names, labels, image_size, request.params, request.threshold,
                   request.box_scale, folds=folds, transform=gate, workers=request.workers,
                   progress=request.progress)


def write_fit(result: fit.FitResult, fit_dir) -> None:
    """Write ``ensemble.json`` and the threshold curves into ``fit_dir``."""
    write_json(Path(fit_dir) / "ensemble.json", result.as_dict())
    fit.plot_curves(result, Path(fit_dir) / "threshold_curves.png")
    print(fit.format_summary(result))


def run_ensemble(request: EnsembleRequest) -> dict:
    """Do what ``request`` asks (see the module docstring); a summary of what was written."""
    if not (request.detections or request.models or request.outside):
        raise BadInput("give --detections, --models or --outside")
    if request.submission and not request.test_ids:
        raise BadInput("--submission needs --test_ids")
    test_ids = det.read_patient_ids(request.test_ids) if request.submission else None
    image_size = image_sizes(request)
    gate = gate_function(request)
    given = [read_detections_input(p) for p in request.detections]
    outsiders = [outside_model(t, request.csv_mapping, image_size) for t in request.outside]
    found = given + predicted_models(request) + outsiders  # the order --weights follow
    names, models = unique_names([m.name for m in found]), aligned(found)
    if test_ids is not None:
        ensemble.check_test_ids(models[0].ids, test_ids)
    summary = {"models": names, "images": len(models[0])}
    params, threshold, box_scale = request.params, request.threshold, request.box_scale
    result = None
    if request.fit:
        result = fit_models(request, names, models, image_size, gate)
        params, threshold, box_scale = (result.fitted.params, result.fitted.threshold,
                                        result.fitted.box_scale)
        summary.update(fitted_score=result.fitted.score, given_score=result.given.score,
                       fusions=result.fusions)
    elif request.params_json:
        params, threshold, box_scale = load_params(request.params_json, len(models))
    pool = ensemble.worker_pool(request.workers)
    try:
        fused = ensemble.fuse(models, image_size, params, pool, progress=request.progress)
    finally:
        if pool is not None:
            pool.close()
    fused = gate(fused) if gate else fused
    summary.update(params=params.checked(len(models)).as_dict(), threshold=threshold,
                   box_scale=box_scale, boxes=det.count_boxes(fused))
    if result is not None:
        write_fit(result, request.fit_dir)
    if request.output:
        summary["output"] = str(det.write_detections(fused, request.output))
    if test_ids is not None:
        summary["submission"] = str(ensemble.submit(
            fused, request.submission, test_ids, threshold, box_scale))
    return summary
