"""`lorafit ensemble`: mean, weighted (fitted on validation) and vote, reuse of saved probabilities."""

from __future__ import annotations

import glob
import itertools
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lorafit.cli import main
from lorafit.ensemble import (
    ensemble,
    fit_weights,
    log_likelihood,
    majority_vote,
    mean_probabilities,
)
from lorafit.errors import UserError
from lorafit.train import train

# ---------------------------------------------------------------- combining (pure functions)


def test_mean_and_weighted_mean():
    a = np.array([[0.7, 0.3], [0.2, 0.8]])
    b = np.array([[0.1, 0.9], [0.4, 0.6]])
    np.testing.assert_allclose(mean_probabilities([a, b]), [[0.4, 0.6], [0.3, 0.7]])
    np.testing.assert_allclose(
        mean_probabilities([a, b], np.array([0.75, 0.25])), [[0.55, 0.45], [0.25, 0.75]]
    )


def test_vote_majority_and_ties_by_mean_probability():
    a = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.34, 0.33, 0.33]])
    b = np.array([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    c = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.1, 0.7, 0.2]])
    # rows 0 and 1: two votes for class 0; row 2: one vote each -> the highest mean (class 2)
    votes = majority_vote([a, b, c])
    assert votes[0] == 0 and votes[1] == 0
    means = mean_probabilities([a, b, c])[2]
    assert votes[2] == int(np.argmax(means)) == 2
    # a 1-1 tie between two classes goes to the higher mean, not the lower class index
    assert majority_vote([np.array([[0.55, 0.45]]), np.array([[0.1, 0.9]])])[0] == 1
    # the vote beats the mean when they disagree: two lukewarm votes outvote one confident member
    x = [np.array([[0.51, 0.49]]), np.array([[0.51, 0.49]]), np.array([[0.0, 1.0]])]
    assert majority_vote(x)[0] == 0 and mean_probabilities(x).argmax() == 1


def test_fitted_weights_maximise_validation_log_likelihood():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    good = np.full((300, 4), 0.1)
    good[np.arange(300), labels] = 0.7
    noisy = rng.dirichlet(np.ones(4), 300)
    medium = 0.5 * good + 0.5 * rng.dirichlet(np.ones(4), 300)
    probs = [noisy, good, medium]
    w = fit_weights(probs, labels)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1)
    best = log_likelihood(probs, labels, w)
    # no point of a fine grid over the simplex does better
    grid = [
        np.array([i, j, 20 - i - j]) / 20
        for i, j in itertools.product(range(21), repeat=2)
        if i + j <= 20
    ]
    assert best >= max(log_likelihood(probs, labels, g) for g in grid) - 1e-9
    assert w[1] > w[2] > w[0]
    # a perfect member takes (almost) all the weight
    perfect = np.eye(4)[labels] * 0.97 + 0.01
    assert fit_weights([noisy, perfect], labels)[1] > 0.99


# ---------------------------------------------------------------- members: real tiny runs


@pytest.fixture(scope="module")
def members(tiny_model, small_csv, tmp_path_factory) -> dict[str, Path]:
    """Three finished tiny runs: a and b share the validation split, c (seed 1) does not."""
    runs = tmp_path_factory.mktemp("runs")
    base = [
        f"model.name={tiny_model}",
        f"data.train={small_csv}",
        "data.val_size=40",
        "data.test=null",
        "model.max_length=64",
        "train.max_steps=8",
        "train.eval_every=4",
        "train.log_every=4",
        "train.batch_size=16",
        "train.lr=0.01",
        "log.progress=false",
        f"run.dir={runs}",
    ]
    extra = {
        "a": ["lora.r=2"],
        "b": ["lora.r=4", "train.lr=0.003"],
        "c": ["lora.r=2", "train.seed=1"],
    }
    return {name: train(None, [*base, *e, f"run.name={name}"]) for name, e in extra.items()}


@pytest.fixture
def labelled(ag_subset, tmp_path) -> Path:
    """300 real rows (not the training rows of the members), with labels."""
    path = tmp_path / "labelled.csv"
    ag_subset.groupby("label").tail(75)[["text", "label"]].to_csv(path, index=False)
    return path


