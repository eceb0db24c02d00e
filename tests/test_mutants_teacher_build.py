"""teacher/build.py's decisions, without training: the folds' strata, a member's rows file and
how it is read back, the `<run.dir>/<run.name>` link, the folds folder (new, resumed, refused),
which fold run is finished or resumable, and the ensemble folder's checks.

Used by the mutation run of teacher/build.py (`scripts/mutation.sh teacher.build`, the
functions under [tool.lorafit-mutation.functions]); docs/project/mutation.md lists what survives.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from lorafit.config import DataConfig, config_to_yaml, load_config
from lorafit.data.tables import value_strata
from lorafit.errors import UserError
from lorafit.teacher.build import (
    SETS_COLUMN,
    _fold_runs,
    _folds_folder,
    _read_as_written,
    _rows_frame,
    fold_strata,
    point_link,
    write_ensemble,
)


def _error(call, *args) -> str:
    with pytest.raises(UserError) as e:
        call(*args)
    return str(e.value)


# ------------------------------------------------------------------------ strata


def test_fold_strata_of_classes_are_the_classes():
    labels = np.array([2, 0, 1, 1])
    assert fold_strata(labels, "classification", 5).tolist() == [2, 0, 1, 1]


def test_fold_strata_of_values_are_quantile_bins_with_small_bins_merged():
    values = np.arange(20, dtype=np.float32)  # 20 // 4 = 5 rows a fold: 5 bins of 4 rows
    assert fold_strata(values, "regression", 4).tolist() == [b for b in range(5) for _ in range(4)]
    ties = np.array([0] * 7 + list(range(1, 10)), dtype=np.float32)
    bins = value_strata(ties, len(ties) // 3)
    assert bins.tolist() == [1] * 10 + [2] * 2 + [3] * 4
    # 3 folds need 3 rows a group: the bin of 2 rows becomes a group of its own past the others
    assert fold_strata(ties, "regression", 3).tolist() == [1] * 10 + [4] * 2 + [3] * 4
    assert fold_strata(np.ones(3, dtype=np.float32), "regression", 3).tolist() == [0, 0, 0]


def test_fold_strata_of_label_sets_are_the_rarest_labels():
    sets = np.array(
        [[1, 0], [1, 0], [1, 0], [1, 1], [1, 1], [0, 0], [0, 0]], dtype=np.float32
    )  # label 1 is the rarer: rows 3, 4; no label: rows 5, 6
    assert fold_strata(sets, "multi_label", 2).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert fold_strata(sets, "multi_label", 3).tolist() == [0, 0, 0, 3, 3, 3, 3]
    assert fold_strata(np.ones((4, 2), dtype=np.float32), "multi_label", 2).dtype == np.int64


# ------------------------------------------------------------------------ a member's rows


class _Rows:
    def __init__(self, texts, labels, pairs=None):
        self.texts, self.labels, self.pairs = texts, np.asarray(labels), pairs


def _data(task, **keys):
    data = DataConfig(**keys)
    data._task = task
    return data


def test_a_members_rows_name_their_classes_values_and_label_sets():
    data = _data("classification", text_column="t", label_column="y", label_names=["a", "b"])
    frame = _rows_frame(_Rows(["x", "z"], [1, 0]), data)
    assert frame.to_dict("list") == {"t": ["x", "z"], "y": ["b", "a"]}
    pairs = _data(
        "classification", text_column=["s1", "s2"], label_column="y", label_names=["a", "b"]
    )
    frame = _rows_frame(_Rows(["x", "z"], [0, 1], pairs=["p", "q"]), pairs)
    assert frame.to_dict("list") == {"s1": ["x", "z"], "s2": ["p", "q"], "y": ["a", "b"]}
    values = _data("regression", text_column="t", label_column="score", label_names=["score"])
    frame = _rows_frame(_Rows(["x"], np.array([2.5], dtype=np.float32)), values)
    assert frame.to_dict("list") == {"t": ["x"], "score": [2.5]}
    assert type(frame.score[0]) is np.float64
    sets = _data(
        "multi_label", text_column="t", label_column=None, label_names=["joy", "fear", "ok"]
    )
    frame = _rows_frame(_Rows(["x", "z"], [[1, 0, 1], [0, 0, 0]]), sets)
    assert frame.to_dict("list") == {"t": ["x", "z"], SETS_COLUMN: [["joy", "ok"], []]}
    named = _data("multi_label", text_column="t", label_column="emo", label_names=["joy", "fear"])
    assert list(_rows_frame(_Rows(["x"], [[0, 1]]), named)) == ["t", "emo"]


def test_a_member_reads_its_rows_file_with_the_settled_columns():
    member = DataConfig(train="elsewhere.csv", encoding="latin-1", label_columns=["joy", "fear"])
    data = _data(
        "multi_label",
        text_column="t",
        label_column=None,
        label_columns=["joy", "fear"],
        label_names=["joy", "fear"],
        label_format="names",
    )
    out = _read_as_written(member, data)
    assert (out.text_column, out.label_column, out.label_columns) == ("t", SETS_COLUMN, None)
    assert (out.label_names, out.label_format, out.encoding) == (["joy", "fear"], "names", "utf-8")
    assert out.train == "elsewhere.csv" and out._task == "multi_label"
    assert out.label_names is not data.label_names
    plain = _data("classification", text_column="t", label_column="y", label_names=["a", "b"])
    out = _read_as_written(DataConfig(), plain)
    assert (out.label_column, out._task, out.label_format) == ("y", "classification", "auto")
    sets_by_name = _data("multi_label", text_column="t", label_column="emo", label_names=["a"])
    assert _read_as_written(DataConfig(), sets_by_name).label_column == "emo"


# ------------------------------------------------------------------------ folders and links


def test_point_link_names_the_newest_run_and_leaves_real_folders_alone(tmp_path):
    first, second = tmp_path / "teacher-1", tmp_path / "teacher-2"
    first.mkdir(), second.mkdir()
    link = tmp_path / "teacher"
    assert point_link(first, link) == link
    assert os.readlink(link) == "teacher-1" and link.resolve() == first.resolve()
    assert point_link(second, link) == link
    assert os.readlink(link) == "teacher-2"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    real = tmp_path / "mine"
    real.mkdir()
    assert point_link(first, real) is None and real.is_dir() and not real.is_symlink()
    assert point_link(first, tmp_path / "missing" / "teacher") is None  # cannot be made


def test_the_folds_folder_is_new_resumed_with_the_same_plan_or_refused(tmp_path, caplog):
    cfg = load_config(None, [f"run.dir={tmp_path / 'runs'}", "run.name=t"])
    plan = {"folds": 3, "rows": "abc", "path": Path("/x")}
    made = _folds_folder(cfg, None, plan)
    assert made.parent == tmp_path / "runs" and made.name.startswith("t-folds-")
    assert json.loads((made / "plan.json").read_text()) == {"folds": 3, "rows": "abc", "path": "/x"}
    out = tmp_path / "new" / "out"
    assert _folds_folder(cfg, out, plan) == out and (out / "plan.json").is_file()
    caplog.set_level("INFO", logger="lorafit")
    assert _folds_folder(cfg, str(out), plan) == out  # the same plan: resumed
    assert caplog.messages == [f"teacher: resuming the cross-fitted build in {out}"]
    refused = (
        f"--output {out}: already exists and is not an unfinished build of this teacher (same "
        "config, rows and --folds); choose a new folder"
    )
    assert _error(_folds_folder, cfg, out, {**plan, "folds": 4}) == refused
    (out / "plan.json").write_text("{not json")
    assert _error(_folds_folder, cfg, out, plan) == refused
    (out / "plan.json").unlink()
    assert _error(_folds_folder, cfg, out, plan) == refused


def test_a_fold_run_is_finished_resumable_or_neither(tmp_path):
    def run(name, *parts):
        path = tmp_path / name
        path.mkdir()
        for part in parts:
            (path / part).mkdir() if "." not in part else (path / part).write_text("{}")
        return path

    assert _fold_runs(tmp_path, 0) == (None, None)
    half = run("fold-0-20261201-000000", "checkpoints")
    assert _fold_runs(tmp_path, 0) == (None, half)
    newer = run("fold-0-20261202-000000", "checkpoints")
    assert _fold_runs(tmp_path, 0) == (None, newer)
    done = run("fold-0-20261203-000000", "summary.json", "checkpoint-best")
    assert _fold_runs(tmp_path, 0) == (done, None)  # finished: nothing to resume
    run("fold-0-20261204-000000", "summary.json")  # no best checkpoint: not finished
    run("fold-0-20261205-000000", "checkpoint-best")
    assert _fold_runs(tmp_path, 0) == (done, None)
    run("fold-1-20261201-000000", "checkpoints", "summary.json")  # ended: not resumable
    assert _fold_runs(tmp_path, 1) == (None, None)
    other = run("fold-10-20261201-000000", "checkpoints")
    assert _fold_runs(tmp_path, 10) == (None, other) and _fold_runs(tmp_path, 2) == (None, None)


# ------------------------------------------------------------------------ an ensemble folder


def _fake_run(path: Path, *overrides: str) -> Path:
    """A finished run as the ensemble folder checks it: config.yaml and checkpoint-best/."""
    path.mkdir(parents=True)
    cfg = load_config(None, ["data.label_names=[a,b]", *overrides])
    (path / "config.yaml").write_text(config_to_yaml(cfg))
    (path / "checkpoint-best").mkdir()
    return path


def test_an_ensemble_folder_lists_its_checked_members(tmp_path, monkeypatch):
    a, b = _fake_run(tmp_path / "a"), _fake_run(tmp_path / "b")
    folder = write_ensemble([str(a), str(b)], tmp_path / "ens")
    written = json.loads((folder / "teacher.json").read_text())
    assert written["members"] == [str(a.resolve()), str(b.resolve())]
    assert written["label_names"] == ["a", "b"]
    assert written["combine"] == "mean of the members' probabilities"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", written["created_at"])
    assert (folder / "README.md").read_text() == (
        "# An ensemble teacher (lorafit teacher --ensemble)\n\nUse it as `train.teacher="
        f"{folder}`: the mean of the probabilities of\n\n- `{a.resolve()}`\n- `{b.resolve()}`\n"
    )
    nested = write_ensemble([str(a), str(b)], tmp_path / "x" / "y" / "ens")
    assert (nested / "teacher.json").is_file()
    monkeypatch.chdir(tmp_path)
    default = write_ensemble([str(a), str(b)])
    assert default.parent == Path("runs") and default.name.startswith("teacher-ensemble-")


def test_an_ensemble_of_unfit_runs_is_refused_in_one_line(tmp_path):
    a, b = _fake_run(tmp_path / "a"), _fake_run(tmp_path / "b")
    two = "lorafit teacher --ensemble: give two or more different run directories"
    assert _error(write_ensemble, [str(a)]) == two
    assert _error(write_ensemble, [str(a), str(tmp_path / "b" / ".." / "a")]) == two
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.yaml").write_text((a / "config.yaml").read_text())
    assert _error(write_ensemble, [str(a), str(half)]) == (
        f"lorafit teacher --ensemble: {half} is not a finished lorafit run (config.yaml + "
        "checkpoint-best/)"
    )
    other = _fake_run(tmp_path / "c", "data.label_names=[b,a]")
    assert "differ from the student's data.label_names" in _error(
        write_ensemble, [str(a), str(other)]
    )
    regression = _fake_run(tmp_path / "r", "task=regression", "data.label_names=[y]")
    assert "it is a regression model, the student a classification" in _error(
        write_ensemble, [str(a), str(regression)]
    )
    taken = tmp_path / "taken"
    taken.mkdir()
    assert _error(write_ensemble, [str(a), str(b)], taken) == (
        f"--output {taken}: already exists; choose a new folder"
    )
    assert list(taken.iterdir()) == []
