"""tfod-config: write a run's OD API pipeline.config for a model and a fold of a converted folder.

tfod-config --list_models
tfod-config --model ssd_mobilenet_v2 --data_dir tfrecords/rsna --fold 0 \\
    --output runs/ssd-fold0/pipeline.config --image_size 384 --num_steps 20000 \\
    --override train_config.optimizer.momentum_optimizer.momentum_optimizer_value=0.8

The config flags are the group of :func:`tfod.cli.define_config_flags` (tfod-train has the same).
See docs/configure.md.
"""

from absl import flags

from tfod import cli
from tfod.config import pipeline as configs
from tfod.config import registry
from tfod.config.request import ConfigRequest

CONFIG = cli.define_config_flags(registry.REGISTRY)
_OUTPUT = flags.DEFINE_string("output", None, "pipeline.config path to write (or a folder).")


def main(argv):
    del argv  # checked by cli.runner
    if CONFIG.list_models:
        print(registry.format_model_table())
        return 0
    cli.require(_OUTPUT)
    path = ConfigRequest.from_flags(CONFIG).write(_OUTPUT.value)
    print(configs.describe_config(path))
    return 0


run = cli.runner(main)

if __name__ == "__main__":
    run()
