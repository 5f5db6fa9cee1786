"""tfod-demo: every stage end to end on the bundled real RSNA sample (what `make demo` runs).

tfod-demo --output_dir demo_output --num_steps 60

Converts the 16 real DICOMs in ../shared/data with their official labels, trains a small
SSD MobileNet v2 on one fold with the evaluator on the other, and scores the best checkpoint
(threshold sweep, plots, validation gallery). See tfod/demo.py.
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
                                      "Official detailed class info CSV.")
_MODEL = flags.DEFINE_string("model", demo.DemoPlan.model,
                             "Model name (tfod-config --list_models).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", demo.DemoPlan.num_steps, "Training steps.",
                                  lower_bound=1)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", demo.DemoPlan.image_size, "Model input size.")


def main(argv):
    del argv  # checked by cli.runner
    plan = demo.DemoPlan(output_dir=Path(_OUTPUT_DIR.value).resolve(),
                         dicom_dir=Path(_DICOM_DIR.value), labels_csv=Path(_LABELS_CSV.value),
                         class_info_csv=Path(_CLASS_INFO_CSV.value), model=_MODEL.value,
                         num_steps=_NUM_STEPS.value, image_size=_IMAGE_SIZE.value)
    demo.run_demo(plan)
    return 0


run = cli.runner(main)


if __name__ == "__main__":
    run()
