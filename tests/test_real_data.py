"""Real data, real pretrained model: MiniLM from the package learns AG News well above chance."""

from __future__ import annotations

import json

import pytest

from lorafit.cli import main

from .conftest import AG_SUBSET


@pytest.mark.slow
def test_minilm_learns_ag_news(tmp_path):
    overrides = [
        "model.name=all-MiniLM-L6-v2",
        f"data.train={AG_SUBSET}",
        "data.max_train_rows=1200",
        "data.val_size=400",
        "data.test=null",
        "model.max_length=64",
        "train.lr=2e-3",
        "train.batch_size=16",
        "train.epochs=1",
        "train.eval_every=25",
        "log.progress=false",
        f"run.dir={tmp_path}",
    ]
    assert main(["train", *overrides]) == 0
    summary = json.loads((tmp_path / "latest" / "summary.json").read_text())
    # chance is 0.25 on four balanced classes; 400 held-out real rows
    assert summary["best_value"] > 0.70, summary["best_value"]
    assert summary["best_eval"]["eval_f1"] > 0.65


def test_the_66k_split_is_the_committed_one():
    """The accuracy runs share one holdout (issue 29): lorafit still splits train_66k.csv into
    exactly the committed rows (benchmarks/splits/ag_news_66k.json), whatever train.seed is."""
    import importlib.util

    from .conftest import AG_DIR, ROOT

    spec = importlib.util.spec_from_file_location(
        "agnews66k_split", ROOT / "benchmarks" / "agnews66k_split.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    committed = json.loads(script.DIGESTS.read_text())
    found = script.split_digests(AG_DIR / "train_66k.csv")
    assert found == committed
    sizes = {name: s["rows"] for name, s in found["splits"].items()}
    assert sizes == {"train": 66_191 - 6_000, "validation": 2_000, "test": 4_000}
