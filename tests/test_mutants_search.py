"""Direct, fast tests of search/'s decisions for mutation testing (`scripts/mutation.sh search.space`,
`search.study`, `search.leaderboard`, `search.samplers`).

Nothing trains: sweep files are written here and read with all-MiniLM-L6-v2's installed shape
(trainable parameters with LoRA on query and value: 1,540 for the linear head plus
2 * 384 * 2 * r = 1,536 * r per adapted layer); studies are Optuna in-memory or SQLite studies
whose trials are made here (`create_trial`, `ask` / `tell`) and counted back with Optuna's own
storage API; a stand-in for `lorafit.train.train` writes the run directory a real run would.
Expected names, messages and counts are literal or worked out in the test.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import logging
import os
import socket
import warnings
from pathlib import Path

# heavy imports once (the mutation fork server imports the tests): the budget count builds a
# weightless model
import accelerate  # noqa: F401
import optuna
import peft  # noqa: F401
import pytest
import transformers.models.bert.modeling_bert  # noqa: F401  (MiniLM is a BERT)
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

import lorafit.params  # noqa: F401
import lorafit.train  # noqa: F401
from lorafit.config import config_to_dict
from lorafit.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
HEAD = 1540  # MiniLM's linear head: 384 * 4 + 4
PER_RANK_LAYER = 1536  # LoRA on query and value of one layer, per unit of rank


def minilm(r: int, layers: int) -> int:
    return HEAD + PER_RANK_LAYER * r * layers


def base(**extra) -> dict:
    out = {
        "model": {"name": "all-MiniLM-L6-v2"},
        "data": {"label_names": list(LABELS)},
        "budget": 20000,
    }
    out.update(extra)
    return out


def write(path: Path, **spec) -> Path:
    spec.setdefault("base", base())
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def refused(path: Path, overrides=()) -> str:
    from lorafit.search.space import load_sweep

    with pytest.raises(UserError) as e:
        load_sweep(path, overrides)
    return str(e.value)


def memory_study(direction: str = "maximize"):
    return optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction=direction)


def add(
    study,
    state=TrialState.COMPLETE,
    value=None,
    name=None,
    params=None,
    dists=None,
    inter=None,
    **attrs,
):
    """A finished (or running / waiting) trial with these user attributes."""
    if name is not None:
        attrs["name"] = name
    if state == TrialState.COMPLETE and value is None:
        value = 0.5
    study.add_trial(
        create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params=params or {},
            distributions=dists or {},
            user_attrs=attrs,
            intermediate_values=inter or {},
        )
    )
    return study.trials[-1]


def search_plan(tmp_path, space=None, **search):
    from lorafit.search.space import load_sweep

    search.setdefault("n_trials", 3)
    search["space"] = space or {"lora.r": {"int": [2, 8]}}
    return load_sweep(write(tmp_path / "s.yaml", dir=str(tmp_path / "sweeps"), search=search))


def grid_plan(tmp_path, **spec):
    from lorafit.search.space import load_sweep

    spec.setdefault("dir", str(tmp_path / "sweeps"))
    return load_sweep(write(tmp_path / "g.yaml", **spec))


# ================================================================ space.py


def test_parse_space_reads_int_float_and_choice(tmp_path):
    from lorafit.search.space import parse_space

    src = Path("f.yaml")
    s = parse_space("lora.r", {"int": [2, 64], "log": True}, src)
    assert (s.key, s.kind, s.low, s.high, s.log, s.step) == ("lora.r", "int", 2, 64, True, None)
    assert s.choices == [] and s.labels == [] and s.where == "search: space"
    s = parse_space("lora.r", {"int": [1, 9], "step": 2}, src)
    assert (s.low, s.high, s.log, s.step) == (1, 9, False, 2)
    s = parse_space("lora.r", {"int": [1, 1]}, src)  # one value: allowed
    assert (s.low, s.high) == (1, 1)
    s = parse_space("train.lr", {"float": [1, 3]}, src)
    assert (s.kind, s.low, s.high) == ("float", 1.0, 3.0)
    assert type(s.low) is float and type(s.high) is float
    s = parse_space("lora.dropout", {"float": [0, 0.2], "step": 0.05}, src)
    assert (s.low, s.high, s.step, s.log) == (0.0, 0.2, 0.05, False)
    s = parse_space(
        "lora.dropout", {"float": [0.0, 0.2], "step": 1}, src
    )  # an int step for a float
    assert s.step == 1
    s = parse_space("train.lr", {"float": [1e-4, 1e-2], "log": True}, src)
    assert s.log is True and s.low == 1e-4
    s = parse_space("train.lr", {"float": [1, 2], "log": True}, src)  # low 1: above 0
    assert s.log is True
    s = parse_space("t", {"choice": ["a", "b"]}, src)
    assert (s.kind, s.choices, s.labels, s.where) == (
        "choice",
        ["a", "b"],
        ["a", "b"],
        "search: space",
    )
    # an int space's type stays int (Optuna's suggest_int)
    s = parse_space("lora.r", {"int": [2, 8], "log": False}, src)
    assert type(s.low) is int and s.log is False


@pytest.mark.parametrize(
    "value, message",
    [
        (5, "give one of {int: [lo, hi]}, {float: [lo, hi], log: true} or {choice: [a, b]}"),
        (
            {"int": [1, 2], "float": [1, 2]},
            "give one of {int: [lo, hi]}, {float: [lo, hi], log: true} or {choice: [a, b]}",
        ),
        ({}, "give one of {int: [lo, hi]}, {float: [lo, hi], log: true} or {choice: [a, b]}"),
        ({"int": [1, 2], "lg": True}, "unknown key 'lg'; a space has int, log and step"),
        ({"float": [1, 2], "steps": 1}, "unknown key 'steps'; a space has float, log and step"),
        ({"choice": [1], "x": 1}, "unknown key 'x'; a space has choice, log and step"),
        ({"choice": []}, "choice: give a non-empty list of values"),
        ({"choice": "ab"}, "choice: give a non-empty list of values"),
        ({"choice": [1, 2], "log": True}, "log and step apply to int and float spaces only"),
        ({"choice": [1, 2], "step": 1}, "log and step apply to int and float spaces only"),
        ({"int": 3}, "int: give [low, high] as two int numbers"),
        ({"int": [1, 2, 3]}, "int: give [low, high] as two int numbers"),
        ({"int": [1]}, "int: give [low, high] as two int numbers"),
        ({"int": [1, 2.5]}, "int: give [low, high] as two int numbers"),
        ({"int": [1.5, 2]}, "int: give [low, high] as two int numbers"),
        ({"int": [True, 2]}, "int: give [low, high] as two int numbers"),
        ({"int": [1, True]}, "int: give [low, high] as two int numbers"),
        ({"float": [0, "1"]}, "float: give [low, high] as two float numbers"),
        ({"float": [False, 1.0]}, "float: give [low, high] as two float numbers"),
        ({"int": [8, 2]}, "int: low 8 is above high 2"),
        ({"float": [0.5, 0.25]}, "float: low 0.5 is above high 0.25"),
        ({"int": [1, 2], "log": 1}, "log: give true or false"),
        ({"int": [1, 2], "log": "yes"}, "log: give true or false"),
        ({"int": [0, 2], "log": True}, "log: true needs a low bound above 0"),
        ({"float": [-1.0, 2.0], "log": True}, "log: true needs a low bound above 0"),
        ({"int": [1, 8], "step": 0}, "step: give a positive int (and no log: true)"),
        ({"int": [1, 8], "step": -2}, "step: give a positive int (and no log: true)"),
        ({"int": [1, 8], "step": 1.5}, "step: give a positive int (and no log: true)"),
        ({"int": [1, 8], "step": True}, "step: give a positive int (and no log: true)"),
        ({"int": [1, 8], "step": "2"}, "step: give a positive int (and no log: true)"),
        ({"int": [1, 8], "step": 1, "log": True}, "step: give a positive int (and no log: true)"),
        ({"float": [0.0, 1.0], "step": 0.0}, "step: give a positive float (and no log: true)"),
    ],
)
def test_parse_space_refuses_with_one_line_naming_the_key(value, message):
    from lorafit.search.space import parse_space

    with pytest.raises(UserError) as e:
        parse_space("lora.r", value, Path("f.yaml"))
    assert str(e.value) == f"f.yaml: search: space: lora.r: {message}"


def test_choice_labels_scalars_structures_and_clashes():
    from lorafit.search.space import _choice

    s = _choice("k", [1, 2.5, "a", None, True])
    assert s.labels == [1, 2.5, "a", None, True] and s.choices == [1, 2.5, "a", None, True]
    assert (s.key, s.kind, s.where) == ("k", "choice", "search: space")
    assert _choice("k", ["x"], "grid").where == "grid"
    s = _choice("lora.target_modules", [["query", "value"], ["query", "key", "value"]])
    assert s.labels == ["query+value", "query+key+value"]
    assert s.choices == [["query", "value"], ["query", "key", "value"]]
    # labels equal as text get their index
    assert _choice("k", [1, "1", 2]).labels == ["0:1", "1:1", "2:2"]
    assert _choice("k", [[4], 4]).labels == ["0:4", "1:4"]
    assert _choice("k", [["a", "b"], "c"]).labels == ["a+b", "c"]  # distinct: no index
    values = [{"layers": "0-5"}, {"layers": "6-11"}]
    s = _choice("k", values)
    assert s.labels == [_tag(values[0]), _tag(values[1])] and s.choices == values
    s.choices.append(0)
    assert values == [{"layers": "0-5"}, {"layers": "6-11"}]  # a copy: the file's list untouched


def _tag(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]


def test_value_tags_by_hand():
    from lorafit.search.space import _value_tag

    assert [_value_tag(v) for v in (True, False, None, 3, 0.5, 2e-05)] == [
        "true",
        "false",
        "none",
        "3",
        "0.5",
        "2e-05",
    ]
    assert _value_tag("a b/c") == "a-b-c"
    assert _value_tag("--x__y--") == "x-y"
    assert _value_tag("a.b+c-d") == "a.b+c-d"
    assert _value_tag("a_B9") == "a-B9"
    assert _value_tag("XLM-X") == "XLM-X"  # only the dashes at the ends are trimmed
    assert _value_tag("///") == "empty" and _value_tag("") == "empty"
    assert _value_tag(["query", "value"]) == "query+value"
    assert _value_tag([1, 2.5, "x y"]) == "1+2.5+x-y"
    assert _value_tag([True, None]) == f"2-{_tag([True, None])}"  # None: not a plain scalar
    sections = [{"layers": "0-5", "r": 2}, {"layers": "6-11", "r": 8}]
    assert _value_tag(sections) == f"2-{_tag(sections)}"
    assert _value_tag([[1], [2], [3]]) == f"3-{_tag([[1], [2], [3]])}"
    assert _value_tag({"b": 1, "a": 2}) == _tag({"a": 2, "b": 1})
    assert len(_value_tag({"a": 1})) == 6


def test_trial_names_by_hand():
    from lorafit.search.space import trial_name

    assert trial_name({}) == "base"
    assert trial_name({"lora.r": 8, "train.lr": 0.001}) == "r8_lr0.001"
    assert trial_name({"lora.r": 8, "model.r": 4}) == "lora.r8_model.r4"
    assert trial_name({"lora.r": 8, "model.r": 4, "train.lr": 1}) == "lora.r8_model.r4_lr1"
    assert trial_name({"budget": 5}) == "budget5"
    # 80 characters stay; 81 become 70 + '-' + 8 hex digits of the full name's hash
    v80 = "a" * 74  # "layers" + 74 = 80
    assert trial_name({"lora.layers": v80}) == "layers" + v80
    long = "layers" + "a" * 75
    assert (
        trial_name({"lora.layers": "a" * 75})
        == long[:70] + "-" + hashlib.sha256(long.encode()).hexdigest()[:8]
    )
    assert len(trial_name({"lora.layers": "a" * 75})) == 79


def test_grid_trial_names_from_runs_and_points():
    from lorafit.search.space import SweepPlan, grid_trial_name

    plan = SweepPlan(
        Path("f.yaml"), "n", Path("d"), "eval_accuracy", [], runs={"#1": {"lora.r": 4}, "lion": {}}
    )
    assert grid_trial_name(plan, "lion", {"lora.r": 2}) == "lion_r2"
    assert grid_trial_name(plan, "lion", {}) == "lion"
    assert grid_trial_name(plan, "#1", {"lora.alpha": 8}) == "alpha8"  # an unnamed run: the point
    assert grid_trial_name(plan, "#1", {}) == "r4"  # ... or its overrides
    assert grid_trial_name(plan, None, {"lora.r": 2}) == "r2"
    assert grid_trial_name(plan, None, {}) == "base"
    assert grid_trial_name(plan, "", {}) == "base"


def test_nested_overrides():
    from lorafit.search.space import _nested

    assert _nested({"lora.r": 8, "lora.alpha": 16, "train.lr": 0.1, "budget": 5, "a.b.c": 1}) == {
        "lora": {"r": 8, "alpha": 16},
        "train": {"lr": 0.1},
        "budget": 5,
        "a": {"b": {"c": 1}},
    }
    assert _nested({}) == {}


def test_read_search_defaults_and_settings():
    from lorafit.search.space import Space, SweepPlan, _read_search

    def read(search, spaces=None):
        plan = SweepPlan(Path("f.yaml"), "n", Path("d"), "eval_accuracy", [], spaces=spaces or {})
        _read_search(plan, search, Path("f.yaml"))
        return plan

    r = Space("lora.r", "int", 2, 8)
    plan = read({"n_trials": 2, "space": {"lora.r": {}}}, {"lora.r": r})
    assert (plan.sampler, plan.sampler_args, plan.pruner, plan.pruner_args) == (
        "tpe",
        {},
        "median",
        {},
    )
    assert (plan.n_trials, plan.timeout, plan.seed) == (2, None, 0)
    plan = read({})  # no space: a grid, pruner off
    assert (plan.sampler, plan.pruner, plan.n_trials) == ("grid", "none", None)
    plan = read({"sampler": "random", "timeout": 60, "seed": 7})
    assert (plan.sampler, plan.pruner, plan.timeout, plan.n_trials, plan.seed) == (
        "random",
        "median",
        60,
        None,
        7,
    )
    plan = read(
        {
            "sampler": {"type": "qmc", "scramble": True},
            "pruner": {"type": "hyperband", "min_resource": 2},
            "n_trials": 1,
            "seed": 0,
        }
    )
    assert (plan.sampler, plan.sampler_args, plan.pruner, plan.pruner_args) == (
        "qmc",
        {"scramble": True},
        "hyperband",
        {"min_resource": 2},
    )
    assert plan.seed == 0 and plan.n_trials == 1
    plan = read(
        {"sampler": "grid", "space": {"k": {}}},
        {"k": Space("k", "choice", choices=[1], labels=[1])},
    )
    assert (plan.sampler, plan.pruner) == ("grid", "none")
    plan = read({"sampler": "grid", "pruner": "median"})
    assert plan.pruner == "median"
    assert read({"sampler": "tpe", "timeout": 1.5}).timeout == 1.5


@pytest.mark.parametrize(
    "search, message",
    [
        (
            {"trials": 3},
            "search: unknown key 'trials'; search has sampler, n_trials, timeout, pruner, seed, space",
        ),
        (
            {"sampler": "cma"},
            "search: sampler: 'cma' is not one of tpe, random, grid, qmc, gp (or {type: NAME, option: value})",
        ),
        (
            {"sampler": {"seed": 1}},
            "search: sampler: None is not one of tpe, random, grid, qmc, gp (or {type: NAME, option: value})",
        ),
        (
            {"pruner": "early"},
            "search: pruner: 'early' is not one of median, successive_halving, hyperband, none (or {type: NAME, option: value})",
        ),
        ({"n_trials": 0}, "search: n_trials: give a positive number, not 0"),
        ({"n_trials": True}, "search: n_trials: give a positive number, not True"),
        ({"n_trials": "3"}, "search: n_trials: give a positive number, not '3'"),
        ({"timeout": 0}, "search: timeout: give a positive number, not 0"),
        ({"timeout": 0.5}, "search: timeout: give a positive number, not 0.5"),
        ({"seed": -1}, "search: seed: give a positive number, not -1"),
        ({"seed": False}, "search: seed: give a positive number, not False"),
        ({"sampler": "tpe"}, "search: sampler tpe needs n_trials: and/or timeout: (seconds)"),
        (
            {"sampler": "random", "seed": 3},
            "search: sampler random needs n_trials: and/or timeout: (seconds)",
        ),
        (
            {"sampler": {"type": "tpe", "seed": 1}, "seed": 2, "n_trials": 4},
            "search: seed: 2 and sampler: seed: 1 disagree; give the seed once (search: seed:)",
        ),
    ],
)
def test_read_search_refuses(search, message):
    from lorafit.search.space import SweepPlan, _read_search

    plan = SweepPlan(Path("f.yaml"), "n", Path("d"), "eval_accuracy", [])
    with pytest.raises(UserError) as e:
        _read_search(plan, search, Path("f.yaml"))
    assert str(e.value) == f"f.yaml: {message}"


def test_read_search_grid_takes_choices_only():
    from lorafit.search.space import Space, SweepPlan, _read_search

    spaces = {
        "k": Space("k", "choice", choices=[1], labels=[1]),
        "lora.r": Space("lora.r", "int", 2, 8),
        "train.lr": Space("train.lr", "float", 0.1, 0.2),
    }
    plan = SweepPlan(Path("f.yaml"), "n", Path("d"), "eval_accuracy", [], spaces=spaces)
    with pytest.raises(UserError) as e:
        _read_search(plan, {"sampler": "grid"}, Path("f.yaml"))
    assert str(e.value) == (
        "f.yaml: search: space: lora.r: sampler grid takes {choice: [...]} spaces only; list the values, or use sampler tpe"
    )
    assert _read_search(plan, {"sampler": "tpe", "n_trials": 1}, Path("f.yaml")) is None


def test_a_seed_among_the_sampler_options_still_differs_by_worker(tmp_path):
    """`sampler: {type: random, seed: 5}` is the documented form of a seed: worker i samples with
    seed + i like `search: seed:` (the same seed everywhere drew the same trials in every worker)."""
    from lorafit.search.samplers import make_sampler

    plan = search_plan(
        tmp_path,
        sampler={"type": "random", "seed": 5},
        space={"lora.dropout": {"float": [0.0, 0.5]}},
    )
    assert plan.seed == 5

    def first_draw(sampler) -> float:
        study = optuna.create_study(sampler=sampler)
        return study.ask().suggest_float("x", 0.0, 1.0)

    mine = [first_draw(make_sampler(plan, plan.seed + i)) for i in range(2)]
    assert mine == [first_draw(optuna.samplers.RandomSampler(seed=5 + i)) for i in range(2)]
    assert mine[0] != mine[1]
    with pytest.raises(
        UserError, match=r"s.yaml: search: sampler: seed: give a whole number >= 0, not -1$"
    ):
        search_plan(tmp_path, sampler={"type": "tpe", "seed": -1})
    with pytest.raises(UserError, match=r"seed: give a whole number >= 0, not 1.5$"):
        search_plan(tmp_path, sampler={"type": "tpe", "seed": 1.5})
    with pytest.raises(UserError, match=r"seed: give a whole number >= 0, not True$"):
        search_plan(tmp_path, sampler={"type": "tpe", "seed": True})
    with pytest.raises(UserError, match=r"search: seed: 4 and sampler: seed: 0 disagree"):
        search_plan(tmp_path, sampler={"type": "tpe", "seed": 0}, seed=4)  # not one silently
    assert search_plan(tmp_path, sampler={"type": "tpe", "seed": 3}, seed=3).seed == 3  # the same
    assert search_plan(tmp_path, sampler={"type": "tpe", "seed": None}, seed=4).seed == 4
    grid = grid_plan(
        tmp_path, grid={"lora.r": [2, 4]}, search={"sampler": {"type": "grid", "seed": 9}}
    )
    assert grid.seed == 9 and grid.sampler_args == {}


def test_sweep_plan_direction_and_grid_size():
    from lorafit.search.space import Space, SweepPlan

    plan = SweepPlan(Path("f.yaml"), "n", Path("d"), "eval_loss", [])
    assert plan.direction == "minimize" and plan.grid_size == 1
    plan.metric = "eval_accuracy"
    assert plan.direction == "maximize"
    plan.metric = "test_pearson"
    assert plan.direction == "maximize"
    plan.spaces = {
        "a": Space("a", "choice", labels=[1, 2, 3]),
        "b": Space("b", "choice", labels=[1, 2]),
        "c": Space("c", "choice", labels=["x"]),
    }
    assert plan.grid_size == 6


def _distributions(study) -> dict:
    return study.trials[-1].distributions


def test_space_suggest_gives_optuna_the_declared_distribution():
    from lorafit.search.space import Space, _choice

    study = memory_study()
    trial = study.ask()
    assert Space("a", "int", 2, 64, log=True).suggest(trial) in range(2, 65)
    assert Space("b", "int", 1, 9, step=2).suggest(trial) in (1, 3, 5, 7, 9)
    assert Space("c", "int", 3, 3).suggest(trial) == 3
    assert 0.1 <= Space("d", "float", 0.1, 0.9, log=True).suggest(trial) <= 0.9
    assert Space("e", "float", 0.0, 1.0, step=0.25).suggest(trial) in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert Space("f", "float", 0.0, 1.0).suggest(trial) <= 1.0
    assert _choice("g", [["q", "v"], ["q", "k", "v"]]).suggest(trial) in (
        ["q", "v"],
        ["q", "k", "v"],
    )
    study.tell(trial, 0.0)
    assert _distributions(study) == {
        "a": IntDistribution(2, 64, log=True, step=1),
        "b": IntDistribution(1, 9, log=False, step=2),
        "c": IntDistribution(3, 3),
        "d": FloatDistribution(0.1, 0.9, log=True),
        "e": FloatDistribution(0.0, 1.0, step=0.25),
        "f": FloatDistribution(0.0, 1.0),
        "g": CategoricalDistribution(["q+v", "q+k+v"]),
    }
    # the label Optuna returns maps back to its value
    space = _choice("h", [["q", "v"], ["q", "k", "v"], ["k"]])
    study.enqueue_trial({"h": "q+k+v"})
    assert space.suggest(study.ask()) == ["q", "k", "v"]
    study.enqueue_trial({"h": "k"})
    assert space.suggest(study.ask()) == ["k"]


def test_read_sweep_file_refuses_with_one_line(tmp_path):
    from lorafit.search.space import read_sweep_file

    def message(text: str) -> str:
        path = tmp_path / "x.yaml"
        path.write_text(text)
        with pytest.raises(UserError) as e:
            read_sweep_file(path)
        return str(e.value).replace(str(path), "P")

    with pytest.raises(UserError) as e:
        read_sweep_file(tmp_path / "none.yaml")
    assert (
        str(e.value) == f"sweep file {tmp_path / 'none.yaml'} not found; give an existing YAML file"
    )
    assert message("grid: [1\nx").startswith("P: line ")
    assert (
        message("a: b: c")
        == "P: line 1 not valid YAML (mapping values are not allowed here); fix the file"
    )
    assert message("a: [1, 2\nb: 3\n") == (  # the problem, not the context's first line
        "P: line 2 not valid YAML (expected ',' or ']', but got ':'); fix the file"
    )
    assert message('grid: {a: [1]}\nb: "\x07"') == (  # a reader error: no line, one line of text
        "P: not valid YAML (unacceptable character #x0007: special characters are not allowed); fix the file"
    )
    assert (
        message("- 1\n- 2")
        == "P: a sweep file is a mapping with base:, grid:, runs: and/or search:"
    )
    assert message("") == (
        "P: nothing to sweep; add grid: (key: [values]), runs: (a list of overrides) or search: space: (key: {int: [lo, hi]})"
    )
    assert message("seeds: 3\ngrid: {a: [1]}") == (
        "P: unknown key 'seeds'; a sweep file has name, dir, base, overrides, metric, grid, runs, search, storage"
    )
    assert (
        message("search: 3\ngrid: {a: [1]}")
        == "P: search: give a mapping (sampler, n_trials, timeout, pruner, space)"
    )
    assert message("grid: {a: [1]}\nmetric: speed").startswith(
        "P: metric 'speed' is not one of eval_accuracy, eval_f1"
    )
    assert message("grid: {}\nruns: []\nsearch: {space: {}}").startswith("P: nothing to sweep")
    for ok in (
        "grid: {a: [1]}",
        "runs: [{}]",
        "search: {space: {a: 1}}",
        "grid: {a: [1]}\nmetric: eval_loss",
    ):
        path = tmp_path / "ok.yaml"
        path.write_text(ok)
        assert read_sweep_file(path) == yaml.safe_load(ok)


def test_runs_and_grid_sections(tmp_path):
    from lorafit.search.space import _grid_spaces, _runs

    src = Path("f.yaml")
    assert _runs({}, src) == {}
    spec = {"runs": [{"lora.r": 2}, {"name": "lion", "train.optimizer": "lion"}, {"name": 7}]}
    assert _runs(spec, src) == {"#1": {"lora.r": 2}, "lion": {"train.optimizer": "lion"}, "7": {}}
    assert spec["runs"][1] == {
        "name": "lion",
        "train.optimizer": "lion",
    }  # the file's entry untouched
    for bad, message in [
        ({"runs": {"a": 1}}, "f.yaml: runs: must be a list of mappings (config key: value)"),
        ({"runs": [{}, 3]}, "f.yaml: runs: must be a list of mappings (config key: value)"),
        (
            {"runs": [{"name": "a b"}]},
            "f.yaml: runs: name 'a b': use letters, digits and . _ + - only",
        ),
        (
            {"runs": [{"name": "a"}, {"name": "a"}]},
            "f.yaml: two trials are named 'a'; give runs: entries distinct name: values",
        ),
        (
            {"runs": [{}, {"name": "#1"}]},
            "f.yaml: runs: name '#1': use letters, digits and . _ + - only",
        ),
    ]:
        with pytest.raises(UserError) as e:
            _runs(bad, src)
        assert str(e.value) == message
    spaces = _grid_spaces({"grid": {"lora.r": [2, 4], "lora.layers": ["4-5"]}}, src)
    assert list(spaces) == ["lora.r", "lora.layers"]
    assert spaces["lora.r"].labels == [2, 4] and spaces["lora.r"].where == "grid"
    assert _grid_spaces({}, src) == {}
    for bad, message in [
        ({"grid": [1]}, "f.yaml: grid: must map config keys to lists of values"),
        (
            {"grid": {"lora.r": []}},
            "f.yaml: grid: lora.r: give a non-empty list of values, e.g. [4, 8]",
        ),
        (
            {"grid": {"lora.r": 4}},
            "f.yaml: grid: lora.r: give a non-empty list of values, e.g. [4, 8]",
        ),
    ]:
        with pytest.raises(UserError) as e:
            _grid_spaces(bad, src)
        assert str(e.value) == message


def test_search_spaces_section():
    from lorafit.search.space import _search_spaces

    spaces = _search_spaces(
        {"space": {"lora.r": {"int": [2, 4]}, 5: {"choice": [1]}}}, Path("f.yaml")
    )
    assert list(spaces) == ["lora.r", "5"] and spaces["5"].key == "5"
    assert _search_spaces({}, Path("f.yaml")) == {}
    with pytest.raises(UserError) as e:
        _search_spaces({"space": [1]}, Path("f.yaml"))
    assert (
        str(e.value)
        == "f.yaml: search: space: map config keys to {int: ...}, {float: ...} or {choice: ...}"
    )


def test_base_config_from_a_file_a_mapping_overrides_and_the_command_line(tmp_path):
    from lorafit.search.space import _base_config

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "b.yaml").write_text(yaml.safe_dump(base(budget=123)))
    src = tmp_path / "conf" / "s.yaml"
    conf = _base_config("b.yaml", {"lora.r": 3}, src, ["train.lr=0.5"])
    assert (conf.budget, conf.lora.r, conf.train.lr, conf.model.name) == (
        123,
        3,
        0.5,
        "all-MiniLM-L6-v2",
    )
    conf = _base_config({"lora.alpha": 7, "budget": 9}, None, src, ())
    assert (conf.lora.alpha, conf.budget) == (7, 9)
    assert _base_config(None, None, src, ()).budget == _base_config({}, {}, src, []).budget
    for args, message in [
        (
            ("c.yaml", None, src, ()),
            f"{src}: base: {tmp_path / 'conf' / 'c.yaml'} not found; give a config path relative to the sweep file",
        ),
        ((3, None, src, ()), f"{src}: base: give a config file path or a mapping of config keys"),
        ((None, [1], src, ()), f"{src}: overrides: give a mapping of config keys to values"),
        (({"lora.r": 0}, None, src, ()), f"{src}: base: lora.r: must be >= 1"),
        ((None, {"lora.r": 0}, src, ()), f"{src}: base: lora.r: must be >= 1"),
        ((None, None, src, ["lora.r=0"]), f"{src}: base: lora.r: must be >= 1"),
    ]:
        with pytest.raises(UserError) as e:
            _base_config(*args)
        assert str(e.value) == message
    with pytest.raises(UserError) as e:
        _base_config({"train": {"lrr": 1}}, None, src, ())
    assert str(e.value).startswith(f"{src}: base: unknown key 'train.lrr'")


def test_trial_config_names_the_run_and_keeps_by_the_sweeps_metric(tmp_path):
    from lorafit.search.space import load_sweep, trial_config

    path = write(
        tmp_path / "s.yaml",
        dir=str(tmp_path / "out"),
        metric="test_accuracy",
        search={"n_trials": 2, "space": {"lora.r": {"int": [2, 4]}}},
    )
    plan = load_sweep(path)
    cfg = trial_config(plan, {"lora.r": 3, "train.lr": 0.25}, "t0007")
    assert (cfg.run.name, cfg.run.dir, cfg.log.progress) == (
        "t0007",
        str(tmp_path / "out" / "s"),
        False,
    )
    assert (cfg.train.metric, cfg.lora.r, cfg.train.lr, cfg.budget) == (
        "eval_accuracy",
        3,
        0.25,
        20000,
    )
    plan.metric = "eval_loss"
    assert trial_config(plan, {}, "x").train.metric == "eval_loss"
    with pytest.raises(UserError) as e:
        trial_config(plan, {"lora.r": 0}, "t1")
    assert str(e.value) == f"{path}: trial t1: lora.r: must be >= 1"
    with pytest.raises(UserError) as e:
        trial_config(plan, {"lora.rr": 1}, "t1")
    assert str(e.value).startswith(f"{path}: trial t1: unknown key 'lora.rr'")


def test_check_budget_counts_and_refuses_above_the_budget_only(tmp_path):
    from lorafit.config import load_config
    from lorafit.search.space import check_budget

    def cfg(r, layers, budget):
        return load_config(
            None,
            [
                f"data.label_names=[{','.join(LABELS)}]",
                "model.name=all-MiniLM-L6-v2",
                f"lora.r={r}",
                f"lora.layers={layers}",
                f"budget={budget}",
            ],
        )

    assert check_budget(cfg(2, "4-5", 7684)) == (minilm(2, 2), None)  # exactly at the budget fits
    n, over = check_budget(cfg(2, "4-5", 7683))
    assert n == 7684 and over.startswith(
        "budget: 7,684 trainable parameters exceed the budget of 7,683 by 1 "
    )
    assert check_budget(cfg(8, "5", 20000)) == (minilm(8, 1), None)


def test_check_space_values_names_the_bad_value(tmp_path):
    def msg(**spec):
        return refused(write(tmp_path / "s.yaml", **spec)).replace(str(tmp_path / "s.yaml"), "P")

    assert msg(grid={"lora.r": [2, 0]}) == "P: grid (value 0): lora.r: must be >= 1"
    assert msg(grid={"lora.dropout": [0.5, "x"]}).startswith("P: grid (value 'x'): ")
    assert (
        msg(runs=[{"name": "ok"}, {"name": "bad", "lora.r": 0}])
        == "P: runs (run bad): lora.r: must be >= 1"
    )
    assert msg(runs=[{"lora.r": 0}]) == "P: runs (run #1): lora.r: must be >= 1"
    search = {"n_trials": 2}
    assert msg(search={**search, "space": {"lora.dropout": {"float": [0.0, 1.5]}}}) == (
        "P: search: space (bound 1.5): lora.dropout: must be in [0, 1)"
    )
    assert msg(search={**search, "space": {"lora.dropout": {"float": [-0.5, 0.5]}}}) == (
        "P: search: space (bound -0.5): lora.dropout: must be in [0, 1)"
    )
    assert msg(
        search={
            **search,
            "space": {"lora.r": {"int": [2, 4]}, "lora.alpha": {"choice": [1, -1, 2]}},
        }
    ).startswith("P: search: space (value -1): ")
    assert msg(search={**search, "space": {"lora.rr": {"int": [2, 4]}}}).startswith(
        "P: search: space (bound 2): unknown key 'lora.rr'"
    )


def test_expand_grid_names_configs_and_budget(tmp_path):
    plan = grid_plan(
        tmp_path,
        overrides={"lora.alpha": 4},
        grid={"lora.r": [2, 8], "lora.layers": ["4-5", "5"]},
        runs=[{}, {"name": "lion", "train.optimizer": "lion"}],
    )
    names = ["r2_layers4-5", "r2_layers5", "r8_layers4-5", "r8_layers5"]
    assert [t.name for t in plan.trials] == names + ["lion_" + n for n in names]
    counts = [minilm(2, 2), minilm(2, 1), minilm(8, 2), minilm(8, 1)]
    assert [t.params for t in plan.trials] == counts * 2
    assert [t.skip is not None for t in plan.trials] == [False, False, True, False] * 2
    assert plan.trials[2].skip.startswith(
        "budget: 26,116 trainable parameters exceed the budget of 20,000 by 6,116 "
    )
    assert all(t.error is None for t in plan.trials)
    t = plan.trials[6]
    assert t.overrides == {"train.optimizer": "lion", "lora.r": 8, "lora.layers": "4-5"}
    assert (
        t.config.run.name,
        t.config.train.optimizer,
        t.config.lora.r,
        t.config.lora.layers,
        t.config.lora.alpha,
    ) == ("lion_r8_layers4-5", "lion", 8, "4-5", 4)
    assert plan.trials[0].overrides == {"lora.r": 2, "lora.layers": "4-5"}
    assert plan.keys == [
        "lora.r",
        "lora.layers",
        "train.optimizer",
    ]  # the trials' keys, first seen first
    assert plan.grid_size == 8 and plan.sampler == "grid" and plan.pruner == "none"
    assert list(plan.spaces) == ["lora.r", "lora.layers", "run"]
    assert plan.spaces["run"].choices == ["#1", "lion"] and plan.spaces["run"].where == "runs"


def test_expand_grid_keeps_a_trial_whose_data_fail_and_refuses_clashing_names(tmp_path):
    plan = grid_plan(
        tmp_path,
        grid={"lora.r": [2, 1]},
        runs=[
            {"name": "x", "data.label_names": [], "data.train": str(tmp_path / "no.csv")},
            {"name": "y"},
        ],
    )
    assert [(t.name, t.params, t.skip) for t in plan.trials] == [
        ("x_r2", None, None),
        ("x_r1", None, None),
        ("y_r2", minilm(2, 6), None),
        ("y_r1", minilm(1, 6), None),
    ]
    assert (
        plan.trials[0].error
        == f"{tmp_path / 'no.csv'}: file not found; check the path (relative to {os.getcwd()})"
    )
    assert plan.trials[1].error == plan.trials[0].error and plan.trials[2].error is None
    assert (
        plan.trials[0].config.data.train == str(tmp_path / "no.csv")
        and plan.trials[1].config.lora.r == 1
    )
    clash = (
        "two trials are named {!r} (or it is reserved); give runs: entries distinct name: values"
    )
    path = write(tmp_path / "c.yaml", grid={"lora.r": [2]}, runs=[{}, {"lora.alpha": 4}])
    assert refused(path) == f"{path}: " + clash.format("r2")
    for reserved in ("study", "sweep", "leaderboard", "latest"):
        path = write(tmp_path / "c.yaml", runs=[{"name": reserved}])
        assert refused(path) == f"{path}: " + clash.format(reserved)
    assert [t.name for t in grid_plan(tmp_path, runs=[{"name": "studies"}]).trials] == ["studies"]


def test_load_sweep_reads_name_folder_storage_spaces_and_keys(tmp_path, monkeypatch):
    from lorafit.search.space import load_sweep

    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path / "my-search.yaml",
        runs=[{"name": "a", "lora.alpha": 4, "train.lr": 0.1}],
        grid={"lora.layers": ["4-5", "5"]},
        search={"sampler": "random", "n_trials": 4, "space": {"lora.r": {"int": [2, 4]}}},
    )
    plan = load_sweep(path, ["budget=999"])
    assert (plan.name, plan.folder, plan.source, plan.storage, plan.metric) == (
        "my-search",
        Path("runs/sweeps/my-search"),
        path,
        None,
        "eval_accuracy",
    )
    assert plan.base.budget == 999
    assert list(plan.spaces) == ["lora.layers", "run", "lora.r"]
    assert plan.keys == ["lora.layers", "lora.r", "lora.alpha", "train.lr"]
    assert (
        plan.trials == []
        and plan.sampler == "random"
        and plan.runs == {"a": {"lora.alpha": 4, "train.lr": 0.1}}
    )
    path = write(
        tmp_path / "s.yaml",
        name="named.1",
        dir="out",
        storage="journal:j.log",
        metric="eval_loss",
        grid={"lora.r": [2]},
    )
    plan = load_sweep(path)
    assert (plan.name, plan.folder, plan.storage, plan.metric) == (
        "named.1",
        Path("out/named.1"),
        "journal:j.log",
        "eval_loss",
    )
    assert [t.name for t in plan.trials] == ["r2"] and plan.keys == ["lora.r"]
    for spec, message in [
        (
            {"name": "a b", "grid": {"lora.r": [2]}},
            "name 'a b': use letters, digits and . _ + - only",
        ),
        (
            {"storage": 3, "grid": {"lora.r": [2]}},
            "storage: give a URL (sqlite:///..., postgresql://...) or a journal file path",
        ),
        (
            {
                "grid": {"lora.r": [2]},
                "search": {"sampler": "tpe", "n_trials": 2, "space": {"lora.r": {"int": [2, 4]}}},
            },
            "search: space: lora.r is also in grid:; give it once",
        ),
        (
            {
                "grid": {"lora.r": [2]},
                "search": {"pruner": {"type": "median", "n_startup_trials": -1}},
            },
            "search: MedianPruner: Number of startup trials cannot be negative, but got n_startup_trials=-1.",
        ),
        (
            {"grid": {"lora.r": [2]}, "search": {"sampler": {"type": "grid", "colour": 1}}},
            "search: GridSampler has no option 'colour'; it takes seed",
        ),
    ]:
        path = write(tmp_path / "bad.yaml", **spec)
        assert refused(path) == f"{path}: {message}"


def test_sample_names_trials_and_merges_the_runs_overrides(tmp_path):
    from lorafit.search.space import load_sweep, sample

    path = write(
        tmp_path / "s.yaml",
        runs=[{"name": "a", "lora.alpha": 4}, {"lora.alpha": 8, "lora.r": 5}],
        search={"sampler": "random", "n_trials": 3, "space": {"lora.r": {"int": [2, 4]}}},
    )
    plan = load_sweep(path)
    study = memory_study()
    study.enqueue_trial({"run": "#2", "lora.r": 3})
    t = study.ask()
    assert sample(plan, t) == (
        "t0000",
        {"lora.alpha": 8, "lora.r": 3},
    )  # the space's value over the run's
    study.enqueue_trial(
        {"run": "a", "lora.r": 2}, user_attrs={"name": "t0000"}
    )  # a retry keeps its name
    assert sample(plan, study.ask()) == ("t0000", {"lora.alpha": 4, "lora.r": 2})
    study.enqueue_trial({"run": "a", "lora.r": 4})
    assert sample(plan, study.ask()) == ("t0002", {"lora.alpha": 4, "lora.r": 4})
    grid = grid_plan(
        tmp_path, grid={"lora.r": [2, 8]}, runs=[{"name": "a", "lora.alpha": 4}, {"lora.alpha": 8}]
    )
    for params, expected in [
        ({"lora.r": 8, "run": "a"}, ("a_r8", {"lora.alpha": 4, "lora.r": 8})),
        ({"lora.r": 2, "run": "#2"}, ("r2", {"lora.alpha": 8, "lora.r": 2})),
    ]:
        study = memory_study()
        study.enqueue_trial(params)
        assert sample(grid, study.ask()) == expected
    only_grid = grid_plan(tmp_path, grid={"lora.r": [2, 8]})
    study = memory_study()
    study.enqueue_trial({"lora.r": 8})
    assert sample(only_grid, study.ask()) == ("r8", {"lora.r": 8})
    only_runs = grid_plan(
        tmp_path, runs=[{"lora.r": 2}, {"lora.r": 4}]
    )  # unnamed: named by their overrides
    study = memory_study()
    study.enqueue_trial({"run": "#2"})
    assert sample(only_runs, study.ask()) == ("r4", {"lora.r": 4})


# ================================================================ samplers.py


def test_storage_url_and_storages(tmp_path):
    from optuna.storages import RDBStorage
    from optuna.storages.journal import JournalStorage

    from lorafit.search.samplers import (
        GRACE_S,
        HEARTBEAT_S,
        open_storage,
        storage_from_url,
        storage_url,
    )
    from lorafit.search.space import SweepPlan

    plan = SweepPlan(Path("f.yaml"), "n", tmp_path / "sw", "eval_accuracy", [])
    assert storage_url(plan) == f"sqlite:///{tmp_path / 'sw' / 'study.db'}"
    plan.storage = "postgresql://u@h/db"
    assert storage_url(plan) == "postgresql://u@h/db"
    for url, file in [
        (f"journal:{tmp_path}/a/a/j.txt", tmp_path / "a" / "a" / "j.txt"),
        (f"{tmp_path}/b/b/s.log", tmp_path / "b" / "b" / "s.log"),
        (f"{tmp_path}/c/s.journal", tmp_path / "c" / "s.journal"),
    ]:
        storage = storage_from_url(url, "W")
        assert isinstance(storage, JournalStorage) and file.parent.is_dir()
        optuna.create_study(storage=storage, study_name="x")
        assert file.is_file()
        assert (
            optuna.load_study(storage=storage_from_url(url, "W"), study_name="x").study_name == "x"
        )  # again
    for url in ("study.db", "x.log.bak"):
        with pytest.raises(UserError) as e:
            storage_from_url(url, "W")
        assert str(e.value) == (
            f"W: {url!r}: give a database URL (sqlite:///study.db, postgresql://user@host/db) or a journal file (journal:/shared/study.log)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter(
            "error"
        )  # Optuna's ExperimentalWarning (heartbeats) is ours to silence
        storage = storage_from_url(f"sqlite:///{tmp_path}/r.db", "W")
    assert isinstance(storage, RDBStorage) and (HEARTBEAT_S, GRACE_S) == (60, 180)
    assert (storage.heartbeat_interval, storage.grace_period) == (60, 180)
    assert storage.engine_kwargs == {"connect_args": {"timeout": 60}}
    assert storage.heartbeat_stale_trial_callback._max_retry == 3
    assert isinstance(
        storage_from_url(f"sqlite:///{tmp_path}/named.log", "W"), RDBStorage
    )  # a URL: a database
    assert (tmp_path / "named.log").is_file()
    with pytest.raises(UserError) as e:
        storage_from_url("nosuchdb://h/x", "W")
    assert str(e.value).startswith(
        "W: cannot open nosuchdb://h/x (NoSuchModuleError: Can't load plugin"
    )
    assert "\n" not in str(e.value)
    plan.storage = f"journal:{tmp_path}/d/j.log"
    assert isinstance(open_storage(plan), JournalStorage) and (tmp_path / "d").is_dir()
    plan.storage = "study.db"
    with pytest.raises(UserError, match=r"^f.yaml: storage: 'study.db': give a database URL"):
        open_storage(plan)


def test_a_server_database_gets_no_sqlite_options(monkeypatch):
    from lorafit.search.samplers import storage_from_url

    made = []
    monkeypatch.setattr(
        optuna.storages, "RDBStorage", lambda url, **kwargs: made.append((url, kwargs)) or "rdb"
    )
    assert storage_from_url("postgresql://u@h/db", "W") == "rdb"
    ((url, kwargs),) = made
    assert url == "postgresql://u@h/db" and kwargs["engine_kwargs"] == {}
    assert (kwargs["heartbeat_interval"], kwargs["grace_period"]) == (60, 180)
    storage_from_url("sqlite:///x.db", "W")
    assert made[1][1]["engine_kwargs"] == {"connect_args": {"timeout": 60}}


def test_constraints_are_the_budget_excess():
    from lorafit.search.samplers import _constraints

    study = memory_study()
    assert _constraints(add(study, TrialState.PRUNED, budget_excess=12)) == [12.0]
    assert _constraints(add(study)) == [0.0]
    assert type(_constraints(add(study, budget_excess=3))[0]) is float


def _draws(sampler, n=3) -> list[float]:
    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(n):
        t = study.ask()
        out.append(t.suggest_float("x", 0.0, 1.0))
        study.tell(t, 0.0)
    return out


def test_make_sampler_types_seeds_and_constraints(tmp_path):
    from lorafit.search.samplers import _constraints, make_sampler

    s = optuna.samplers
    plan = search_plan(tmp_path)
    tpe = make_sampler(plan, 4)
    assert type(tpe) is s.TPESampler and tpe._constraints_func is _constraints
    assert _draws(make_sampler(plan, 4)) == _draws(s.TPESampler(seed=4))
    plan.sampler, plan.sampler_args = "random", {}
    assert _draws(make_sampler(plan, 7)) == _draws(s.RandomSampler(seed=7))
    assert _draws(make_sampler(plan, 7)) != _draws(make_sampler(plan, 8))
    assert _draws(make_sampler(plan, None)) != _draws(
        make_sampler(plan, None)
    )  # no seed: fresh draws
    plan.sampler, plan.sampler_args = "qmc", {"scramble": True}
    qmc = make_sampler(plan, 1)
    assert type(qmc) is s.QMCSampler and qmc._scramble is True and qmc._seed == 1
    plan.sampler, plan.sampler_args = "tpe", {"n_startup_trials": 2, "constraints_func": None}
    tpe = make_sampler(plan, 0)
    assert tpe._n_startup_trials == 2 and tpe._constraints_func is None
    plan.sampler, plan.sampler_args = "gp", {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # GPSampler is experimental: the warning is silenced
        gp = make_sampler(plan, 0)
    assert type(gp) is s.GPSampler and gp._constraints_func is _constraints
    plan.sampler = "random"
    assert not hasattr(make_sampler(plan, 0), "_constraints_func")


def test_make_sampler_grid_has_one_shuffle_for_every_worker(tmp_path):
    from lorafit.search.samplers import make_sampler

    plan = grid_plan(
        tmp_path, grid={"lora.r": [2, 3, 4, 5, 6, 7], "lora.layers": ["5"]}, search={"seed": 2}
    )
    grid = make_sampler(plan, 99)
    assert type(grid) is optuna.samplers.GridSampler
    assert grid._search_space == {"lora.layers": ["5"], "lora.r": [2, 3, 4, 5, 6, 7]}

    def order(sampler) -> list:
        study = optuna.create_study(sampler=sampler)
        return [study.ask().suggest_categorical("lora.r", [2, 3, 4, 5, 6, 7]) for _ in range(6)]

    reference = optuna.samplers.GridSampler(
        {"lora.layers": ["5"], "lora.r": [2, 3, 4, 5, 6, 7]}, seed=2
    )
    assert order(make_sampler(plan, 99)) == order(make_sampler(plan, None)) == order(reference)
    runs = grid_plan(tmp_path, runs=[{"name": "a"}, {"name": "b"}])
    assert make_sampler(runs, 0)._search_space == {"run": ["a", "b"]}


def test_make_pruner_and_checked_options(tmp_path):
    import inspect

    from lorafit.search.samplers import _checked, make_pruner

    p = optuna.pruners
    plan = search_plan(tmp_path)
    for name, cls in [
        ("median", p.MedianPruner),
        ("successive_halving", p.SuccessiveHalvingPruner),
        ("hyperband", p.HyperbandPruner),
        ("none", p.NopPruner),
    ]:
        plan.pruner, plan.pruner_args = name, {}
        assert type(make_pruner(plan)) is cls
    plan.pruner, plan.pruner_args = "median", {"n_startup_trials": 2, "n_warmup_steps": 7}
    median = make_pruner(plan)
    assert (median._n_startup_trials, median._n_warmup_steps) == (2, 7)
    plan.pruner_args = {"patience": 2}
    options = ", ".join(
        k for k in inspect.signature(p.MedianPruner.__init__).parameters if k != "self"
    )
    with pytest.raises(UserError) as e:
        make_pruner(plan)
    assert str(e.value) == f"search: MedianPruner has no option 'patience'; it takes {options}"
    with pytest.raises(UserError) as e:
        _checked(optuna.samplers.GridSampler, {"a": [1]}, colour=1)
    assert str(e.value) == "search: GridSampler has no option 'colour'; it takes seed"
    with pytest.raises(UserError) as e:
        _checked(p.MedianPruner, n_startup_trials=-1)
    assert (
        str(e.value)
        == "search: MedianPruner: Number of startup trials cannot be negative, but got n_startup_trials=-1."
    )
    with pytest.raises(UserError) as e:
        _checked(p.NopPruner, 1)
    assert str(e.value) == "search: NopPruner: NopPruner() takes no arguments"
    assert type(_checked(p.HyperbandPruner, min_resource=2)) is p.HyperbandPruner


# ================================================================ leaderboard.py


def test_show_value_by_hand():
    from lorafit.search.leaderboard import show_value

    sections = [{"layers": "0-5", "r": 2, "alpha": 4, "dropout": 0.05}, {"layers": "6-11", "r": 8}]
    assert show_value(sections) == "0-5 r2 a4 d0.05; 6-11 r8"
    assert show_value([{"layers": "0-5", "dropout": 0.1, "alpha": 2}]) == "0-5 a2 d0.1"
    assert show_value([{"layers": "0-5"}, {"r": 2}]) == '[{"layers": "0-5"}, {"r": 2}]'
    assert show_value(0.000123456) == "0.0001235" and show_value(2.0) == "2"
    assert show_value(["query", "value"]) == '["query", "value"]' and show_value([]) == "[]"
    assert show_value({"a": 1}) == '{"a": 1}'
    assert show_value(None) == "" and show_value(8) == "8" and show_value("4-5") == "4-5"
    assert show_value(True) == "True" and show_value(0) == "0"


def test_trial_status_by_state_and_attributes():
    from lorafit.search.leaderboard import trial_status

    study = memory_study()
    assert trial_status(add(study)) == "done"
    assert trial_status(add(study, TrialState.PRUNED)) == "pruned"
    assert trial_status(add(study, TrialState.PRUNED, infeasible="over")) == "skipped"
    assert trial_status(add(study, TrialState.PRUNED, duplicate=True)) is None
    assert trial_status(add(study, TrialState.PRUNED, surplus=True)) is None
    assert trial_status(add(study, TrialState.PRUNED, surplus=True, infeasible="x")) is None
    assert trial_status(add(study, TrialState.FAIL)) == "failed"
    assert trial_status(add(study, TrialState.FAIL, interrupted=True)) == "interrupted"
    assert trial_status(add(study, TrialState.FAIL, infeasible="x")) == "failed"
    assert trial_status(add(study, TrialState.RUNNING)) == "running"
    assert trial_status(add(study, TrialState.WAITING)) == "waiting"
    assert trial_status(add(study, TrialState.COMPLETE, infeasible="x", duplicate=True)) == "done"


def test_latest_attempts_most_advanced_then_newest():
    from lorafit.search.leaderboard import _latest_attempts

    study = memory_study()
    add(study, TrialState.FAIL, name="a")  # 0
    add(study, TrialState.COMPLETE, name="a")  # 1: done wins
    add(study, TrialState.FAIL, name="a", interrupted=True)  # 2
    add(study, TrialState.FAIL, name="b")  # 3
    add(study, TrialState.FAIL, name="b")  # 4: the newest failure
    add(study, TrialState.PRUNED, name="c", duplicate=True)  # 5: not shown
    add(study, TrialState.COMPLETE)  # 6: no name
    add(study, TrialState.RUNNING, name="d")  # 7
    add(study, TrialState.PRUNED, name="d", infeasible="x")  # 8: skipped beats running
    add(study, TrialState.FAIL, name="e", interrupted=True)  # 9
    add(study, TrialState.FAIL, name="e")  # 10: interrupted beats failed
    add(study, TrialState.PRUNED, name="f")  # 11
    add(study, TrialState.WAITING, name="f")  # 12
    shown = _latest_attempts(study.get_trials(deepcopy=False))
    assert {n: (t.number, s) for n, (t, s) in shown.items()} == {
        "a": (1, "done"),
        "b": (4, "failed"),
        "d": (8, "skipped"),
        "e": (9, "interrupted"),
        "f": (11, "pruned"),
    }
    assert list(shown) == ["a", "b", "d", "e", "f"]
    study = memory_study()
    add(study, TrialState.RUNNING, name="g")
    add(study, TrialState.WAITING, name="g")
    add(study, TrialState.FAIL, name="h", interrupted=True)
    add(study, TrialState.WAITING, name="h")
    shown = _latest_attempts(study.get_trials(deepcopy=False))
    assert {n: s for n, (t, s) in shown.items()} == {"g": "running", "h": "waiting"}


def summary(run_dir: Path, trainable=100, wall=12.5, test=None, **best) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(
        json.dumps(
            {
                "params": {"trainable": trainable},
                "best_eval": best,
                "test": test,
                "wall_time_s": wall,
            }
        )
    )
    return run_dir


def test_results_and_metric_value_read_the_summary(tmp_path):
    from lorafit.search.leaderboard import _results, metric_value

    d = summary(
        tmp_path / "a",
        trainable=77,
        wall=3.0,
        test={"accuracy": 0.8, "pearson": 0.7, "macro_f1": 0.6},
        eval_accuracy=0.9,
        eval_f1=0.85,
        eval_mcc=0.5,
        eval_precision=0.4,
        eval_recall=0.3,
        eval_loss=1.5,
        eval_pearson=0.2,
        eval_spearman=0.1,
        eval_macro_f1=0.65,
        eval_micro_f1=0.66,
    )
    assert _results(d) == {
        "trainable_params": 77,
        "val_accuracy": 0.9,
        "val_f1": 0.85,
        "val_mcc": 0.5,
        "val_precision": 0.4,
        "val_recall": 0.3,
        "val_loss": 1.5,
        "test_accuracy": 0.8,
        "val_pearson": 0.2,
        "val_spearman": 0.1,
        "test_pearson": 0.7,
        "val_macro_f1": 0.65,
        "val_micro_f1": 0.66,
        "test_macro_f1": 0.6,
        "wall_time_s": 3.0,
    }
    d = summary(tmp_path / "b", test={"macro_f1": 0.6}, eval_accuracy=0.9)
    r = _results(d)
    assert (
        r["test_macro_f1"] is None and r["test_accuracy"] is None and r["val_loss"] is None
    )  # not a multi-label run
    (d / "summary.json").write_text(json.dumps({"params": {"trainable": 5}}))
    r = _results(d)
    assert r["trainable_params"] == 5 and r["wall_time_s"] is None and r["val_accuracy"] is None
    d = summary(tmp_path / "c", eval_loss=0.25, eval_accuracy=0.75, test={"accuracy": 0.5})
    assert metric_value(d, "eval_loss") == 0.25 and metric_value(str(d), "eval_accuracy") == 0.75
    assert metric_value(d, "test_accuracy") == 0.5 and metric_value(d, "eval_f1") is None


def test_selection_metric_and_md_columns():
    from lorafit.search.leaderboard import (
        MD_COLUMNS,
        METRICS,
        MULTILABEL_MD_COLUMNS,
        REGRESSION_MD_COLUMNS,
        md_columns,
        selection_metric,
    )
    from lorafit.search.space import SweepPlan

    assert [selection_metric(m) for m in ("test_accuracy", "test_pearson", "test_macro_f1")] == [
        "eval_accuracy",
        "eval_pearson",
        "eval_macro_f1",
    ]
    assert [selection_metric(m) for m in ("eval_loss", "eval_f1", "eval_spearman")] == [
        "eval_loss",
        "eval_f1",
        "eval_spearman",
    ]
    plan = SweepPlan(Path("f.yaml"), "n", Path("d"), "eval_accuracy", [])
    expect = {
        "eval_pearson": REGRESSION_MD_COLUMNS,
        "eval_spearman": REGRESSION_MD_COLUMNS,
        "test_pearson": REGRESSION_MD_COLUMNS,
        "eval_macro_f1": MULTILABEL_MD_COLUMNS,
        "eval_micro_f1": MULTILABEL_MD_COLUMNS,
        "test_macro_f1": MULTILABEL_MD_COLUMNS,
    }
    for metric in METRICS:
        plan.metric = metric
        assert md_columns(plan) is expect.get(metric, MD_COLUMNS), metric


def board_plan(tmp_path, metric="eval_accuracy", keys=("lora.r",)):
    from lorafit.search.space import SweepPlan

    return SweepPlan(
        Path("f.yaml"), "sw", tmp_path / "sw", metric, list(keys), sampler="tpe", pruner="median"
    )


def test_leaderboard_rows_order_ranks_and_notes(tmp_path):
    from lorafit.search.leaderboard import leaderboard_rows
    from lorafit.search.space import Trial

    plan = board_plan(tmp_path)
    study = memory_study()

    def done(name, acc, **attrs):
        d = summary(tmp_path / name, trainable=10, eval_accuracy=acc, eval_loss=1 - acc)
        return add(
            study, name=name, run_dir=str(d), overrides={"lora.r": 2}, trainable_params=99, **attrs
        )

    done("low", 0.6)  # 0
    done("high", 0.9)  # 1
    add(study, TrialState.FAIL, name="broken", reason="CUDA out of memory")  # 2
    add(
        study,
        TrialState.PRUNED,
        name="cut",
        inter={4: 0.55, 8: 0.5},
        run_dir=str(summary(tmp_path / "cut", eval_accuracy=0.95, eval_loss=0.01)),
    )
    add(
        study, TrialState.PRUNED, name="big", infeasible="budget: too many", trainable_params=50000
    )  # 4
    done("tie-b", 0.6)  # 5
    add(study, TrialState.RUNNING, name="now", overrides={"lora.r": 8})  # 6
    done("nodir", 0.7)  # 7
    (tmp_path / "nodir" / "summary.json").unlink()  # its summary gone: no value
    plan.trials = [
        Trial("high", {}, None, 1),
        Trial("later", {"lora.r": 4}, None, 1234),
        Trial("over", {"lora.r": 64}, None, 99999, skip="budget: over"),
        Trial("bad", {}, None, None, error="no data"),
    ]
    rows = leaderboard_rows(plan, study.get_trials(deepcopy=False))
    assert [(r["run"], r["status"], r["rank"]) for r in rows] == [
        ("high", "done", 1),
        ("low", "done", 2),
        ("tie-b", "done", 3),
        ("cut", "pruned", ""),
        ("nodir", "done", 4),
        ("bad", "pending", ""),
        ("big", "skipped", ""),
        ("broken", "failed", ""),
        ("later", "pending", ""),
        ("now", "running", ""),
        ("over", "skipped", ""),
    ]
    by = {r["run"]: r for r in rows}
    assert (
        by["high"]["val_accuracy"],
        by["high"]["trainable_params"],
        by["high"]["lora.r"],
        by["high"]["trial"],
    ) == (0.9, 10, "2", 1)
    assert by["cut"]["note"] == "pruned at step 8 (0.5000)" and by["cut"]["val_accuracy"] == 0.95
    assert by["big"]["note"] == "budget: too many" and by["big"]["trainable_params"] == 50000
    assert by["broken"]["note"] == "CUDA out of memory" and by["broken"]["run_dir"] == ""
    assert (
        by["later"]["trainable_params"],
        by["later"]["note"],
        by["later"]["lora.r"],
        by["later"]["trial"],
    ) == (1234, "", "4", "")
    assert (by["over"]["note"], by["over"]["trainable_params"]) == ("budget: over", 99999)
    assert (by["bad"]["note"], by["bad"]["trainable_params"], by["bad"]["lora.r"]) == (
        "no data",
        None,
        "",
    )
    assert by["nodir"]["val_accuracy"] is None and by["nodir"]["trainable_params"] == 99
    assert (
        by["now"]["lora.r"] == "8" and by["now"]["val_accuracy"] is None and by["now"]["trial"] == 6
    )
    assert set(by["high"]) == {
        "rank",
        "run",
        "status",
        "lora.r",
        "trainable_params",
        "val_accuracy",
        "val_f1",
        "val_mcc",
        "val_precision",
        "val_recall",
        "val_loss",
        "test_accuracy",
        "val_pearson",
        "val_spearman",
        "test_pearson",
        "val_macro_f1",
        "val_micro_f1",
        "test_macro_f1",
        "wall_time_s",
        "run_dir",
        "note",
        "trial",
    }
    # minimised: the lowest loss first; a pruned trial with a better value still after the done ones
    plan.metric = "eval_loss"
    rows = leaderboard_rows(plan, study.get_trials(deepcopy=False))
    assert [r["run"] for r in rows][:4] == ["high", "low", "tie-b", "cut"]
    plan.metric, plan.trials = "eval_loss", []
    study = memory_study()
    add(study, TrialState.PRUNED, name="p1", run_dir=str(summary(tmp_path / "p1", eval_loss=0.3)))
    add(study, TrialState.PRUNED, name="p2", run_dir=str(summary(tmp_path / "p2", eval_loss=0.2)))
    add(study, TrialState.PRUNED, name="p0")
    add(study, name="d", run_dir=str(summary(tmp_path / "d", eval_loss=0.9)))
    rows = leaderboard_rows(plan, study.get_trials(deepcopy=False))
    assert [(r["run"], r["rank"], r["note"]) for r in rows] == [
        ("d", 1, ""),
        ("p2", "", ""),
        ("p1", "", ""),
        ("p0", "", ""),
    ]


def test_leaderboard_markdown_and_csv_by_hand(tmp_path):
    from lorafit.search.leaderboard import leaderboard_rows, write_leaderboard
    from lorafit.search.space import Trial

    plan = board_plan(tmp_path, keys=("lora.r", "lora.target_modules"))
    plan.folder.mkdir()
    study = memory_study()
    d = summary(
        tmp_path / "a",
        trainable=1234,
        wall=61.25,
        test={"accuracy": 0.5},
        eval_accuracy=0.875,
        eval_loss=0.3125,
    )
    add(
        study,
        name="a",
        run_dir=str(d),
        overrides={"lora.r": 2, "lora.target_modules": ["query", "value"]},
    )
    add(study, TrialState.PRUNED, name="b", inter={3: 0.25}, overrides={"lora.r": 4})
    add(study, TrialState.PRUNED, name="c", infeasible="over | budget", trainable_params=9)
    add(study, TrialState.FAIL, name="e")
    add(study, TrialState.RUNNING, name="f")
    plan.trials = [Trial("g", {}, None, 5)]
    csv_path, md_path = write_leaderboard(plan, study.get_trials(deepcopy=False))
    assert (csv_path, md_path) == (plan.folder / "leaderboard.csv", plan.folder / "leaderboard.md")
    assert md_path.read_text() == (
        "# Sweep `sw`\n\n"
        "From `f.yaml` (sampler tpe, pruner median); sorted by validation accuracy (higher is better). "
        "1 done, 1 pruned, 1 skipped, 1 failed, 2 not finished.\n\n"
        "| rank | run | status | lora.r | lora.target_modules | trainable params | val accuracy | val macro-F1 | val MCC "
        "| val loss | test accuracy | wall time (s) | note |\n"
        "|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
        '| 1 | `a` | done | 2 | ["query", "value"] | 1,234 | 0.8750 |  |  | 0.3125 | 0.5000 | 61.2 |  |\n'
        "|  | `b` | pruned | 4 |  |  |  |  |  |  |  |  | pruned at step 3 (0.2500) |\n"
        "|  | `c` | skipped |  |  | 9 |  |  |  |  |  |  | over \\| budget |\n"
        "|  | `e` | failed |  |  |  |  |  |  |  |  |  |  |\n"
        "|  | `f` | running |  |  |  |  |  |  |  |  |  |  |\n"
        "|  | `g` | pending |  |  | 5 |  |  |  |  |  |  |  |\n"
    )
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "rank",
        "run",
        "status",
        "lora.r",
        "lora.target_modules",
        "trainable_params",
        "val_accuracy",
        "val_f1",
        "val_mcc",
        "val_loss",
        "test_accuracy",
        "wall_time_s",
        "run_dir",
        "note",
        "trial",
    ]
    assert rows[1] == [
        "1",
        "a",
        "done",
        "2",
        '["query", "value"]',
        "1234",
        "0.875",
        "",
        "",
        "0.3125",
        "0.5",
        "61.25",
        str(d),
        "",
        "0",
    ]
    assert rows[3] == [
        "",
        "c",
        "skipped",
        "",
        "",
        "9",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "over | budget",
        "2",
    ]
    assert len(rows) == 7 and "\r" not in csv_path.read_text()
    # a regression sweep's columns, minimised loss wording
    from lorafit.search.leaderboard import leaderboard_markdown

    plan.metric = "eval_loss"
    rows = leaderboard_rows(plan, study.get_trials(deepcopy=False))
    text = leaderboard_markdown(plan, rows)
    assert "sorted by validation loss (lower is better)" in text
    plan.metric = "eval_pearson"
    text = leaderboard_markdown(plan, leaderboard_rows(plan, study.get_trials(deepcopy=False)))
    assert "sorted by validation pearson (higher is better)" in text
    assert (
        "| trainable params | val Pearson | val Spearman | val loss (MSE) | test Pearson | wall time (s) | note |"
        in text
    )
    plan.metric = "test_accuracy"
    assert "sorted by test accuracy (higher is better)" in leaderboard_markdown(plan, [])
    assert (
        leaderboard_markdown(plan, [])
        .splitlines()[2]
        .endswith("0 done, 0 pruned, 0 skipped, 0 failed, 0 not finished.")
    )


# ================================================================ study.py


def test_counts_and_study_done_count_pruned_not_over_budget(tmp_path):
    from lorafit.search.study import _counts, study_done

    plan = search_plan(tmp_path)  # n_trials 3
    study = memory_study()
    add(study)
    add(study, TrialState.PRUNED, infeasible="over")
    add(study, TrialState.PRUNED, infeasible="over")
    add(study, TrialState.FAIL)
    add(study, TrialState.PRUNED, surplus=True)
    add(study, TrialState.PRUNED, duplicate=True)
    assert _counts(study) == {"done": 1, "skipped": 2, "failed": 1, None: 2}
    assert not study_done(plan, study)  # over-budget samples do not count toward n_trials
    add(study, TrialState.PRUNED)
    assert _counts(study)["pruned"] == 1
    assert not study_done(plan, study)
    add(study, TrialState.PRUNED)  # a pruned trial is finished: 1 done + 2 pruned
    assert study_done(plan, study)
    add(study, TrialState.WAITING)  # a queued retry runs first
    assert not study_done(plan, study)
    study = memory_study()
    add(study)
    add(study, TrialState.RUNNING)
    add(study, TrialState.RUNNING)  # under way counts
    assert study_done(plan, study)
    plan.n_trials = 4
    assert not study_done(plan, study)
    plan.n_trials = None  # a timeout only: never done by count
    assert not study_done(plan, study)


def test_study_done_stops_after_too_many_over_budget_samples(tmp_path, caplog):
    from lorafit.search.study import study_done

    plan = search_plan(tmp_path, n_trials=1)  # stop at 10 * 1 + 20 = 30 skipped
    study = memory_study()
    for _ in range(29):
        add(study, TrialState.PRUNED, infeasible="over")
    assert not study_done(plan, study)
    add(study, TrialState.PRUNED, infeasible="over")
    caplog.set_level(logging.INFO, logger="lorafit")
    assert study_done(plan, study)
    assert (
        caplog.records[-1].getMessage() == "sweep s: stopping, 30 sampled configs were over budget"
    )
    plan.n_trials = 2  # 40 needed now
    assert not study_done(plan, study)


def test_study_done_for_a_grid_needs_every_point_started(tmp_path):
    from lorafit.search.study import study_done

    plan = grid_plan(tmp_path, grid={"lora.r": [2, 4, 8]})
    assert plan.grid_size == 3
    study = memory_study()
    add(study, name="r2")
    add(study, TrialState.PRUNED, name="r4", infeasible="x")
    assert not study_done(plan, study)
    add(study, TrialState.PRUNED, name="r2", duplicate=True)  # 3 trials, r8 not among them
    assert not study_done(plan, study)
    add(study, TrialState.FAIL, name="r8")
    assert study_done(plan, study)
    add(study, TrialState.WAITING, name="r8")
    assert not study_done(plan, study)
    study = memory_study()
    for name in ("r2", "r4", "r8"):
        add(study, name=name)
    plan.trials = plan.trials[:2]  # every named point started, but fewer trials than the grid
    study2 = memory_study()
    add(study2, name="r2")
    add(study2, name="r4")
    assert not study_done(plan, study2) and study_done(plan, study)


def test_surplus_counts_earlier_finished_pruned_and_running_only(tmp_path):
    from lorafit.search.study import _surplus

    plan = search_plan(tmp_path, n_trials=2)
    study = memory_study()
    add(study)  # 0 done
    add(study, TrialState.PRUNED, infeasible="over")  # 1 skipped
    add(study, TrialState.FAIL)  # 2 failed
    add(study, TrialState.PRUNED, surplus=True)  # 3 not counted
    add(study, TrialState.WAITING)  # 4 not counted
    me = add(study, TrialState.RUNNING)  # 5
    add(study)  # 6: later than me, not counted
    add(study)  # 7
    assert not _surplus(plan, study, me)  # 1 earlier
    for state in (TrialState.PRUNED, TrialState.RUNNING, TrialState.COMPLETE):
        study = memory_study()
        add(study)
        add(study, state)
        me = add(study, TrialState.RUNNING)
        assert _surplus(plan, study, me), state  # 2 earlier: n_trials reached
        plan.n_trials = 3
        assert not _surplus(plan, study, me)
        plan.n_trials = 2
    plan.n_trials = None
    assert not _surplus(plan, study, me)
    grid = grid_plan(tmp_path, grid={"lora.r": [2]}, search={"n_trials": 1})
    assert grid.n_trials == 1 and not _surplus(grid, study, me)


def test_duplicate_counts_earlier_attempts_that_ran_or_run():
    from lorafit.search.study import _duplicate

    study = memory_study()
    add(study, TrialState.FAIL, name="a")
    add(study, TrialState.PRUNED, name="b", duplicate=True)
    add(study, TrialState.WAITING, name="c")
    add(
        study, TrialState.PRUNED, name="d", infeasible="over"
    )  # counted: over budget, it ran its check
    add(study, TrialState.PRUNED, name="e")
    add(study, TrialState.RUNNING, name="f")
    add(study, name="g")
    me = add(study, TrialState.RUNNING)
    add(study, name="h")  # later
    assert [_duplicate(study, me, n) for n in "abcdefgh"] == [
        False,
        False,
        False,
        True,
        True,
        True,
        True,
        False,
    ]
    assert not _duplicate(study, study.trials[6], "g")  # itself


def test_retry_failed_queues_the_last_attempt_of_each_failure_once():
    from lorafit.search.study import retry_failed

    study = memory_study()
    dist = {"lora.r": IntDistribution(2, 8)}
    add(study, TrialState.FAIL, name="a", params={"lora.r": 2}, dists=dist)  # 0: retried by 2
    add(study, name="ok", params={"lora.r": 3}, dists=dist)  # 1
    add(study, TrialState.FAIL, name="a", params={"lora.r": 2}, dists=dist, retry_of=0)  # 2
    add(study, TrialState.FAIL, name="b", params={"lora.r": 4}, dists=dist, interrupted=True)  # 3
    add(
        study, TrialState.FAIL, params={"lora.r": 5}, dists=dist
    )  # 4: no name (failed before sampling)
    add(study, TrialState.PRUNED, name="c", params={"lora.r": 6}, dists=dist)  # 5
    add(study, TrialState.FAIL, name="d", params={"lora.r": 7}, dists=dist)  # 6
    add(study, TrialState.RUNNING, name="d")  # 7: its retry runs
    assert retry_failed(study) == ["a", "b"]
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [(t.system_attrs["fixed_params"], t.user_attrs) for t in waiting] == [
        ({"lora.r": 2}, {"name": "a", "retry_of": 0}),
        ({"lora.r": 4}, {"name": "b", "retry_of": 3}),
    ]
    assert retry_failed(study) == []  # queued already: those are the later attempts now
    assert len(study.trials) == 10


def test_worker_env_gives_each_worker_its_slot_cores_and_gpu(monkeypatch):
    from lorafit.cores import CPUS_ENV, share_of_cpus
    from lorafit.search.study import WORKER_ENV, _worker_env

    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(CPUS_ENV, raising=False)
    monkeypatch.setenv("LORAFIT_TEST_MARK", "kept")
    envs = [_worker_env(slot, 3, ["4", "7"]) for slot in range(3)]
    assert [e[WORKER_ENV] for e in envs] == ["0", "1", "2"]  # the sampler seed is seed + this
    assert WORKER_ENV == "LORAFIT_SWEEP_WORKER"
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4", "7", "4"]
    assert all(
        e["LORAFIT_TEST_MARK"] == "kept" and e["TOKENIZERS_PARALLELISM"] == "false" for e in envs
    )
    assert "LORAFIT_TEST_MARK" in os.environ and WORKER_ENV not in os.environ  # ours untouched
    env = _worker_env(1, 2, None)
    assert "CUDA_VISIBLE_DEVICES" not in env and env[WORKER_ENV] == "1"
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    assert _worker_env(0, 1, [])["TOKENIZERS_PARALLELISM"] == "true"
    assert "CUDA_VISIBLE_DEVICES" not in _worker_env(0, 1, [])
    share = share_of_cpus(0, 1)
    if share:
        assert _worker_env(0, 1, None)[CPUS_ENV] == ",".join(map(str, share))
    assert CPUS_ENV not in _worker_env(0, 10_000, None)  # more workers than cores: no share


def test_worker_env_with_known_cores(monkeypatch):
    import lorafit.cores
    from lorafit.cores import CPUS_ENV
    from lorafit.search.study import _worker_env

    monkeypatch.setattr(lorafit.cores, "allowed_cpus", lambda: [0, 1, 2, 3, 4])
    monkeypatch.delenv(CPUS_ENV, raising=False)
    assert [_worker_env(s, 2, None)[CPUS_ENV] for s in range(2)] == ["0,1,2", "3,4"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # trials asked by hand, not by optimize
def test_open_study_seeds_each_worker_and_keeps_the_direction(tmp_path):
    from lorafit.search.study import open_study

    plan = search_plan(tmp_path, sampler="random", space={"lora.dropout": {"float": [0.0, 0.5]}})
    assert not plan.folder.exists()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    study = open_study(plan, 5)
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    assert plan.folder.is_dir() and (plan.folder / "study.db").is_file()
    assert study.study_name == "s" and study.direction.name == "MAXIMIZE"
    assert type(study.pruner) is optuna.pruners.MedianPruner
    assert _draws(study.sampler) == _draws(optuna.samplers.RandomSampler(seed=5))
    other = open_study(plan, 6)
    assert _draws(other.sampler) == _draws(optuna.samplers.RandomSampler(seed=6))
    t = study.ask()
    study.tell(t, 1.0)
    assert len(open_study(plan).trials) == 1  # the same study, loaded
    plan.metric = "eval_loss"
    with pytest.raises(UserError) as e:
        open_study(plan)
    assert str(e.value) == (
        f"{plan.source}: metric eval_loss is minimized, but study s in sqlite:///{plan.folder / 'study.db'} was "
        "created to maximize; use another name:"
    )
    plan.name = "s2"
    assert open_study(plan).direction.name == "MINIMIZE"
    (tmp_path / "j").mkdir()
    journal = search_plan(tmp_path / "j")
    journal.storage = f"journal:{tmp_path / 'elsewhere' / 'j.log'}"
    open_study(journal)
    assert not journal.folder.exists()  # the study lives in the journal


def test_run_worker_stops_at_its_timeout(tmp_path, monkeypatch):
    from lorafit.search.study import open_study, run_worker

    patch_train(monkeypatch, FakeTrain())
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    plan = search_plan(tmp_path, n_trials=5, timeout=1, space={"lora.r": {"int": [2, 4]}})
    plan.base.lora.layers = "5"
    plan.storage = f"journal:{tmp_path / 'study.log'}"
    plan.timeout = 1e-6  # over before the first trial
    study = open_study(plan, 0)
    for r in (2, 2, 2):
        study.enqueue_trial({"lora.r": r})
    run_worker(plan, 0)
    assert [t.state.name for t in study.get_trials()] == ["WAITING", "WAITING", "WAITING"]


def test_open_study_names_the_file_when_optuna_refuses(tmp_path, monkeypatch):
    from lorafit.search.study import open_study

    plan = search_plan(tmp_path)

    def refuse(**kwargs):
        raise ValueError("no such thing")

    monkeypatch.setattr(optuna, "create_study", refuse)
    with pytest.raises(UserError) as e:
        open_study(plan)
    assert str(e.value) == f"{plan.source}: study s: no such thing"


def test_run_dirs_oldest_first(tmp_path):
    from lorafit.search.study import _run_dirs

    for name in (
        "r2-19991231-235959",
        "r2-20261207-101011",
        "r2-20261207-101010",
        "r2-20261207-101010-2",
        "r2-20261207-101010-10",
        "r2-20261206-235959",
        "r2-x",
        "r2b-20261201-000000",
        "r2-20261207-101010-2-3",
        "r2-2026120-101010",
        "x-20261207-101010",
    ):
        (tmp_path / name).mkdir()
    (tmp_path / "r2-20261208-000000").write_text("a file")
    assert [p.name for p in _run_dirs(tmp_path, "r2")] == [
        "r2-19991231-235959",
        "r2-20261206-235959",
        "r2-20261207-101010",
        "r2-20261207-101010-2",
        "r2-20261207-101010-10",
        "r2-20261207-101011",
    ]
    assert _run_dirs(tmp_path, "r3") == []
    (tmp_path / "a.b-20261207-101010").mkdir()
    (tmp_path / "aXb-20261207-101010").mkdir()
    assert [p.name for p in _run_dirs(tmp_path, "a.b")] == ["a.b-20261207-101010"]


def test_same_config_and_earlier_run(tmp_path):
    from lorafit.search.space import trial_config
    from lorafit.search.study import _same_config, earlier_run

    plan = search_plan(tmp_path)
    plan.folder.mkdir(parents=True)
    cfg = trial_config(plan, {"lora.r": 3}, "t0001")

    def run_dir(name: str, **changes) -> Path:
        d = plan.folder / name
        d.mkdir()
        data = config_to_dict(trial_config(plan, {"lora.r": 3, **changes}, "t0001"))
        data["run"]["dir"] = "relative/elsewhere"  # run.dir aside
        (d / "config.yaml").write_text(yaml.safe_dump(data))
        return d

    old = run_dir("t0001-20261207-100000")
    assert _same_config(old, cfg)
    other = run_dir("t0001-20261207-110000", **{"lora.r": 4})
    assert not _same_config(other, cfg)
    assert earlier_run(plan, "t0001", cfg) == old
    newer = run_dir("t0001-20261207-100000-2")
    assert earlier_run(plan, "t0001", cfg) == newer  # the newest with this config
    assert earlier_run(plan, "t0002", cfg) is None
    empty = plan.folder / "t0001-20261207-120000"
    empty.mkdir()
    assert not _same_config(empty, cfg)  # no config.yaml
    (empty / "config.yaml").write_text("a: [1\n")
    assert not _same_config(empty, cfg)
    assert earlier_run(plan, "t0001", cfg) == newer
    data = config_to_dict(cfg)
    data["run"].pop("dir")
    (empty / "config.yaml").write_text(yaml.safe_dump(data))  # no run.dir at all: still the same
    assert _same_config(empty, cfg) and earlier_run(plan, "t0001", cfg) == empty


def patch_train(monkeypatch, fake) -> None:
    import sys

    # `lorafit.train` is the function at the package level; objective imports the module's
    monkeypatch.setattr(sys.modules["lorafit.train"], "train", fake)


class FakeTrain:
    """`lorafit.train.train` as the sweep calls it: a run directory with config.yaml and
    summary.json; reports validation accuracy 0.9 (r 2), 0.1 (r 3) or 0.5 at steps 2 and 4."""

    def __init__(self, fail=None):
        self.calls, self.fail, self.no_metric, self.fail_late, self.fail_at = (
            [],
            fail,
            False,
            None,
            None,
        )
        self.fail_resume = None

    def __call__(self, cfg=None, *, resume=None, on_eval=None):
        from lorafit.rundir import create_run_dir

        if resume is not None:
            self.calls.append(("resume", Path(resume).name))
            if self.fail_resume:
                raise self.fail_resume
            run_dir = Path(resume)
            cfg_dict = yaml.safe_load((run_dir / "config.yaml").read_text())
            r = cfg_dict["lora"]["r"]
        else:
            self.calls.append(("train", cfg.run.name))
            if self.fail:
                raise self.fail
            run_dir = create_run_dir(cfg.run.dir, cfg.run.name)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
            r = cfg.lora.r
            if self.fail_late:  # after the run directory is made
                raise self.fail_late
            if r == self.fail_at:
                raise RuntimeError(f"r {r} diverged")
        acc = {2: 0.9, 3: 0.1}.get(r, 0.5)
        for step in (2, 4):
            if on_eval(step, {"eval_accuracy": acc, "eval_loss": 1 - acc}):
                break
        if self.no_metric:
            summary(run_dir, trainable=minilm(r, 1))
        else:
            summary(run_dir, trainable=minilm(r, 1), eval_accuracy=acc, eval_loss=1 - acc)
        return run_dir


def test_objective_trains_skips_over_budget_and_fails_one_trial(tmp_path, monkeypatch, caplog):
    from lorafit.search.study import TrialFailed, objective, open_study

    fake = FakeTrain()
    patch_train(monkeypatch, fake)
    plan = search_plan(tmp_path, n_trials=20, space={"lora.r": {"int": [2, 20]}})
    plan.base.lora.layers = "5"  # r 20 on one layer: 1,540 + 30,720 > 20,000
    plan.storage = f"journal:{tmp_path / 'study.log'}"
    study = open_study(plan, 0)
    caplog.set_level(logging.INFO, logger="lorafit")
    study.enqueue_trial({"lora.r": 2})
    t = study.ask()
    assert objective(plan, t) == 0.9
    study.tell(t, 0.9)
    (frozen,) = study.get_trials()
    (run_dir,) = list(plan.folder.glob("t0000-*"))
    assert frozen.user_attrs["name"] == "t0000" and frozen.user_attrs["run_dir"] == str(run_dir)
    assert frozen.user_attrs["overrides"] == {"lora.r": 2} and frozen.user_attrs[
        "trainable_params"
    ] == minilm(2, 1)
    assert frozen.user_attrs["worker"] == f"{socket.gethostname()}:{os.getpid()}"
    assert frozen.intermediate_values == {2: 0.9, 4: 0.9}
    study.enqueue_trial({"lora.r": 20})
    t = study.ask()
    with pytest.raises(optuna.TrialPruned) as e:
        objective(plan, t)
    assert str(e.value).startswith(
        "budget: 32,260 trainable parameters exceed the budget of 20,000 by 12,260 "
    )
    study.tell(t, state=TrialState.PRUNED)
    over = study.get_trials()[-1]
    assert (
        over.user_attrs["infeasible"] == str(e.value) and over.user_attrs["budget_excess"] == 12260
    )
    assert over.user_attrs["trainable_params"] == 32260 and fake.calls == [("train", "t0000")]
    assert not list(plan.folder.glob("t0001-*"))
    fake.fail = RuntimeError("boom\nsecond line")
    study.enqueue_trial({"lora.r": 4})
    t = study.ask()
    with pytest.raises(TrialFailed, match="boom"):
        objective(plan, t)
    assert t.user_attrs["reason"] == "RuntimeError: boom"
    fake.fail = UserError("data.train: x.csv not found")
    study.enqueue_trial({"lora.r": 4})
    t = study.ask()
    with pytest.raises(TrialFailed):
        objective(plan, t)
    assert t.user_attrs["reason"] == "data.train: x.csv not found" and "run_dir" not in t.user_attrs
    fake.fail = RuntimeError("x" * 400)  # the reason: its first line, at most 300 characters
    study.enqueue_trial({"lora.r": 4})
    t = study.ask()
    with pytest.raises(TrialFailed):
        objective(plan, t)
    assert t.user_attrs["reason"] == "RuntimeError: " + "x" * 286
    fake.fail = UserError("")
    study.enqueue_trial({"lora.r": 4})
    t = study.ask()
    with pytest.raises(TrialFailed):
        objective(plan, t)
    assert t.user_attrs["reason"] == ""
    fake.fail, fake.fail_late = None, RuntimeError("late")  # its (newest) run directory is recorded
    (plan.folder / "t0006-20000101-000000").mkdir()
    study.enqueue_trial({"lora.r": 4})
    t = study.ask()
    with pytest.raises(TrialFailed, match="^late$"):
        objective(plan, t)
    (late,) = [p for p in plan.folder.glob("t0006-*") if not p.name.startswith("t0006-2000")]
    assert t.user_attrs["run_dir"] == str(late) and t.user_attrs["reason"] == "RuntimeError: late"
    fake.fail_late = (
        KeyboardInterrupt()
    )  # Ctrl-C: interrupted, its run directory recorded, raised on
    study.enqueue_trial({"lora.r": 4})
    t = study.ask()
    with pytest.raises(KeyboardInterrupt):
        objective(plan, t)
    (cut,) = list(plan.folder.glob("t0007-*"))
    assert (
        t.user_attrs["interrupted"] is True
        and t.user_attrs["run_dir"] == str(cut)
        and "reason" not in t.user_attrs
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "lorafit"]
    assert lines[:3] == [
        "trial t0000 (#0): training",
        "trial t0000: done, eval_accuracy 0.9",
        f"trial t0001: skipped: {over.user_attrs['infeasible']}",
    ]
    assert lines[3:5] == ["trial t0002 (#2): training", "trial t0002: failed (RuntimeError: boom)"]
    assert lines[-1] == "trial t0007 (#7): training"


def test_objective_fails_a_trial_whose_data_cannot_be_counted(tmp_path, monkeypatch):
    from lorafit.search.space import load_sweep
    from lorafit.search.study import TrialFailed, objective, open_study

    fake = FakeTrain()
    patch_train(monkeypatch, fake)
    missing = tmp_path / "no.csv"
    path = write(
        tmp_path / "f.yaml",
        dir=str(tmp_path / "sweeps"),
        runs=[{"name": "x", "data.label_names": [], "data.train": str(missing)}],
        search={"sampler": "random", "n_trials": 2, "space": {"lora.r": {"int": [2, 4]}}},
    )
    plan = load_sweep(path)
    plan.storage = f"journal:{tmp_path / 'study.log'}"
    study = open_study(plan, 0)
    study.enqueue_trial({"run": "x", "lora.r": 2})
    t = study.ask()
    with pytest.raises(TrialFailed) as e:
        objective(plan, t)
    reason = f"{missing}: file not found; check the path (relative to {os.getcwd()})"
    assert str(e.value) == t.user_attrs["reason"] == reason
    assert "trainable_params" not in t.user_attrs and fake.calls == []


def test_objective_resumes_an_earlier_run_and_prunes(tmp_path, monkeypatch, caplog):
    from lorafit.search.study import TrialFailed, objective, open_study

    fake = FakeTrain()
    patch_train(monkeypatch, fake)
    plan = search_plan(
        tmp_path,
        n_trials=10,
        space={"lora.r": {"int": [2, 4]}},
        pruner={"type": "median", "n_startup_trials": 1},
    )
    plan.base.lora.layers = "5"
    plan.storage = f"journal:{tmp_path / 'study.log'}"
    study = open_study(plan, 0)
    caplog.set_level(logging.INFO, logger="lorafit")
    study.enqueue_trial({"lora.r": 2})
    t = study.ask()
    study.tell(t, objective(plan, t))
    # the same trial retried (same name and params): its run directory is continued
    study.enqueue_trial({"lora.r": 2}, user_attrs={"name": "t0000"})
    t = study.ask()
    assert objective(plan, t) == 0.9
    (first,) = list(plan.folder.glob("t0000-*"))
    assert fake.calls == [("train", "t0000"), ("resume", first.name)] and t.user_attrs[
        "run_dir"
    ] == str(first)
    assert f"trial t0000 (#1): resuming {first}" in [r.getMessage() for r in caplog.records]
    study.tell(t, 0.9)
    # a worse trial is pruned by the median pruner at its first report
    study.enqueue_trial({"lora.r": 3})
    t = study.ask()
    with pytest.raises(optuna.TrialPruned, match="^pruned at step 2$"):
        objective(plan, t)
    study.tell(t, state=TrialState.PRUNED)
    assert study.get_trials()[-1].intermediate_values == {2: 0.1}
    assert study.get_trials()[-1].user_attrs["run_dir"].startswith(str(plan.folder / "t0002-"))
    assert caplog.records[-1].getMessage() == "trial t0002: pruned at step 2"
    # a run whose summary lacks the metric fails the trial with the reason
    fake.no_metric = True
    study.enqueue_trial({"lora.r": 2})
    t = study.ask()
    with pytest.raises(TrialFailed) as e:
        objective(plan, t)
    (last,) = list(plan.folder.glob("t0003-*"))
    assert str(e.value) == t.user_attrs["reason"] == f"{last}/summary.json has no eval_accuracy"
    # a resumed run that fails keeps the directory it resumed, not the trial's newest one
    other = plan.folder / "t0000-20991231-235959"
    other.mkdir()
    (other / "config.yaml").write_text(yaml.safe_dump({"lora": {"r": 9}}))
    fake.fail_resume = RuntimeError("resume broke")
    study.enqueue_trial({"lora.r": 2}, user_attrs={"name": "t0000"})
    t = study.ask()
    with pytest.raises(TrialFailed):
        objective(plan, t)
    assert (
        t.user_attrs["run_dir"] == str(first)
        and t.user_attrs["reason"] == "RuntimeError: resume broke"
    )


def test_objective_grid_duplicate_and_surplus(tmp_path, monkeypatch):
    from lorafit.search.study import objective, open_study

    fake = FakeTrain()
    patch_train(monkeypatch, fake)
    plan = grid_plan(tmp_path, grid={"lora.r": [2]}, base=base(lora={"layers": "5"}))
    plan.storage = f"journal:{tmp_path / 'study.log'}"
    study = open_study(plan, 0)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    monkeypatch.setenv("LORAFIT_TEST_HOOKS", str(hooks))  # each trial marks its start (tests' hook)
    first, second = study.ask(), study.ask()
    assert objective(plan, first) == 0.9
    assert [p.name.split(".")[:2] for p in hooks.iterdir()] == [["trial-start", str(os.getpid())]]
    with pytest.raises(optuna.TrialPruned, match="^r2: already run by another worker$"):
        objective(plan, second)
    assert second.user_attrs["duplicate"] is True and fake.calls == [("train", "r2")]
    assert len(list(hooks.iterdir())) == 2
    (tmp_path / "b").mkdir()
    search = search_plan(tmp_path / "b", n_trials=1)
    search.storage = f"journal:{tmp_path / 'b.log'}"
    study = open_study(search, 0)
    add(study)
    t = study.ask()
    with pytest.raises(optuna.TrialPruned, match="^1 trials are finished or under way$"):
        objective(search, t)
    assert t.user_attrs == {"surplus": True} and t.params == {}


def test_run_worker_stops_at_n_trials_counting_pruned_and_not_over_budget(
    tmp_path, monkeypatch, caplog
):
    from lorafit.search.samplers import open_storage
    from lorafit.search.study import open_study, run_worker

    fake = FakeTrain()
    patch_train(monkeypatch, fake)
    plan = search_plan(
        tmp_path,
        sampler="random",
        n_trials=3,
        space={"lora.r": {"int": [2, 20]}},
        pruner={"type": "median", "n_startup_trials": 1},
    )
    plan.base.lora.layers = "5"
    plan.storage = f"journal:{tmp_path / 'study.log'}"
    collected = []
    monkeypatch.setattr(
        gc, "collect", lambda *args: collected.append(1) or 0
    )  # gc_after_trial: 1 s a trial here
    study = open_study(plan, 0)
    fake.fail_at = 5
    for r in (2, 20, 5, 3, 20, 3):  # done, over, failed, pruned, over, pruned: 3 counted
        study.enqueue_trial({"lora.r": r})
    run_worker(plan, 0)
    trials = optuna.load_study(study_name="s", storage=open_storage(plan)).get_trials()
    states = [
        (t.params["lora.r"], t.state.name, bool(t.user_attrs.get("infeasible"))) for t in trials
    ]
    assert states == [
        (2, "COMPLETE", False),
        (20, "PRUNED", True),
        (5, "FAIL", False),
        (3, "PRUNED", False),
        (20, "PRUNED", True),
        (3, "PRUNED", False),
    ]
    assert (plan.folder / "leaderboard.md").read_text().count("| pruned |") == 2
    assert len(collected) >= 6  # after every trial (the memory of the last one freed)
    caplog.set_level(logging.INFO, logger="lorafit")
    run_worker(plan, 0)  # nothing left: no trial taken
    assert len(optuna.load_study(study_name="s", storage=open_storage(plan)).trials) == 6
    assert caplog.records[-1].getMessage() == f"sweep s: nothing left to run in {plan.storage}"


def test_a_sweep_files_errors_name_the_file_whichever_part_is_wrong(tmp_path):
    """The base, the runs and the grid are each checked with the sweep file's path in front."""
    path = tmp_path / "sweep.yaml"
    cases = [
        ({"base": "missing.yaml"}, f"base: {tmp_path / 'missing.yaml'} not found"),
        ({"base": base(train={"lr": "fast"})}, "base: "),
        ({"runs": {"a": 1}}, "runs: must be a list of mappings (config key: value)"),
        ({"grid": {"lora.r": []}}, "grid: lora.r: give a non-empty list of values, e.g. [4, 8]"),
        ({"search": {"space": {"train.lr": {"float": "x"}}}}, "search: space: train.lr: "),
    ]
    for spec, message in cases:
        text = refused(write(path, **{"grid": {"lora.r": [2]}, **spec}))
        assert text.startswith(f"{path}: {message}"), text


