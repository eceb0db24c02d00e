"""Sweep files: the base config, the swept keys and their search spaces, checked up front.

A sweep file (every key optional except one of `grid` / `runs` / `search.space`):

    name: layer-ranges              # folder <dir>/<name>/ (default: the file's stem)
    dir: runs/sweeps                # parent folder (default runs/sweeps)
    base: ../agnews_roberta_latent.yaml   # config file, relative to this file, or a mapping
    overrides: {lora.layers: all}   # applied to the base for every trial (not swept)
    metric: eval_accuracy           # eval_accuracy, eval_f1, eval_mcc, eval_precision, eval_recall,
                                    # eval_loss (minimised), test_accuracy; each trial keeps its best
                                    # checkpoint by it (train.metric; eval_accuracy for test_accuracy);
                                    # a regression (task: regression): eval_pearson, eval_spearman,
                                    # test_pearson (trials select by eval_pearson) or eval_loss; multi-label:
                                    # eval_macro_f1, eval_micro_f1, test_macro_f1 or eval_loss
    storage: null                   # default sqlite:///<folder>/study.db; an RDB URL or a journal file
    grid:                           # categorical keys (with sampler grid: their cartesian product)
      lora.layers: ["0-11", "6-11", "9-11", "10-11"]
    runs:                           # named override mappings, one more categorical choice
      - name: two-sections
        lora.sections: [{layers: "0-5", r: 4}, {layers: "6-11", r: 8}]
    search:
      sampler: tpe                  # tpe, random, grid, qmc, gp (or {type: tpe, seed: 1, ...})
      n_trials: 20                  # trials to finish (infeasible ones do not count)
      timeout: 3600                 # seconds per worker (either or both)
      pruner: median                # median, successive_halving, hyperband, none
      space:
        lora.r: {int: [2, 64], log: true}
        train.lr: {float: [1.0e-4, 3.0e-3], log: true}
        lora.target_modules: {choice: [[query, value], [query, key, value]]}

Without `search:` a file is a grid (Optuna's GridSampler over the grid and runs), named and
ranked as before. Every error is one line naming the file and the key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lorafit.config import Config, _omegaconf_message
from lorafit.errors import UserError
from lorafit.search.leaderboard import METRICS, selection_metric

SWEEP_KEYS = ("name", "dir", "base", "overrides", "metric", "grid", "runs", "search", "storage")
SEARCH_KEYS = ("sampler", "n_trials", "timeout", "pruner", "seed", "space")
SAMPLERS = ("tpe", "random", "grid", "qmc", "gp")
PRUNERS = ("median", "successive_halving", "hyperband", "none")
#: names a trial may not take: the sweep's own files (and train's `latest` link) use them
RESERVED = {"sweep", "study", "leaderboard", "latest"}
NAME_RE = re.compile(r"[A-Za-z0-9._+-]+")
RUN_PARAM = "run"  # the study parameter that picks a `runs:` entry


@dataclass
class Space:
    """One swept key: `int`/`float` bounds (optionally log or stepped) or a list of choices.

    Choices that are not plain scalars (lists, sections) are offered to Optuna by label.
    """

    key: str
    kind: str  # int, float, choice
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    where: str = "search: space"  # the file's section that defines it, for error messages

    def suggest(self, trial) -> Any:
        """The value for this trial (Optuna sees labels for structured choices)."""
        if self.kind == "int":
            return trial.suggest_int(
                self.key, self.low, self.high, step=self.step or 1, log=self.log
            )
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        label = trial.suggest_categorical(self.key, self.labels)
        return self.choices[self.labels.index(label)]


@dataclass
class Trial:
    """One configuration of a grid: its overrides, full config and trainable parameters."""

    name: str
    overrides: dict[str, Any]
    config: Config
    params: int | None
    skip: str | None = None  # why it does not run (over budget)
    error: str | None = (
        None  # why it cannot be counted (its data unreadable): it fails alone when run
    )


@dataclass
class SweepPlan:
    """A sweep file read and checked: where it writes, what it searches and how."""

    source: Path
    name: str
    folder: Path
    metric: str
    keys: list[str]  # the swept keys (the leaderboard's settings columns)
    base: Any = None  # the OmegaConf base every trial starts from
    spaces: dict[str, Space] = field(default_factory=dict)  # grid keys, `run`, search.space
    runs: dict[str, dict] = field(default_factory=dict)  # run label -> overrides
    sampler: str = "grid"
    sampler_args: dict = field(default_factory=dict)
    pruner: str = "none"
    pruner_args: dict = field(default_factory=dict)
    n_trials: int | None = None
    timeout: float | None = None
    seed: int = 0
    storage: str | None = None
    trials: list[Trial] = field(default_factory=list)  # the expanded grid (sampler grid only)

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return "maximize" if METRICS[self.metric][1] else "minimize"

    @property
    def grid_size(self) -> int:
        size = 1
        for space in self.spaces.values():
            size *= len(space.labels)
        return size


# ---------------------------------------------------------------- reading the sweep file


def read_sweep_file(path: str | Path) -> dict:
    """The sweep file as a plain mapping, with its top-level keys checked."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {path} not found; give an existing YAML file")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = str(getattr(e, "problem", e)).splitlines()[0]  # one line (a ReaderError has two)
        raise UserError(f"{path}:{where} not valid YAML ({problem}); fix the file") from None
    if not isinstance(spec, dict):
        raise UserError(
            f"{path}: a sweep file is a mapping with base:, grid:, runs: and/or search:"
        )
    unknown = [k for k in spec if k not in SWEEP_KEYS]
    if unknown:
        raise UserError(
            f"{path}: unknown key '{unknown[0]}'; a sweep file has {', '.join(SWEEP_KEYS)}"
        )
    search = spec.get("search") or {}
    if not isinstance(search, dict):
        raise UserError(
            f"{path}: search: give a mapping (sampler, n_trials, timeout, pruner, space)"
        )
    if not spec.get("grid") and not spec.get("runs") and not search.get("space"):
        raise UserError(
            f"{path}: nothing to sweep; add grid: (key: [values]), runs: (a list of overrides) "
            "or search: space: (key: {int: [lo, hi]})"
        )
    if spec.get("metric", "eval_accuracy") not in METRICS:
        raise UserError(f"{path}: metric {spec['metric']!r} is not one of {', '.join(METRICS)}")
    return spec


