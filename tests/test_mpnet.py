"""MPNet, an encoder that is not BERT-style: every command runs on it as on BERT and RoBERTa.

MPNet differs where lorafit used to assume BERT: its attention has no sdpa kernel in
transformers (`model.attn_implementation=auto` picks eager), its projections are `attn.q`,
`attn.k`, `attn.v`, `attn.o`, and it has no pooler. A tiny random MPNet with a locally
trained WordPiece tokenizer (`lorafit.toy.save_toy_mpnet`) goes through describe, plan,
train, resume, predict, evaluate, ensemble, export and bench on the real CLI; counts use
all-mpnet-base-v2's exact shape (`lorafit.shapes`); describe and plan also run on the real
all-mpnet-base-v2 folder when it is there (`$LORAFIT_MPNET`, else the folder
`../shared/tools/get-mpnet` makes).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from lorafit.cli import main
from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.model import attention_kernel, build_model, load_model_config, load_tokenizer
from lorafit.params import describe_model

from .conftest import AG_LABELS, ROOT

MPNET_SHAPE = "sentence-transformers/all-mpnet-base-v2"  # known shape: counted without the hub
REAL_MPNET = Path(os.environ.get("LORAFIT_MPNET", "/root/.cache/lorafit-models/all-mpnet-base-v2"))
needs_real_mpnet = pytest.mark.skipif(
    not (REAL_MPNET / "model.safetensors").is_file(),
    reason=f"all-mpnet-base-v2 is not at {REAL_MPNET} (run ../shared/tools/get-mpnet, or set $LORAFIT_MPNET)",
)


@pytest.fixture(scope="module")
def tiny_mpnet(ag_subset, tmp_path_factory) -> Path:
    """A random 2-layer, 32-wide MPNet classifier with a WordPiece tokenizer trained here."""
    from lorafit.toy import save_toy_mpnet

    out = tmp_path_factory.mktemp("tiny-mpnet")
    return save_toy_mpnet(
        out, ag_subset.text.tolist()[:1500], layers=2, hidden=32, tokenizer_vocab=1500
    )


def _overrides(tiny_mpnet, small_csv, runs: Path) -> list[str]:
    return [
        f"model.name={tiny_mpnet}",
        f"data.train={small_csv}",
        f"data.test={small_csv}",
        "data.val_size=40",
        "model.max_length=64",
        "model.head=lowrank",  # foldable into MPNet's own head by export
        "model.head_rank=4",
        "lora.layers=1",  # layer 0 frozen below the adapted layer
        "train.lr=5e-3",
        "train.max_steps=13",  # 208 rows: every training row is read, so the cache is on
        "train.eval_every=4",
        "train.checkpoint_every=2",
        "train.keep_last=10",
        "train.log_every=2",
        "train.batch_size=16",
        "train.mixed_precision=no",
        "log.progress=false",
        f"run.dir={runs}",
        f"train.cache_dir={runs}-activation-cache",  # outside run.dir
    ]


@pytest.fixture(scope="module")
def mpnet_run(tiny_mpnet, small_csv, tmp_path_factory) -> Path:
    """One trained run of the tiny MPNet, through `lorafit train`."""
    runs = tmp_path_factory.mktemp("mpnet-runs")
    assert main(["train", *_overrides(tiny_mpnet, small_csv, runs)]) == 0
    (run,) = [p for p in runs.iterdir() if p.name != "latest"]
    return run


# ------------------------------------------------------------------ attention and module names


def test_auto_attention_is_eager_on_mpnet_and_sdpa_on_roberta():
    mpnet = load_model_config(load_config(None, [AG_LABELS, f"model.name={MPNET_SHAPE}"]))
    roberta = load_model_config(load_config(None, [AG_LABELS, "model.name=roberta-base"]))
    assert attention_kernel("auto", mpnet) == "eager"
    assert attention_kernel("auto", roberta) == "sdpa"
    assert attention_kernel("eager", roberta) == "eager"
    with pytest.raises(
        UserError,
        match="model.attn_implementation=sdpa: MPNetForSequenceClassification has no sdpa",
    ):
        attention_kernel("sdpa", mpnet)


def test_explicit_sdpa_on_mpnet_is_one_line(tiny_mpnet, capsys):
    assert (
        main(["describe", AG_LABELS, f"model.name={tiny_mpnet}", "model.attn_implementation=sdpa"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use model.attn_implementation=auto" in err


def test_bert_names_on_mpnet_list_its_names(tiny_mpnet, capsys):
    """The issue's command: the seed recipe (query, value) with model.name set to MPNet."""
    config = ROOT / "configs" / "agnews_roberta_latent.yaml"
    assert (
        main(
            [
                "describe",
                "--config",
                str(config),
                AG_LABELS,
                f"model.name={tiny_mpnet}",
                "lora.layers=all",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "query, value not in this mpnet model (here: query -> attn.q, value -> attn.v)" in err
    assert "attention.attn.o, intermediate.dense, output.dense" in err


# ------------------------------------------------------------------ counts on MPNet's exact shape

QV_ALL = 12 * 2 * 8 * (768 + 768)  # attn.q + attn.v of 12 layers at r=8
MPNET_ENCODER = 108_895_872  # all-mpnet-base-v2 without a head


@pytest.mark.parametrize(
    "head, pooling, head_params",
    [
        ("full", "first", 768 * 768 + 768 + 768 * 4 + 4),  # MPNet's own: dense + out_proj
        ("linear", "mean", 768 * 4 + 4),
        ("lowrank", "first", 2 * 768 * 16 + 768 + 768 * 4 + 4),
        ("dense_lora", "mean", 2 * 768 * 16 + 768 + 768 * 4 + 4),
    ],
)
def test_head_counts_on_mpnet_base(head, pooling, head_params):
    cfg = load_config(
        None,
        [AG_LABELS, f"model.name={MPNET_SHAPE}", f"model.head={head}", f"model.pooling={pooling}"],
    )
    d = describe_model(cfg)
    assert (d["model_type"], d["num_layers"], d["hidden_size"]) == ("mpnet", 12, 768)
    # the encoder (embeddings 23,841,024 + 12 layers x 7,087,872 + the relative-position bias
    # 384) is frozen, and so is PEFT's copy of the head
    assert d["params"]["frozen"] == MPNET_ENCODER + head_params
    assert d["params"]["total"] == MPNET_ENCODER + QV_ALL + 2 * head_params
    assert d["breakdown"] == {"lora": QV_ALL, "head": head_params, "bias": 0, "other": 0}
    assert d["lora"]["target_modules"] == ["attn.q", "attn.v"]  # MPNet's default targets
    assert list(d["lora_per_layer"]) == [str(i) for i in range(12)]
    assert d["lora_per_layer"]["5"] == {"q": 8 * 1536, "v": 8 * 1536}


def test_mpnet_shape_is_all_mpnet_base_v2s():
    from lorafit.shapes import MPNET_BASE_SHAPE

    config = load_model_config(load_config(None, [AG_LABELS, f"model.name={MPNET_SHAPE}"]))
    assert (
        config.vocab_size,
        config.max_position_embeddings,
        config.relative_attention_num_buckets,
    ) == (30527, 514, 32)
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (
        768,
        12,
        3072,
    )
    if (REAL_MPNET / "config.json").is_file():
        real = json.loads((REAL_MPNET / "config.json").read_text())
        assert {k: real[k] for k in MPNET_BASE_SHAPE} == MPNET_BASE_SHAPE


def test_every_linear_preset_on_mpnet():
    d = describe_model(
        load_config(
            None,
            [
                AG_LABELS,
                f"model.name={MPNET_SHAPE}",
                "model.head=linear",
                "lora.r=6",
                "lora.target_modules=[attn.q,attn.k,attn.v,attn.o,intermediate.dense,output.dense]",
            ],
        )
    )
    # per layer and unit of rank: 4 x (768 + 768) + (768 + 3072) + (3072 + 768) = 13,824
    assert d["breakdown"]["lora"] == 12 * 6 * 13_824 and d["params"]["trainable"] == 998_404
    assert set(d["lora_per_layer"]["0"]) == {"q", "k", "v", "o", "dense"}


# ------------------------------------------------------------------ every command on a tiny MPNet


def test_describe_and_plan_cli(tiny_mpnet, capsys):
    assert main(["describe", AG_LABELS, f"model.name={tiny_mpnet}"]) == 0
    out = capsys.readouterr().out
    assert "(mpnet, 2 layers, hidden 32)" in out and "target modules  attn.q, attn.v" in out
    assert (
        main(["plan", AG_LABELS, f"model.name={tiny_mpnet}", "--budget", "20000", "--top", "3"])
        == 0
    )
    out = capsys.readouterr().out
    assert "configurations fit a budget of 20,000" in out and "attn.q" in out
    assert f"first row: lorafit train model.name={tiny_mpnet} " in out


def test_train_writes_an_mpnet_run(mpnet_run):
    d = json.loads((mpnet_run / "model_description.json").read_text())
    assert d["model_type"] == "mpnet" and d["lora"]["target_modules"] == ["attn.q", "attn.v"]
    assert list(d["lora_per_layer"]) == ["1"]
    summary = json.loads((mpnet_run / "summary.json").read_text())
    assert summary["final_step"] == 13 and summary["test"]["rows"] == 240
    log = (mpnet_run / "train.log").read_text()
    assert "activation cache: built" in log and "layers 0-0 run once" in log, log
    losses = [
        json.loads(x)["train_loss"]
        for x in (mpnet_run / "metrics.jsonl").read_text().splitlines()
        if '"train_loss"' in x
    ]
    assert len(losses) >= 5 and all(0 < x < 5 for x in losses)


def test_resume_after_a_crash_equals_the_whole_run(mpnet_run, tmp_path):
    from .test_resume import assert_same_run, crash_at

    run = Path(shutil.copytree(mpnet_run, tmp_path / "run", symlinks=True))
    crash_at(run, 6)
    assert main(["train", "--resume", str(run)]) == 0
    assert_same_run(run, mpnet_run)


def test_predict_and_evaluate(mpnet_run, small_csv, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    assert (
        main(
            [
                "predict",
                str(mpnet_run),
                "--input",
                str(small_csv),
                "--output",
                str(out),
                "--dtype",
                "fp32",
            ]
        )
        == 0
    )
    submission = pd.read_csv(out)
    assert len(submission) == 240
    capsys.readouterr()
    assert (
        main(["evaluate", str(mpnet_run), "--input", str(small_csv), "--json", "--dtype", "fp32"])
        == 0
    )
    scores = json.loads(capsys.readouterr().out)
    during = json.loads(next((mpnet_run / "evaluations").glob("test-*.json")).read_text())
    assert scores["accuracy"] == during["accuracy"]  # the checkpoint reloads the trained model
    assert scores["loss"] == pytest.approx(during["loss"], abs=1e-5)


def test_ensemble_of_a_run_with_its_copy_is_the_run(mpnet_run, small_csv, tmp_path):
    copy = shutil.copytree(mpnet_run, tmp_path / "copy", symlinks=True)
    single, both = tmp_path / "single.csv", tmp_path / "both.csv"
    assert (
        main(
            [
                "predict",
                str(mpnet_run),
                "--input",
                str(small_csv),
                "--output",
                str(single),
                "--dtype",
                "fp32",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "ensemble",
                str(mpnet_run),
                str(copy),
                "--input",
                str(small_csv),
                "--output",
                str(both),
            ]
        )
        == 0
    )
    a, b = pd.read_csv(single), pd.read_csv(both)
    assert list(b.columns) == list(a.columns) and len(b) == 240
    # the ensemble predicts in its own dtype (auto), predict above in fp32
    assert (a.iloc[:, -1] == b.iloc[:, -1]).mean() > 0.99


def test_export_folds_the_head_into_mpnets_own(mpnet_run, tmp_path):
    """`export --merged`: plain transformers loads MPNetForSequenceClassification with
    classifier.dense + classifier.out_proj and gives lorafit's logits."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lorafit.predict import load_run_model

    out = tmp_path / "merged"
    assert main(["export", str(mpnet_run), "--merged", str(out)]) == 0
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(plain).__name__ == "MPNetForSequenceClassification"
    names = {n for n, _ in plain.named_parameters()}
    assert {"classifier.dense.weight", "classifier.out_proj.weight"} <= names
    assert not any("lora" in n for n in names)
    model, _, _ = load_run_model(mpnet_run)
    texts = [
        "Stocks rallied after the central bank held rates.",
        "The striker scored twice in the final.",
    ]
    batch = AutoTokenizer.from_pretrained(out)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            plain(**batch).logits, model.float().eval()(**batch).logits, atol=1e-5, rtol=1e-4
        )


def test_bench(tiny_mpnet, small_csv, tmp_path, capsys):
    overrides = _overrides(tiny_mpnet, small_csv, tmp_path / "runs")
    overrides = [
        o for o in overrides if not o.startswith(("train.max_steps", "train.checkpoint_every"))
    ]
    assert (
        main(
            [
                "bench",
                *overrides,
                "train.max_steps=4",
                "--predict-input",
                str(small_csv),
                "--dtype",
                "fp32",
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    rows = rows if isinstance(rows, list) else rows.get("rows", rows)
    assert rows and all(r.get("samples_per_s", 1) > 0 for r in rows)


def test_mean_pooling_ignores_padding_on_mpnet(tiny_mpnet):
    cfg = load_config(
        None, [AG_LABELS, f"model.name={tiny_mpnet}", "model.head=linear", "model.pooling=mean"]
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tokenizer = load_tokenizer(cfg)
    short, long = (
        "Stocks rally on rate hopes",
        "Rain delays the final day of the cricket test in Leeds again",
    )
    with torch.no_grad():
        alone = model(**tokenizer([short], return_tensors="pt")).logits
        padded = model(**tokenizer([short, long], padding=True, return_tensors="pt")).logits
        other = model(**tokenizer(["Stocks fall on rate fears"], return_tensors="pt")).logits
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-4)
    assert (other - alone).abs().max() > 1e-5


# ------------------------------------------------------------------ the real all-mpnet-base-v2


@needs_real_mpnet
def test_describe_the_real_mpnet_with_the_shipped_recipe(capsys):
    config = ROOT / "configs" / "agnews_mpnet_latent.yaml"
    assert main(["describe", "--config", str(config), AG_LABELS, f"model.name={REAL_MPNET}"]) == 0
    out = capsys.readouterr().out
    assert "(mpnet, 12 layers, hidden 768)" in out and "667,396" in out
    assert "layer  11  q: 12,288, v: 12,288   (r=8, alpha=16.0, dropout=0.1)" in out


@needs_real_mpnet
def test_plan_the_real_mpnet(capsys):
    assert (
        main(
            [
                "plan",
                AG_LABELS,
                f"model.name={REAL_MPNET}",
                "--top",
                "1",
                "--heads",
                "linear",
                "--ranks",
                "1-8",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "all-linear = attn.q, attn.k, attn.v, attn.o, intermediate.dense, output.dense" in out
    assert f"first row: lorafit train model.name={REAL_MPNET} " in out and "998,404" in out


@pytest.mark.parametrize(
    "name, trainable, head",
    [("agnews_mpnet_latent.yaml", 667_396, 593_668), ("agnews_mpnet_best.yaml", 998_404, 3_076)],
)
def test_shipped_mpnet_configs(name, trainable, head):
    """Counted on MPNet's known shape (no model folder needed); data path from the repo root."""
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.model.name == "/root/.cache/lorafit-models/all-mpnet-base-v2"
    assert (ROOT / cfg.data.train).resolve() == (
        ROOT.parent / "shared/data/ag_news/train_subset.csv"
    ).resolve()
    assert (cfg.data.validation, cfg.data.test, cfg.data.val_size) == (None, None, 2000)
    d = describe_model(load_config(ROOT / "configs" / name, [f"model.name={MPNET_SHAPE}"]))
    assert d["params"]["trainable"] == trainable and d["breakdown"]["head"] == head
    if name == "agnews_mpnet_latent.yaml":  # the seed recipe in MPNet's names
        assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.layers) == (
            8,
            16,
            0.1,
            "9-11",
        )
        assert cfg.lora.target_modules == ["attn.q", "attn.v"] and cfg.model.head == "full"
        assert d["lora"]["layers"] == {
            str(i): {"r": 8, "alpha": 16.0, "dropout": 0.1} for i in (9, 10, 11)
        }
