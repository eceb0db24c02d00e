"""Search: a sweep file run as an Optuna study, budgeted, pruned, shared between workers.

space.py        the sweep file: base config, grid / runs / search spaces, budget check
samplers.py     Optuna's storage, sampler and pruner, as the file names them
study.py        the objective (count, train or resume, report, prune), workers, retries
leaderboard.py  the study as leaderboard.csv / leaderboard.md
plots.py        the study for `lorafit report`: metric by trial, parameter importances
run.py          `lorafit sweep`: dry run, one or N workers, the final leaderboard
"""

from lorafit.search.run import plan_text, sweep
from lorafit.search.space import load_sweep, trial_name

__all__ = ["sweep", "plan_text", "load_sweep", "trial_name"]