def _runs(spec: dict, source: Path) -> dict[str, dict]:
    """`runs:` entries by label (their name, else #1, #2...)."""
    runs = spec.get("runs")
    if runs is None:
        return {}
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise UserError(f"{source}: runs: must be a list of mappings (config key: value)")
    out = {}
    for i, entry in enumerate(runs):
        entry = dict(entry)
        label = entry.pop("name", None)
        if label is not None and not NAME_RE.fullmatch(str(label)):
            raise UserError(f"{source}: runs: name {label!r}: use letters, digits and . _ + - only")
        key = str(label) if label is not None else f"#{i + 1}"  # '#': never a user's name
        if key in out:
            raise UserError(
                f"{source}: two trials are named {key!r}; give runs: entries distinct name: values"
            )
        out[key] = entry
    return out


def _grid_spaces(spec: dict, source: Path) -> dict[str, Space]:
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise UserError(f"{source}: grid: must map config keys to lists of values")
    spaces = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{source}: grid: {key}: give a non-empty list of values, e.g. [4, 8]")
        spaces[str(key)] = _choice(str(key), values, "grid")
    return spaces


def _choice(key: str, values: list, where: str = "search: space") -> Space:
    scalar = all(v is None or isinstance(v, (str, int, float, bool)) for v in values)
    labels = list(values) if scalar else [_value_tag(v) for v in values]
    if len(set(map(str, labels))) < len(labels):
        labels = [f"{i}:{label}" for i, label in enumerate(labels)]
    return Space(key, "choice", choices=list(values), labels=labels, where=where)


