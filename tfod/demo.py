"""The end-to-end demo (``make demo``): DICOMs to a scored Kaggle submission, as a user types it.

Every stage is the real ``tfod-*`` command, printed before it runs and run as its own process
(``python -m tools.<name>``, the console script's module), so the demo is also a transcript a
user can copy:

1. the official label rows of the patients whose DICOMs are in ``dicom_dir`` (in process);
2. ``tfod-convert``: DICOMs + labels -> TFRecords with patient-level folds;
3. ``tfod-train`` of two detectors (two input sizes of SSD MobileNet v2), each with its
   evaluator scoring every checkpoint with the competition metric (on the sample, with only
   the horizontal flip of the model's augmentations: the flip that TTA undoes);
4. ``tfod-export`` of each run's best checkpoint to a SavedModel;
5. ``tfod-predict`` of every DICOM with each SavedModel, with horizontal-flip TTA;
6. ``tfod-evaluate`` of each model's predictions (at its best threshold, and with a fitted box
   scale);
7. ``tfod-ensemble --fit``: fuse both models, fit weights, IoU, threshold and box scale, and
   write the Kaggle submission for the sample's ids;
8. ``tfod-evaluate`` of that submission, with the validation gallery;
9. ``report.html``: commands, scores, curves, gallery link and the time of every stage.

On the bundled sample the models train and are scored on the same 16 images (``fold=-1``):
sixteen images cannot teach a detector to generalize, so the demo proves the pipeline (a box
transposed, mis-scaled or shifted at any stage scores near 0), not the model. With
``data_dir``/``labels_csv``/``dicom_dir`` of a full Kaggle download and ``fold=0`` the same
stages train on four folds and score the fifth.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from tfod.errors import BadInput, RunFailed
from tfod.runfolder import RunFolder, atomic_write

REPO = Path(__file__).resolve().parents[1]
SHARED_RSNA = REPO.parent / "shared" / "data" / "rsna"
TOOL_MODULES = {
    "tfod-convert": "tools.convert_rsna", "tfod-train": "tools.train",
    "tfod-export": "tools.export", "tfod-predict": "tools.predict",
    "tfod-evaluate": "tools.evaluate", "tfod-ensemble": "tools.ensemble",
}


@dataclass(frozen=True)
class Detector:
    """One detector of the demo: a zoo model at one input size."""

    model: str
    image_size: int
    learning_rate: float = 0.02
    batch_size: int = 4

    @property
    def name(self) -> str:
        return f"{self.model}-{self.image_size}"


def detector_pair(image_size: int, model: str = "ssd_mobilenet_v2") -> tuple[Detector, Detector]:
    """Two detectors of ``model``: at ``image_size`` and at 4/5 of it (a multiple of 32)."""
    return Detector(model, image_size), Detector(model, max(32, image_size * 4 // 5 // 32 * 32))


# Measured on 2 CPU cores (1000 steps, flip only): 128 px learns the sample to rsna/score
# 0.90 and 160 px to 0.49 at step 750 in ~2 and ~3 minutes, where 192 px reached 0.19-0.40
# and 256 px needed 1500 steps (~10 minutes) for 0.2-0.4.
DEFAULT_DETECTORS = detector_pair(160)
SAMPLE_AUGMENTATIONS = ("random_horizontal_flip",)


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs on, what it trains and where it writes."""

    output_dir: Path
    dicom_dir: Path = SHARED_RSNA / "stage_2_train_images_sample"
    labels_csv: Path = SHARED_RSNA / "stage_2_train_labels.csv"
    class_info_csv: Path | None = SHARED_RSNA / "stage_2_detailed_class_info.csv"
    data_dir: Path | None = None  # an existing converted folder: skip tfod-convert
    detectors: Sequence[Detector] = DEFAULT_DETECTORS
    num_steps: int = 1000
    fold: int = -1  # -1: train and evaluate on every image (the 16-image sample)
    num_folds: int = 2
    max_size: int | None = None  # records' longer side; None: the largest detector input
    backend: str = "local"
    gpus: str = ""

    @property
    def record_size(self) -> int:
        """Records no larger than the largest input: faster input, original sizes recorded."""
        return self.max_size or max(detector.image_size for detector in self.detectors)

    @property
    def augmentations(self) -> Sequence[str] | None:
        """The flip alone when the models are scored on the images they learn (``fold=-1``):
        memorising 16 images is the point, and crops and colour jitter slow it threefold;
        the model's own augmentations when a fold is held out."""
        return SAMPLE_AUGMENTATIONS if self.fold == -1 else None

    @property
    def converted(self) -> Path:
        return self.data_dir or self.output_dir / "data"

    def run_dir(self, detector: Detector) -> Path:
        return self.output_dir / "runs" / detector.name

    def predictions(self, detector: Detector) -> Path:
        return self.output_dir / "predictions" / f"{detector.name}.csv"

    def metrics_dir(self, name: str) -> Path:
        return self.output_dir / "metrics" / name

    @property
    def ensemble_dir(self) -> Path:
        return self.output_dir / "ensemble"

    @property
    def submission(self) -> Path:
        return self.output_dir / "submission.csv"

    @property
    def report(self) -> Path:
        return self.output_dir / "report.html"


