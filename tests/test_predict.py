"""`predict` / `evaluate` / `ensemble`: the input's column options and the saved probabilities' key.

Issue 13: the commands said "set data.label_column", which they do not accept; and after a
bf16 prediction, `--dtype fp32` on the same file returned the saved bf16 figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lorafit
from lorafit.cli import main
from lorafit.train import train


@pytest.fixture(scope="module")
def runs(tiny_model, small_csv, tmp_path_factory) -> dict[str, Path]:
    """Two finished tiny runs of the same config that differ by seed (so by weights)."""
    parent = tmp_path_factory.mktemp("runs")
    base = [
        f"model.name={tiny_model}",
        f"data.train={small_csv}",
        "data.val_size=40",
        "data.test=null",
        "model.max_length=64",
        "train.max_steps=8",
        "train.eval_every=4",
        "train.batch_size=16",
        "train.lr=0.01",
        "log.progress=false",
        f"run.dir={parent}",
    ]
    return {
        name: train(None, [*base, f"train.seed={seed}", f"run.name={name}"])
        for name, seed in (("a", 0), ("b", 1))
    }


@pytest.fixture(scope="module")
def files(ag_subset, tmp_path_factory) -> dict[str, Path]:
    """The same 80 real rows as `text,label` and as `headline,topic` (other columns first)."""
    folder = tmp_path_factory.mktemp("inputs")
    rows = ag_subset.groupby("label").tail(20)[["text", "label"]].reset_index(drop=True)
    plain, renamed = folder / "plain.csv", folder / "news.csv"
    rows.to_csv(plain, index=False)
    renamed_rows = rows.rename(columns={"text": "headline", "label": "topic"})
    renamed_rows.insert(0, "source", "wire")
    renamed_rows.to_csv(renamed, index=False)
    return {"plain": plain, "renamed": renamed}


def probabilities(path) -> np.ndarray:
    return pd.read_csv(path).filter(like="prob_").to_numpy()


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# ---------------------------------------------------------------- column options


def test_a_missing_column_names_the_option_that_works(runs, files, tmp_path, capsys):
    run, news = str(runs["a"]), str(files["renamed"])
    out = str(tmp_path / "sub.csv")
    for argv in (
        ["predict", run, "--input", news, "--output", out],
        ["evaluate", run, "--input", news],
        ["ensemble", run, str(runs["b"]), "--input", news, "--output", out],
    ):
        assert main(argv) == 2
        line = error_line(capsys)
        assert "news.csv" in line and "--text-column NAME" in line and "set data." not in line, line
    assert main(["evaluate", run, "--input", news, "--text-column", "headline"]) == 2
    line = error_line(capsys)
    assert "no label column 'label'" in line and "--label-column NAME" in line, line
    assert "set data." not in line
    assert (
        main(["evaluate", run, "--input", news, "--text-column", "nope", "--label-column", "topic"])
        == 2
    )
    assert "no column 'nope'" in error_line(capsys)
    assert not (tmp_path / "sub.csv").exists()


def test_column_options_read_a_file_with_other_column_names(runs, files, tmp_path, capsys):
    run, news, plain = str(runs["a"]), str(files["renamed"]), str(files["plain"])
    columns = ["--text-column", "headline", "--label-column", "topic"]

    assert main(["predict", run, "--input", plain, "--output", str(tmp_path / "plain.csv")]) == 0
    assert (
        main(["predict", run, "--input", news, "--output", str(tmp_path / "news.csv"), *columns])
        == 0
    )
    printed = capsys.readouterr().out
    assert "rows 80" in printed and "confusion matrix" in printed  # the labels were read
    plain_sub, news_sub = (pd.read_csv(tmp_path / f"{n}.csv") for n in ("plain", "news"))
    assert news_sub.equals(plain_sub)

    assert main(["evaluate", run, "--input", plain, "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["evaluate", run, "--input", news, "--json", *columns]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (
        got["accuracy"] == expected["accuracy"]
        and got["confusion_matrix"] == expected["confusion_matrix"]
    )

    assert main(["evaluate", run, "--input", news, "--perturb", "typo", "--json", *columns]) == 0
    perturbed = json.loads(capsys.readouterr().out)
    assert perturbed["rows"] == 80 and perturbed["clean"]["accuracy"] == expected["accuracy"]

    out = tmp_path / "ensemble.csv"
    assert (
        main(["ensemble", run, str(runs["b"]), "--input", news, "--output", str(out), *columns])
        == 0
    )
    assert "ensemble (mean)" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == 80

    # the Python functions take the same keyword arguments
    m = lorafit.evaluate(run, news, text_column="headline", label_column="topic")
    assert m["accuracy"] == expected["accuracy"]
    r = lorafit.predict(
        run, news, str(tmp_path / "api.csv"), text_column="headline", label_column="topic"
    )
    assert r["metrics"]["accuracy"] == expected["accuracy"]
    e = lorafit.ensemble(
        [run, runs["b"]],
        news,
        str(tmp_path / "api-ens.csv"),
        text_column="headline",
        label_column="topic",
    )
    assert e["rows"] == 80 and "accuracy" in e


# ---------------------------------------------------------------- the probabilities' key


def fresh_copy(run: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(run, copy, symlinks=True)
    shutil.rmtree(copy / "predictions", ignore_errors=True)
    return copy


def test_fp32_after_bf16_recomputes(runs, files, tmp_path):
    run = fresh_copy(runs["a"], tmp_path, "run")
    plain = str(files["plain"])
    bf16 = lorafit.predict(run, plain, str(tmp_path / "bf16.csv"), dtype="bf16")
    fp32 = lorafit.predict(run, plain, str(tmp_path / "fp32.csv"), dtype="fp32")
    assert fp32["probabilities"] != bf16["probabilities"]
    assert len(list((run / "predictions").glob("plain-*.csv"))) == 2
    p_bf16, p_fp32 = probabilities(bf16["probabilities"]), probabilities(fp32["probabilities"])
    assert not np.array_equal(p_bf16, p_fp32)  # bf16 weights move the probabilities
    # exactly what a fresh fp32 prediction gives, with nothing saved before it
    fresh = lorafit.predict(
        fresh_copy(runs["a"], tmp_path, "fresh"), plain, str(tmp_path / "f.csv"), dtype="fp32"
    )
    assert np.array_equal(p_fp32, probabilities(fresh["probabilities"]))
    # and asking for bf16 again is served from the bf16 file
    again = lorafit.predict(run, plain, str(tmp_path / "bf16-again.csv"), dtype="bf16")
    assert again["probabilities"] == bf16["probabilities"]


def test_a_changed_checkpoint_is_not_served_old_probabilities(runs, files, tmp_path):
    run = fresh_copy(runs["a"], tmp_path, "run")
    plain = str(files["plain"])
    old = lorafit.predict(run, plain, str(tmp_path / "old.csv"), dtype="fp32")
    # retrained in place: another run's best checkpoint (same model settings) replaces it
    shutil.rmtree(run / "checkpoint-best")
    shutil.copytree(runs["b"] / "checkpoint-best", run / "checkpoint-best")
    new = lorafit.predict(run, plain, str(tmp_path / "new.csv"), dtype="fp32")
    assert new["probabilities"] != old["probabilities"]
    reference = lorafit.predict(
        fresh_copy(runs["b"], tmp_path, "b"), plain, str(tmp_path / "b.csv"), dtype="fp32"
    )
    assert np.array_equal(
        probabilities(new["probabilities"]), probabilities(reference["probabilities"])
    )
    assert not np.array_equal(
        probabilities(new["probabilities"]), probabilities(old["probabilities"])
    )


def test_ensemble_reuses_only_matching_probabilities(runs, files, tmp_path, monkeypatch):
    """A member's saved fp32 figures are not reused by an ensemble that predicts in auto dtype
    unless auto is fp32 here; its own saved figures are, without loading a model."""
    import sys

    from lorafit.predict import inference_dtype

    predict_module = sys.modules["lorafit.predict"]  # `lorafit.predict` is also the function

    a, b = (fresh_copy(runs[n], tmp_path, n) for n in "ab")
    plain = str(files["plain"])
    lorafit.predict(a, plain, str(tmp_path / "a32.csv"), dtype="fp32")
    lorafit.ensemble([a, b], plain, str(tmp_path / "e1.csv"))  # dtype auto
    names = sorted(p.name for p in (a / "predictions").glob("plain-*.csv"))
    auto_is_fp32 = str(inference_dtype("auto")) == "torch.float32"
    assert len(names) == (1 if auto_is_fp32 else 2), names

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded although matching probabilities were saved")

    monkeypatch.setattr(predict_module, "load_run_model", no_model)
    first = pd.read_csv(tmp_path / "e1.csv")
    lorafit.ensemble([a, b], plain, str(tmp_path / "e2.csv"))
    assert pd.read_csv(tmp_path / "e2.csv").equals(first)


# ---------------------------------------------------------------- --dtype int8


def test_int8_quantises_the_encoders_linear_layers_not_the_head(runs, files, tmp_path):
    from torch import nn
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    from lorafit.predict import load_run_model

    run = fresh_copy(runs["a"], tmp_path, "run")
    model, _, _ = load_run_model(run, "cpu", "int8")
    linears = {
        n: type(m)
        for n, m in model.named_modules()
        if isinstance(m, (nn.Linear, DynamicInt8Linear))
    }
    head = {n for n in linears if n.startswith("classifier")}
    assert head and all(linears[n] is nn.Linear for n in head)
    encoder = set(linears) - head
    assert len(encoder) >= 6 and all(linears[n] is DynamicInt8Linear for n in encoder), linears

    plain = str(files["plain"])
    fp32 = lorafit.predict(run, plain, str(tmp_path / "fp32.csv"), dtype="fp32")
    int8 = lorafit.predict(run, plain, str(tmp_path / "int8.csv"), dtype="int8")
    assert (
        int8["probabilities"] != fp32["probabilities"]
    )  # its own key: never served fp32's figures
    p32, p8 = probabilities(fp32["probabilities"]), probabilities(int8["probabilities"])
    assert not np.array_equal(p32, p8)  # really quantised
    assert np.abs(p32 - p8).max() < 0.1  # and still the same model
    again = lorafit.predict(run, plain, str(tmp_path / "int8-again.csv"), dtype="int8")
    assert again["probabilities"] == int8["probabilities"]


def test_int8_is_refused_off_the_cpu_and_offered_by_the_cli(runs, files, tmp_path, capsys):
    from lorafit.errors import UserError
    from lorafit.predict import inference_dtype

    with pytest.raises(UserError, match="--dtype int8: runs on the CPU only"):
        inference_dtype("int8", "cuda")
    run = fresh_copy(runs["a"], tmp_path, "run")
    out = tmp_path / "sub.csv"
    assert (
        main(
            [
                "predict",
                str(run),
                "--input",
                str(files["plain"]),
                "--output",
                str(out),
                "--dtype",
                "int8",
            ]
        )
        == 0
    )
    assert len(pd.read_csv(out)) == 80
    assert len(list((run / "predictions").glob("plain-*.csv"))) == 1
