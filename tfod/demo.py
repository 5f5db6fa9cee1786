"""The end-to-end demo on the bundled real data (``make demo``).

Stages, each the same library call as its ``tfod-*`` command:

1. take the official label rows of the patients whose DICOMs are in ``dicom_dir``;
2. convert those DICOMs to TFRecords with patient-level folds (``tfod-convert``);
3. train a small model on every fold but ``fold``, with the evaluator scoring each checkpoint
   on ``fold`` with the competition metric (``tfod-train``);
4. score the best checkpoint's detections: threshold sweep, box-scale fit, plots and a
   validation gallery (``tfod-evaluate``).

Everything lands in ``output_dir``: ``labels.csv``, ``data/`` (the converted folder) and
``runs/<model>-fold<k>/`` (the run folder, with ``metrics/`` inside).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tfod.errors import RunFailed

REPO = Path(__file__).resolve().parents[1]
SHARED_RSNA = REPO.parent / "shared" / "data" / "rsna"


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs on and how long it trains."""

    output_dir: Path
    dicom_dir: Path = SHARED_RSNA / "stage_2_train_images_sample"
    labels_csv: Path = SHARED_RSNA / "stage_2_train_labels.csv"
    class_info_csv: Path = SHARED_RSNA / "stage_2_detailed_class_info.csv"
    model: str = "ssd_mobilenet_v2"
    image_size: int = 128
    batch_size: int = 2
    num_steps: int = 60
    num_folds: int = 2
    fold: int = 0

    @property
    def data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def run_dir(self) -> Path:
        return self.output_dir / "runs" / f"{self.model}-fold{self.fold}"


class DemoError(RunFailed):
    """A demo stage failed; the message says which and where its logs are."""


def rows_of_present_patients(table_csv: Path, dicom_dir: Path, output_csv: Path) -> Path:
    """Copy the rows of ``table_csv`` whose patientId has a DICOM in ``dicom_dir``."""
    present = {path.stem for path in Path(dicom_dir).glob("*.dcm")}
    if not present:
        raise DemoError(f"no .dcm files in {dicom_dir}")
    table = pd.read_csv(table_csv, dtype=str, keep_default_na=False)
    table[table["patientId"].isin(present)].to_csv(output_csv, index=False)
    return output_csv


def run_demo(plan: DemoPlan, echo: Callable[[str], None] = print) -> dict:
    """Run every stage of ``plan``; return the metrics of the best checkpoint."""
    from tfod.config.pipeline import ConfigRequest
    from tfod.data import convert
    from tfod.runfolder import RunFolder
    from tfod.scoring import stage
    from tfod.train import launch

    plan.output_dir.mkdir(parents=True, exist_ok=True)
    echo(f"== 1/4 labels of the DICOMs in {plan.dicom_dir}")
    labels_csv = rows_of_present_patients(plan.labels_csv, plan.dicom_dir,
                                          plan.output_dir / "labels.csv")
    class_info_csv = rows_of_present_patients(plan.class_info_csv, plan.dicom_dir,
                                              plan.output_dir / "class_info.csv")
    echo(f"== 2/4 convert -> {plan.data_dir}")
    manifest = convert.convert(plan.dicom_dir, plan.data_dir, labels_csv, class_info_csv,
                               num_folds=plan.num_folds, workers=1)
    echo(convert.format_summary(manifest))
    echo(f"== 3/4 train {plan.model} on the other folds, evaluate on fold {plan.fold} "
         f"-> {plan.run_dir}")
    request = ConfigRequest(model=plan.model, data_dir=str(plan.data_dir), fold=plan.fold,
                            image_size=plan.image_size, batch_size=plan.batch_size,
                            num_steps=plan.num_steps)
    exit_code = launch.launch_run(request, run_dir=plan.run_dir, echo=echo,
                                  checkpoint_every=max(plan.num_steps // 3, 1), log_every=10,
                                  max_restarts=1)
    run = RunFolder(plan.run_dir)
    if exit_code != 0:
        raise DemoError(f"training failed (exit {exit_code}); see {run.logs}")
    if not run.val_detections().exists():
        raise DemoError(f"the evaluator wrote no detections; see {run.eval_log}")
    echo(f"== 4/4 score the best checkpoint's detections -> {run.metrics}")
    metrics = stage.score_files(run.val_detections(), labels_csv, run.metrics,
                                folds_csv=plan.data_dir / "folds.csv", fold=plan.fold,
                                dicom_dir=plan.dicom_dir)
    echo(stage.format_table(metrics))
    echo(f"\nrun folder: {run.root}\n  gallery: {run.metrics / 'gallery' / 'index.html'}\n"
         f"  TensorBoard: tensorboard --logdir {run.root}")
    return metrics
