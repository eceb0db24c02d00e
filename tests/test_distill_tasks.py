"""Distillation into and from a regression or a multi-label run (issue 31): the losses against
hand computations, the teacher's stored outputs against a direct forward of the teacher, the
members' combination against numpy, refusals of a teacher of another task, unlabelled rows,
and cross-fitted teachers whose members' files read back the labels they were written from."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lorafit.cli import main
from lorafit.config import load_config
from lorafit.data import load_splits
from lorafit.errors import UserError
from lorafit.teacher.distill import distillation_loss
from lorafit.teacher.logits import combine, resolve_teacher, teacher_log_probs
from lorafit.teacher.unlabeled import (
    labelled_rows,
    select_unlabeled,
    teacher_confidence,
    unlabeled_like,
)

from .test_multilabel import GO, GO_CONFIG, go_overrides
from .test_regression import STSB, STSB_CONFIG, stsb_overrides

NAN = float("nan")


# ---------------------------------------------------------------- the losses, by hand


def test_regression_distillation_loss_by_hand():
    torch.manual_seed(0)
    student = torch.randn(6, 1, requires_grad=True)
    teacher = torch.randn(6, 1) * 2
    labels = torch.tensor([0.5, NAN, 4.0, 2.5, NAN, 1.0])  # two unlabelled rows
    w = 0.3
    got = distillation_loss(student, labels, teacher, w, temperature=7.0, task="regression")
    s, t, y = student.detach().double()[:, 0], teacher.double()[:, 0], labels.double()
    lab = [0, 2, 3, 5]
    want = (1 - w) * ((s[lab] - y[lab]) ** 2).mean() + w * ((s - t) ** 2).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # T has no meaning for values: any temperature gives the same loss
    assert distillation_loss(
        student, labels, teacher, w, 1.0, task="regression"
    ).item() == pytest.approx(got.item(), rel=1e-7)
    got.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def _bernoulli_kl_by_hand(t_logits, s_logits):
    p, q = torch.sigmoid(t_logits.double()), torch.sigmoid(s_logits.double())
    return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))


def test_multilabel_distillation_loss_by_hand():
    torch.manual_seed(1)
    student = torch.randn(5, 4, requires_grad=True)
    teacher = torch.randn(5, 4) * 3
    labels = torch.tensor([[1, 0, 0, 1], [NAN] * 4, [0, 0, 0, 0], [0, 1, 1, 0], [NAN] * 4])
    w, T = 0.4, 2.5
    got = distillation_loss(student, labels, teacher, w, T, task="multi_label")
    s = student.detach().double()
    lab = [0, 2, 3]
    q = torch.sigmoid(s[lab])
    y = labels[lab].double()
    bce = -(y * torch.log(q) + (1 - y) * torch.log(1 - q)).mean()  # over the labelled rows' entries
    kl = _bernoulli_kl_by_hand(teacher / T, s / T).mean()  # over every row and label
    want = (1 - w) * bce + w * T * T * kl
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    assert torch.isfinite(student.grad).all()


def test_multilabel_soft_term_is_zero_at_the_teacher_and_stable_at_large_logits():
    teacher = torch.tensor([[40.0, -40.0, 0.0, 3.0]])
    unlabelled = torch.full((1, 4), NAN)
    at_teacher = distillation_loss(
        teacher.clone(), unlabelled, teacher, 1.0, 2.0, task="multi_label"
    )
    assert at_teacher.item() == pytest.approx(0.0, abs=1e-7)
    student = torch.tensor([[-40.0, 40.0, 0.0, 3.0]], requires_grad=True)
    far = distillation_loss(student, unlabelled, teacher, 1.0, 2.0, task="multi_label")
    far.backward()
    assert torch.isfinite(far) and far.item() > 1 and torch.isfinite(student.grad).all()


@pytest.mark.parametrize("task", ["regression", "multi_label"])
def test_weight_zero_with_every_row_labelled_is_the_plain_task_loss(task):
    from lorafit.train import task_loss

    torch.manual_seed(2)
    cfg = load_config(None, [f"task={task}"])
    if task == "regression":
        s, y = torch.randn(6, 1), torch.rand(6) * 5
    else:
        s, y = torch.randn(6, 3), (torch.rand(6, 3) > 0.6).float()
    t = torch.randn(*s.shape)
    assert distillation_loss(s, y, t, 0.0, 2.0, task=task).item() == pytest.approx(
        task_loss(cfg, s, y, None).item(), rel=1e-6
    )


@pytest.mark.parametrize("task", ["classification", "regression", "multi_label"])
def test_a_batch_without_labels_is_the_soft_term_alone(task):
    """Every row unlabelled: w x the soft term exactly (the hard term 0, not NaN nor inf)."""
    torch.manual_seed(4)
    s = torch.randn(5, 1 if task == "regression" else 3, requires_grad=True)
    t = torch.randn(*s.shape) * 2
    none = {
        "classification": torch.full((5,), -100),
        "regression": torch.full((5,), NAN),
        "multi_label": torch.full((5, 3), NAN),
    }[task]
    w, T = 0.3, 1.5
    got = distillation_loss(s, none, t, w, T, task=task)
    sd, td = s.detach().double(), t.double()
    if task == "regression":
        want = w * ((sd - td) ** 2).mean()
    elif task == "multi_label":
        want = w * T * T * _bernoulli_kl_by_hand(td / T, sd / T).mean()
    else:
        p_t = torch.softmax(td / T, -1)
        want = w * T * T * (p_t * (torch.log(p_t) - torch.log_softmax(sd / T, -1))).sum(-1).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    assert torch.isfinite(s.grad).all()


def test_unlabelled_markers_by_task():
    classes = unlabeled_like(np.array([0, 3, 1]), 2)
    values = unlabeled_like(np.array([0.5, 2.0], dtype=np.float32), 2)
    sets = unlabeled_like(np.zeros((3, 4), dtype=np.float32), 2)
    assert classes.tolist() == [-100, -100] and classes.dtype == np.int64
    assert values.shape == (2,) and np.isnan(values).all() and values.dtype == np.float32
    assert sets.shape == (2, 4) and np.isnan(sets).all()
    rows = np.array(
        [[1, 0], [NAN, NAN], [0, 0], [1, NAN]], dtype=np.float32
    )  # any NaN: no label set
    assert labelled_rows(rows).tolist() == [True, False, True, False]
    assert labelled_rows(torch.from_numpy(rows)).tolist() == [True, False, True, False]
    assert labelled_rows(np.array([0.0, NAN, 3.0])).tolist() == [True, False, True]
    assert labelled_rows(torch.tensor([0.0, NAN, 3.0])).tolist() == [
        True,
        False,
        True,
    ]  # a regression batch
    assert labelled_rows(torch.tensor([2, -100, 0])).tolist() == [True, False, True]
    assert labelled_rows(np.array([2, -100, 0])).tolist() == [True, False, True]


# ---------------------------------------------------------------- the teacher's outputs


def test_as_stored_keeps_values_and_log_odds_and_normalises_class_scores():
    from lorafit.teacher.logits import as_stored

    logits = np.array([[2.0, -1.0, 0.5], [30.0, 0.0, -30.0]], dtype=np.float32)
    z = logits.astype(np.float64)
    want = (
        z
        - z.max(1, keepdims=True)
        - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    )
    got = as_stored(logits, "classification")
    assert got.dtype == np.float32 and np.allclose(got, want, atol=1e-6)
    assert as_stored(logits) == pytest.approx(got)  # classification is the default
    for task in ("multi_label", "regression"):
        kept = as_stored(logits.astype(np.float64), task)
        assert kept.dtype == np.float32 and np.array_equal(kept, logits)


def test_members_combine_as_the_mean_of_probabilities_or_values():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 4, (7, 3)).astype(np.float32), rng.normal(0, 4, (7, 3)).astype(np.float32)
    a[0, 0], b[0, 0] = 30.0, 35.0  # both near certain: the log-odds stay finite and large
    got = combine([a, b], task="multi_label")
    p = (1 / (1 + np.exp(-a.astype(np.float64))) + 1 / (1 + np.exp(-b.astype(np.float64)))) / 2
    with np.errstate(divide="ignore"):
        want = np.log(p) - np.log1p(-p)
    assert np.allclose(got[1:], want[1:], atol=1e-5)
    assert 29.5 < got[0, 0] < 35.0  # log(1 - p) rounds to -inf in float64 here; combine does not
    use = np.array([[True] * 7, [False] * 3 + [True] * 4])  # rows 0-2: only member a counts
    masked = combine([a, b], use, task="multi_label")
    assert np.allclose(masked[:3], a[:3], atol=1e-5) and np.allclose(masked[3:], got[3:])

    va, vb = rng.normal(size=(7, 1)).astype(np.float32), rng.normal(size=(7, 1)).astype(np.float32)
    assert np.allclose(combine([va, vb], task="regression"), (va + vb) / 2, atol=1e-7)
    assert np.allclose(combine([va, vb], use, task="regression")[:3], va[:3])
    assert combine([va], task="regression") is va


def test_confidence_of_a_multilabel_teacher_is_its_least_decided_label():
    log_odds = np.array([[4.0, -4.0, 0.1], [3.0, -2.0, -5.0]])
    p = 1 / (1 + np.exp(-log_odds))
    assert teacher_confidence(log_odds, "multi_label") == pytest.approx(np.maximum(p, 1 - p).min(1))
    cfg = load_config(
        None,
        [
            "task=multi_label",
            "train.teacher=t",
            "data.unlabeled=u",
            "data.unlabeled_min_confidence=0.8",
        ],
    )
    keep, report = select_unlabeled(log_odds, 10, cfg.data, 0, {}, "multi_label")
    assert (
        keep.tolist() == [1] and report["dropped_low_confidence"] == 1
    )  # row 0's third label: p 0.52
    values = np.array([[0.1], [4.9]])
    assert teacher_confidence(values, "regression").tolist() == [1.0, 1.0]
    keep, _ = select_unlabeled(
        values, 10, load_config(None, ["task=regression"]).data, 0, {}, "regression"
    )
    assert keep.tolist() == [0, 1]  # values have no confidence: every row may join


def test_the_rows_a_seed_draws_above_the_confidence_never_move_between_releases():
    """unlabeled_share draws a seeded subset of the confident rows: pinned here (a golden value
    on purpose), so a release that changes the draw changes a user's training rows knowingly."""
    cfg = load_config(
        None,
        [
            "train.teacher=t",
            "data.unlabeled=u",
            "data.unlabeled_min_confidence=0.5",
            "data.unlabeled_share=0.2",
        ],
    )
    log_probs = np.log(np.full((30, 4), 0.1))
    log_probs[:, 0] = np.log(0.7)
    log_probs[[3, 8, 21], 0] = np.log(0.3)  # below the confidence: never drawn
    draws = {
        seed: select_unlabeled(log_probs, 20, cfg.data, seed, {})[0].tolist() for seed in (0, 1)
    }
    assert draws == {0: [9, 12, 16, 18, 19], 1: [1, 7, 12, 18, 25]}  # 0.2 / 0.8 * 20 = 5 rows


