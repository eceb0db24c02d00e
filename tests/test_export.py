"""The model card in checkpoint-best/ and `lorafit export --merged` (plain transformers)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lorafit.cli import main
from lorafit.train import train


@pytest.fixture(scope="module")
def run(tiny_model, small_csv, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    return train(
        None,
        [
            f"model.name={tiny_model}",
            f"data.train={small_csv}",
            f"data.test={small_csv}",
            "data.val_size=40",
            "model.max_length=64",
            "train.max_steps=8",
            "train.eval_every=4",
            "train.log_every=4",
            "train.batch_size=16",
            "train.lr=0.05",
            "lora.layers=1",
            "lora.r=4",
            "log.progress=false",
            f"run.dir={runs}",
            "run.name=card",
        ],
    )


def test_model_card_describes_the_run(run, tiny_model):
    card = (run / "checkpoint-best" / "README.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert card.startswith("---\nlibrary_name: peft\n")
    assert "[More Information Needed]" not in card  # PEFT's placeholder card was replaced
    assert f"LoRA adapter and classification head for {tiny_model}" in card
    assert f"**{summary['params']['trainable']:,}**" in card and "budget 1,000,000" in card
    assert "| 1 | 4 | 16 | 0.1 |" in card  # layers, r, alpha, dropout
    best = summary["best_eval"]
    assert f"| validation (step {best['step']} of 8) | | {best['eval_accuracy']:.4f} |" in card
    assert f"| {summary['test']['rows']} | {summary['test']['accuracy']:.4f} |" in card
    assert summary["command"] in card and "lr 0.05" in card and "`query`, `value`" in card


def test_model_card_snippet_loads_with_peft_and_predicts_like_lorafit(run, tmp_path):
    """The card's "How to use" code runs as written and agrees with `lorafit predict`."""
    card = (run / "checkpoint-best" / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", card, re.S)
    assert "PeftModel.from_pretrained(base" in code
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    text = re.search(r'tokenizer\(\["(.*?)"\]', code)[1]
    pd.DataFrame({"text": [text]}).to_csv(tmp_path / "one.csv", index=False)
    assert (
        main(
            [
                "predict",
                str(run),
                "--input",
                str(tmp_path / "one.csv"),
                "--output",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )
    label = pd.read_csv(tmp_path / "p.csv").Label[0]
    names = json.loads((run / "summary.json").read_text())["label_names"]
    assert printed.getvalue().strip() == str([names[label]])


def test_export_merged_loads_with_transformers_and_predicts_the_same(run, small_csv, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "exported"
    assert main(["export", str(run), "--merged", str(out)]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    summary = json.loads((run / "summary.json").read_text())
    assert [model.config.id2label[i] for i in range(4)] == summary["label_names"]
    assert tokenizer.model_max_length == 64
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert (out / "README.md").read_text().startswith("---\nlibrary_name: transformers\n")

    texts = pd.read_csv(small_csv).text.tolist()
    with torch.no_grad():
        batch = tokenizer(texts, truncation=True, padding=True, return_tensors="pt")
        merged = model(**batch).logits.numpy()
        # an independent path: the adapter on top of the base model, not merged
        base = AutoModelForSequenceClassification.from_pretrained(
            summary["model_name"],
            num_labels=4,
            id2label=dict(enumerate(summary["label_names"])),
        )
        adapter = PeftModel.from_pretrained(base, run / "checkpoint-best").eval()
        unmerged = adapter(**batch).logits.numpy()
        for name, p in adapter.named_parameters():
            if "lora_B" in name:
                p.zero_()
        without_lora = adapter(**batch).logits.numpy()
    np.testing.assert_allclose(merged, unmerged, atol=1e-5)
    assert np.abs(merged - without_lora).max() > 1e-3  # the LoRA weights matter: the check can fail
    assert (
        main(
            ["predict", str(run), "--input", str(small_csv), "--output", str(tmp_path / "sub.csv")]
        )
        == 0
    )
    np.testing.assert_array_equal(merged.argmax(-1), pd.read_csv(tmp_path / "sub.csv").Label)


def test_export_refuses_to_overwrite(run, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(run), "--merged", str(out)]) == 0
    (out / "stale.txt").write_text("from an earlier export")
    assert main(["export", str(run), "--merged", str(out)]) == 2
    assert "folder is not empty" in capsys.readouterr().err
    assert main(["export", str(run), "--merged", str(out), "--overwrite"]) == 0
    assert (out / "config.json").exists() and not (out / "stale.txt").exists()  # swapped whole
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a model")
    assert main(["export", str(run), "--merged", str(mine), "--overwrite"]) == 2
    assert "not an exported model" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "not a model"
    assert main(["export", str(run), "--merged", str(mine / "notes.txt")]) == 2
    assert "is a file" in capsys.readouterr().err


def _train_with_head(model_name, small_csv, runs: Path, head: str, *extra: str) -> Path:
    return train(
        None,
        [
            f"model.name={model_name}",
            f"data.train={small_csv}",
            "data.test=null",
            "data.val_size=40",
            "model.max_length=32",
            "train.max_steps=3",
            "train.batch_size=16",
            "train.lr=0.05",  # large steps, so the trained head is far from its start
            "train.mixed_precision=no",
            "lora.layers=1",
            "lora.r=2",
            f"model.head={head}",
            "model.head_rank=3",
            "log.progress=false",
            f"run.dir={runs}",
            f"run.name={head}",
            *extra,
        ],
    )


def _exported_matches_lorafit(run: Path, out: Path, small_csv: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lorafit.predict import load_run_model

    assert main(["export", str(run), "--merged", str(out)]) == 0
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ours, _, _ = load_run_model(run)
    texts = pd.read_csv(small_csv).text.tolist()[:48]
    with torch.no_grad():
        batch = tokenizer(texts, truncation=True, padding=True, return_tensors="pt")
        expected = ours(**batch).logits.numpy()
        got = plain(**batch).logits.numpy()
    assert expected.std() > 1e-3  # the head is not trivially constant: the check can fail
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("head", ["lowrank", "dense_lora"])
def test_export_folds_a_lorafit_head_into_roberta_own_head(head, tiny_model, small_csv, tmp_path):
    run = _train_with_head(tiny_model, small_csv, tmp_path / "runs", head)
    card = (run / "checkpoint-best" / "README.md").read_text()
    assert f"lorafit's own (`model.head={head}`" in card and "PeftModel" not in card
    assert f"- head: `{head}`, rank 3, reading the first token" in card
    _exported_matches_lorafit(run, tmp_path / "exported", small_csv)


def test_export_folds_a_lowrank_head_into_minilm_pooler(small_csv, tmp_path):
    """MiniLM is BERT-style: the folded dense layer + tanh goes back into its pooler."""
    run = _train_with_head("all-MiniLM-L6-v2", small_csv, tmp_path / "runs", "lowrank")
    _exported_matches_lorafit(run, tmp_path / "exported", small_csv)


@pytest.mark.parametrize(
    "head, extra, reason",
    [
        ("linear", [], "model.head=linear"),
        ("lowrank", ["model.pooling=mean"], "model.pooling=mean"),
    ],
)
def test_export_refuses_what_transformers_cannot_load_before_any_work(
    head, extra, reason, tiny_model, small_csv, tmp_path, capsys
):
    run = _train_with_head(tiny_model, small_csv, tmp_path / "runs", head, *extra)
    card = (run / "checkpoint-best" / "README.md").read_text()
    assert "lorafit predict" in card and "--merged OUT` folds" not in card
    assert ("reading the mean of the tokens" in card) == (extra != [])
    out = tmp_path / "exported"
    assert main(["export", str(run), "--merged", str(out)]) == 2
    err = capsys.readouterr().err
    assert reason in err and "lorafit predict" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".exported*"))