@dataclass
class StageResult:
    """One stage as it ran: the command a user would type and how long it took."""

    name: str
    command: str
    seconds: float = 0.0
    outputs: dict = field(default_factory=dict)


class DemoError(RunFailed):
    """A demo stage failed; the message says which and where its logs are."""


def rows_of_present_patients(table_csv: Path, dicom_dir: Path, output_csv: Path) -> Path:
    """Copy the rows of ``table_csv`` whose patientId has a DICOM in ``dicom_dir``."""
    present = {path.stem for path in Path(dicom_dir).glob("*.dcm")}
    if not present:
        raise BadInput("no .dcm files in the folder", dicom_dir)
    table = pd.read_csv(table_csv, dtype=str, keep_default_na=False)
    with atomic_write(output_csv, newline="") as stream:
        table[table["patientId"].isin(present)].to_csv(stream, index=False)
    return output_csv


def write_ids(dicom_dir: Path, output_csv: Path) -> Path:
    """The ids to submit for: every DICOM of ``dicom_dir`` (Kaggle's sample-submission shape)."""
    ids = sorted(path.stem for path in Path(dicom_dir).glob("*.dcm"))
    with atomic_write(output_csv, newline="") as stream:
        pd.DataFrame({"patientId": ids, "PredictionString": ""}).to_csv(stream, index=False)
    return output_csv


class StageRunner:
    """Runs ``tfod-*`` commands as their own processes, printing and timing each."""

    def __init__(self, echo: Callable[[str], None] = print, log_dir: Path | None = None):
        self.echo, self.log_dir, self.results = echo, log_dir, []

    def run(self, name: str, tool: str, args: Sequence[str], **outputs) -> StageResult:
        command = shlex.join([tool, *map(str, args)])
        self.echo(f"\n== {len(self.results) + 1}. {name}\n$ {command}")
        started = time.monotonic()
        argv = [sys.executable, "-m", TOOL_MODULES[tool], *map(str, args)]
        done = subprocess.run(argv, cwd=REPO, check=False, stderr=sys.stderr)  # the console
        result = StageResult(name, command, round(time.monotonic() - started, 1),
                             {key: str(value) for key, value in outputs.items()})
        self.results.append(result)
        if done.returncode != 0:
            raise DemoError(f"stage {name!r} failed (exit {done.returncode}): {command}")
        return result

    def note(self, name: str, command: str, seconds: float, **outputs) -> StageResult:
        self.echo(f"\n== {len(self.results) + 1}. {name}\n# {command}")
        result = StageResult(name, command, round(seconds, 1),
                             {key: str(value) for key, value in outputs.items()})
        self.results.append(result)
        return result


def prepare_labels(plan: DemoPlan, runner: StageRunner) -> tuple[Path, Path | None]:
    """The label (and class-info) rows of the DICOMs present, and the ids to submit for."""
    started = time.monotonic()
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    labels = rows_of_present_patients(plan.labels_csv, plan.dicom_dir,
                                      plan.output_dir / "labels.csv")
    class_info = None
    if plan.class_info_csv:
        class_info = rows_of_present_patients(plan.class_info_csv, plan.dicom_dir,
                                              plan.output_dir / "class_info.csv")
    ids = write_ids(plan.dicom_dir, plan.output_dir / "test_ids.csv")
    runner.note("labels of the DICOMs present", f"rows of {plan.labels_csv.name} whose "
                f"patientId has a DICOM in {plan.dicom_dir}", time.monotonic() - started,
                labels=labels, test_ids=ids)
    return labels, class_info


def convert_stage(plan: DemoPlan, runner: StageRunner, labels: Path, class_info: Path | None):
    args = [f"--dicom_dir={plan.dicom_dir}", f"--labels_csv={labels}",
            f"--output_dir={plan.converted}", f"--num_folds={plan.num_folds}", "--workers=1",
            f"--max_size={plan.record_size}"]
    if class_info:
        args.append(f"--class_info_csv={class_info}")
    runner.run("convert DICOMs to TFRecords", "tfod-convert", args, data=plan.converted)