def saved_probabilities(run: Path, stem: str) -> tuple[Path, np.ndarray]:
    (path,) = glob.glob(str(run / "predictions" / f"{stem}-*.csv"))
    return Path(path), pd.read_csv(path).filter(like="prob_").to_numpy()


def write_probabilities(path: Path, probs: np.ndarray) -> None:
    frame = pd.DataFrame(probs, columns=[f"prob_{i}" for i in range(probs.shape[1])])
    frame.insert(0, "Label", probs.argmax(-1))
    frame.insert(0, "ID", np.arange(len(probs)))
    frame.to_csv(path, index=False)


def test_mean_predicts_saves_and_scores(members, labelled, tmp_path, capsys):
    out = tmp_path / "sub.csv"
    assert (
        main(
            [
                "ensemble",
                str(members["a"]),
                str(members["b"]),
                "--input",
                str(labelled),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["ID", "Label"] and sub.ID.tolist() == list(range(300))
    # the members' probabilities were saved where `lorafit predict` saves them, and the
    # ensemble is the argmax of their average
    pa = saved_probabilities(members["a"], "labelled")[1]
    pb = saved_probabilities(members["b"], "labelled")[1]
    assert pa.shape == pb.shape == (300, 4)
    np.testing.assert_array_equal(sub.Label, ((pa + pb) / 2).argmax(-1))
    truth = pd.read_csv(labelled).label.to_numpy()
    for run, p in [(members["a"], pa), (members["b"], pb)]:
        line = next(x for x in printed.splitlines() if x.startswith(str(run)))
        assert line.split()[-1] == f"{(p.argmax(-1) == truth).mean():.4f}"
    ens_line = next(x for x in printed.splitlines() if x.startswith("ensemble (mean)"))
    assert ens_line.split()[-1] == f"{(sub.Label.to_numpy() == truth).mean():.4f}"


def test_saved_probabilities_are_reused_for_every_method(members, labelled, tmp_path, monkeypatch):
    a, b = members["a"], members["b"]
    ensemble([a, b], str(labelled), str(tmp_path / "first.csv"))  # predicts and saves
    # replace the saved probabilities with distinct ones; then forbid loading any model
    rng = np.random.default_rng(1)
    crafted = {}
    for run in (a, b):
        path, _ = saved_probabilities(run, "labelled")
        crafted[run] = rng.dirichlet(np.ones(4) * 0.5, 300)
        write_probabilities(path, crafted[run])
    truth = pd.read_csv(labelled).label.to_numpy()

    result = ensemble(
        [a, b], str(labelled), str(tmp_path / "weighted-first.csv"), method="weighted"
    )
    (val_a,), (val_b,) = (glob.glob(str(r / "predictions" / "validation-*.csv")) for r in (a, b))
    # validation-<rows digest>-<key>.csv: the same validation rows, the same digest; the key
    # (checkpoint, settings, dtype) is each member's own
    (digest_a, key_a), (digest_b, key_b) = (Path(v).stem.rsplit("-", 1) for v in (val_a, val_b))
    assert digest_a == digest_b and key_a != key_b
    val_labels = _validation_labels(a)
    write_probabilities(Path(val_a), np.eye(4)[val_labels] * 0.9 + 0.025)  # a: right on validation
    write_probabilities(Path(val_b), rng.dirichlet(np.ones(4), len(val_labels)))  # b: noise

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded although the probabilities were saved")

    # (the module through sys.modules: `lorafit.predict` is also the name of a function)
    monkeypatch.setattr(sys.modules["lorafit.predict"], "load_run_model", no_model)
    pa, pb = crafted[a], crafted[b]
    result = ensemble([a, b], str(labelled), str(tmp_path / "mean.csv"))
    np.testing.assert_array_equal(
        pd.read_csv(tmp_path / "mean.csv").Label, ((pa + pb) / 2).argmax(-1)
    )
    assert result["accuracy"] == pytest.approx((((pa + pb) / 2).argmax(-1) == truth).mean())
    assert result["members"][0]["accuracy"] == pytest.approx((pa.argmax(-1) == truth).mean())

    ensemble([a, b], str(labelled), str(tmp_path / "vote.csv"), method="vote")
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "vote.csv").Label, majority_vote([pa, pb]))

    result = ensemble([a, b], str(labelled), str(tmp_path / "weighted.csv"), method="weighted")
    wa, wb = (m["weight"] for m in result["members"])
    assert wa > 0.9 and wa + wb == pytest.approx(1) and result["validation"]["rows"] == 40
    assert result["validation"]["log_likelihood"] > result["validation"]["log_likelihood_uniform"]
    np.testing.assert_array_equal(
        pd.read_csv(tmp_path / "weighted.csv").Label, (wa * pa + wb * pb).argmax(-1)
    )


def _validation_labels(run: Path) -> np.ndarray:
    from lorafit.config import load_config
    from lorafit.data import load_splits

    cfg = load_config(run / "config.yaml")
    return load_splits(cfg.data, cfg.train.seed)["validation"].labels


def test_output_rules(members, labelled, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [
        "ensemble",
        str(members["a"]),
        str(members["b"]),
        "--input",
        str(labelled),
        "--method",
        "vote",
    ]
    assert main(args) == 0 and main(args) == 0  # the default name never overwrites
    assert (
        Path("ensemble-vote-labelled.csv").exists()
        and Path("ensemble-vote-labelled-2.csv").exists()
    )
    capsys.readouterr()
    Path("taken.csv").write_text("keep me\n")
    assert main([*args, "--output", "taken.csv"]) == 2
    assert "taken.csv: already exists" in capsys.readouterr().err
    assert Path("taken.csv").read_text() == "keep me\n"
    assert main([*args, "--output", "taken.csv", "--overwrite"]) == 0
    assert pd.read_csv("taken.csv").shape == (300, 2)


def test_refusals(members, labelled, tmp_path):
    a, b, c = members["a"], members["b"], members["c"]
    with pytest.raises(UserError, match="validation split of .* differs .* data.split_seed"):
        ensemble([a, c], str(labelled), str(tmp_path / "x.csv"), method="weighted")
    with pytest.raises(UserError, match="two or more run directories"):
        ensemble([a], str(labelled))
    with pytest.raises(UserError, match="is given twice"):
        ensemble([a, Path(str(a) + "/")], str(labelled))
    with pytest.raises(UserError, match="--method median"):
        ensemble([a, b], str(labelled), method="median")
    other = tmp_path / "other"
    shutil.copytree(b, other)
    saved = yaml.safe_load((other / "config.yaml").read_text())
    saved["data"]["label_names"][-1] = "Science"  # one class renamed
    (other / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(UserError, match="same classes"):
        ensemble([a, other], str(labelled))
    assert not list(tmp_path.glob("x.csv"))


def test_dtype_reaches_every_member(members, labelled, tmp_path):
    from lorafit.predict import predict_table

    a, b = members["a"], members["b"]
    for dtype in ("bf16", "fp32"):  # one of them differs from what auto resolves to here
        for run in (a, b):  # the members are shared with earlier tests: forget what they predicted
            for old in (run / "predictions").glob("labelled-*.csv"):
                old.unlink()
        result = ensemble([a, b], str(labelled), str(tmp_path / f"{dtype}.csv"), dtype=dtype)
        assert result["dtype"] == dtype
        probs = {}
        for run in (a, b):  # each member predicted in that dtype: its file has that dtype's key
            (saved,) = glob.glob(str(run / "predictions" / "labelled-*.csv"))
            probs[run], _, _, path = predict_table(run, str(labelled), dtype=dtype)
            assert Path(saved) == path
        np.testing.assert_array_equal(
            pd.read_csv(tmp_path / f"{dtype}.csv").Label, ((probs[a] + probs[b]) / 2).argmax(-1)
        )
    with pytest.raises(UserError, match="--dtype fp16"):
        ensemble([a, b], str(labelled), str(tmp_path / "bad.csv"), dtype="fp16")
    assert not (tmp_path / "bad.csv").exists()
