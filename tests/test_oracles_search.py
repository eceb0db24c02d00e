"""Independent oracle for sweeps (issue 30): the leaderboard and the trial counts against the
study as Optuna's own storage API reads it (`optuna.load_study`, `get_trials(states=...)`).

A sampled (random) study of 4 trials: two sound ones and a diverging one are queued first
(the median pruner stops the third), the fourth is drawn by the sampler. It must end at
exactly 4 finished trials (pruned ones count), list every COMPLETE trial as `done` with
Optuna's value and parameters, every PRUNED one as `pruned`, and say the same counts in
leaderboard.md. The sweep runs in a child process with a deadline, so one that never ends
(pruned trials not counted) fails instead of hanging.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from lorafit.search import load_sweep
from lorafit.search.study import open_study

N_TRIALS = 4
GUARD_S = 90


@pytest.fixture(scope="module")
def finished_sweep(tiny_model, small_csv, tmp_path_factory):
    folder = tmp_path_factory.mktemp("oracle-sweep")
    spec = {
        "name": "oracle",
        "dir": str(folder / "sweeps"),
        "metric": "eval_loss",
        "base": {
            "model": {"name": str(tiny_model), "max_length": 64},
            "data": {"train": str(small_csv), "val_size": 40, "test": None},
            "budget": 2500,
            "train": {
                "max_steps": 8,
                "eval_every": 4,
                "log_every": 4,
                "batch_size": 16,
                "mixed_precision": "no",
            },
            "lora": {"r": 2},
        },
        "search": {
            "sampler": "random",
            "seed": 3,
            "n_trials": N_TRIALS,
            "pruner": {"type": "median", "n_startup_trials": 2},
            "space": {"train.lr": {"float": [0.001, 3.0], "log": True}},
        },
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    plan = load_sweep(path)
    study = open_study(plan, 0)
    study.enqueue_trial({"train.lr": 0.01})  # two sound trials first: the median to beat
    study.enqueue_trial({"train.lr": 0.003})
    study.enqueue_trial({"train.lr": 3.0})  # diverges: pruned at its first evaluation
    # in a child process with a deadline: a sweep that never stops fails here, it cannot hang
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lorafit", "sweep", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=GUARD_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the sweep of {N_TRIALS} trials ran over {GUARD_S} s: does it ever stop?")
    assert done.returncode == 0, done.stderr[-3000:]
    storage = f"sqlite:///{plan.folder / 'study.db'}"
    return plan, optuna.load_study(study_name="oracle", storage=storage)


def _leaderboard(plan) -> list[dict]:
    with open(plan.folder / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_random_study_with_a_pruned_trial_ends_at_n_trials(finished_sweep):
    _, study = finished_sweep
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)) == []
    assert len(pruned) >= 1 and len(complete) >= 2
    assert len(complete) + len(pruned) == len(study.trials) == N_TRIALS
    bad = [t for t in study.trials if t.params["train.lr"] == 3.0]
    assert [t.state for t in bad] == [TrialState.PRUNED]


def test_the_leaderboard_lists_exactly_optunas_trials_with_their_values(finished_sweep):
    plan, study = finished_sweep
    rows = _leaderboard(plan)
    complete = {t.number: t for t in study.get_trials(states=(TrialState.COMPLETE,))}
    pruned = {t.number: t for t in study.get_trials(states=(TrialState.PRUNED,))}
    done_rows = [r for r in rows if r["status"] == "done"]
    assert {int(r["trial"]) for r in done_rows} == set(complete)
    assert {int(r["trial"]) for r in rows if r["status"] == "pruned"} == set(pruned)
    assert len(rows) == len(study.trials)
    for row in done_rows:
        trial = complete[int(row["trial"])]
        assert float(row["val_loss"]) == pytest.approx(trial.value, rel=1e-12)
        assert float(row["train.lr"]) == pytest.approx(trial.params["train.lr"], rel=1e-3)
        # the objective is the best checkpoint's eval_loss: the lowest value it reported
        assert trial.value == pytest.approx(min(trial.intermediate_values.values()), rel=1e-12)
    # best first: ranks follow Optuna's values (eval_loss: lower is better)
    by_value = sorted(complete.values(), key=lambda t: t.value)
    assert [int(r["trial"]) for r in done_rows] == [t.number for t in by_value]
    assert [r["rank"] for r in done_rows] == [str(i) for i in range(1, len(done_rows) + 1)]
    assert study.best_trial.number == int(done_rows[0]["trial"])
    for row in rows:
        if row["status"] == "pruned":
            step = max(pruned[int(row["trial"])].intermediate_values)
            assert row["note"].startswith(f"pruned at step {step}")


def test_the_leaderboard_page_counts_what_optuna_counts(finished_sweep):
    plan, study = finished_sweep
    page = (plan.folder / "leaderboard.md").read_text()
    counts = re.search(
        r"(\d+) done, (\d+) pruned, (\d+) skipped, (\d+) failed, (\d+) not finished", page
    )
    assert counts, page
    done, pruned, skipped, failed, unfinished = map(int, counts.groups())
    assert done == len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert pruned + skipped == len(study.get_trials(states=(TrialState.PRUNED,)))
    assert skipped == 0  # nothing here is over budget
    assert failed == len(study.get_trials(states=(TrialState.FAIL,))) == 0
    assert unfinished == 0
