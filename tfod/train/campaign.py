"""Cross-validation campaign: train every fold of one model, then assemble out-of-fold results.

``tfod-train --folds=0,1,2,3,4`` (or ``all``: the folds of the converted folder) trains fold
``k`` into ``<run_root>/<model>-fold<k>/``, a normal run folder with its evaluator, each started
through :func:`tfod.train.launch.launch_run` (local or docker backend alike). Folds run one
after another; with ``parallel_folds`` and ``gpus=0,1,...`` each GPU is a *lane* that runs its
folds one after another (fold ``i`` of the list on lane ``i mod len(gpus)``), the lanes at the
same time, each fold's trainer on its lane's one GPU. Lanes are child processes
(``python -m tfod.train.campaign <lane.json>``), so a Ctrl-C or SIGTERM reaches every fold's
launcher, which stops its own trainer and evaluator as for a single run.

A rerun skips the finished folds (trainer finished at the final step, or stopped early, and
its last checkpoint evaluated) and resumes the others. After the last fold
:func:`tfod.train.cv.assemble_oof` writes ``<run_root>/<model>-cv/`` (``oof.csv``, ``cv.json``,
``cv_scores.png``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from tfod.config.request import ConfigRequest
from tfod.data import records
from tfod.errors import INTERRUPTED
from tfod.runfolder import FINISHED, RunFolder, read_json, read_status, write_json
from tfod.train import cv
from tfod.train.launch import LaunchError, launch_run
from tfod.train.launch.base import stop_signals_as_interrupt
from tfod.train.launch.common import normalize_gpus

LANES_DIR = "lanes"


@dataclasses.dataclass(frozen=True)
class FoldRun:
    """One fold of the campaign: where it trains, on which GPUs, in which lane and position."""

    fold: int
    run_dir: Path
    gpus: str
    lane: int = 0
    order: int = 0


def parse_folds(text: str, data_dir) -> list[int]:
    """``'0,1,2'`` or ``'all'`` -> fold numbers, each present in the converted folder."""
    present = records.find_folds(data_dir)
    if not present:
        raise LaunchError(f"{data_dir} has no fold*-*.tfrecord shards: is it a converted "
                          "training folder?")
    if text.strip() == "all":
        return present
    if not text.strip():
        raise LaunchError("--folds is empty: give fold numbers like '0,1,2' or 'all'")
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LaunchError(f"--folds must be 'all' or fold numbers like '0,1,2', got {text!r}"
                          ) from None
    missing = [fold for fold in folds if fold not in present]
    if not folds or missing or len(set(folds)) != len(folds):
        raise LaunchError(f"--folds={text}: each fold once, among those of {data_dir}: "
                          f"{present}")
    return folds


def fold_run_dir(run_root, model: str, fold: int) -> Path:
    return Path(run_root) / f"{model}-fold{fold}"


def cv_dir(run_root, model: str) -> Path:
    return Path(run_root) / f"{model}-cv"


def plan_folds(folds: Sequence[int], run_root, model: str, gpus: str = "",
               parallel: bool = False) -> list[FoldRun]:
    """Which fold trains where: sequentially on ``gpus``, or one lane per GPU in parallel."""
    gpus = normalize_gpus(gpus)
    if not parallel:
        return [FoldRun(k, fold_run_dir(run_root, model, k), gpus, 0, i)
                for i, k in enumerate(folds)]
    if gpus in ("", "all"):
        raise LaunchError("--parallel_folds needs the GPUs by index, e.g. --gpus=0,1 "
                          "(one fold per GPU at a time)")
    lanes = gpus.split(",")
    return [FoldRun(k, fold_run_dir(run_root, model, k), lanes[i % len(lanes)],
                    i % len(lanes), i // len(lanes)) for i, k in enumerate(folds)]


def fold_state(run: RunFolder, num_steps: int | None) -> str:
    """'finished' (trained to the end or stopped early, last checkpoint evaluated), 'resume'
    (a run folder exists) or 'new'."""
    if not run.root.exists():
        return "new"
    status = read_status(run)
    step = status.get("step", 0)
    trained = status.get("state") == FINISHED and (
        status.get("stopped_early") or step >= (num_steps or status.get("target") or 0))
    evaluated = read_json(run.evaluated, default={}) or {}
    if trained and any(entry.get("step", -1) >= step for entry in evaluated.values()):
        return "finished"
    return "resume"


def plan_lines(plan: Sequence[FoldRun], num_steps: int | None) -> list[str]:
    """The campaign plan, one line per fold in lane order (for --dry_run and the log)."""
    lines = [f"campaign: {len(plan)} fold(s) in {len({f.lane for f in plan})} lane(s)"]
    for item in sorted(plan, key=lambda f: (f.lane, f.order)):
        lines.append(f"  lane {item.lane}  #{item.order + 1}  fold {item.fold}  "
                     f"gpus {item.gpus or 'cpu'}  {item.run_dir}  "
                     f"{fold_state(RunFolder(item.run_dir), num_steps)}")
    return lines


def _fold_options(item: FoldRun, options: dict) -> dict:
    """A fold's launch options: its lane's GPUs, its lane's TensorBoard port."""
    port = options.get("tensorboard_port", 0)
    return {**options, "gpus": item.gpus,
            "tensorboard_port": port + item.lane if port else 0}