def parse_space(key: str, value: Any, source: Path) -> Space:
    """`{int: [2, 64], log: true}`, `{float: [lo, hi], step: 0.1}` or `{choice: [...]}`."""
    where = f"{source}: search: space: {key}"
    kinds = [k for k in ("int", "float", "choice") if isinstance(value, dict) and k in value]
    if len(kinds) != 1:
        raise UserError(
            f"{where}: give one of {{int: [lo, hi]}}, {{float: [lo, hi], log: true}} or {{choice: [a, b]}}"
        )
    kind = kinds[0]
    extra = [k for k in value if k not in (kind, "log", "step")]
    if extra:
        raise UserError(f"{where}: unknown key '{extra[0]}'; a space has {kind}, log and step")
    if kind == "choice":
        if not isinstance(value["choice"], list) or not value["choice"]:
            raise UserError(f"{where}: choice: give a non-empty list of values")
        if "log" in value or "step" in value:
            raise UserError(f"{where}: log and step apply to int and float spaces only")
        return _choice(key, value["choice"])
    bounds, log, step = value[kind], value.get("log", False), value.get("step")
    number = int if kind == "int" else (int, float)
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)
    ):
        raise UserError(f"{where}: {kind}: give [low, high] as two {kind} numbers")
    low, high = bounds
    if low > high:
        raise UserError(f"{where}: {kind}: low {low} is above high {high}")
    if not isinstance(log, bool):
        raise UserError(f"{where}: log: give true or false")
    if log and low <= 0:
        raise UserError(f"{where}: log: true needs a low bound above 0")
    if step is not None and (
        not isinstance(step, number) or isinstance(step, bool) or step <= 0 or log
    ):
        raise UserError(f"{where}: step: give a positive {kind} (and no log: true)")
    if kind == "float":
        low, high = float(low), float(high)
    return Space(key, kind, low, high, log, step)


def _search_spaces(search: dict, source: Path) -> dict[str, Space]:
    space = search.get("space") or {}
    if not isinstance(space, dict):
        raise UserError(
            f"{source}: search: space: map config keys to {{int: ...}}, {{float: ...}} or {{choice: ...}}"
        )
    return {str(key): parse_space(str(key), value, source) for key, value in space.items()}


def _named(value: Any, names: tuple, what: str, source: Path) -> tuple[str, dict]:
    """`tpe` or `{type: tpe, seed: 1}` -> ("tpe", {"seed": 1})."""
    if isinstance(value, dict):
        args = dict(value)
        value = args.pop("type", None)
    else:
        args = {}
    if value not in names:
        raise UserError(
            f"{source}: search: {what}: {value!r} is not one of {', '.join(names)} "
            f"(or {{type: NAME, option: value}})"
        )
    return value, args


def _read_search(plan: SweepPlan, search: dict, source: Path) -> None:
    unknown = [k for k in search if k not in SEARCH_KEYS]
    if unknown:
        raise UserError(
            f"{source}: search: unknown key '{unknown[0]}'; search has {', '.join(SEARCH_KEYS)}"
        )
    default = "tpe" if search.get("space") else "grid"
    plan.sampler, plan.sampler_args = _named(
        search.get("sampler", default), SAMPLERS, "sampler", source
    )
    plan.pruner, plan.pruner_args = _named(
        search.get("pruner", "none" if plan.sampler == "grid" else "median"),
        PRUNERS,
        "pruner",
        source,
    )
    for key in ("n_trials", "timeout", "seed"):
        value = search.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < (0 if key == "seed" else 1)
        ):
            raise UserError(f"{source}: search: {key}: give a positive number, not {value!r}")
    plan.n_trials, plan.timeout = search.get("n_trials"), search.get("timeout")
    plan.seed = int(search.get("seed") or 0)
    # `sampler: {type: tpe, seed: 1}` is the same seed: worker i samples with seed + i (kept
    # among the options, every worker had seed 1 and drew the same trials)
    seed = plan.sampler_args.pop("seed", None)
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(
                f"{source}: search: sampler: seed: give a whole number >= 0, not {seed!r}"
            )
        if search.get("seed") is not None and search["seed"] != seed:
            raise UserError(
                f"{source}: search: seed: {search['seed']} and sampler: seed: {seed} disagree; "
                "give the seed once (search: seed:)"
            )
        plan.seed = seed
    if plan.sampler == "grid":
        numeric = [s.key for s in plan.spaces.values() if s.kind != "choice"]
        if numeric:
            raise UserError(
                f"{source}: search: space: {numeric[0]}: sampler grid takes {{choice: [...]}} "
                "spaces only; list the values, or use sampler tpe"
            )
    elif plan.n_trials is None and plan.timeout is None:
        raise UserError(
            f"{source}: search: sampler {plan.sampler} needs n_trials: and/or timeout: (seconds)"
        )


# ---------------------------------------------------------------- configs and names


def trial_name(overrides: dict[str, Any]) -> str:
    """A deterministic name from overrides: {lora.layers: 9-11, lora.r: 8} -> layers9-11_r8."""
    shorts = [key.rsplit(".", 1)[-1] for key in overrides]
    parts = [
        (short if shorts.count(short) == 1 else key) + _value_tag(value)
        for (key, value), short in zip(overrides.items(), shorts)
    ]
    name = "_".join(parts) or "base"
    if len(name) > 80:  # keep folder names short; the hash keeps them distinct
        name = name[:70] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return name