def train_stage(plan: DemoPlan, runner: StageRunner, detector: Detector):
    run_dir = plan.run_dir(detector)
    checkpoint_every = max(plan.num_steps // 4, 1)  # 4 evaluations; 1000 steps: no extra final
    args = [f"--model={detector.model}", f"--data_dir={plan.converted}", f"--fold={plan.fold}",
            f"--image_size={detector.image_size}", f"--batch_size={detector.batch_size}",
            f"--learning_rate={detector.learning_rate}", f"--num_steps={plan.num_steps}",
            f"--checkpoint_every={checkpoint_every}", "--log_every=100",
            f"--run_dir={run_dir}", f"--backend={plan.backend}", f"--gpus={plan.gpus}"]
    if plan.augmentations is not None:
        args.append(f"--augmentations={','.join(plan.augmentations)}")
    runner.run(f"train {detector.name} with its evaluator", "tfod-train", args, run=run_dir)


def export_stage(plan: DemoPlan, runner: StageRunner, detector: Detector):
    run_dir = plan.run_dir(detector)
    runner.run(f"export {detector.name}'s best checkpoint", "tfod-export",
               [f"--run_dir={run_dir}", "--checkpoint=best"], export=RunFolder(run_dir).exported)


def predict_stage(plan: DemoPlan, runner: StageRunner, detector: Detector):
    output = plan.predictions(detector)
    runner.run(f"predict the DICOMs with {detector.name} (hflip TTA)", "tfod-predict",
               [f"--model={plan.run_dir(detector)}", f"--input={plan.dicom_dir}",
                f"--output={output}", "--tta=hflip", "--batch_size=8"], detections=output)


def score_stage(plan: DemoPlan, runner: StageRunner, name: str, detections: Path, labels: Path,
                gallery: bool = False) -> dict:
    output_dir = plan.metrics_dir(name)
    args = [f"--detections={detections}", f"--labels_csv={labels}", f"--output_dir={output_dir}"]
    if plan.fold >= 0:
        args += [f"--folds_csv={plan.converted / 'folds.csv'}", f"--fold={plan.fold}"]
    if gallery:
        args.append(f"--dicom_dir={plan.dicom_dir}")
    runner.run(f"score {name}", "tfod-evaluate", args, metrics=output_dir)
    return json.loads((output_dir / "metrics.json").read_text())


def ensemble_stage(plan: DemoPlan, runner: StageRunner, labels: Path) -> dict:
    args = [f"--detections={plan.predictions(d)}" for d in plan.detectors]
    args += ["--fit", f"--labels_csv={labels}", f"--fit_dir={plan.ensemble_dir}",
             f"--output={plan.ensemble_dir / 'fused.csv'}", f"--submission={plan.submission}",
             f"--test_ids={plan.output_dir / 'test_ids.csv'}"]
    if plan.fold >= 0:
        args.append(f"--folds_csv={plan.converted / 'folds.csv'}")
    runner.run("fit the ensemble and write the submission", "tfod-ensemble", args,
               ensemble=plan.ensemble_dir, submission=plan.submission)
    return json.loads((plan.ensemble_dir / "ensemble.json").read_text())


def run_demo(plan: DemoPlan, echo: Callable[[str], None] = print) -> dict:
    """Run every stage of ``plan``; write ``report.html`` and ``demo.json``; return the summary."""
    from tfod import demo_report

    runner = StageRunner(echo)
    started = time.monotonic()
    labels, class_info = prepare_labels(plan, runner)
    if plan.data_dir is None:
        convert_stage(plan, runner, labels, class_info)
    for detector in plan.detectors:
        train_stage(plan, runner, detector)
    scores = {}
    for detector in plan.detectors:
        export_stage(plan, runner, detector)
        predict_stage(plan, runner, detector)
        scores[detector.name] = score_stage(plan, runner, detector.name,
                                            plan.predictions(detector), labels)
    ensemble = ensemble_stage(plan, runner, labels)
    scores["submission"] = score_stage(plan, runner, "submission", plan.submission, labels,
                                       gallery=True)
    summary = {"plan": _plan_dict(plan), "stages": [asdict(r) for r in runner.results],
               "scores": scores, "ensemble": ensemble,
               "seconds": round(time.monotonic() - started, 1)}
    with atomic_write(plan.output_dir / "demo.json") as stream:
        stream.write(json.dumps(summary, indent=2, default=str))
    demo_report.write_report(plan, summary)
    echo(demo_report.text_summary(plan, summary))
    return summary


def _plan_dict(plan: DemoPlan) -> dict:
    values = asdict(plan)
    values["detectors"] = [asdict(d) | {"name": d.name} for d in plan.detectors]
    return json.loads(json.dumps(values, default=str))
