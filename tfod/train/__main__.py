"""``python -m tfod.train train|eval``: the trainer and evaluator processes the launchers start."""
import sys

from tfod.train.engine import main

sys.exit(main())