def _value_tag(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return re.sub(r"[^A-Za-z0-9.+-]+", "-", value).strip("-") or "empty"
    if isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value):
        return "+".join(_value_tag(v) for v in value)
    # sections and other structures: their count and a short hash of their content
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]
    return f"{len(value)}-{digest}" if isinstance(value, list) else digest


def grid_trial_name(plan: SweepPlan, run: str | None, point: dict) -> str:
    """A grid trial's name: the run's name (if it has one) and the grid point's values."""
    if run and not run.startswith("#"):
        return "_".join(filter(None, [run, trial_name(point) if point else None]))
    named = plan.runs.get(run) if run is not None else None
    return trial_name(point or (named or {}))


def _nested(overrides: dict[str, Any]) -> dict:
    """{'lora.r': 8} -> {'lora': {'r': 8}}, for OmegaConf.merge."""
    out: dict = {}
    for key, value in overrides.items():
        node = out
        *parents, last = str(key).split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _base_config(base: Any, common: Any, source: Path, overrides) -> Any:
    """The base config (schema + file or mapping + `overrides:` + command line), checked."""
    try:
        conf = OmegaConf.structured(Config)
        if isinstance(base, str):
            path = source.parent / base
            if not path.is_file():
                raise UserError(
                    f"{source}: base: {path} not found; give a config path relative to the sweep file"
                )
            conf = OmegaConf.merge(conf, OmegaConf.load(path))
        elif isinstance(base, dict):
            conf = OmegaConf.merge(conf, _nested(base))
        elif base is not None:
            raise UserError(f"{source}: base: give a config file path or a mapping of config keys")
        if common is not None and not isinstance(common, dict):
            raise UserError(f"{source}: overrides: give a mapping of config keys to values")
        conf = OmegaConf.merge(conf, _nested(common or {}))
        if overrides:
            conf = OmegaConf.merge(conf, OmegaConf.from_dotlist(list(overrides)))
        OmegaConf.to_object(conf)  # validate the base on its own: errors name 'base'
        return conf
    except OmegaConfBaseException as e:
        raise UserError(f"{source}: base: {_omegaconf_message(e)}") from None
    except ValueError as e:
        raise UserError(f"{source}: base: {e}") from None


def trial_config(plan: SweepPlan, overrides: dict, name: str) -> Config:
    """The trial's full config: named after the trial, in the sweep folder, no progress bar,
    its best checkpoint kept by the sweep's metric (train.metric, over the base's)."""
    try:
        extra = {
            "run": {"name": name, "dir": str(plan.folder)},
            "log": {"progress": False},
            "train": {"metric": selection_metric(plan.metric)},
        }
        return cast(
            Config, OmegaConf.to_object(OmegaConf.merge(plan.base, _nested(overrides), extra))
        )
    except OmegaConfBaseException as e:
        raise UserError(f"{plan.source}: trial {name}: {_omegaconf_message(e)}") from None
    except ValueError as e:
        raise UserError(f"{plan.source}: trial {name}: {e}") from None


def check_budget(cfg: Config) -> tuple[int, str | None]:
    """(trainable parameters, reason it is over budget or None), counted without weights.

    The same code as `lorafit train`'s check and `lorafit plan`'s exact count.
    """
    from lorafit.params import check_budget as check
    from lorafit.params import describe_model

    description = describe_model(cfg)
    try:
        check(description)
        return description["params"]["trainable"], None
    except UserError as e:
        return description["params"]["trainable"], str(e)


def _check_space_values(plan: SweepPlan) -> None:
    """Each bound and choice merged alone into the base: a bad value names its key."""
    for space in plan.spaces.values():
        if space.key == RUN_PARAM:
            values = [(f"run {r}", plan.runs[r]) for r in space.choices]
        elif space.kind == "choice":
            values = [(f"value {v!r}", {space.key: v}) for v in space.choices]
        else:
            values = [(f"bound {v!r}", {space.key: v}) for v in (space.low, space.high)]
        for what, overrides in values:
            try:
                OmegaConf.to_object(OmegaConf.merge(plan.base, _nested(overrides)))
            except OmegaConfBaseException as e:
                message = _omegaconf_message(e)
            except ValueError as e:
                message = str(e)
            else:
                continue
            raise UserError(f"{plan.source}: {space.where} ({what}): {message}")


