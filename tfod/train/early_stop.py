"""Early stopping: has a run stopped improving? A pure decision on the evaluator's history.

:func:`should_stop` is the rule, free of TensorFlow and of files so it is tested alone. The
evaluator calls :func:`request_if_stale` after each evaluation: it applies the rule to every
``(step, rsna/score)`` in ``eval/evaluated.json`` and, the first time it says stop, writes a stop
request into the run folder (:func:`tfod.runfolder.request_stop`); the trainer saves and stops
at its next checkpoint and marks the run finished (``stopped_early`` in ``train_status.json``).

An evaluation *improves* when its score is finite and beats the best earlier score by more than
``min_delta`` (the first finite score always improves). The run stops once ``patience``
evaluations in a row did not improve. NaN scores (nothing to score yet) never improve.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from tfod.runfolder import RunFolder, read_stop_request, request_stop

log = logging.getLogger("tfod.train")


def should_stop(history: Sequence[tuple[int, float]], patience: int,
                min_delta: float = 0.0) -> str | None:
    """The reason to stop after ``history`` (``(step, score)`` pairs, any order), or None.

    ``patience`` <= 0 disables early stopping.
    """
    if patience <= 0:
        return None
    best_step, best = None, -math.inf
    since_best = 0
    for step, value in sorted(history):
        if math.isfinite(value) and (best_step is None or value > best + min_delta):
            best_step, best, since_best = step, value, 0
        else:
            since_best += 1
    if since_best < patience:
        return None
    where = (f"best {best:.4f} at step {best_step}" if best_step is not None
             else "no finite score yet")
    return (f"rsna/score did not improve by more than {min_delta:g} in {since_best} "
            f"evaluation(s) (patience {patience}; {where})")


def score_history(evaluated: Mapping[str, dict]) -> list[tuple[int, float]]:
    """``(step, rsna/score)`` of each evaluated checkpoint (``eval/evaluated.json``'s entries)."""
    return [(entry["step"], float(entry["metrics"].get("rsna/score", math.nan)))
            for entry in evaluated.values() if "metrics" in entry]


def request_if_stale(run: RunFolder, evaluated: Mapping[str, dict], patience: int,
                     min_delta: float = 0.0) -> str | None:
    """Write the run's stop request once :func:`should_stop` says so; return the reason."""
    reason = should_stop(score_history(evaluated), patience, min_delta)
    if reason and read_stop_request(run) is None:
        request_stop(run, reason)
        log.info("early stopping: %s; the trainer is asked to save and stop", reason)
    return reason