@pytest.fixture(scope="module")
def task_teachers(tiny_model, tmp_path_factory):
    """A regression teacher on STS-B and a multi-label teacher on GoEmotions (tiny, 6 steps)."""
    runs = tmp_path_factory.mktemp("task-teachers") / "runs"
    assert (
        main(
            [
                "teacher",
                "--config",
                str(STSB_CONFIG),
                *stsb_overrides(tiny_model, runs, "run.name=stsb-teacher"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "teacher",
                "--config",
                str(GO_CONFIG),
                *go_overrides(tiny_model, runs, "run.name=go-teacher"),
            ]
        )
        == 0
    )
    return {
        "regression": (runs / "stsb-teacher").resolve(),
        "multi_label": (runs / "go-teacher").resolve(),
    }


@pytest.mark.parametrize("task", ["regression", "multi_label"])
def test_the_store_holds_a_direct_forward_of_the_teacher(task, task_teachers, tiny_model, tmp_path):
    """The oracle: the teacher model run by hand on the rows (transformers' own tokenizer call)."""
    from lorafit.predict import load_run_model

    run = task_teachers[task]
    config, overrides = (
        (STSB_CONFIG, stsb_overrides) if task == "regression" else (GO_CONFIG, go_overrides)
    )
    cfg = load_config(config, overrides(tiny_model, tmp_path / "runs", f"train.teacher={run}"))
    rows = load_splits(cfg.data, 0)["validation"].subset(np.arange(40))
    teacher = resolve_teacher(
        cfg.train.teacher, list(cfg.data.label_names), cfg.model.max_length, task
    )
    stored = teacher_log_probs(teacher, rows, tmp_path / "cache")

    model, tokenizer, run_cfg = load_run_model(run)
    with torch.no_grad():
        batch = tokenizer(
            rows.texts,
            rows.pairs,
            padding=True,
            truncation=True,
            max_length=run_cfg.model.max_length,
            return_tensors="pt",
        )
        direct = model(**batch).logits.numpy()
    assert (
        stored.shape
        == direct.shape
        == ((40, 1) if task == "regression" else (40, len(cfg.data.label_names)))
    )
    assert np.allclose(stored, direct, atol=1e-4)  # values and log-odds as they are: no softmax
    meta = json.loads(next((tmp_path / "cache" / "teacher").glob("*/meta.json")).read_text())
    assert meta["task"] == task


@pytest.mark.parametrize(
    ("student", "teacher", "message"),
    [
        ("regression", "multi_label", "it is a multi_label model, the student a regression"),
        ("multi_label", "regression", "it is a regression model, the student a multi_label"),
        ("classification", "regression", "it is a regression model, the student a classification"),
    ],
)
def test_a_teacher_of_another_task_is_refused_in_one_line(student, teacher, message, task_teachers):
    with pytest.raises(UserError, match=message) as e:
        resolve_teacher([str(task_teachers[teacher])], ["a", "b"], 32, student)
    assert "\n" not in str(e.value)


def test_model_folders_say_their_task_by_problem_type(tiny_model, tmp_path):
    from transformers import AutoConfig

    for problem, labels, task in [
        ("regression", 1, "regression"),
        ("multi_label_classification", 3, "multi_label"),
        (None, 1, "regression"),
    ]:
        folder = tmp_path / f"{problem}-{labels}"
        config = AutoConfig.from_pretrained(tiny_model, num_labels=labels, problem_type=problem)
        folder.mkdir()
        config.save_pretrained(folder)
        member = resolve_teacher(
            [str(folder)],
            ["x", "y", "z"][:labels] if task == "multi_label" else ["score"],
            32,
            task,
        ).members[0]
        assert member.task == task
        with pytest.raises(UserError, match="the student a classification"):
            resolve_teacher([str(folder)], ["x", "y", "z"][:labels], 32, "classification")


def test_a_regression_teacher_with_another_value_name_is_accepted_and_two_outputs_refused(
    task_teachers, tiny_model, tmp_path
):
    from transformers import AutoConfig

    teacher = resolve_teacher([str(task_teachers["regression"])], ["similarity"], 32, "regression")
    assert teacher.task == "regression" and teacher.describe()["task"] == "regression"
    AutoConfig.from_pretrained(tiny_model, num_labels=2, problem_type="regression").save_pretrained(
        tmp_path / "two"
    )
    with pytest.raises(UserError, match="it has 2 outputs; a regression teacher has one"):
        resolve_teacher([str(tmp_path / "two")], ["similarity"], 32, "regression")


# ---------------------------------------------------------------- students


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r.get("train_loss"), r.get("eval_loss")) for r in rows]


