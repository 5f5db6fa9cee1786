"""tfod-train: train a model on one fold with a concurrent evaluator, locally or in Docker.

tfod-train --model ssd_mobilenet_v2 --data_dir tfrecords/rsna --fold 0 --num_steps 20000 \\
    --gpus 0 --eval_device cpu --tensorboard_port 6006
tfod-train --pipeline_config runs/ssd_mobilenet_v2-fold0/pipeline.config   # resume as it was
tfod-train --model ssd_mobilenet_v2 --data_dir tfrecords/rsna --backend docker --gpus 0,1 \\
    --image tfod:gpu --dry_run                                         # print the docker run lines

The config flags (--model --data_dir --fold --image_size --batch_size --num_steps
--learning_rate --fine_tune_checkpoint --override, and --pipeline_config) are the group of
:func:`tfod.cli.define_config_flags`, as tfod-config's. Rerunning a command on an existing run
folder resumes from its latest checkpoint. See docs/train.md.
"""

import sys

from absl import flags

from tfod import cli
from tfod.config import pipeline as configs
from tfod.train import launch

CONFIG = cli.define_config_flags(configs.REGISTRY, pipeline_config=True)
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
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 1000, "Steps between checkpoints.",
                                         lower_bound=1)
_MAX_TO_KEEP = flags.DEFINE_integer("max_to_keep", 7, "Checkpoints kept (the best is copied "
                                    "to best/ anyway).", lower_bound=1)
_LOG_EVERY = flags.DEFINE_integer("log_every", 100, "Steps between loss log lines.",
                                  lower_bound=1)
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 1, "Machines in multi-worker training (each "
                                    "runs tfod-train with its own TF_CONFIG).", lower_bound=1)
_SHM_SIZE = flags.DEFINE_string("shm_size", "8g", "Docker --shm-size of train/eval containers.")
_TRAINER_TIMEOUT = flags.DEFINE_float(
    "trainer_timeout", 300.0, "The evaluator stops after this many seconds without a new "
    "checkpoint or a trainer heartbeat.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the run-folder plan and the exact "
                             "commands; start nothing.")


def flag_values() -> dict:
    """This tool's flags and the config group's, for launch.json."""
    own = flags.FLAGS.get_flags_for_module(sys.modules[__name__])
    return {**CONFIG.values(), **{flag.name: flag.value for flag in own}}


def main(argv):
    del argv  # checked by cli.runner
    if CONFIG.list_models:
        print(configs.format_model_table())
        return 0
    return launch.launch_run(
        CONFIG.request(), run_dir=_RUN_DIR.value, backend=_BACKEND.value,
        dry_run=_DRY_RUN.value, flags=flag_values(),
        gpus=_GPUS.value, eval_device=_EVAL_DEVICE.value, image=_IMAGE.value,
        tensorboard_port=_TENSORBOARD_PORT.value, tensorboard_host=_TENSORBOARD_HOST.value,
        max_restarts=_MAX_RESTARTS.value, checkpoint_every=_CHECKPOINT_EVERY.value,
        max_to_keep=_MAX_TO_KEEP.value, log_every=_LOG_EVERY.value,
        num_workers=_NUM_WORKERS.value, shm_size=_SHM_SIZE.value,
        trainer_timeout=_TRAINER_TIMEOUT.value,
    )


run = cli.runner(main)

if __name__ == "__main__":
    run()
