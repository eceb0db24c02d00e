"""The published files users have, read as they are, end to end: train -> evaluate -> predict
-> report with the shipped configs (a tiny model in place of MiniLM, few steps).

SMS Spam Collection (no extension, no header, string labels, imbalanced), GLUE RTE (sentence
pairs, string labels, quotes that are characters), GLUE CoLA (headerless, Matthews
correlation) and TREC (its `COARSE:fine question` lines converted by the README's one line).
"""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
import yaml

from lorafit.cli import main

from .conftest import FOREIGN, ROOT

TREC_LINE = r"s/^([A-Z]+):[^ ]+ /\1\t/"  # README, Data: "Tasks as published"


def trec_tsv(source, target):
    """The README's conversion, as a user runs it."""
    with open(target, "wb") as out:
        subprocess.run(
            ["sed", "-E", TREC_LINE, str(source)], stdout=out, check=True, env={"LC_ALL": "C"}
        )
    return target


def tasks(tmp_path):
    """task: (config, overrides, evaluation file, its rows, the classes)."""
    trec_train = trec_tsv(FOREIGN / "trec" / "train_5500.label.txt", tmp_path / "trec_train.tsv")
    trec_test = trec_tsv(FOREIGN / "trec" / "TREC_10.label", tmp_path / "trec_test.tsv")
    return {
        "sms": (
            "configs/sms_spam.yaml",
            [],
            FOREIGN / "sms_spam" / "SMSSpamCollection",
            5574,
            ["ham", "spam"],
        ),
        "rte": (
            "configs/glue/rte.yaml",
            [],
            FOREIGN / "glue_rte" / "dev.tsv",
            277,
            ["entailment", "not_entailment"],
        ),
        "cola": (
            "configs/glue/cola.yaml",
            [],
            FOREIGN / "glue_cola" / "amrnag_glue_copy" / "dev.tsv",
            1043,
            ["unacceptable", "acceptable"],
        ),
        "trec": (
            "configs/trec.yaml",
            [f"data.train={trec_train}", f"data.test={trec_test}"],
            trec_test,
            500,
            ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"],
        ),
    }


@pytest.mark.parametrize("task", ["sms", "rte", "cola", "trec"])
def test_published_files_train_evaluate_predict_and_report(task, tiny_model, tmp_path, capsys):
    config, extra, evaluation, rows, classes = tasks(tmp_path)[task]
    runs = tmp_path / "runs"
    args = [
        "train",
        "--config",
        str(ROOT / config),
        f"model.name={tiny_model}",
        "model.max_length=48",
        "data.max_train_rows=160",
        "train.max_steps=4",
        "train.eval_every=2",
        "train.batch_size=16",
        "train.warmup_steps=0",
        "log.progress=false",
        f"run.dir={runs}",
        *extra,
    ]
    assert main(args) == 0
    run = (runs / "latest").resolve()
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert saved["label_names"] == classes
    summary = json.loads((run / "summary.json").read_text())
    if task == "cola":
        assert summary["metric"] == "eval_mcc"  # CoLA's metric selects the checkpoint

    capsys.readouterr()
    assert main(["evaluate", str(run), "--input", str(evaluation), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["rows"] == rows and list(metrics["per_class"]) == classes
    assert sum(c["support"] for c in metrics["per_class"].values()) == rows
    assert -1 <= metrics["mcc"] <= 1

    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run), "--input", str(evaluation), "--output", str(out)]) == 0
    written = pd.read_csv(out, keep_default_na=False)
    assert len(written) == rows and set(written.Label) <= set(classes)

    page = tmp_path / "report.html"
    assert main(["report", str(run), "--output", str(page)]) == 0
    html = page.read_text()
    assert [name for name in classes if name not in html] == []
