"""Benchmark: the trainer's seconds per step on each stack, same config, side by side.

Runs tfod's trainer (``tfod.train.trainer.train``) on the SSD MobileNet v2 config at
``--image_size`` px and ``--batch_size`` over the 16 real RSNA DICOMs, once per Python given
(default: ``.venv`` for the TF 2.15 stack and ``.venv-3.12`` for TF 2.21, as `.ci/run` makes
them), alternating ``--repeats`` times: the cores may be shared, so each stack's best run
counts. A run trains ``--warmup`` + ``--steps`` steps, ``--warmup`` per ``tf.function`` call;
its s/step is the median of the calls after the first (which traces). Prints wall and CPU
seconds per step of each and their ratios (target: the TF 2.21 stack within 10% of TF 2.15's).
CPU seconds (all the process's threads) are what a step costs; on cores that other work
shares, wall seconds mostly measure that other work, so compare the CPU ratio there.

``--parts`` also times the pieces of one step on a fixed batch, each a ``tf.function`` (best
of ``--repeats`` rounds of 10 calls): the input pipeline alone, the forward pass with the loss,
forward and backward (gradients), ``apply_gradients`` alone, the whole train step; and it
prints what might differ between the stacks: optimizer class, Keras dtype policy, threads,
``TF_ENABLE_ONEDNN_OPTS``, XLA JIT, and how many times each function traced.

    .venv/bin/python bench/stacks.py [--pythons .venv/bin/python .venv-3.12/bin/python] [--parts]
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

# The run folder's pipeline.config, the same for both children: argv = data root size batch
CONFIG = textwrap.dedent("""
    import json, os, statistics, sys, time
    from tfod import stack
    from tfod.config import pipeline as configs
    from tfod.runfolder import RunFolder

    data, root, size, batch, count, other = sys.argv[1:7]
    count, other = int(count), int(other)
    run = RunFolder(root).create()
    configs.build_config("ssd_mobilenet_v2", data, 0, run.pipeline_config,
                         image_size=int(size), batch_size=int(batch),
                         num_steps=1000, augmentations=["none"])
""")

# One timed run of the trainer (count = warmup, other = steps): prints {"stack", "wall", "cpu"}.
CHILD = CONFIG + textwrap.dedent("""
    from tfod.train.hooks import Hook
    from tfod.train.settings import TrainSettings
    from tfod.train.trainer import train

    class Clock(Hook):
        # wall and CPU seconds per step of each tf.function call (count steps a call)
        def __init__(self):
            self.wall, self.cpu = [], []

        def before_train(self, trainer):
            iteration = trainer.run_iteration

            def timed():
                started = time.process_time()
                iteration()
                self.cpu.append((time.process_time() - started) / trainer.steps_per_call)
                self.wall.append(trainer.seconds_per_step)

            trainer.run_iteration = timed

    clock = Clock()
    train(run.root, TrainSettings(num_steps=count + other, checkpoint_every=count,
                                  log_every=count), hooks=[clock])
    print(json.dumps({"stack": stack.stack_for_python().name,
                      "wall": statistics.median(clock.wall[1:]),
                      "cpu": statistics.median(clock.cpu[1:])}))
