"""Regression (`task: regression`): the published STS-B files end to end, and the arithmetic
against oracles that are not lorafit (scipy, scikit-learn, a hand-written loss)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from lorafit.cli import main
from lorafit.config import load_config
from lorafit.data import load_splits
from lorafit.data.labels import label_values
from lorafit.data.tables import value_strata
from lorafit.errors import UserError
from lorafit.metrics import regression_metrics, task_metrics
from lorafit.train import task_loss

from .conftest import AG_HEAD, FOREIGN, ROOT

STSB = FOREIGN / "glue_stsb"
STSB_CONFIG = ROOT / "configs" / "stsb.yaml"


def stsb_overrides(tiny_model, runs, *extra):
    return [
        f"model.name={tiny_model}",
        "model.max_length=48",
        f"data.train={STSB / 'train.tsv'}",
        f"data.validation={STSB / 'dev.tsv'}",
        "data.max_train_rows=192",
        "train.max_steps=6",
        "train.eval_every=3",
        "train.batch_size=16",
        "train.warmup_steps=0",
        "train.lr=3e-3",
        "log.progress=false",
        f"run.dir={runs}",
        *extra,
    ]


# ---------------------------------------------------------------- oracles


def test_metrics_match_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 6, 400).astype(np.float32) * 1.0  # ties, as STS-B's 0.0 / 5.0
    pred = true + rng.normal(0, 1.3, 400) ** 3 / 4  # monotone-distorting noise: Pearson != Spearman
    m = regression_metrics(pred, true)
    assert m["pearson"] == pytest.approx(pearsonr(pred, true).statistic, abs=1e-9)
    assert m["spearman"] == pytest.approx(spearmanr(pred, true).statistic, abs=1e-9)
    assert abs(m["pearson"] - m["spearman"]) > 0.01  # the data tell the two apart
    assert m["mse"] == pytest.approx(mean_squared_error(true, pred))
    assert m["loss"] == m["mse"]
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(true, pred)))
    assert m["mae"] == pytest.approx(mean_absolute_error(true, pred))
    assert m["r2"] == pytest.approx(r2_score(true, pred))
    assert m["rows"] == 400 and m["task"] == "regression"


def test_constant_predictions_have_zero_correlation_and_scatter_points_are_capped():
    true = np.linspace(0, 5, 12000)
    m = regression_metrics(np.full(12000, 2.5), true)
    assert m["pearson"] == 0.0 and m["spearman"] == 0.0
    assert (
        len(m["points"]["true"]) == 5000
        and m["points"]["true"][0] == 0.0
        and m["points"]["true"][-1] == 5.0
    )
    small = regression_metrics(true[:10] + 1, true[:10])
    assert small["points"]["predicted"] == pytest.approx(list(true[:10] + 1), abs=1e-5)


def test_metrics_at_small_scales_and_with_constant_labels():
    rng = np.random.default_rng(3)
    true = rng.normal(0, 1e-3, 300)  # the vectors' norms are far below 1
    pred = true + rng.normal(0, 1e-3, 300)
    m = regression_metrics(pred, true)
    assert (
        m["pearson"] == pytest.approx(pearsonr(pred, true).statistic, abs=1e-9)
        and m["pearson"] > 0.5
    )
    summary = {k: m[k] for k in ("label_mean", "label_std", "prediction_mean", "prediction_std")}
    assert summary == pytest.approx(
        {
            "label_mean": true.mean(),
            "label_std": true.std(),
            "prediction_mean": pred.mean(),
            "prediction_std": pred.std(),
        }
    )
    flat = regression_metrics(np.array([1.0, 2.0, 3.0]), np.full(3, 2.0))
    assert flat["r2"] == 0.0 and flat["pearson"] == 0.0 and flat["mse"] == pytest.approx(2 / 3)
    exact = regression_metrics(np.arange(5000) / 7, np.arange(5000) / 3)
    assert (
        len(exact["points"]["true"]) == 5000 and exact["points"]["true"][1] == 0.33333
    )  # every row, 5 decimals
    assert exact["points"]["predicted"][1] == 0.14286


def test_task_metrics_reads_the_one_output_column():
    outputs = np.array([[0.5], [2.0], [3.5]], dtype=np.float32)
    m = task_metrics("regression", outputs, np.array([1.0, 2.0, 3.0]), ["score"])
    assert m["mse"] == pytest.approx(((0.5 - 1) ** 2 + 0 + 0.5**2) / 3)
    assert m["label_names"] == ["score"]


def test_regression_loss_is_the_mean_squared_error_by_hand():
    cfg = load_config(None, ["task=regression"])
    logits = torch.tensor([[1.0], [2.5], [-1.0], [4.0]])
    labels = torch.tensor([0.5, 3.0, 0.0, 4.0])
    by_hand = sum((a - b) ** 2 for a, b in zip([1.0, 2.5, -1.0, 4.0], [0.5, 3.0, 0.0, 4.0])) / 4
    assert task_loss(cfg, logits, labels, None).item() == pytest.approx(by_hand)


# ---------------------------------------------------------------- data and config


def test_labels_read_as_numbers_with_row_errors():
    assert label_values(["5.000", "3.8", 1, "0"], "f.tsv").tolist() == pytest.approx(
        [5.0, 3.8, 1.0, 0.0]
    )
    for bad, row, what in (
        (["1", "high"], 2, "not a number"),
        (["1", ""], 2, "empty"),
        (["inf"], 1, "finite"),
    ):
        with pytest.raises(UserError, match=rf"f.tsv: row {row}: .*{what}"):
            label_values(bad, "f.tsv")


def test_stsb_as_published_is_read_with_float_scores():
    cfg = load_config(
        STSB_CONFIG, [f"data.train={STSB / 'train.tsv'}", f"data.validation={STSB / 'dev.tsv'}"]
    )
    splits = load_splits(cfg.data, 42)
    assert len(splits["train"]) == 5749 and len(splits["validation"]) == 1500
    assert splits["train"].labels.dtype == np.float32
    assert splits["train"].labels.mean() == pytest.approx(2.701, abs=1e-3)  # PROVENANCE.md
    assert cfg.data.label_names == ["score"]  # the one output, named after the column


def test_value_split_keeps_the_spread_of_the_values():
    cfg = load_config(
        STSB_CONFIG,
        [
            f"data.train={STSB / 'train.tsv'}",
            "data.validation=null",
            "data.val_size=600",
            "data.test_size=600",
        ],
    )
    splits = load_splits(cfg.data, 42)
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [4549, 600, 600]
    everything = np.concatenate([splits[k].labels for k in ("train", "validation", "test")])
    edges = np.quantile(everything, [0.1 * i for i in range(1, 10)])
    for name in ("validation", "test"):  # each decile of the values keeps its share (+-1.5 points)
        share = (
            np.bincount(np.searchsorted(edges, splits[name].labels, side="right"), minlength=10)
            / 600
        )
        whole = np.bincount(np.searchsorted(edges, everything, side="right"), minlength=10) / len(
            everything
        )
        assert np.abs(share - whole).max() < 0.015
    again = load_splits(
        load_config(
            STSB_CONFIG,
            [
                f"data.train={STSB / 'train.tsv'}",
                "data.validation=null",
                "data.val_size=600",
                "data.test_size=600",
            ],
        ).data,
        42,
    )
    assert again["validation"].texts == splits["validation"].texts


def test_scores_read_as_classes_get_a_hint_to_set_the_task(caplog):
    caplog.set_level("WARNING", logger="lorafit")
    cfg = load_config(
        STSB_CONFIG,
        [
            f"data.train={STSB / 'train.tsv'}",
            "data.validation=null",
            "data.val_size=0.5",
            "task=classification",
            "train.metric=auto",
        ],
    )
    with pytest.raises(UserError, match="cannot stratify"):  # 141 classes, many of one row
        load_splits(cfg.data, 42)
    assert (
        "holds 193 distinct numbers, some fractional (0.067, 0.118, 0.143, ...)" in caplog.text
        and "set task: regression" in caplog.text
    )
    caplog.clear()
    ids = load_config(None, [f"data.train={AG_HEAD}"])
    load_splits(ids.data, 42)  # four integer classes: no hint
    assert "task: regression" not in caplog.text


def test_value_strata_fall_back_when_bins_cannot_hold_two_rows():
    assert value_strata(np.arange(20.0), 5).max() == 4  # 5 bins for 5 validation rows
    assert value_strata(np.array([0.0, 1.0, 2.0]), 1) is None  # too few rows: a plain split


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["train.metric=eval_accuracy"], "train.metric"),
        (["train.class_weights=balanced"], "train.class_weights"),
        (["train.label_smoothing=0.1"], "train.label_smoothing"),
        (["data.label_names=[low,high]"], "data.label_names"),
    ],
)
def test_what_a_regression_cannot_take_is_refused_by_its_key(overrides, key):
    with pytest.raises(UserError, match=rf"^config \(.*\): {key}: "):
        load_config(None, ["task=regression", *overrides])


def test_a_classification_refuses_a_regression_metric():
    with pytest.raises(UserError, match="train.metric: eval_pearson scores a regression"):
        load_config(None, ["train.metric=eval_pearson"])


def test_a_non_number_label_names_its_row(tiny_model, tmp_path):
    bad = tmp_path / "bad.tsv"
    frame = pd.read_csv(STSB / "train.tsv", sep="\t", quoting=3, dtype=str).head(50)
    frame.loc[7, "score"] = "n/a"
    frame.to_csv(bad, sep="\t", index=False, quoting=3)
    with pytest.raises(UserError, match=r"bad.tsv: row 8: label 'n/a' is not a number"):
        load_splits(
            load_config(
                STSB_CONFIG, [f"data.train={bad}", "data.validation=null", "data.val_size=10"]
            ).data,
            42,
        )


# ---------------------------------------------------------------- end to end


def test_stsb_trains_evaluates_predicts_and_reports(tiny_model, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert (
        main(
            [
                "train",
                "--config",
                str(STSB_CONFIG),
                *stsb_overrides(tiny_model, runs, "data.test_size=100"),
            ]
        )
        == 0
    )
    run = (runs / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "regression" and summary["metric"] == "eval_pearson"
    assert (
        summary["params"]["trainable"]
        == json.loads((run / "model_description.json").read_text())["params"]["trainable"]
    )
    assert yaml.safe_load((run / "config.yaml").read_text())["task"] == "regression"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert {"eval_pearson", "eval_spearman", "eval_loss"} <= set(
        evals[0]
    ) and "eval_accuracy" not in evals[0]
    best = max(evals, key=lambda r: r["eval_pearson"])
    assert summary["best_step"] == best["step"]  # the checkpoint is chosen by Pearson
    test = next(r for r in rows if r["kind"] == "test")
    assert set(test) >= {"test_pearson", "test_spearman", "test_loss"}
    assert (run / "plots" / "scatter_test-heldout.png").is_file()
    held_out = json.loads((run / "evaluations" / "test-heldout.json").read_text())
    assert (
        held_out["rows"] == 100
        and held_out["input"] == f"100 rows held out of {STSB / 'train.tsv'} (data.test_size=100)"
    )
    assert (run / "plots" / "correlation.png").is_file()
    assert "Pearson" in (run / "training_log.txt").read_text()

    capsys.readouterr()
    assert main(["evaluate", str(run), "--input", str(STSB / "dev.tsv"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["rows"] == 1500 and metrics["task"] == "regression"

    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run), "--input", str(STSB / "dev.tsv"), "--output", str(out)]) == 0
    written = pd.read_csv(out)
    assert len(written) == 1500 and written.Label.dtype == np.float64
    assert written.Label.nunique() > 100  # numbers, not classes
    true = pd.read_csv(STSB / "dev.tsv", sep="\t", quoting=3).score.to_numpy()
    # the evaluation's figures are those of the written predictions (6 significant digits)
    assert metrics["pearson"] == pytest.approx(pearsonr(written.Label, true).statistic, abs=1e-5)
    assert metrics["spearman"] == pytest.approx(spearmanr(written.Label, true).statistic, abs=1e-4)

    hidden = tmp_path / "hidden.csv"  # GLUE's test file has no score column
    assert (
        main(["predict", str(run), "--input", str(STSB / "test.tsv"), "--output", str(hidden)]) == 0
    )
    assert len(pd.read_csv(hidden)) == 1379

    import lorafit  # in Python: numbers for pairs of strings in memory

    dev = pd.read_csv(STSB / "dev.tsv", sep="\t", quoting=3).head(4)
    result = lorafit.predict(run, texts=dev.sentence1.tolist(), pairs=dev.sentence2.tolist())
    assert result["labels"] == pytest.approx(
        written.Label.tolist()[:4], abs=1e-3
    )  # other batches: other padding

    page = tmp_path / "report.html"
    assert main(["report", str(run), "--output", str(page)]) == 0
    html = page.read_text()
    assert "best val Pearson" in html and "test Pearson" in html and "Validation Pearson" in html


def test_ensemble_of_regressions_averages_values(tiny_model, tmp_path, capsys):
    runs = tmp_path / "runs"
    dirs = []
    for seed in (1, 2):
        assert (
            main(
                [
                    "train",
                    "--config",
                    str(STSB_CONFIG),
                    *stsb_overrides(tiny_model, runs, f"train.seed={seed}", f"run.name=s{seed}"),
                ]
            )
            == 0
        )
        dirs.append(str((runs / "latest").resolve()))
    dev = tmp_path / "dev.tsv"
    pd.read_csv(STSB / "dev.tsv", sep="\t", quoting=3).head(200).to_csv(
        dev, sep="\t", index=False, quoting=3
    )
    members = []
    for i, d in enumerate(dirs):
        out = tmp_path / f"m{i}.csv"
        assert main(["predict", d, "--input", str(dev), "--output", str(out)]) == 0
        members.append(pd.read_csv(out).Label.to_numpy())
    out = tmp_path / "ensemble.csv"
    assert main(["ensemble", *dirs, "--input", str(dev), "--output", str(out)]) == 0
    assert pd.read_csv(out).Label.to_numpy() == pytest.approx(
        (members[0] + members[1]) / 2, abs=1e-4
    )
    capsys.readouterr()
    assert (
        main(
            [
                "ensemble",
                *dirs,
                "--input",
                str(dev),
                "--output",
                str(tmp_path / "w.csv"),
                "--method",
                "vote",
            ]
        )
        == 2
    )
    assert "a regression ensemble averages" in capsys.readouterr().err


def test_latent_regression_trains_on_the_activation_cache(tiny_model, tmp_path, caplog):
    runs = tmp_path / "runs"
    caplog.set_level("INFO", logger="lorafit")
    args = stsb_overrides(
        tiny_model,
        runs,
        "lora.layers=1",
        "train.cache_activations=true",
        f"train.cache_dir={tmp_path / 'cache'}",
    )
    assert main(["train", "--config", str(STSB_CONFIG), *args]) == 0
    assert "activation cache: building" in caplog.text
    summary = json.loads(((runs / "latest") / "summary.json").read_text())
    assert summary["metric"] == "eval_pearson" and summary["best_value"] is not None