def train_folds(request: ConfigRequest, plan: Sequence[FoldRun], backend: str, flags: dict,
                options: dict, echo: Callable[[str], None] = print,
                dry_run: bool = False) -> int:
    """Train (or plan) ``plan``'s folds one after another; stop at the first failed fold."""
    for done, item in enumerate(plan):
        state = fold_state(RunFolder(item.run_dir), request.num_steps)
        if state == "finished" and not dry_run:
            echo(f"[cv fold {item.fold}] finished already: skipped")
            continue
        prefix = (f"[plan fold {item.fold}, lane {item.lane}]" if dry_run
                  else f"[cv {done}/{len(plan)} done, fold {item.fold}]")
        echo(f"{prefix} {'planned' if dry_run else 'training'} ({state}) in {item.run_dir}")
        code = launch_run(dataclasses.replace(request, fold=item.fold), run_dir=item.run_dir,
                          backend=backend, dry_run=dry_run,
                          flags={**flags, "fold": item.fold},
                          echo=lambda line, p=prefix: echo(f"{p} {line}"),
                          **_fold_options(item, options))
        if code != 0:
            echo(f"{prefix} failed with exit code {code}; rerun the same command to resume")
            return code
    return 0


def _lane_file(run_root, model: str, lane: int, request: ConfigRequest, plan: list[FoldRun],
               backend: str, flags: dict, options: dict) -> Path:
    """Write what a lane process needs to train its folds (read by :func:`main`)."""
    path = cv_dir(run_root, model) / LANES_DIR / f"lane{lane}.json"
    write_json(path, {
        "request": dataclasses.asdict(request), "backend": backend, "flags": flags,
        "options": options,
        "plan": [{**dataclasses.asdict(item), "run_dir": str(item.run_dir)} for item in plan],
    })
    return path


def _forward(process: subprocess.Popen, lane: int, echo: Callable[[str], None],
             lock: threading.Lock) -> None:
    for line in process.stdout:
        with lock:
            echo(f"[lane {lane}] {line.rstrip()}")


def train_lanes(lane_files: Sequence[Path], echo: Callable[[str], None] = print) -> int:
    """Run each lane file in its own process at the same time; 0 when every lane succeeded."""
    lock = threading.Lock()
    processes, readers = [], []
    try:
        with stop_signals_as_interrupt():
            for lane, path in enumerate(lane_files):
                process = subprocess.Popen(
                    [sys.executable, "-m", "tfod.train.campaign", str(path)],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
                processes.append(process)
                readers.append(threading.Thread(target=_forward, daemon=True,
                                                args=(process, lane, echo, lock)))
                readers[-1].start()
            codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        echo("interrupted: stopping every lane (each fold keeps its latest checkpoint)")
        for process in processes:
            process.terminate()
        codes = [process.wait() for process in processes] or [INTERRUPTED]
    for reader in readers:
        reader.join(timeout=10)
    return next((code for code in codes if code != 0), 0)


def labels_for(data_dir, labels_csv=None) -> Path:
    """The labels CSV to score the OOF set: the one given, else the converted folder's."""
    if labels_csv:
        return Path(labels_csv)
    manifest = read_json(Path(data_dir) / "manifest.json", default={}) or {}
    recorded = (manifest.get("flags") or {}).get("labels_csv")
    if not recorded or not Path(recorded).is_file():
        raise LaunchError(f"no labels CSV to score the out-of-fold set: {data_dir}/manifest.json "
                          f"names {recorded!r}; pass --labels_csv")
    return Path(recorded)


def run_campaign(request: ConfigRequest, folds: str, run_root="runs", backend: str = "local",
                 parallel: bool = False, labels_csv=None, dry_run: bool = False,
                 flags: dict | None = None, echo: Callable[[str], None] = print,
                 **options) -> int:
    """Train (or with ``dry_run`` plan) every fold of ``folds``, then assemble the OOF results.

    ``options`` are :class:`tfod.train.launch.LaunchSpec` fields, as for ``launch_run``.
    """
    if not request.model:
        raise LaunchError("--folds trains a model on each fold: give --model and --data_dir, "
                          "not --pipeline_config")
    if options.get("eval_device") == "none":
        raise LaunchError("--folds needs the evaluator (its validation detections make the "
                          "out-of-fold set): drop --eval_device=none")
    labels = labels_for(request.data_dir, labels_csv)
    plan = plan_folds(parse_folds(folds, request.data_dir), run_root, request.model,
                      options.pop("gpus", ""), parallel)
    echo("\n".join(plan_lines(plan, request.num_steps)))
    flags = flags or {}
    lanes = sorted({item.lane for item in plan})
    if parallel and not dry_run and len(lanes) > 1:
        files = [_lane_file(run_root, request.model, lane, request,
                            [f for f in plan if f.lane == lane], backend, flags, options)
                 for lane in lanes]
        code = train_lanes(files, echo)
    else:
        code = train_folds(request, plan, backend, flags, options, echo, dry_run)
    if code != 0 or dry_run:
        return code
    summary = cv.assemble_oof([item.run_dir for item in plan], labels,
                              cv_dir(run_root, request.model))
    echo(cv.format_summary(summary))
    echo(f"out-of-fold results in {cv_dir(run_root, request.model)}")
    return 0


def main(argv: Sequence[str]) -> int:
    """``python -m tfod.train.campaign <lane.json>``: train one lane's folds (see above)."""
    lane = json.loads(Path(argv[1]).read_text())
    request = ConfigRequest(**lane["request"])
    plan = [FoldRun(**{**item, "run_dir": Path(item["run_dir"])}) for item in lane["plan"]]
    with stop_signals_as_interrupt():
        try:
            return train_folds(request, plan, lane["backend"], lane["flags"], lane["options"])
        except KeyboardInterrupt:
            return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