def _run(parent, name):
    (run,) = [p for p in parent.iterdir() if p.name.startswith(name + "-") and not p.is_symlink()]
    return run


@pytest.mark.parametrize("task", ["regression", "multi_label"])
def test_students_learn_from_a_teacher_of_their_task(task, task_teachers, tiny_model, tmp_path):
    config, overrides = (
        (STSB_CONFIG, stsb_overrides) if task == "regression" else (GO_CONFIG, go_overrides)
    )
    runs = tmp_path / "runs"
    base = [
        "train",
        "--config",
        str(config),
        *overrides(tiny_model, runs, f"train.cache_dir={tmp_path / 'cache'}"),
    ]
    teacher = f"train.teacher={task_teachers[task]}"
    assert main([*base, "run.name=plain"]) == 0
    assert main([*base, teacher, "train.distill_weight=0", "run.name=zero"]) == 0
    assert main([*base, teacher, "train.distill_weight=0.9", "run.name=heavy"]) == 0
    assert _losses(_run(runs, "zero")) == _losses(
        _run(runs, "plain")
    )  # the teacher moves no random stream
    assert _losses(_run(runs, "heavy")) != _losses(_run(runs, "plain"))
    summary = json.loads((_run(runs, "heavy") / "summary.json").read_text())
    assert summary["task"] == task
    description = json.loads((_run(runs, "heavy") / "model_description.json").read_text())
    assert (
        description["teacher"]["task"] == task
        and description["teacher"]["counts_against_budget"] is False
    )


