"""tfod-demo: every stage end to end, DICOMs to a scored Kaggle submission (`make demo`).

tfod-demo --output_dir demo_output                       # the bundled 16-image sample
tfod-demo --output_dir full --dicom_dir stage_2_train_images \\
    --labels_csv stage_2_train_labels.csv --num_folds 5 --fold 0 --num_steps 20000 \\
    --image_size 512 --backend docker --gpus 0            # a full Kaggle download on a GPU host

Prints each command before it runs it, then a summary; writes report.html in --output_dir.
See tfod/demo.py.
"""
from pathlib import Path

from absl import flags

from tfod import cli, demo

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "demo_output", "Where everything is written.")
_DICOM_DIR = flags.DEFINE_string("dicom_dir", str(demo.DemoPlan.dicom_dir),
                                 "Folder of <patientId>.dcm training DICOMs.")
_LABELS_CSV = flags.DEFINE_string("labels_csv", str(demo.DemoPlan.labels_csv),
                                  "Official labels CSV (only the rows of present DICOMs are used).")
_CLASS_INFO_CSV = flags.DEFINE_string("class_info_csv", str(demo.DemoPlan.class_info_csv),
                                      "Official detailed class info CSV ('' for none).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "An existing tfod-convert folder of these "
                                "DICOMs: skip the conversion.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", demo.DemoPlan.num_steps,
                                  "Training steps of each detector.", lower_bound=1)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", demo.DEFAULT_DETECTORS[0].image_size,
                                   "Input size of the first detector; the second uses 4/5 of it.",
                                   lower_bound=32)
_NUM_FOLDS = flags.DEFINE_integer("num_folds", demo.DemoPlan.num_folds,
                                  "Patient-level folds of the conversion.", lower_bound=1)
_FOLD = flags.DEFINE_integer("fold", demo.DemoPlan.fold, "Fold to score; -1 trains and scores "
                             "on every image (the sample is too small to hold any out).",
                             lower_bound=-1)
_BACKEND = flags.DEFINE_enum("backend", "local", ["local", "docker"], "Where training runs.")
_GPUS = flags.DEFINE_string("gpus", "", "Trainer GPUs ('0', '0,1', 'all'); empty for CPU.")


def main(argv):
    del argv
    plan = demo.DemoPlan(
        output_dir=Path(_OUTPUT_DIR.value).resolve(), dicom_dir=Path(_DICOM_DIR.value).resolve(),
        labels_csv=Path(_LABELS_CSV.value).resolve(),
        class_info_csv=Path(_CLASS_INFO_CSV.value).resolve() if _CLASS_INFO_CSV.value else None,
        data_dir=Path(_DATA_DIR.value).resolve() if _DATA_DIR.value else None,
        detectors=demo.detector_pair(_IMAGE_SIZE.value), num_steps=_NUM_STEPS.value,
        num_folds=_NUM_FOLDS.value, fold=_FOLD.value, backend=_BACKEND.value, gpus=_GPUS.value)
    demo.run_demo(plan)
    return 0


run = cli.runner(main)

if __name__ == "__main__":
    run()
