"""`lorafit sweep`: planning (names, budget), running in worker processes, resuming, leaderboard."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lorafit.cli import main
from lorafit.errors import UserError
from lorafit.search import load_sweep, trial_name

from .conftest import ROOT

SWEEPS = ROOT / "configs" / "sweeps"

# the tiny model: LoRA on query+value = 128 * r per layer, head 1,188
# r2 on layers 0-1: 1,700; r2 on 1: 1,444; r8 on 1: 2,212; r8 on 0-1: 3,236 (> 2,500)
TINY_BUDGET = 2500


def tiny_base(tiny_model, small_csv) -> dict:
    return {
        "model": {"name": str(tiny_model), "max_length": 64},
        "data": {"train": str(small_csv), "val_size": 40, "test": None},
        "budget": TINY_BUDGET,
        "train": {"max_steps": 12, "eval_every": 4, "log_every": 2, "batch_size": 16, "lr": 0.01},
    }


def write_sweep(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ---------------------------------------------------------------- planning (fast)


EXPECTED = {
    "layer_ranges.yaml": {
        "layers0-11": 888_580,
        "layers6-11": 741_124,
        "layers9-11": 667_396,
        "layers10-11": 642_820,
    },
    "sections.yaml": {
        "uniform-r8": 888_580,
        "2-sections": 814_852,
        "3-sections": 741_124,
        "4-sections": 870_148,
    },
    "minilm_layer_ranges.yaml": {
        "layers0-5": 75_268,
        "layers3-5": 38_404,
        "layers4-5": 26_116,
        "layers5": 13_828,
    },
    "minilm_sections.yaml": {
        "uniform-r8": 75_268,
        "2-sections": 56_836,
        "3-sections": 44_548,
        "4-sections": 62_980,
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_sweeps_load_and_fit_the_budget(name):
    plan = load_sweep(SWEEPS / name)
    assert {t.name: t.params for t in plan.trials} == EXPECTED[name]
    assert all(t.skip is None for t in plan.trials)
    for t in plan.trials:
        assert t.config.run.name == t.name and t.config.run.dir == str(plan.folder)


def test_every_shipped_sweep_is_tested():
    assert sorted(p.name for p in SWEEPS.glob("*.yaml")) == sorted(
        [*EXPECTED, "minilm_search.yaml"]
    )


def test_shipped_search_has_its_spaces_and_a_budget_that_binds():
    from lorafit.search.space import check_budget, trial_config

    plan = load_sweep(SWEEPS / "minilm_search.yaml")
    assert (plan.sampler, plan.pruner, plan.n_trials, plan.direction) == (
        "tpe",
        "median",
        16,
        "maximize",
    )
    assert list(plan.spaces) == [
        "lora.r",
        "train.lr",
        "lora.dropout",
        "lora.layers",
        "lora.target_modules",
    ]
    assert (
        plan.spaces["lora.r"].log
        and plan.spaces["lora.target_modules"].labels[1] == "query+key+value"
    )
    small = {"lora.r": 2, "lora.layers": "4-5", "lora.target_modules": ["query", "value"]}
    big = {
        "lora.r": 32,
        "lora.layers": "0-5",
        "lora.target_modules": ["query", "value", "output.dense"],
    }
    assert check_budget(trial_config(plan, small, "small"))[1] is None
    assert "exceed the budget of 100,000" in check_budget(trial_config(plan, big, "big"))[1]


def test_shipped_section_sweeps_give_shallow_layers_less():
    from lorafit.model import layer_settings

    for name, depth in [("sections.yaml", 12), ("minilm_sections.yaml", 6)]:
        for t in load_sweep(SWEEPS / name).trials:
            s = layer_settings(t.config, depth)
            assert sorted(s) == list(range(depth))  # every layer adapted
            ranks = [s[i]["r"] for i in range(depth)]
            drops = [s[i]["dropout"] for i in range(depth)]
            assert ranks == sorted(ranks) and drops == sorted(drops), t.name
            assert {s[i]["alpha"] / s[i]["r"] for i in range(depth)} == {2.0}


def test_grid_and_runs_expand_with_names_configs_and_budget(tiny_model, small_csv, tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "base.yaml").write_text(yaml.safe_dump(tiny_base(tiny_model, small_csv)))
    path = write_sweep(
        tmp_path / "conf" / "s.yaml",
        base="base.yaml",  # relative to the sweep file
        dir=str(tmp_path / "out"),
        overrides={"lora.dropout": 0.05},
        grid={"lora.r": [2, 8], "lora.layers": ["0-1", 1]},
        runs=[{}, {"name": "lion", "train.optimizer": "lion"}],
    )
    plan = load_sweep(path)
    assert plan.name == "s" and plan.folder == tmp_path / "out" / "s"
    assert plan.keys == ["lora.r", "lora.layers", "train.optimizer"]
    names = [t.name for t in plan.trials]
    assert names == [
        "r2_layers0-1",
        "r2_layers1",
        "r8_layers0-1",
        "r8_layers1",
        "lion_r2_layers0-1",
        "lion_r2_layers1",
        "lion_r8_layers0-1",
        "lion_r8_layers1",
    ]
    by_name = {t.name: t for t in plan.trials}
    assert {n: t.params for n, t in by_name.items() if not n.startswith("lion")} == {
        "r2_layers0-1": 1700,
        "r2_layers1": 1444,
        "r8_layers0-1": 3236,
        "r8_layers1": 2212,
    }
    skipped = [t.name for t in plan.trials if t.skip]
    assert skipped == ["r8_layers0-1", "lion_r8_layers0-1"]
    assert "3,236 trainable parameters exceed the budget of 2,500" in by_name["r8_layers0-1"].skip
    cfg = by_name["lion_r2_layers1"].config
    assert (cfg.train.optimizer, cfg.lora.r, cfg.lora.layers, cfg.lora.dropout) == (
        "lion",
        2,
        1,
        0.05,
    )
    assert cfg.model.name == str(tiny_model) and cfg.log.progress is False


def test_dry_run_writes_nothing(tiny_model, small_csv, tmp_path, capsys):
    path = write_sweep(
        tmp_path / "s.yaml",
        base=tiny_base(tiny_model, small_csv),
        dir=str(tmp_path / "out"),
        grid={"lora.r": [2, 64]},
    )
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "r2  " in out and "would run" in out and "r64" in out and "exceed the budget" in out
    assert not (tmp_path / "out").exists()


def test_trial_names_are_deterministic_and_safe():
    sections = [{"layers": "0-5", "r": 2}, {"layers": "6-11", "r": 8}]
    name = trial_name({"lora.sections": sections, "train.lr": 2e-4})
    assert name == trial_name({"lora.sections": [dict(s) for s in sections], "train.lr": 0.0002})
    assert name.startswith("sections2-") and name.endswith("_lr0.0002")
    assert trial_name({"lora.sections": sections[:1]}) != trial_name(
        {"lora.sections": sections[1:]}
    )
    assert trial_name({"data.train": "../x/y z.csv"}) == "train..-x-y-z.csv"
    assert trial_name({"lora.r": 8, "model.r": 4}) == "lora.r8_model.r4"  # ambiguous short names


def _search(space: dict, **settings) -> dict:
    settings = {"n_trials": 2, **settings}
    return {"search": {**{k: v for k, v in settings.items() if v is not None}, "space": space}}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"grid": {"lora.r": [2]}, "seeds": 3}, "unknown key 'seeds'"),
        ({}, "nothing to sweep"),
        ({"grid": {"lora.r": 4}}, "grid: lora.r: give a non-empty list"),
        ({"grid": {"lora.rank": [4]}}, "grid (value 4): unknown key 'lora.rank'"),
        ({"grid": {"lora.r": [0]}}, "grid (value 0): lora.r: must be >= 1"),
        ({"grid": {"lora.r": [2]}, "metric": "speed"}, "metric 'speed' is not one of"),
        ({"runs": [{"name": "a"}, {"name": "a", "lora.r": 2}]}, "two trials are named 'a'"),
        ({"base": "missing.yaml", "grid": {"lora.r": [2]}}, "base: "),
        ({"base": {"train": {"lrr": 1}}, "grid": {"lora.r": [2]}}, "base: unknown key 'train.lrr'"),
        # search spaces
        (_search({"lora.r": {"int": [2]}}), "search: space: lora.r: int: give [low, high]"),
        (_search({"lora.r": {"range": [1, 2]}}), "search: space: lora.r: give one of {int"),
        (
            _search({"train.lr": {"float": [0, 1e-3], "log": True}}),
            "train.lr: log: true needs a low bound above 0",
        ),
        (_search({"lora.r": {"int": [8, 2]}}), "lora.r: int: low 8 is above high 2"),
        (_search({"lora.r": {"int": [2, 8], "lg": True}}), "lora.r: unknown key 'lg'"),
        (
            _search({"lora.r": {"choice": []}}),
            "search: space: lora.r: choice: give a non-empty list",
        ),
        (_search({"lora.rr": {"int": [2, 8]}}), "search: space (bound 2): unknown key 'lora.rr'"),
        (_search({"lora.r": {"int": [0, 8]}}), "search: space (bound 0): lora.r: must be >= 1"),
        (_search({"lora.r": {"int": [2, 8]}}, n_trials=None), "sampler tpe needs n_trials"),
        (
            _search({"lora.r": {"int": [2, 8]}}, sampler="cma"),
            "search: sampler: 'cma' is not one of",
        ),
        (
            _search({"lora.r": {"int": [2, 8]}}, sampler="grid"),
            "search: space: lora.r: sampler grid takes",
        ),
        (
            _search({"lora.r": {"int": [2, 8]}}, pruner="early"),
            "search: pruner: 'early' is not one of",
        ),
        (
            _search({"lora.r": {"int": [2, 8]}}, pruner={"type": "median", "patience": 2}),
            "MedianPruner has no option 'patience'",
        ),
        (_search({"lora.r": {"int": [2, 8]}}, trials=3), "search: unknown key 'trials'"),
        ({"grid": {"lora.r": [2]}, "storage": 3}, "storage: give a URL"),
    ],
)
def test_bad_sweep_files_name_the_file_and_key(spec, message, tiny_model, small_csv, tmp_path):
    spec.setdefault("base", tiny_base(tiny_model, small_csv))
    path = write_sweep(tmp_path / "bad.yaml", **spec)
    with pytest.raises(UserError) as e:
        load_sweep(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- running


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_dirs(folder: Path, trial: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"{trial}-2*") if p.is_dir())


def study_trials(path: Path) -> list:
    from lorafit.search.study import open_study

    return open_study(load_sweep(path)).get_trials(deepcopy=False)


def not_duplicates(trials: list) -> list:
    """The trials that ran (a grid point drawn twice at once is pruned as a duplicate)."""
    return [t for t in trials if not t.user_attrs.get("duplicate")]


@pytest.mark.slow
def test_two_workers_share_one_study_skip_over_budget_report_failures_and_keep_finished(
    tiny_model, small_csv, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two workers on shared cores
    # each worker's first trial waits until the other has started one: both take trials
    # however fast one of them starts (lorafit/hooks.py)
    moments = tmp_path / "moments"
    moments.mkdir()
    (moments / "hold-trial-start").write_text("2")
    monkeypatch.setenv("LORAFIT_TEST_HOOKS", str(moments))
    path = write_sweep(
        tmp_path / "tiny.yaml",
        base=tiny_base(tiny_model, small_csv),
        dir=str(tmp_path / "sweeps"),
        runs=[
            {"name": "all", "lora.r": 2},
            {"name": "top", "lora.r": 4, "lora.layers": "1"},
            {"name": "big", "lora.r": 8},  # 3,236 > 2,500: counted, never trained
            {"name": "nodata", "lora.r": 2, "data.train": str(tmp_path / "missing.csv")},
        ],
    )
    assert main(["sweep", str(path), "--parallel", "2"]) == 2  # the nodata trial fails
    err = capsys.readouterr().err
    assert "1 of 4 trials failed (nodata)" in err and err.count("\n") <= 3
    folder = tmp_path / "sweeps" / "tiny"
    trials = study_trials(path)
    # each grid point run once; two workers may draw the same point at once (Optuna's grid
    # sampler does not lock), and then the later trial is pruned as a duplicate
    names = [t.user_attrs["name"] for t in not_duplicates(trials)]
    assert sorted(names) == ["all", "big", "nodata", "top"]
    assert {
        t.state.name for t in not_duplicates(trials) if t.user_attrs["name"] in ("all", "top")
    } == {"COMPLETE"}
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took trials
    assert len(list(moments.glob("trial-start.*"))) == len(trials) - sum(
        bool(t.user_attrs.get("surplus")) for t in trials
    )
    assert not run_dirs(folder, "big") and not run_dirs(folder, "nodata")

    rows = read_csv(folder / "leaderboard.csv")
    assert [r["status"] for r in rows] == ["done", "done", "skipped", "failed"]
    assert float(rows[0]["val_accuracy"]) >= float(rows[1]["val_accuracy"])
    assert [r["rank"] for r in rows] == ["1", "2", "", ""]
    for r in rows[:2]:
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert float(r["val_accuracy"]) == summary["best_eval"]["eval_accuracy"]
        assert float(r["val_f1"]) == summary["best_eval"]["eval_f1"]
        assert int(r["trainable_params"]) == summary["params"]["trainable"]
        assert Path(r["run_dir"]).parent == folder and summary["run_name"] == r["run"]
        trial = next(t for t in trials if t.user_attrs["name"] == r["run"])
        assert trial.value == summary["best_eval"]["eval_accuracy"]
        assert sorted(trial.intermediate_values) == [4, 8, 12]  # every evaluation reported
    assert {r["run"]: r["trainable_params"] for r in rows} == {
        "all": "1700",
        "top": "1700",
        "big": "3236",
        "nodata": "",  # no data: no classes to count a head
    }
    big = rows[2]
    assert "exceed the budget of 2,500" in big["note"] and big["lora.r"] == "8"
    assert "missing.csv" in rows[3]["note"]
    md = (folder / "leaderboard.md").read_text()
    assert "2 done, 0 pruned, 1 skipped, 1 failed" in md
    assert "| 1 | `" + rows[0]["run"] + "` | done |" in md
    info = json.loads((folder / "study.json").read_text())
    assert info["storage"] == f"sqlite:///{folder / 'study.db'}" and info["study_name"] == "tiny"

    # the report shows the sweep's runs, its leaderboard and the study's plots
    page_path = tmp_path / "report.html"
    sweep_runs = [str(p) for p in folder.glob("*/")]
    args = ["report", *sweep_runs, "--leaderboard", str(folder / "leaderboard.csv")]
    assert main([*args, "--output", str(page_path)]) == 0
    page = page_path.read_text()
    assert page.count(">all</td>") >= 2 and page.count(">top</td>") >= 2  # runs table + leaderboard
    assert ">nodata</td>" in page and "exceed the budget" in page  # leaderboard only
    assert "eval_accuracy by trial" in page

    # run again: finished trials are kept, only the failed one is retried (a new attempt)
    done_dirs = {n: run_dirs(folder, n) for n in ("all", "top")}
    assert all(len(d) == 1 for d in done_dirs.values())
    assert main(["sweep", str(path), "--parallel", "2"]) == 2
    assert {n: run_dirs(folder, n) for n in done_dirs} == done_dirs
    again = study_trials(path)
    assert sorted(t.user_attrs["name"] for t in not_duplicates(again)) == sorted([*names, "nodata"])
    assert [r["status"] for r in read_csv(folder / "leaderboard.csv")] == [
        "done",
        "done",
        "skipped",
        "failed",
    ]


def test_a_grid_gives_the_same_leaderboard_as_training_each_config(
    tiny_model, small_csv, tmp_path, monkeypatch
):
    """The grid file through GridSampler: every point once, named and valued as a plain
    `lorafit train` of its config gives (the leaderboard of the old scheduler)."""
    from lorafit.train import train

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base = tiny_base(tiny_model, small_csv)
    base["train"]["max_steps"] = 8
    path = write_sweep(
        tmp_path / "grid.yaml",
        base=base,
        dir=str(tmp_path / "sweeps"),
        grid={"lora.r": [2, 8], "lora.layers": ["1"]},
    )
    result = lorafit_sweep(path)
    rows = read_csv(result["leaderboard_csv"])
    assert [r["run"] for r in rows] == sorted(
        ["r2_layers1", "r8_layers1"],
        key=lambda n: -float(next(x for x in rows if x["run"] == n)["val_accuracy"]),
    )
    for r in rows:
        cfg = next(t for t in result["plan"].trials if t.name == r["run"]).config
        cfg.run.dir = str(tmp_path / "plain")
        summary = json.loads((train(cfg) / "summary.json").read_text())
        assert float(r["val_accuracy"]) == summary["best_eval"]["eval_accuracy"]
        assert float(r["val_loss"]) == summary["best_eval"]["eval_loss"]
    assert lorafit_sweep(path)["status"] == result["status"]  # nothing left: nothing redone
    assert len(study_trials(path)) == 2


def lorafit_sweep(path, **kw):
    from lorafit.search import sweep

    return sweep(path, **kw)


def test_a_config_over_budget_is_infeasible_and_never_gets_a_run_directory(
    tiny_model, small_csv, tmp_path, monkeypatch
):
    import optuna

    from lorafit.search.study import open_study, run_worker

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = write_sweep(
        tmp_path / "tpe.yaml",
        base=tiny_base(tiny_model, small_csv),
        dir=str(tmp_path / "sweeps"),
        search={
            "sampler": "tpe",
            "n_trials": 1,
            "space": {"lora.r": {"int": [2, 64], "log": True}},
        },
    )
    plan = load_sweep(path)
    study = open_study(plan, 0)
    study.enqueue_trial({"lora.r": 40})  # 11,428 trainable > 2,500
    study.enqueue_trial({"lora.r": 2})
    run_worker(plan, 0)
    over, ok = study.get_trials()
    assert over.state == optuna.trial.TrialState.PRUNED and ok.state.name == "COMPLETE"
    assert "exceed the budget of 2,500" in over.user_attrs["infeasible"]
    assert over.user_attrs["budget_excess"] == over.user_attrs["trainable_params"] - 2500 > 0
    assert over.system_attrs["constraints"] == [over.user_attrs["budget_excess"]]  # TPE sees it
    assert ok.system_attrs["constraints"] == [0.0]
    assert not run_dirs(plan.folder, "t0000") and len(run_dirs(plan.folder, "t0001")) == 1
    rows = {r["run"]: r for r in read_csv(plan.folder / "leaderboard.csv")}
    assert rows["t0000"]["status"] == "skipped" and rows["t0000"]["lora.r"] == "40"
    assert rows["t0001"]["status"] == "done" and rows["t0001"]["rank"] == "1"


def test_the_search_and_lorafit_plan_count_the_same_config_alike(tiny_model, small_csv, tmp_path):
    from lorafit.config import as_config
    from lorafit.plan import plan
    from lorafit.search.space import check_budget, trial_config

    path = write_sweep(
        tmp_path / "s.yaml", base=tiny_base(tiny_model, small_csv), grid={"lora.r": [2]}
    )
    sweep_plan = load_sweep(path)
    cfg = trial_config(sweep_plan, {}, "base")
    shown = plan(cfg, budget=TINY_BUDGET, top=0, heads="full", ranks="1-16")["candidates"]
    assert shown
    for c in shown[:6]:
        overrides = dict(o.split("=", 1) for o in c["overrides"])
        params, over = check_budget(as_config(cfg, [f"{k}={v}" for k, v in overrides.items()]))
        assert params == c["trainable"] and over is None  # plan shows only what fits
    params, over = check_budget(as_config(cfg, ["lora.r=16"]))  # plan leaves it out: over
    assert over and params > TINY_BUDGET
    assert not [c for c in shown if c["r"] == 16 and c["layers"] == "all" and c["head"] == "full"]


def test_pruning_stops_a_bad_trial_and_the_leaderboard_says_so(
    tiny_model, small_csv, tmp_path, monkeypatch
):
    from lorafit.search.study import open_study, run_worker

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = write_sweep(
        tmp_path / "prune.yaml",
        base=tiny_base(tiny_model, small_csv),
        dir=str(tmp_path / "sweeps"),
        metric="eval_loss",
        overrides={"lora.r": 2},
        runs=[{"name": "good", "train.lr": 0.01}, {"name": "bad", "train.lr": 3.0}],
        search={"sampler": "grid", "pruner": {"type": "median", "n_startup_trials": 1}},
    )
    plan = load_sweep(path)
    study = open_study(plan, 0)
    study.enqueue_trial({"run": "good"})  # the good one first: the median to beat
    study.enqueue_trial({"run": "bad"})
    run_worker(plan, 0)
    good, bad = study.get_trials()
    assert good.state.name == "COMPLETE" and sorted(good.intermediate_values) == [4, 8, 12]
    assert bad.state.name == "PRUNED" and sorted(bad.intermediate_values) == [4]
    assert bad.intermediate_values[4] > good.intermediate_values[4]
    (bad_dir,) = run_dirs(plan.folder, "bad")
    summary = json.loads((bad_dir / "summary.json").read_text())
    assert summary["final_step"] == 4 and summary["stopped_early"]
    assert "stopped at step 4 by the caller" in (bad_dir / "train.log").read_text()
    rows = read_csv(plan.folder / "leaderboard.csv")
    assert [(r["run"], r["status"], r["rank"]) for r in rows] == [
        ("good", "done", "1"),
        ("bad", "pruned", ""),
    ]
    assert rows[1]["note"].startswith("pruned at step 4")


@pytest.mark.slow
def test_interrupted_sweep_continues_only_the_unfinished_trial(
    tiny_model, small_csv, tmp_path, monkeypatch
):
    from lorafit.hooks import wait_for

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = write_sweep(
        tmp_path / "tiny.yaml",
        base=tiny_base(tiny_model, small_csv),
        dir=str(tmp_path / "sweeps"),
        overrides={"lora.r": 2},
        runs=[
            {"name": "short"},  # 12 steps: never reaches the held step 20
            {
                "name": "long",
                "train.max_steps": 40,
                "train.eval_every": 20,
                "train.checkpoint_every": 10,
                "train.patience": None,
            },
        ],
        search={"sampler": "grid", "seed": 1},
    )
    folder = tmp_path / "sweeps" / "tiny"
    # the long trial waits after step 20 (checkpoint saved) until Ctrl-C: inside it for sure
    moments = tmp_path / "moments"
    moments.mkdir()
    (moments / "hold-step-20").write_text("")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LORAFIT_TEST_HOOKS": str(moments)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorafit", "sweep", str(path)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        # a test run started in the background inherits SIGINT ignored; Ctrl-C must reach the sweep
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(moments, "step-20", alive=lambda: proc.poll() is None)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    long = [t for t in study_trials(path) if t.user_attrs["name"] == "long"]
    assert [(t.state.name, t.user_attrs.get("interrupted")) for t in long] == [("FAIL", True)]
    (long_dir,) = run_dirs(folder, "long")
    assert not (long_dir / "summary.json").exists()
    short_before = run_dirs(folder, "short")

    assert main(["sweep", str(path)]) == 0
    assert run_dirs(folder, "long") == [long_dir]
    if short_before:  # finished before the interruption: not redone
        assert run_dirs(folder, "short") == short_before
    summary = json.loads((long_dir / "summary.json").read_text())
    assert summary["final_step"] == 40
    assert "resuming at step 20" in (long_dir / "train.log").read_text()
    rows = {r["run"]: r for r in read_csv(folder / "leaderboard.csv")}
    assert rows["long"]["status"] == "done" and rows["long"]["run_dir"] == str(long_dir)


def test_a_grid_point_drawn_twice_at_once_runs_in_the_earlier_trial_only():
    """Two workers draw the same grid point at the same moment and both see the other
    running: the earlier trial goes on, the later one is the duplicate (never both)."""
    import optuna
    from optuna.trial import TrialState

    from lorafit.search.study import _duplicate

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    first, second = study.ask(), study.ask()
    for t in (first, second):
        t.set_user_attr("name", "all")
    assert not _duplicate(study, first, "all") and _duplicate(study, second, "all")
    assert not _duplicate(study, second, "top")
    study.tell(first, state=TrialState.FAIL)  # a failed attempt is retried
    assert not _duplicate(study, second, "all")
    study.tell(second, 0.5)
    third = study.ask()
    assert _duplicate(study, third, "all")  # finished already
    third.set_user_attr("duplicate", True)
    study.tell(third, state=TrialState.PRUNED)
    fresh = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    dup = fresh.ask()
    dup.set_user_attr("name", "all")
    dup.set_user_attr("duplicate", True)
    fresh.tell(dup, state=TrialState.PRUNED)
    assert not _duplicate(fresh, fresh.ask(), "all")  # a pruned duplicate ran nothing
    pruned = fresh.ask()
    pruned.set_user_attr("name", "all")
    fresh.tell(pruned, state=TrialState.PRUNED)  # pruned by the pruner: it ran
    assert _duplicate(fresh, fresh.ask(), "all")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # trials asked by hand, not by optimize
def test_workers_finishing_at_once_start_no_trial_beyond_n_trials(tiny_model, small_csv, tmp_path):
    """Two workers finish together, each sees one trial missing and starts one: the earlier
    trial goes on, the later one is surplus (pruned before sampling, no run, not shown)."""
    import optuna
    from optuna.trial import TrialState

    from lorafit.search.leaderboard import trial_status
    from lorafit.search.study import _surplus, objective, open_study

    path = write_sweep(
        tmp_path / "tpe.yaml",
        base=tiny_base(tiny_model, small_csv),
        dir=str(tmp_path / "sweeps"),
        search={"sampler": "tpe", "n_trials": 3, "space": {"lora.r": {"int": [2, 8]}}},
    )
    plan = load_sweep(path)
    study = open_study(plan, 0)
    done, failed = study.ask(), study.ask()
    study.tell(done, 0.5)
    study.tell(failed, state=TrialState.FAIL)  # a failure does not count: its retry may run
    first, second, third = study.ask(), study.ask(), study.ask()
    assert not _surplus(plan, study, first) and not _surplus(plan, study, second)
    assert _surplus(plan, study, third)  # done + first + second make 3
    with pytest.raises(optuna.TrialPruned, match="3 trials are finished or under way"):
        objective(plan, third)
    study.tell(third, state=TrialState.PRUNED)
    (third,) = [t for t in study.get_trials() if t.number == third.number]
    assert third.user_attrs == {"surplus": True} and third.params == {}
    assert trial_status(third) is None
    assert not plan.folder.exists() or not any(plan.folder.glob("t*"))
    study.tell(first, state=TrialState.PRUNED)  # pruned by the pruner: it counts
    assert _surplus(plan, study, study.ask())