def _unlabelled_report(task, task_teachers, tiny_model, tmp_path, unlabeled, *extra) -> dict:
    """Train a tiny student of `task` with its teacher and `unlabeled`; what its run records of them."""
    config, overrides = (
        (STSB_CONFIG, stsb_overrides) if task == "regression" else (GO_CONFIG, go_overrides)
    )
    runs = tmp_path / "runs"
    args = overrides(
        tiny_model,
        runs,
        f"train.teacher={task_teachers[task]}",
        f"data.unlabeled={unlabeled}",
        f"train.cache_dir={tmp_path / 'cache'}",
        "run.name=u",
        *extra,
    )
    assert main(["train", "--config", str(config), *args]) == 0
    return json.loads((_run(runs, "u") / "model_description.json").read_text())["teacher"][
        "unlabeled"
    ]


def test_a_multilabel_student_takes_unlabelled_texts_through_its_teacher(
    task_teachers, tiny_model, tmp_path, caplog
):
    caplog.set_level("INFO", logger="lorafit")
    unlabeled = tmp_path / "unlabelled.tsv"  # GoEmotions' test texts, their label column ignored
    with open(GO / "test.tsv", encoding="utf-8") as f:
        unlabeled.write_text("".join(f.readlines()[:120]), encoding="utf-8")
    report = _unlabelled_report(
        "multi_label",
        task_teachers,
        tiny_model,
        tmp_path,
        unlabeled,
        "data.unlabeled_min_confidence=0.55",
    )
    assert report["rows_read"] == 120 and report["joined"] + report["dropped_low_confidence"] == 120
    assert f"{report['joined']} unlabelled training rows learn from the teacher only" in caplog.text


