"""``python -m tfod.train train|eval --run_dir DIR``: the trainer and evaluator processes the
launchers start.

Each reads the run folder's ``pipeline.config`` and ``settings.json`` (written by the launcher,
:class:`tfod.train.settings.TrainSettings`). ``train`` runs :func:`tfod.train.trainer.train`
(exit code 3 on a NaN loss), ``eval`` runs :func:`tfod.train.evaluator.evaluate`. Missing or
bad settings print one line and exit 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from tfod.errors import BAD_INPUT, BadInput
from tfod.errors import NAN_LOSS as NAN_EXIT_CODE
from tfod.runfolder import FAILED, NAN_LOSS, RunFolder, write_status
from tfod.train.settings import TrainSettings

log = logging.getLogger("tfod.train")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfod.train",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("train", "eval"))
    parser.add_argument("--run_dir", required=True,
                        help="the run folder: its pipeline.config and settings.json are read")
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
    run = RunFolder(args.run_dir)
    try:
        settings = TrainSettings.read(run)
    except BadInput as error:
        print(f"python -m tfod.train {args.command}: error: {error}", file=sys.stderr)
        return BAD_INPUT
    _setup_logging()
    if args.command == "eval":
        from tfod.train.evaluator import evaluate

        evaluate(run.root, settings)
        return 0
    from tfod.train.hooks import NonFiniteLoss
    from tfod.train.trainer import train

    try:
        train(run.root, settings)
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