def test_a_base_config_file_is_read_against_the_config_schema(tmp_path):
    """base: a YAML file beside the sweep file: merged over the schema, so a trial's config is
    a Config (with every default) and a key the schema lacks is refused naming the file."""
    from lorafit.config import Config
    from lorafit.search.space import load_sweep, trial_config

    (tmp_path / "base.yaml").write_text(
        yaml.safe_dump(
            {
                "model": {"name": "all-MiniLM-L6-v2"},
                "data": {"label_names": list(LABELS)},
                "budget": 20000,
            }
        )
    )
    plan = load_sweep(
        write(tmp_path / "s.yaml", base="base.yaml", grid={"lora.r": [2]}, dir=str(tmp_path))
    )
    cfg = trial_config(plan, {"lora.r": 2}, "r2")
    assert isinstance(cfg, Config) and cfg.lora.r == 2 and cfg.train.lr == Config().train.lr
    (tmp_path / "base.yaml").write_text("model:\n  nmae: x\n")
    text = refused(write(tmp_path / "s.yaml", base="base.yaml", grid={"lora.r": [2]}))
    assert text.startswith(f"{tmp_path / 's.yaml'}: base: ") and "nmae" in text


def test_run_worker_samples_with_its_own_seed_and_lets_other_warnings_through(
    tmp_path, monkeypatch
):
    """A local worker opens the study with the seed it was given (worker i: seed + i); only
    Optuna's ExperimentalWarning is silenced around the trials, not a trial's own warnings."""
    import importlib
    import warnings

    from lorafit.search.study import run_worker

    study_module = importlib.import_module("lorafit.search.study")
    fake = FakeTrain()

    def warning_train(cfg=None, **kwargs):
        warnings.warn("from inside a trial", UserWarning, stacklevel=1)
        return fake(cfg, **kwargs)

    patch_train(monkeypatch, warning_train)
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    real_open, seeds = study_module.open_study, []
    monkeypatch.setattr(
        study_module,
        "open_study",
        lambda plan, seed=None: seeds.append(seed) or real_open(plan, seed),
    )
    plan = search_plan(tmp_path, sampler="random", n_trials=1, space={"lora.r": {"int": [2, 4]}})
    plan.base.lora.layers = "5"
    plan.storage = f"journal:{tmp_path / 'study.log'}"
    with pytest.warns(UserWarning, match="from inside a trial"):
        run_worker(plan, 7)
    assert seeds == [7] and len(fake.calls) == 1
