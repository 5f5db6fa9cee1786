"""tfod-train: train a model on one fold with a concurrent evaluator, locally or in Docker.

tfod-train --model ssd_mobilenet_v2 --data_dir tfrecords/rsna --fold 0 --num_steps 20000 \\
    --gpus 0 --eval_device cpu --tensorboard_port 6006
tfod-train --pipeline_config runs/ssd_mobilenet_v2-fold0/pipeline.config   # resume as it was
tfod-train --model ssd_mobilenet_v2 --data_dir tfrecords/rsna --backend docker --gpus 0,1 \\
    --image tfod:gpu --dry_run                                         # print the docker run lines
tfod-train --model ssd_mobilenet_v2 --data_dir tfrecords/rsna --folds all --gpus 0,1 \\
    --parallel_folds --patience 5          # every fold, one per GPU, then runs/<model>-cv/oof.csv

The config flags (--model --data_dir --fold --image_size --batch_size --num_steps
--learning_rate --fine_tune_checkpoint --override, and --pipeline_config) are the group of
:func:`tfod.cli.define_config_flags`, as tfod-config's. Rerunning a command on an existing run
folder resumes from its latest checkpoint. See docs/train.md.
"""

import sys

from absl import flags

from tfod import cli
from tfod.config import registry
from tfod.config.request import ConfigRequest
from tfod.train import campaign, launch, settings

CONFIG = cli.define_config_flags(registry.REGISTRY, pipeline_config=True)
_RUN_DIR = flags.DEFINE_string("run_dir", None, "Run folder (default runs/<model>-fold<k>).")
_BACKEND = flags.DEFINE_enum("backend", "local", list(launch.BACKENDS), "Where to run.")
_GPUS = flags.DEFINE_string("gpus", "", "Trainer GPUs: 'all', '0', '0,1'; empty for CPU. "
                            "Several GPUs train with MirroredStrategy.")
_EVAL_DEVICE = flags.DEFINE_string("eval_device", "cpu", "Evaluator device: cpu, gpu:N or none.")
_IMAGE = flags.DEFINE_string("image", "tfod:latest", "Docker image (docker/Dockerfile).")
_TENSORBOARD_PORT = flags.DEFINE_integer("tensorboard_port", 0, "TensorBoard port; 0 = none.",
                                         lower_bound=0, upper_bound=65535)
_TENSORBOARD_HOST = flags.DEFINE_string("tensorboard_host", "127.0.0.1",
                                        "Address TensorBoard listens on (0.0.0.0: the network).")
_MAX_RESTARTS = flags.DEFINE_integer("max_restarts", 2, "Restarts of a crashed trainer.",
                                     lower_bound=0)
_SHM_SIZE = flags.DEFINE_string("shm_size", "8g", "Docker --shm-size of train/eval containers.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the run-folder plan and the exact "
                             "commands; start nothing.")
SETTINGS = settings.define_flags(__name__)  # --checkpoint_every --trainer_timeout --patience ...
# Cross-validation campaign (docs/train.md).
_FOLDS = flags.DEFINE_string("folds", None, "Train these folds ('0,1,2' or 'all') into "
                             "<run_root>/<model>-fold<k>, then <run_root>/<model>-cv/oof.csv.")
_RUN_ROOT = flags.DEFINE_string("run_root", "runs", "Parent of a campaign's run folders.")
_PARALLEL_FOLDS = flags.DEFINE_bool("parallel_folds", False, "With --folds and --gpus=0,1,...: "
                                    "one fold per GPU at the same time.")
_LABELS_CSV = flags.DEFINE_string("labels_csv", None, "Labels to score the out-of-fold set "
                                  "(default: the one the converted folder was made from).")


def flag_values() -> dict:
    """This tool's flags and the config group's, for launch.json."""
    own = flags.FLAGS.get_flags_for_module(sys.modules[__name__])
    return {**CONFIG.values(), **{flag.name: flag.value for flag in own}}


def launch_options() -> dict:
    """The LaunchSpec fields and the training settings given by the flags."""
    return dict(
        gpus=_GPUS.value, eval_device=_EVAL_DEVICE.value, image=_IMAGE.value,
        tensorboard_port=_TENSORBOARD_PORT.value, tensorboard_host=_TENSORBOARD_HOST.value,
        max_restarts=_MAX_RESTARTS.value, shm_size=_SHM_SIZE.value, settings=SETTINGS(),
    )


def main(argv):
    del argv  # checked by cli.runner
    if CONFIG.list_models:
        print(registry.format_model_table())
        return 0
    if _FOLDS.value is None and flags.FLAGS["run_root"].present:
        raise flags.ValidationError("--run_root is where --folds trains; give --folds, or "
                                    "--run_dir for one run")
    cli.check_outputs(folders=[_RUN_DIR, _RUN_ROOT] if _FOLDS.value is not None else [_RUN_DIR])
    if _FOLDS.value is not None:
        return campaign.run_campaign(
            ConfigRequest.from_flags(CONFIG), _FOLDS.value, run_root=_RUN_ROOT.value,
            backend=_BACKEND.value,
            parallel=_PARALLEL_FOLDS.value, labels_csv=_LABELS_CSV.value,
            dry_run=_DRY_RUN.value, flags=flag_values(), **launch_options())
    return launch.launch_run(
        ConfigRequest.from_flags(CONFIG), run_dir=_RUN_DIR.value, backend=_BACKEND.value,
        dry_run=_DRY_RUN.value, flags=flag_values(), **launch_options())


run = cli.runner(main)

if __name__ == "__main__":
    run()