""")

# The pieces of one step on a fixed batch (count = rounds of 10 calls, best counts): prints
# {"stack", "setup", "traces", "parts": {part: {"wall", "cpu"}}}.
PARTS = CONFIG + textwrap.dedent("""
    import tensorflow as tf
    from tfod.config.pipeline import read_configs
    from tfod.train import odapi
    from tfod.train.trainer import Trainer, choose_strategy

    trainer = Trainer(run, read_configs(run.pipeline_config), choose_strategy(), 1000, 10)
    model, optimizer = trainer.model, trainer.optimizer
    train_config = trainer.configs["train_config"]
    features, labels = next(trainer.iterator)
    traces = {}

    def traced(function):
        def counting(*args):
            traces[function.__name__] = traces.get(function.__name__, 0) + 1
            return function(*args)
        return tf.function(counting)

    def loss(features, labels):
        return odapi.losses_and_predictions(model, features, labels, False)[0][odapi.LOSS_KEY]

    @traced
    def forward(features, labels):
        tf.keras.backend.set_learning_phase(True)
        return loss(features, labels)

    @traced
    def gradients(features, labels):
        tf.keras.backend.set_learning_phase(True)
        with tf.GradientTape() as tape:
            value = loss(features, labels)
        return tape.gradient(value, model.trainable_variables)

    @traced
    def apply_gradients(grads):
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return grads[0]

    @traced
    def train_step(features, labels):
        return odapi.train_step(model, optimizer, features, labels, train_config, 1)[
            odapi.LOSS_KEY]

    @traced
    def input_pipeline(iterator):
        for _ in range(9):  # unrolled: no AutoGraph, which cannot read code given by -c
            iterator.get_next()
        return iterator.get_next()[0]["image"]

    def best(function, *args, steps=10, calls=10):
        function(*args)  # traces
        wall, cpu = [], []
        for _ in range(count):
            started, used = time.perf_counter(), time.process_time()
            for _ in range(calls):
                out = function(*args)
            tf.nest.flatten(out)[0].numpy()
            wall.append((time.perf_counter() - started) / (calls * steps))
            cpu.append((time.process_time() - used) / (calls * steps))
        return {"wall": min(wall), "cpu": min(cpu)}

    grads = gradients(features, labels)
    parts = {"input pipeline (per batch)": best(input_pipeline, trainer.iterator, calls=1),
             "forward + loss": best(forward, features, labels, steps=1),
             "forward + backward": best(gradients, features, labels, steps=1),
             "apply_gradients": best(apply_gradients, grads, steps=1),
             "train step": best(train_step, features, labels, steps=1)}
    setup = {"optimizer": f"{type(optimizer).__module__}.{type(optimizer).__name__}",
             "policy": tf.keras.mixed_precision.global_policy().name,
             "inter/intra threads": [tf.config.threading.get_inter_op_parallelism_threads(),
                                     tf.config.threading.get_intra_op_parallelism_threads()],
             "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
             "XLA jit": tf.config.optimizer.get_jit() or "off"}
    print(json.dumps({"stack": stack.stack_for_python().name, "setup": setup,
                      "traces": traces, "parts": parts}))
""")


def child_run(python: str, code: str, data: Path, root: Path, args, count: int,
              other: int = 0) -> dict:
    """``code`` (:data:`CHILD` or :data:`PARTS`) in ``python``: its last line's JSON."""
    done = subprocess.run(
        [python, "-c", code, str(data), str(root), str(args.image_size), str(args.batch_size),
         str(count), str(other)], cwd=REPO, capture_output=True, text=True)
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


def print_parts(results: dict) -> None:
    """Each stack's setup, traces and per-part ms per step (wall / CPU), side by side."""
    names = list(results)
    print("\nparts of one step, ms wall / ms CPU (best of the rounds):")
    print(f"  {'':28s}" + "".join(f"{results[name]['stack']:>22s}" for name in names))
    for part in next(iter(results.values()))["parts"]:
        cells = [results[name]["parts"][part] for name in names]
        print(f"  {part:28s}" + "".join(
            f"{cell['wall'] * 1000:>14.1f} / {cell['cpu'] * 1000:5.1f}" for cell in cells))
    for name, result in results.items():
        print(f"  {name}: {json.dumps(result['setup'])}; traces {json.dumps(result['traces'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythons", nargs="+",
                        default=[".venv/bin/python", ".venv-3.12/bin/python"])
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--parts", action="store_true",
                        help="also time the pieces of a step (input, forward, backward, apply)")
    args = parser.parse_args()
    missing = [python for python in args.pythons if not (REPO / python).exists()]
    if missing:
        sys.exit(f"not found: {', '.join(missing)} (make venv; make venv PYTHON=python3.12 "
                 f"VENV=.venv-3.12)")
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        convert_sample(args.pythons[0], data)
        best, parts = {}, {}
        for repeat in range(args.repeats):
            for index, python in enumerate(args.pythons):
                result = child_run(python, CHILD, data, Path(scratch) / f"run-{repeat}-{index}",
                                   args, args.warmup, args.steps)
                name = f"{result['stack']} ({python})"
                previous = best.get(name, {"wall": float("inf"), "cpu": float("inf")})
                best[name] = {key: min(previous[key], result[key]) for key in previous}
        if args.parts:
            for index, python in enumerate(args.pythons):
                result = child_run(python, PARTS, data, Path(scratch) / f"parts-{index}", args,
                                   args.repeats)
                parts[f"{result['stack']} ({python})"] = result
    print(f"SSD MobileNet v2, {args.image_size} px, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup}, best of {args.repeats}")
    for name, seconds in best.items():
        print(f"  {name:40s} {seconds['wall']:.3f} s/step wall, {seconds['cpu']:.3f} CPU")
    (first, reference), *others = best.items()
    for name, seconds in others:
        print(f"  {name} / {first}: {seconds['wall'] / reference['wall']:.2f}x wall, "
              f"{seconds['cpu'] / reference['cpu']:.2f}x CPU (target <= 1.10x)")
    if parts:
        print_parts(parts)


if __name__ == "__main__":
    main()
