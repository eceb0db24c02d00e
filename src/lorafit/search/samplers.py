"""The Optuna pieces a sweep file names: storage, sampler and pruner, built and checked.

    storage: sqlite:///<folder>/study.db (default), any SQLAlchemy URL, or journal:PATH
    sampler: tpe, random, grid, qmc, gp    pruner: median, successive_halving, hyperband, none

Options given as `{type: NAME, option: value}` are checked against the Optuna class's own
signature, so a typo is one line naming the option and listing the valid ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from lorafit.errors import UserError

if TYPE_CHECKING:
    from lorafit.search.space import SweepPlan

HEARTBEAT_S, GRACE_S = 60, 180


def storage_url(plan: SweepPlan) -> str:
    return plan.storage or f"sqlite:///{plan.folder / 'study.db'}"


def open_storage(plan: SweepPlan):
    """An RDB storage with heartbeats (a killed worker's trial is retried), or a journal file."""
    return storage_from_url(storage_url(plan), f"{plan.source}: storage")


def storage_from_url(url: str, where: str):
    import optuna

    if url.startswith("journal:") or (("://" not in url) and url.endswith((".log", ".journal"))):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise UserError(
            f"{where}: {url!r}: give a database URL (sqlite:///study.db, "
            "postgresql://user@host/db) or a journal file (journal:/shared/study.log)"
        )
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors vary by driver
        raise UserError(
            f"{where}: cannot open {url} ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None


def _constraints(trial) -> list[float]:
    """> 0: the trainable parameters over the budget (TPE and GP rank such trials last)."""
    return [float(trial.user_attrs.get("budget_excess", 0))]


def make_sampler(plan: SweepPlan, seed: int | None):
    import optuna.samplers as s

    args = dict(plan.sampler_args)  # a seed among them is plan.seed already (space._read_search)
    if plan.sampler == "grid":  # one shuffle of the grid for every worker: same seed everywhere
        return _checked(
            s.GridSampler, {p.key: p.labels for p in plan.spaces.values()}, seed=plan.seed, **args
        )
    args["seed"] = seed  # worker i: seed + i
    if plan.sampler in ("tpe", "gp"):
        args.setdefault("constraints_func", _constraints)
    cls = {"tpe": s.TPESampler, "random": s.RandomSampler, "qmc": s.QMCSampler, "gp": s.GPSampler}
    return _checked(cls[plan.sampler], **args)


def make_pruner(plan: SweepPlan):
    import optuna.pruners as p

    cls = {
        "median": p.MedianPruner,
        "successive_halving": p.SuccessiveHalvingPruner,
        "hyperband": p.HyperbandPruner,
        "none": p.NopPruner,
    }[plan.pruner]
    return _checked(cls, **plan.pruner_args)


def _checked(cls, *args, **kwargs):
    """Construct an Optuna sampler or pruner; a bad option is a one-line error naming it."""
    import inspect

    known = inspect.signature(cls.__init__).parameters
    for key in kwargs:
        if key not in known:
            options = ", ".join(k for k in known if k not in ("self", "search_space"))
            raise UserError(f"search: {cls.__name__} has no option '{key}'; it takes {options}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(*args, **kwargs)
    except (TypeError, ValueError, ImportError) as e:
        raise UserError(f"search: {cls.__name__}: {e}") from None
