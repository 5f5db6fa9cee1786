"""``python -m tfod.train train|eval``: the trainer and evaluator processes the launchers start.

``train`` runs :func:`tfod.train.trainer.train` (exit code 3 on a NaN loss), ``eval`` runs
:func:`tfod.train.evaluator.evaluate`; ``--help`` on each lists its flags.
"""
from __future__ import annotations

import argparse
import logging
import sys

from tfod.errors import NAN_LOSS as NAN_EXIT_CODE
from tfod.runfolder import FAILED, NAN_LOSS, RunFolder, write_status

log = logging.getLogger("tfod.train")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfod.train",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "eval"):
        command = commands.add_parser(name)
        command.add_argument("--pipeline_config", required=True)
        command.add_argument("--run_dir", required=True)
        command.add_argument("--num_steps", type=int, default=None)
    trainer = commands.choices["train"]
    trainer.add_argument("--checkpoint_every", type=int, default=1000)
    trainer.add_argument("--max_to_keep", type=int, default=7)
    trainer.add_argument("--num_workers", type=int, default=1,
                         help="MultiWorkerMirroredStrategy over the workers of TF_CONFIG if > 1")
    trainer.add_argument("--log_every", type=int, default=100)
    trainer.add_argument("--cpu_replicas", type=int, default=0,
                         help="mirror over this many logical CPU devices (the several-GPU "
                              "path without GPUs)")
    evaluator = commands.choices["eval"]
    evaluator.add_argument("--poll_seconds", type=float, default=5.0)
    evaluator.add_argument("--trainer_timeout", type=float, default=300.0)
    evaluator.add_argument("--patience", type=int, default=0)
    evaluator.add_argument("--min_delta", type=float, default=0.0)
    return parser


def _setup_logging() -> None:
    import tensorflow as tf

    tf.get_logger().setLevel(logging.INFO)
    tf.get_logger().propagate = False  # lvis adds a root handler: each line would show twice
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[tfod %(asctime)s] %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging()
    run = RunFolder(args.run_dir)
    if args.command == "eval":
        from tfod.train.evaluator import evaluate

        evaluate(args.pipeline_config, run.root, args.num_steps, args.poll_seconds,
                 args.trainer_timeout, args.patience, args.min_delta)
        return 0
    from tfod.train.hooks import NonFiniteLoss
    from tfod.train.trainer import train

    try:
        train(args.pipeline_config, run.root, args.num_steps, args.checkpoint_every,
              args.max_to_keep, args.num_workers, args.log_every, cpu_replicas=args.cpu_replicas)
    except NonFiniteLoss as error:
        write_status(run, NAN_LOSS, error=str(error))
        log.error("%s", error)
        return NAN_EXIT_CODE
    except BaseException as error:
        write_status(run, FAILED, error=repr(error))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
