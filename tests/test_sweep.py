"""`lorafit sweep`: planning (names, budget), running in worker processes, resuming, leaderboard."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lorafit.cli import main
from lorafit.errors import UserError
from lorafit.sweep import load_sweep, trial_name

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
    assert sorted(p.name for p in SWEEPS.glob("*.yaml")) == sorted(EXPECTED)


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


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"grid": {"lora.r": [2]}, "seeds": 3}, "unknown key 'seeds'"),
        ({}, "nothing to sweep"),
        ({"grid": {"lora.r": 4}}, "grid: lora.r: give a non-empty list"),
        ({"grid": {"lora.rank": [4]}}, "trial rank4: unknown key 'lora.rank'"),
        ({"grid": {"lora.r": [0]}}, "trial r0: lora.r: must be >= 1"),
        ({"grid": {"lora.r": [2]}, "metric": "speed"}, "metric 'speed' is not one of"),
        ({"runs": [{"name": "a"}, {"name": "a", "lora.r": 2}]}, "two trials are named 'a'"),
        ({"base": "missing.yaml", "grid": {"lora.r": [2]}}, "base: "),
        ({"base": {"train": {"lrr": 1}}, "grid": {"lora.r": [2]}}, "base: unknown key 'train.lrr'"),
    ],
)
def test_bad_sweep_files_name_the_file_and_key(spec, message, tiny_model, small_csv, tmp_path):
    spec.setdefault("base", tiny_base(tiny_model, small_csv))
    path = write_sweep(tmp_path / "bad.yaml", **spec)
    with pytest.raises(UserError) as e:
        load_sweep(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- running (slow: subprocesses)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_dirs(folder: Path, trial: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"{trial}-2*") if p.is_dir())


@pytest.mark.slow
def test_parallel_sweep_skips_over_budget_reports_failures_and_is_not_redone(
    tiny_model, small_csv, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two workers on shared cores
    path = write_sweep(
        tmp_path / "tiny.yaml",
        base=tiny_base(tiny_model, small_csv),
        dir=str(tmp_path / "sweeps"),
        runs=[
            {"name": "all", "lora.r": 2},
            {"name": "top", "lora.r": 4, "lora.layers": "1"},
            {"name": "big", "lora.r": 8},  # 3,236 > 2,500: skipped
            {"name": "nodata", "lora.r": 2, "data.train": str(tmp_path / "missing.csv")},
        ],
    )
    assert main(["sweep", str(path), "--parallel", "2"]) == 2  # the nodata trial fails
    err = capsys.readouterr().err
    assert "1 of 4 trials failed (nodata)" in err and err.count("\n") == 1
    folder = tmp_path / "sweeps" / "tiny"
    state = json.loads((folder / "sweep_state.json").read_text())["trials"]
    assert {n: e["status"] for n, e in state.items()} == {
        "all": "done",
        "top": "done",
        "big": "skipped",
        "nodata": "failed",
    }
    assert "missing.csv: file not found" in state["nodata"]["reason"]
    # two workers: the first two trials ran at the same time, in different processes
    a, b = state["all"], state["top"]
    assert a["started_at"] <= b["finished_at"] and b["started_at"] <= a["finished_at"]

    rows = read_csv(folder / "leaderboard.csv")
    assert [r["status"] for r in rows] == ["done", "done", "skipped", "failed"]
    assert float(rows[0]["val_accuracy"]) >= float(rows[1]["val_accuracy"])
    assert [r["rank"] for r in rows] == ["1", "2", "", ""]
    for r in rows[:2]:
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert float(r["val_accuracy"]) == summary["best_eval"]["eval_accuracy"]
        assert float(r["val_f1"]) == summary["best_eval"]["eval_f1"]
        assert int(r["trainable_params"]) == summary["params"]["trainable"]
        assert float(r["wall_time_s"]) == summary["wall_time_s"]
        assert Path(r["run_dir"]).parent == folder and summary["run_name"] == r["run"]
    assert {r["run"]: r["trainable_params"] for r in rows} == {
        "all": "1700",
        "top": "1700",
        "big": "3236",
        "nodata": "1700",
    }
    big = rows[2]
    assert (
        "exceed the budget of 2,500" in big["note"]
        and big["lora.r"] == "8"
        and not run_dirs(folder, "big")
    )
    md = (folder / "leaderboard.md").read_text()
    assert "2 done, 1 skipped, 1 failed" in md and "| 1 | `" + rows[0]["run"] + "` | done |" in md

    # the report shows the sweep's runs (`<folder>/*/`: run directories and `latest` only)
    page_path = tmp_path / "report.html"
    sweep_runs = [str(p) for p in folder.glob("*/")]
    assert (
        main(
            [
                "report",
                *sweep_runs,
                "--leaderboard",
                str(folder / "leaderboard.csv"),
                "--output",
                str(page_path),
            ]
        )
        == 0
    )
    page = page_path.read_text()
    assert page.count(">all</td>") >= 2 and page.count(">top</td>") >= 2  # runs table + leaderboard
    assert ">nodata</td>" in page and "exceed the budget" in page  # leaderboard only

    # run again: finished trials are kept, only the failed one is retried
    done_dirs = {n: run_dirs(folder, n) for n in ("all", "top")}
    assert all(len(d) == 1 for d in done_dirs.values())
    assert main(["sweep", str(path), "--parallel", "2"]) == 2
    assert {n: run_dirs(folder, n) for n in done_dirs} == done_dirs
    assert (folder / "nodata.log").read_text().count("==== lorafit sweep") == 2  # a second attempt
    assert (folder / "all.log").read_text().count("==== lorafit sweep") == 1


def _wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _state(folder: Path) -> dict:
    try:
        return json.loads((folder / "sweep_state.json").read_text())["trials"]
    except (OSError, ValueError, KeyError):
        return {}


@pytest.mark.slow
def test_interrupted_sweep_continues_only_the_unfinished_trial(
    tiny_model, small_csv, tmp_path, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = write_sweep(
        tmp_path / "tiny.yaml",
        base=tiny_base(tiny_model, small_csv),
        dir=str(tmp_path / "sweeps"),
        overrides={"lora.r": 2},
        runs=[
            {"name": "short"},
            {
                "name": "long",
                "train.max_steps": 400,
                "train.eval_every": 50,
                "train.checkpoint_every": 10,
                "train.patience": None,
            },
        ],
    )
    folder = tmp_path / "sweeps" / "tiny"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorafit", "sweep", str(path)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # wait until "short" is done and "long" has saved a resumable checkpoint, then Ctrl-C
        def long_has_checkpoint():
            assert proc.poll() is None, proc.communicate()[1]
            s = _state(folder)
            dirs = run_dirs(folder, "long")
            return (
                s.get("short", {}).get("status") == "done"
                and dirs
                and list(dirs[0].glob("checkpoints/step-*"))
            )

        _wait_for(long_has_checkpoint, 300, "the long trial's first checkpoint")
        worker_pid = _state(folder)["long"]["pid"]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    state = _state(folder)
    assert state["short"]["status"] == "done" and state["long"]["status"] == "interrupted"
    with pytest.raises(ProcessLookupError):  # the worker was stopped with the sweep
        _wait_for(lambda: os.kill(worker_pid, 0) and False, 30, "the worker to exit")
    (long_dir,) = run_dirs(folder, "long")
    assert not (long_dir / "summary.json").exists()
    (short_dir,) = run_dirs(folder, "short")
    short_mtime = (short_dir / "summary.json").stat().st_mtime

    assert main(["sweep", str(path)]) == 0
    state = _state(folder)
    assert state["long"]["status"] == "done" and state["long"]["run_dir"] == str(long_dir)
    assert run_dirs(folder, "long") == [long_dir] and run_dirs(folder, "short") == [short_dir]
    assert (short_dir / "summary.json").stat().st_mtime == short_mtime  # not redone
    summary = json.loads((long_dir / "summary.json").read_text())
    assert summary["final_step"] == 400
    assert "--resume" in state["long"]["command"]
    assert "resuming at step" in (long_dir / "train.log").read_text()
