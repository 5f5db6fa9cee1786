"""Benchmark: the trainer's seconds per step on each stack, same config, side by side.

Runs tfod's trainer (``tfod.train.trainer.train``) on the SSD MobileNet v2 config at
``--image_size`` px and ``--batch_size`` over the 16 real RSNA DICOMs, once per Python given
(default: ``.venv`` for the TF 2.15 stack and ``.venv-3.12`` for TF 2.21, as `.ci/run` makes
them), alternating ``--repeats`` times: the cores may be shared, so each stack's best run
counts. A run trains ``--warmup`` + ``--steps`` steps, ``--warmup`` per ``tf.function`` call;
its s/step is the median of the calls after the first (which traces). Prints s/step of each and
the ratio (target: the TF 2.21 stack within 10% of TF 2.15's).

    .venv/bin/python bench/stacks.py [--pythons .venv/bin/python .venv-3.12/bin/python]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RSNA = REPO.parent / "shared" / "data" / "rsna"

# One timed run, in the stack's own Python: prints {"stack", "seconds_per_step"} as JSON.
CHILD = textwrap.dedent("""
    import json, statistics, sys
    from pathlib import Path
    from tfod import stack
    from tfod.config import pipeline as configs
    from tfod.runfolder import RunFolder
    from tfod.train.hooks import Hook
    from tfod.train.settings import TrainSettings
    from tfod.train.trainer import train

    data, root, size, batch, warmup, steps = sys.argv[1:7]
    warmup, steps = int(warmup), int(steps)

    class Clock(Hook):
        # the trainer's own seconds per step of each tf.function call (warmup steps a call)
        def __init__(self):
            self.calls = []

        def after_step(self, trainer):
            self.calls.append(trainer.seconds_per_step)

    run = RunFolder(root).create()
    configs.build_config("ssd_mobilenet_v2", data, 0, run.pipeline_config,
                         image_size=int(size), batch_size=int(batch),
                         num_steps=warmup + steps, augmentations=["none"])
    clock = Clock()
    train(run.root, TrainSettings(num_steps=warmup + steps, checkpoint_every=warmup,
                                  log_every=warmup), hooks=[clock])
    print(json.dumps({"stack": stack.stack_for_python().name,
                      "seconds_per_step": statistics.median(clock.calls[1:])}))
""")


def timed_run(python: str, data: Path, root: Path, args) -> dict:
    done = subprocess.run(
        [python, "-c", CHILD, str(data), str(root), str(args.image_size), str(args.batch_size),
         str(args.warmup), str(args.steps)], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{python}: the timed run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def convert_sample(python: str, data: Path) -> None:
    """The records, written once by the first stack (the same files for every run)."""
    code = ("import sys; from tfod.data.convert import convert; "
            "convert(sys.argv[1], sys.argv[2], sys.argv[3], num_folds=2, seed=0, workers=1, "
            "progress=False)")
    subprocess.run([python, "-c", code, str(RSNA / "stage_2_train_images_sample"), str(data),
                    str(RSNA / "stage_2_train_labels.csv")], cwd=REPO, check=True,
                   capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythons", nargs="+",
                        default=[".venv/bin/python", ".venv-3.12/bin/python"])
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    missing = [python for python in args.pythons if not (REPO / python).exists()]
    if missing:
        sys.exit(f"not found: {', '.join(missing)} (make venv; make venv PYTHON=python3.12 "
                 f"VENV=.venv-3.12)")
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        convert_sample(args.pythons[0], data)
        best = {}
        for repeat in range(args.repeats):
            for index, python in enumerate(args.pythons):
                result = timed_run(python, data, Path(scratch) / f"run-{repeat}-{index}", args)
                name = f"{result['stack']} ({python})"
                best[name] = min(best.get(name, float("inf")), result["seconds_per_step"])
    print(f"SSD MobileNet v2, {args.image_size} px, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup}, best of {args.repeats}")
    for name, seconds in best.items():
        print(f"  {name:40s} {seconds:.3f} s/step")
    (first, reference), *others = best.items()
    for name, seconds in others:
        print(f"  {name} / {first}: {seconds / reference:.2f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