def test_a_regression_student_with_unlabelled_pairs_trains(task_teachers, tiny_model, tmp_path):
    report = _unlabelled_report(
        "regression",
        task_teachers,
        tiny_model,
        tmp_path,
        STSB / "test.tsv",
        "data.unlabeled_share=0.25",
    )
    assert report["joined"] == 64  # 0.25 / 0.75 x 192 labelled rows, of GLUE's 1,379 unscored pairs


# ---------------------------------------------------------------- cross-fitted teachers


@pytest.mark.parametrize("task", ["regression", "multi_label"])
def test_a_members_file_reads_back_the_labels_it_was_written_from(task, tiny_model, tmp_path):
    """What `lorafit teacher --folds` writes for a member (values, label sets) is what the member reads."""
    from lorafit.config import as_config
    from lorafit.data import load_table
    from lorafit.teacher.build import _read_as_written, _rows_frame, fold_strata

    if task == "regression":
        cfg = load_config(STSB_CONFIG, stsb_overrides(tiny_model, tmp_path))
    else:  # Google's raw layout: one 0/1 column per emotion
        raw = pd.read_csv(
            GO / "train.tsv", sep="\t", header=None, names=["text", "labels", "id"], nrows=400
        )
        names = (GO / "labels.txt").read_text().split()
        table = pd.DataFrame({"text": raw.text})
        for k, n in enumerate(names):
            table[n] = [int(str(k) in s.split(",")) for s in raw.labels.astype(str)]
        path = tmp_path / "raw.csv"
        table.to_csv(path, index=False)
        cfg = load_config(
            None,
            [
                "task=multi_label",
                f"data.train={path}",
                "data.label_column=null",
                f"data.label_columns=[{','.join(names)}]",
                f"model.name={tiny_model}",
            ],
        )
    settled = as_config(cfg, ["data.test=null"]).data
    rows = load_splits(settled, 0)["train"]
    strata = fold_strata(rows.labels, task, 3)
    assert len(strata) == len(rows) and len(np.unique(strata)) >= 2
    written = tmp_path / "member.jsonl"
    written.write_text(
        _rows_frame(rows, settled).to_json(orient="records", lines=True, force_ascii=False)
    )
    member = _read_as_written(load_config(None, [f"task={task}"]).data, settled)
    back = load_table(str(written), member, split="train")
    assert back.texts == rows.texts and back.pairs == rows.pairs
    assert np.array_equal(back.labels, rows.labels)  # values exactly; label sets entry for entry


