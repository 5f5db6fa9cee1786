"""tfod.train.early_stop: the stopping rule and the stop request it writes into a run folder."""
import math

import pytest

from tfod.runfolder import RunFolder, read_json, read_stop_request, request_stop
from tfod.train.early_stop import request_if_stale, score_history, should_stop


def test_disabled_without_patience():
    assert should_stop([(10, 0.1), (20, 0.1), (30, 0.1)], patience=0) is None


def test_stops_after_patience_evaluations_without_improvement():
    history = [(10, 0.10), (20, 0.20), (30, 0.19)]
    assert should_stop(history, patience=2) is None
    reason = should_stop(history + [(40, 0.20)], patience=2)
    assert reason and "2 evaluation(s)" in reason and "best 0.2000 at step 20" in reason


def test_an_improvement_resets_the_count():
    history = [(10, 0.1), (20, 0.1), (30, 0.3), (40, 0.3)]
    assert should_stop(history, patience=2) is None
    assert should_stop(history, patience=1)


def test_min_delta_decides_what_is_better():
    history = [(10, 0.300), (20, 0.305), (30, 0.309)]
    assert should_stop(history, patience=2, min_delta=0.01)
    assert should_stop(history, patience=2, min_delta=0.0) is None


def test_history_order_does_not_matter_and_nan_never_improves():
    assert should_stop([(30, 0.1), (10, 0.2), (20, 0.15)], patience=2)
    assert "no finite score yet" in should_stop([(10, math.nan), (20, math.nan)], patience=2)
    assert should_stop([(10, math.nan), (20, 0.0)], patience=1) is None


@pytest.mark.parametrize("patience", [1, 3])
def test_constant_scores_stop_after_exactly_patience_more(patience):
    history = [(10 * (i + 1), 0.0) for i in range(patience + 1)]
    assert should_stop(history[:-1], patience) is None
    assert should_stop(history, patience)


def test_request_is_written_once_with_its_reason(tmp_path):
    run = RunFolder(tmp_path / "run").create()
    evaluated = {"ckpt-2": {"step": 10, "metrics": {"rsna/score": 0.2}},
                 "ckpt-3": {"step": 20, "skipped": "deleted"},
                 "ckpt-4": {"step": 30, "metrics": {"rsna/score": 0.1}}}
    assert score_history(evaluated) == [(10, 0.2), (30, 0.1)]
    assert request_if_stale(run, evaluated, patience=2) is None
    assert read_stop_request(run) is None
    reason = request_if_stale(run, evaluated, patience=1)
    first = read_json(run.stop_request)
    assert read_stop_request(run) == first["reason"] == reason
    assert run.stop_request.name == "stop_request.json"
    evaluated["ckpt-5"] = {"step": 40, "metrics": {"rsna/score": 0.05}}
    request_if_stale(run, evaluated, patience=1)
    assert read_json(run.stop_request) == first  # the first request stands


def test_request_stop_round_trip(tmp_path):
    run = RunFolder(tmp_path / "run").create()
    request_stop(run, "because")
    assert read_stop_request(run) == "because"