def _expand_grid(plan: SweepPlan) -> None:
    """Every grid point's name, config and budget check (sampler grid: for --dry-run and the
    leaderboard's rows of trials not run yet)."""
    point_spaces = [s for s in plan.spaces.values() if s.key != RUN_PARAM]
    runs: list[str | None] = list(plan.runs) or [None]
    seen: set[str] = set()
    for run in runs:
        for combo in itertools.product(*(s.choices for s in point_spaces)):
            point = {s.key: v for s, v in zip(point_spaces, combo)}
            named = plan.runs.get(run) if run is not None else None
            overrides = {**(named or {}), **point}
            name = grid_trial_name(plan, run, point)
            if name in seen or name in RESERVED:
                raise UserError(
                    f"{plan.source}: two trials are named {name!r} (or it is reserved); give runs: entries distinct name: values"
                )
            seen.add(name)
            cfg = trial_config(plan, overrides, name)
            try:
                params, skip = check_budget(cfg)
            except (
                UserError
            ) as e:  # e.g. its data.train is missing: that trial fails, not the sweep
                plan.trials.append(Trial(name, overrides, cfg, None, error=str(e)))
                continue
            plan.trials.append(Trial(name, overrides, cfg, params, skip))


def load_sweep(path: str | Path, overrides=()) -> SweepPlan:
    """Read a sweep file: base config, search spaces, sampler, pruner and storage, checked.

    `overrides` (`key=value` strings) apply to the base of every trial. A grid (no search
    space, or sampler grid) is expanded into its trials, each counted against the budget.
    Raises `UserError` naming the file and key for unknown keys, bad values or duplicate names.
    """
    source = Path(path)
    spec = read_sweep_file(source)
    name = str(spec.get("name") or source.stem)
    if not NAME_RE.fullmatch(name):
        raise UserError(f"{source}: name {name!r}: use letters, digits and . _ + - only")
    storage = spec.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise UserError(
            f"{source}: storage: give a URL (sqlite:///..., postgresql://...) or a journal file path"
        )
    folder = Path(spec.get("dir") or "runs/sweeps") / name
    plan = SweepPlan(source, name, folder, spec.get("metric", "eval_accuracy"), [], storage=storage)
    plan.base = _base_config(spec.get("base"), spec.get("overrides"), source, overrides)
    plan.runs = _runs(spec, source)
    plan.spaces = _grid_spaces(spec, source)
    if plan.runs:
        plan.spaces[RUN_PARAM] = _choice(RUN_PARAM, list(plan.runs), "runs")
    search = spec.get("search") or {}
    for key, space in _search_spaces(search, source).items():
        if key in plan.spaces:
            raise UserError(f"{source}: search: space: {key} is also in grid:; give it once")
        plan.spaces[key] = space
    _read_search(plan, search, source)
    _check_space_values(plan)
    from lorafit.search.samplers import make_pruner, make_sampler

    try:  # options of the sampler and pruner, checked against Optuna's own signatures
        make_sampler(plan, plan.seed), make_pruner(plan)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
    # the settings columns: the runs' keys, then the grid's and the searched ones
    run_keys = [k for entry in plan.runs.values() for k in entry]
    plan.keys = [k for k in dict.fromkeys([*plan.spaces, *run_keys]) if k != RUN_PARAM]
    if plan.sampler == "grid":
        _expand_grid(plan)
        plan.keys = list(dict.fromkeys(k for t in plan.trials for k in t.overrides))
    return plan


def sample(plan: SweepPlan, trial) -> tuple[str, dict]:
    """(trial name, overrides) for an Optuna trial: every space suggested in file order."""
    run: Any = None  # a runs: label, if the plan has runs
    point: dict[str, Any] = {}
    for space in plan.spaces.values():
        value = space.suggest(trial)
        if space.key == RUN_PARAM:
            run = value
        else:
            point[space.key] = value
    overrides = {**(plan.runs.get(run) or {}), **point}
    if plan.sampler == "grid":
        return grid_trial_name(plan, run, point), overrides
    # a retried trial (ours or Optuna's heartbeat callback) keeps its name, so its run dir
    return trial.user_attrs.get("name") or f"t{trial.number:04d}", overrides