def test_a_cross_fitted_regression_teacher_labels_training_rows_out_of_fold(tiny_model, tmp_path):
    from lorafit.teacher.logits import _ensemble_members

    runs = tmp_path / "runs"
    args = stsb_overrides(tiny_model, runs, "train.max_steps=3", "data.max_train_rows=96")
    out = tmp_path / "folds"
    assert (
        main(["teacher", "--config", str(STSB_CONFIG), *args, "--folds", "2", "--output", str(out)])
        == 0
    )
    spec = json.loads((out / "teacher.json").read_text())
    assert spec["task"] == "regression" and "mean of the values" in spec["combine"]
    members, files = _ensemble_members(out)
    written = [pd.read_json(f, lines=True) for f in files]
    assert (
        sum(len(w) for w in written) == 96
    )  # each training row in exactly one member's held-out fold
    cfg = load_config(STSB_CONFIG, [*args, f"train.teacher={out}"])
    rows = load_splits(cfg.data, cfg.train.seed)["train"]
    teacher = resolve_teacher(
        cfg.train.teacher, list(cfg.data.label_names), cfg.model.max_length, "regression"
    )
    stored = teacher_log_probs(teacher, rows, tmp_path / "cache")
    from lorafit.teacher.logits import member_log_probs

    each = [member_log_probs(m, rows, "cpu", 64) for m in teacher.members]
    seen = [set(zip(w.sentence1, w.sentence2)) for w in written]
    for i, key in enumerate(zip(rows.texts, rows.pairs)):
        (k,) = [m for m in range(2) if key not in seen[m]]  # the member that did not train on it
        assert stored[i, 0] == pytest.approx(each[k][i, 0], abs=1e-5)
