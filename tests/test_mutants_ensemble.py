"""Direct, fast tests of ensemble.py's pure parts for mutation testing (`scripts/mutation.sh ensemble`).

No member is trained: the combining functions get probability matrices chosen here and are
checked against numpy written out by hand; the digest of the validation rows against hashlib
on the documented line format; the output name rules and the printed table against literal text.
"""

from __future__ import annotations

import hashlib
import json
import math
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
