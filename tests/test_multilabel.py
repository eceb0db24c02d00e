"""Multi-label (`task: multi_label`): GoEmotions as published end to end, label sets read from
every form they come in, and the arithmetic against oracles that are not lorafit
(scikit-learn, a brute-force threshold search, a hand-written loss)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from lorafit.cli import main
from lorafit.config import load_config
from lorafit.data import load_splits
from lorafit.data.labels import label_sets, set_names
from lorafit.errors import UserError
from lorafit.metrics import (
    THRESHOLD_GRID,
    multilabel_metrics,
    sigmoid,
    task_metrics,
    tune_thresholds,
)
from lorafit.train import task_loss

from .conftest import FOREIGN, ROOT

GO = FOREIGN / "goemotions"
GO_CONFIG = ROOT / "configs" / "goemotions.yaml"
NAMES = (GO / "labels.txt").read_text().split()


def go_overrides(tiny_model, runs, *extra):
    return [
        f"model.name={tiny_model}",
        "model.max_length=32",
        f"data.train={GO / 'train.tsv'}",
        f"data.validation={GO / 'dev.tsv'}",
        "data.test=null",
        "data.max_train_rows=256",
        "train.max_steps=6",
        "train.eval_every=3",
        "train.batch_size=32",
        "train.warmup_steps=0",
        "train.lr=3e-3",
        "train.eval_batch_size=256",
        "log.progress=false",
        f"run.dir={runs}",
        *extra,
    ]


def small_dev(tmp_path, rows=300, split="dev"):
    dev = tmp_path / f"{split}_small.tsv"
    with open(GO / f"{split}.tsv", encoding="utf-8") as f:
        dev.write_text("".join(f.readlines()[:rows]), encoding="utf-8")
    return dev


# ---------------------------------------------------------------- oracles


def random_problem(seed=0, rows=600, labels=6):
    rng = np.random.default_rng(seed)
    truth = (rng.random((rows, labels)) < np.linspace(0.05, 0.5, labels)).astype(np.float32)
    noise = truth * rng.uniform(0.1, 0.6, (rows, labels)) + rng.uniform(0, 0.5, (rows, labels))
    probs = np.clip(
        noise + np.linspace(-0.1, 0.35, labels), 0, 1
    )  # each label scored on its own scale
    return probs.astype(np.float32), truth


@pytest.mark.parametrize("average", ["macro", "micro"])
def test_global_threshold_is_the_brute_force_best(average):
    probs, truth = random_problem()
    best_t, best_f1 = None, -1.0
    for t in THRESHOLD_GRID:  # the oracle: scikit-learn's F1 at every candidate, first best wins
        f1 = f1_score(truth, probs >= t, average=average, zero_division=0)
        if f1 > best_f1 + 1e-12:
            best_t, best_f1 = t, f1
    chosen = tune_thresholds(probs, truth, "global", average)
    assert set(chosen) == {best_t}
    assert multilabel_metrics(probs, truth, list("abcdef"), chosen)[
        f"{average}_f1"
    ] == pytest.approx(best_f1)


def test_per_label_thresholds_are_each_labels_brute_force_best():
    probs, truth = random_problem(seed=1)
    chosen = tune_thresholds(probs, truth, "per_label")
    for k in range(truth.shape[1]):
        scores = [f1_score(truth[:, k], probs[:, k] >= t, zero_division=0) for t in THRESHOLD_GRID]
        assert chosen[k] == THRESHOLD_GRID[int(np.argmax(scores))]
    assert len(set(chosen)) > 1  # the labels' rates differ, so do their thresholds
    assert tune_thresholds(probs, truth, 0.3).tolist() == [0.3] * truth.shape[1]


def test_metrics_match_scikit_learn_at_the_given_thresholds():
    probs, truth = random_problem(seed=2)
    thresholds = np.array([0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    m = multilabel_metrics(probs, truth, list("abcdef"), thresholds)
    pred = probs >= thresholds
    assert m["micro_f1"] == pytest.approx(f1_score(truth, pred, average="micro"))
    assert m["macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro"))
    assert m["per_class"]["c"]["f1"] == pytest.approx(f1_score(truth[:, 2], pred[:, 2]))
    assert (
        m["per_class"]["c"]["support"] == int(truth[:, 2].sum())
        and m["per_class"]["c"]["threshold"] == 0.4
    )
    assert m["exact_match"] == pytest.approx(float((pred == (truth > 0)).all(axis=1).mean()))
    by_hand = -np.mean(
        truth * np.log(np.clip(probs, 1e-7, 1)) + (1 - truth) * np.log(np.clip(1 - probs, 1e-7, 1))
    )
    assert m["loss"] == pytest.approx(by_hand, rel=1e-5)


def test_thresholds_apply_to_probabilities_not_logits():
    logits = np.array([[0.2, -0.2], [2.0, -3.0]], dtype=np.float32)  # sigmoid(0.2) = 0.55
    m = task_metrics(
        "multi_label", logits, np.array([[1, 0], [1, 0]], dtype=np.float32), ["a", "b"], [0.5, 0.5]
    )
    assert m["macro_f1"] == pytest.approx(
        f1_score([[1, 0], [1, 0]], [[1, 0], [1, 0]], average="macro", zero_division=0)
    )
    assert m["per_class"]["a"]["recall"] == 1.0  # 0.2 as a probability would be below 0.5


def test_multilabel_loss_is_the_binary_cross_entropy_by_hand():
    cfg = load_config(None, ["task=multi_label"])
    logits = torch.tensor([[1.5, -0.5, 0.0], [-2.0, 3.0, 0.7]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    terms = []
    for x, y in zip(logits.flatten().tolist(), labels.flatten().tolist()):
        p = 1 / (1 + math.exp(-x))
        terms.append(-(y * math.log(p) + (1 - y) * math.log(1 - p)))
    assert task_loss(cfg, logits, labels, None).item() == pytest.approx(
        sum(terms) / len(terms), rel=1e-6
    )


# ---------------------------------------------------------------- label sets as they come


def test_label_sets_keep_every_label_of_a_row():
    sets = label_sets(["4,27", "27", "", "0, 1"], "f.tsv", [str(i) for i in range(28)])
    assert sets.shape == (4, 28) and sets[0, [4, 27]].tolist() == [1, 1] and sets[0].sum() == 2
    assert sets[2].sum() == 0  # an empty cell: a row with none of the labels
    assert sets[3, [0, 1]].tolist() == [1, 1]
    named = label_sets(
        ["joy, love", ["anger"], np.array(["joy"])], "f.tsv", ["anger", "joy", "love"]
    )
    assert named.tolist() == [[0, 1, 1], [1, 0, 0], [0, 1, 0]]
    with pytest.raises(UserError, match=r"f.tsv: row 2: label 'hope' is not one of the classes"):
        label_sets(["joy", "love,hope"], "f.tsv", ["anger", "joy", "love"])
    assert set_names(["b,a", "c", ""], "f.tsv") == ["a", "b", "c"]


def test_goemotions_as_published_reads_every_label_of_every_row():
    cfg = load_config(
        GO_CONFIG,
        [
            f"data.train={GO / 'train.tsv'}",
            f"data.validation={GO / 'dev.tsv'}",
            f"data.test={GO / 'test.tsv'}",
        ],
    )
    splits = load_splits(cfg.data, 42)
    train = splits["train"].labels
    # GoEmotions' PROVENANCE.md: rows with 1/2/3/4/5 labels, and the commonest and rarest labels
    assert np.bincount(train.sum(1).astype(int)).tolist() == [0, 36308, 6541, 532, 28, 1]
    assert (
        train[:, NAMES.index("neutral")].sum() == 14219
        and train[:, NAMES.index("grief")].sum() == 77
    )
    assert cfg.data.label_names == NAMES and cfg.data.label_format == "ids"
    assert len(splits["validation"]) == 5426 and len(splits["test"]) == 5427


def test_parquet_lists_and_named_labels(tmp_path):
    frame = pd.DataFrame(
        {
            "text": [f"row {i} text" for i in range(60)],
            "labels": [
                ["joy", "love"] if i % 3 == 0 else ["anger"] if i % 3 == 1 else []
                for i in range(60)
            ],
        }
    )
    frame.to_parquet(tmp_path / "sets.parquet")
    cfg = load_config(
        None, ["task=multi_label", f"data.train={tmp_path / 'sets.parquet'}", "data.val_size=12"]
    )
    splits = load_splits(cfg.data, 0)
    assert cfg.data.label_names == ["anger", "joy", "love"] and cfg.data.label_format == "names"
    both = np.concatenate([splits["train"].labels, splits["validation"].labels])
    assert both.sum(0).tolist() == [20, 20, 20] and (both.sum(1) == 0).sum() == 20


def google_full_layout(tmp_path, rows=400):
    """GoEmotions' rows in the layout of Google's raw release (full_dataset/goemotions_*.csv:
    text, id, then one 0/1 column per emotion)."""
    frame = pd.read_csv(
        GO / "dev.tsv", sep="\t", header=None, quoting=3, names=["text", "ids", "id"], dtype=str
    ).head(rows)
    sets = label_sets(frame.ids.tolist(), "dev", [str(i) for i in range(28)]).astype(int)
    wide = pd.concat([frame[["text", "id"]], pd.DataFrame(sets, columns=NAMES)], axis=1)
    path = tmp_path / "goemotions_wide.csv"
    wide.to_csv(path, index=False)
    return path, frame


def test_one_column_per_label_reads_like_the_label_sets(tmp_path):
    wide, frame = google_full_layout(tmp_path)
    narrow = tmp_path / "narrow.tsv"
    frame.to_csv(narrow, sep="\t", index=False, header=False, quoting=3)
    by_columns = load_config(
        None,
        [
            "task=multi_label",
            f"data.train={wide}",
            f"data.label_columns=[{','.join(NAMES)}]",
            "data.val_size=80",
        ],
    )
    by_sets = load_config(
        GO_CONFIG,
        [f"data.train={narrow}", "data.validation=null", "data.test=null", "data.val_size=80"],
    )
    a, b = load_splits(by_columns.data, 7), load_splits(by_sets.data, 7)
    assert by_columns.data.label_names == NAMES and by_columns.data.text_column == "text"
    assert by_columns.data.label_column is None and by_columns.data.label_format == "names"
    for split in ("train", "validation"):
        assert a[split].texts == b[split].texts
        assert (a[split].labels == b[split].labels).all()


def test_check_data_names_the_label_columns_not_a_missing_label_column(tmp_path):
    from lorafit.checkdata import check_data, check_text

    wide, _ = google_full_layout(tmp_path)
    cfg = load_config(
        None,
        [
            "task=multi_label",
            f"data.train={wide}",
            f"data.label_columns=[{','.join(NAMES)}]",
            "data.val_size=80",
            "model.name=nobody/not-cached",
        ],
    )
    report = check_data(cfg)
    assert report["columns"]["label_columns"] == NAMES and report["columns"]["guessed"] == []
    line = next(x for x in check_text(report).splitlines() if x.startswith("columns:"))
    shown = ", ".join(map(repr, NAMES[:4]))
    assert (
        line
        == f"columns: text 'text', labels one 0/1 column each: {shown}, ... ({len(NAMES)} in all)"
    )


def test_one_column_per_label_errors_name_the_row_and_column(tmp_path):
    wide, _ = google_full_layout(tmp_path, 50)
    frame = pd.read_csv(wide)
    frame.loc[9, "joy"] = 2
    frame.to_csv(wide, index=False)
    cfg = load_config(
        None,
        [
            "task=multi_label",
            f"data.train={wide}",
            f"data.label_columns=[{','.join(NAMES)}]",
            "data.val_size=10",
        ],
    )
    with pytest.raises(
        UserError,
        match=r"goemotions_wide.csv: row 10: column 'joy' holds '2'; data.label_columns reads 0/1",
    ):
        load_splits(cfg.data, 0)
    missing = load_config(
        None,
        [
            "task=multi_label",
            f"data.train={wide}",
            "data.label_columns=[joy,hope]",
            "data.val_size=10",
        ],
    )
    with pytest.raises(UserError, match=r"no label column 'hope' .*check data.label_columns"):
        load_splits(missing.data, 0)
    with pytest.raises(UserError, match=r"data.label_columns: is for task: multi_label"):
        load_config(None, ["data.label_columns=[joy,love]"])


def test_split_keeps_rare_labels_in_the_validation_rows():
    cfg = load_config(
        GO_CONFIG,
        [
            f"data.train={GO / 'train.tsv'}",
            "data.validation=null",
            "data.test=null",
            "data.val_size=4000",
        ],
    )
    splits = load_splits(cfg.data, 42)
    grief = NAMES.index("grief")
    held = splits["validation"].labels[:, grief].sum()
    assert abs(held - 77 * 4000 / 43410) <= 1.5  # 7.1 expected: a plain split often gives 3 or 11


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["train.metric=eval_accuracy"], "train.metric"),
        (["train.class_weights=balanced"], "train.class_weights"),
        (["data.label_names=[only]"], "data.label_names"),
        (["train.threshold=1.0"], "train.threshold"),
    ],
)
def test_what_a_multilabel_run_cannot_take_is_refused_by_its_key(overrides, key):
    with pytest.raises(UserError, match=rf"^config \(.*\): {key}: "):
        load_config(None, ["task=multi_label", *overrides])


# ---------------------------------------------------------------- end to end


def test_goemotions_trains_evaluates_predicts_and_reports(tiny_model, tmp_path, capsys):
    runs = tmp_path / "runs"
    dev, test = small_dev(tmp_path), small_dev(tmp_path, split="test")
    args = go_overrides(
        tiny_model, runs, f"data.validation={dev}", f"data.test={test}", "train.threshold=per_label"
    )
    assert main(["train", "--config", str(GO_CONFIG), *args]) == 0
    run = (runs / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "multi_label" and summary["metric"] == "eval_macro_f1"
    saved = json.loads((run / "checkpoint-best" / "thresholds.json").read_text())
    assert list(saved) == NAMES
    state = json.loads((run / "checkpoint-best" / "lorafit_state.json").read_text())
    assert state["best_thresholds"] == [saved[n] for n in NAMES]
    assert len(set(saved.values())) > 1  # per_label: one threshold per label
    # the test split is decided at the validation's thresholds, never tuned on itself
    assert summary["test"]["thresholds"] == [saved[n] for n in NAMES]
    assert (run / "plots" / "f1.png").is_file() and (
        run / "plots" / "per_class_test-test_small.png"
    ).is_file()
    assert "micro-F1" in (run / "training_log.txt").read_text()

    capsys.readouterr()
    assert main(["evaluate", str(run), "--input", str(dev), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["rows"] == 300 and metrics["thresholds"] == [saved[n] for n in NAMES]
    assert main(["evaluate", str(run), "--input", str(test), "--json"]) == 0
    # the test split was scored at the saved thresholds too: evaluate's figures (which differ
    # by bf16 rounding: training evaluates under autocast, evaluate on bf16 weights)
    assert summary["test"]["macro_f1"] == pytest.approx(
        json.loads(capsys.readouterr().out)["macro_f1"], abs=0.01
    )

    out = tmp_path / "predictions.csv"
    assert (
        main(
            [
                "predict",
                str(run),
                "--input",
                str(dev),
                "--output",
                str(out),
                "--label-format",
                "names",
            ]
        )
        == 0
    )
    written = pd.read_csv(out, keep_default_na=False)
    assert len(written) == 300
    sets = [set(filter(None, cell.split(","))) for cell in written.Label]
    assert set().union(*sets) <= set(NAMES)
    truth = label_sets(
        pd.read_csv(dev, sep="\t", header=None, quoting=3)[1].astype(str).tolist(),
        "dev",
        [str(i) for i in range(28)],
    )
    pred = np.array([[n in s for n in NAMES] for s in sets])
    # evaluate's figures are those of the written label sets
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(truth, pred, average="macro", zero_division=0)
    )
    assert metrics["micro_f1"] == pytest.approx(
        f1_score(truth, pred, average="micro", zero_division=0)
    )

    page = tmp_path / "report.html"
    assert main(["report", str(run), "--output", str(page)]) == 0
    assert "best val macro-F1 (labels)" in page.read_text()

    import lorafit  # in Python: label sets of strings in memory, at the saved thresholds

    texts = pd.read_csv(dev, sep="\t", header=None, quoting=3)[0].tolist()[:5]
    result = lorafit.predict(run, texts=texts, label_format="names")
    assert result["labels"] == written.Label.tolist()[:5] and result["probabilities"].shape == (
        5,
        28,
    )


def test_ensemble_of_multilabel_runs_averages_and_tunes_again(tiny_model, tmp_path, capsys):
    runs = tmp_path / "runs"
    dev = small_dev(tmp_path, 200)
    dirs = []
    for seed in (1, 2):
        args = go_overrides(
            tiny_model, runs, f"data.validation={dev}", f"train.seed={seed}", f"run.name=s{seed}"
        )
        assert main(["train", "--config", str(GO_CONFIG), *args]) == 0
        dirs.append((runs / "latest").resolve())
    capsys.readouterr()
    out = tmp_path / "ensemble.csv"
    assert main(["ensemble", *map(str, dirs), "--input", str(dev), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "thresholds tuned on 200 validation rows" in printed
    probs = [
        pd.read_csv(next((d / "predictions").glob("validation-*.csv")))
        .filter(like="prob_")
        .to_numpy()
        for d in dirs
    ]
    truth = label_sets(
        pd.read_csv(dev, sep="\t", header=None, quoting=3)[1].astype(str).tolist(),
        "dev",
        [str(i) for i in range(28)],
    )
    expected = tune_thresholds((probs[0] + probs[1]) / 2, truth, "global", "macro")[0]
    assert (
        "thresholds tuned on 200 validation rows (macro-F1 " in printed
        and f"): {expected:g}" in printed
    )
    capsys.readouterr()
    assert (
        main(
            [
                "ensemble",
                *map(str, dirs),
                "--input",
                str(dev),
                "--output",
                str(tmp_path / "v.csv"),
                "--method",
                "vote",
            ]
        )
        == 2
    )
    assert "a multi-label ensemble averages" in capsys.readouterr().err


def test_sigmoid_matches_torch():
    x = np.array([[-3.0, 0.0, 2.5]], dtype=np.float32)
    assert sigmoid(x) == pytest.approx(torch.sigmoid(torch.tensor(x)).numpy())


@pytest.mark.parametrize(
    "task, labels",
    [
        ("multi_label", np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32)),
        ("regression", np.array([1.0, 2.0, 4.5], dtype=np.float32)),
        ("classification", np.array([0, 1, 2])),
    ],
)
def test_the_head_starts_at_the_training_labels(task, labels, tiny_model):
    from lorafit.heads import init_output_bias
    from lorafit.model import build_model

    names = "[score]" if task == "regression" else "[a,b,c]"
    cfg = load_config(
        None,
        [
            f"task={task}",
            f"model.name={tiny_model}",
            f"data.label_names={names}",
            "model.head=linear",
        ],
    )
    model = build_model(cfg, weights=True)
    head = [
        (n, p)
        for n, p in model.named_parameters()
        if p.requires_grad and n.endswith("out_proj.bias")
    ]
    before = head[0][1].detach().clone()
    said = init_output_bias(model, task, labels)
    after = head[0][1].detach()
    if task == "multi_label":  # the log-odds of 3/4, 1/4 and (clipped) 0
        assert after.tolist() == pytest.approx(
            [math.log(3), -math.log(3), math.log(1e-4 / (1 - 1e-4))], rel=1e-5
        )
    elif task == "regression":
        assert after.tolist() == pytest.approx([2.5])
    else:
        assert said is None and torch.equal(after, before)


def test_eval_rows_hold_every_metric_a_task_can_select_by():
    from lorafit.config import TASK_METRICS
    from lorafit.metrics import eval_values, headline, regression_metrics

    probs, truth = random_problem(seed=4, labels=3)
    shapes = {
        "classification": task_metrics(
            "classification",
            np.log(np.array([[0.7, 0.3], [0.2, 0.8]])),
            np.array([0, 0]),
            ["a", "b"],
        ),
        "regression": regression_metrics(np.array([1.0, 2.0, 2.5]), np.array([1.0, 2.5, 2.0])),
        "multi_label": multilabel_metrics(probs, truth, ["a", "b", "c"], [0.5, 0.5, 0.5]),
    }
    for task, m in shapes.items():
        row = eval_values(m)
        assert set(TASK_METRICS[task]) - {"auto"} <= set(row), task
        assert row["eval_loss"] == m["loss"]
    ml = eval_values(shapes["multi_label"])
    assert (ml["eval_macro_f1"], ml["eval_micro_f1"]) == (
        shapes["multi_label"]["macro_f1"],
        shapes["multi_label"]["micro_f1"],
    )
    reg = eval_values(shapes["regression"])
    assert (reg["eval_pearson"], reg["eval_spearman"]) == (
        shapes["regression"]["pearson"],
        shapes["regression"]["spearman"],
    )
    cls = eval_values(shapes["classification"])
    assert (cls["eval_accuracy"], cls["eval_f1"], cls["eval_mcc"]) == (
        0.5,
        shapes["classification"]["macro_f1"],
        shapes["classification"]["mcc"],
    )
    assert "Pearson 0.7857 Spearman 0.5000" in headline(
        shapes["regression"]
    ) and "(threshold 0.5)" in headline(shapes["multi_label"])
