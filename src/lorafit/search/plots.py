"""A study in pictures for `lorafit report`: the metric by trial, and parameter importances.

    from lorafit.search.plots import read_study
    study = read_study("runs/sweeps/NAME/leaderboard.csv")   # None: no study.json beside it

Drawn with matplotlib from the study's trials (no plotly needed). For an interactive view:
`optuna-dashboard sqlite:///runs/sweeps/NAME/study.db`.
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from lorafit.errors import UserError
from lorafit.search.leaderboard import trial_status

MIN_TRIALS_FOR_IMPORTANCE = 3


def read_study(leaderboard: str | Path) -> dict | None:
    """The study beside a leaderboard CSV (its folder's study.json): info, trials, importances."""
    import optuna

    from lorafit.search.samplers import storage_from_url

    info_path = Path(leaderboard).parent / "study.json"
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        storage = storage_from_url(info["storage"], str(info_path))
    except (ValueError, KeyError) as e:
        raise UserError(
            f"{info_path}: not a lorafit study file ({e}); delete it or rerun the sweep"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=info["study_name"], storage=storage)
    except KeyError:
        raise UserError(
            f"{info_path}: study {info['study_name']!r} not found in {info['storage']}"
        ) from None
    importances, why = param_importances(study)
    return {
        "info": info,
        "trials": study.get_trials(deepcopy=False),
        "importances": importances,
        "why": why,
    }


def param_importances(study) -> tuple[dict[str, float], str]:
    """(parameter -> importance, or {} with the reason it cannot be computed)."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False) if trial_status(t) == "done"]
    varying = {
        k
        for k in {k for t in done for k in t.params}
        if len({repr(t.params.get(k)) for t in done}) > 1
    }
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE or not varying:
        return {}, (
            f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} finished trials "
            f"whose parameters differ ({len(done)} finished so far)"
        )
    try:
        return optuna.importance.get_param_importances(study, params=sorted(varying)), ""
    except (ValueError, RuntimeError) as e:
        return {}, f"parameter importances could not be computed: {e}"


def plot_metric_by_trial(trials, metric: str, direction: str) -> Figure:
    """Finished trials as dots, pruned ones as crosses at their last report, best so far as a line."""
    fig = Figure(figsize=(7, 3.8))
    ax = fig.add_subplot()
    done = [
        (t.number, t.value) for t in trials if trial_status(t) == "done" and t.value is not None
    ]
    pruned = [
        (t.number, t.intermediate_values[max(t.intermediate_values)])
        for t in trials
        if trial_status(t) == "pruned" and t.intermediate_values
    ]
    if done:
        ax.scatter(*zip(*done), label="finished", color="tab:blue", zorder=3)
        better = max if direction == "maximize" else min
        best, line = None, []
        for number, value in sorted(done):
            best = value if best is None else better(best, value)
            line.append((number, best))
        ax.step(*zip(*line), where="post", color="tab:green", label="best so far")
    if pruned:
        ax.scatter(
            *zip(*pruned), marker="x", color="tab:orange", label="pruned (last report)", zorder=3
        )
    skipped = sum(trial_status(t) == "skipped" for t in trials)
    ax.set_xlabel("trial" + (f" ({skipped} over budget: not trained)" if skipped else ""))
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by trial")
    ax.grid(alpha=0.3)
    if done or pruned:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def plot_importances(importances: dict[str, float]) -> Figure:
    fig = Figure(figsize=(7, 0.6 + 0.45 * len(importances)))
    ax = fig.add_subplot()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:purple")
    ax.set_xlabel("importance (optuna.importance, normalised to sum 1)")
    ax.set_title("parameter importances")
    fig.tight_layout()
    return fig
