"""Teachers (issue 15): the distillation loss, the stored teacher logits, refusals, unlabelled rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lorafit.config import load_config
from lorafit.data import load_splits
from lorafit.errors import UserError
from lorafit.teacher import logits as teacher_logits
from lorafit.teacher.distill import distillation_loss, prepare_distillation
from lorafit.teacher.logits import combine, resolve_teacher, teacher_log_probs

from .conftest import AG_LABELS

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def _texts(ag_subset, n, start=0):
    return ag_subset.text.tolist()[start : start + n]


# ---------------------------------------------------------------- the loss


def test_distillation_loss_equals_a_hand_computation_on_a_tiny_model(tiny_model, ag_subset):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    batch = tok(
        _texts(ag_subset, 6), padding=True, truncation=True, max_length=32, return_tensors="pt"
    )
    torch.manual_seed(0)
    # one real batch's logits, spread apart: a random tiny model's are all near 0, where a
    # smoothed and a plain cross-entropy agree to 1e-6 (a dropped label_smoothing went unseen)
    student = model(**batch).logits + torch.randn(6, 4) * 2
    teacher = torch.randn(6, 4) * 3
    labels = torch.tensor([0, 3, -100, 1, -100, 2])  # two unlabelled rows
    w, T, smooth = 0.3, 2.5, 0.1

    got = distillation_loss(student, labels, teacher, w, T, label_smoothing=smooth)

    # by hand: smoothed cross-entropy over the 4 labelled rows ...
    lab = torch.tensor([0, 1, 3, 5])
    logq = student[lab].double().log_softmax(-1)
    target = torch.full((4, 4), smooth / 4, dtype=torch.float64)
    target[torch.arange(4), labels[lab]] += 1 - smooth
    ce = -(target * logq).sum(-1).mean()
    # ... and the KL of the softened distributions over all 6 rows, times T^2
    p_t = torch.softmax(teacher.double() / T, -1)
    log_p_s = torch.log_softmax(student.double() / T, -1)
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(-1).mean()
    want = (1 - w) * ce + w * T * T * kl
    assert got.detach().item() == pytest.approx(want.detach().item(), rel=1e-5)

    got.backward()  # gradients flow to the student's weights
    assert model.classifier.out_proj.weight.grad is not None


def test_loss_with_weight_zero_and_all_rows_labelled_is_the_plain_cross_entropy():
    torch.manual_seed(1)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    plain = torch.nn.functional.cross_entropy(s, y)
    assert torch.equal(distillation_loss(s, y, t, 0.0, 2.0), plain)
    # an all-unlabelled batch: only the KL term, and still differentiable
    s.requires_grad_(True)
    only_kl = distillation_loss(s, torch.full((5,), -100), t, 0.5, 1.0)
    only_kl.backward()
    assert s.grad is not None and only_kl.detach().item() > 0


# ---------------------------------------------------------------- the store


def test_teacher_logits_are_computed_once_and_reused(tiny_model, ag_subset, tmp_path, monkeypatch):
    calls = []
    real = teacher_logits.member_log_probs

    def counting(member, texts, device, batch_size, **kw):
        calls.append(len(texts))
        return real(member, texts, device, batch_size, **kw)

    monkeypatch.setattr(teacher_logits, "member_log_probs", counting)
    teacher = resolve_teacher([str(tiny_model)], LABELS, 64)
    texts = _texts(ag_subset, 30)

    first = teacher_log_probs(teacher, texts, tmp_path)
    (store,) = (tmp_path / "teacher").iterdir()
    mtime = (store / "log_probs.npy").stat().st_mtime_ns
    again = teacher_log_probs(resolve_teacher([str(tiny_model)], LABELS, 64), texts, tmp_path)

    assert calls == [30]  # the second run did not call the teacher's forward
    assert (store / "log_probs.npy").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first, again)
    assert first.shape == (30, 4) and np.allclose(np.exp(first).sum(-1), 1, atol=1e-5)
    assert json.loads((store / "meta.json").read_text())["rows"] == 30

    # other texts, another max_length or another dtype are another key: computed again
    teacher_log_probs(teacher, texts[:-1], tmp_path)
    teacher_log_probs(resolve_teacher([str(tiny_model)], LABELS, 32), texts, tmp_path)
    half = teacher_log_probs(teacher, texts, tmp_path, dtype="bf16")
    assert calls == [30, 29, 30, 30] and len(list((tmp_path / "teacher").iterdir())) == 4
    assert 0 < float(np.abs(half - first).max()) < 0.1  # bf16 weights: close, not the same


def test_changed_teacher_weights_are_another_key(tiny_model, ag_subset, tmp_path):
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    texts = _texts(ag_subset, 5)
    a = teacher_logits.store_path(resolve_teacher([str(copy)], LABELS, 64), texts, tmp_path)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")  # one byte of the weights differs
    b = teacher_logits.store_path(resolve_teacher([str(copy)], LABELS, 64), texts, tmp_path)
    assert a != b


def test_an_ensemble_is_the_mean_of_the_members_probabilities():
    p1 = np.log(np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]], dtype=np.float32))
    p2 = np.log(np.array([[0.1, 0.7, 0.1, 0.1], [0.4, 0.2, 0.2, 0.2]], dtype=np.float32))
    got = np.exp(combine([p1, p2]))
    np.testing.assert_allclose(got, [[0.4, 0.4, 0.1, 0.1], [0.325, 0.225, 0.225, 0.225]], rtol=1e-5)


# ---------------------------------------------------------------- refusals


def _relabelled(tiny_model, tmp_path, names):
    folder = shutil.copytree(tiny_model, tmp_path / f"teacher-{len(names)}")
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): n for i, n in enumerate(names)}
    config["label2id"] = {n: i for i, n in enumerate(names)}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "names, message",
    [
        (["World", "Sports", "Business"], "predicts 3 labels, the student 4"),
        (["Sports", "World", "Business", "Sci/Tech"], "differ from the student's data.label_names"),
    ],
)
def test_a_teacher_with_other_labels_is_refused_in_one_line(tiny_model, tmp_path, names, message):
    folder = _relabelled(tiny_model, tmp_path, names)
    with pytest.raises(UserError, match=message) as e:
        resolve_teacher([str(folder)], LABELS, 64)
    assert "\n" not in str(e.value) and str(folder) in str(e.value)


def test_a_teacher_run_with_other_label_names_is_refused(tmp_path):
    run = tmp_path / "run-x"
    (run / "checkpoint-best").mkdir(parents=True)
    (run / "config.yaml").write_text("data:\n  label_names: [a, b, c, d]\n")
    with pytest.raises(UserError, match=r"its labels \['a', 'b', 'c', 'd'\] differ"):
        resolve_teacher([str(run)], LABELS, 64)


def test_generic_label_names_of_a_model_folder_are_accepted(tiny_model, tmp_path):
    folder = _relabelled(tiny_model, tmp_path, ["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3"])
    assert resolve_teacher([str(folder)], LABELS, 64).members[0].label_names is None


def test_a_teacher_whose_tokenizer_cannot_read_the_texts_is_refused(ag_subset, tmp_path):
    from lorafit.toy import save_toy_mpnet

    # a vocabulary of two letters: AG News words become its unknown token
    folder = save_toy_mpnet(tmp_path / "alien", ["qz zq qqz zzq"] * 50, tokenizer_vocab=40)
    teacher = resolve_teacher([str(folder)], LABELS, 64)
    with pytest.raises(
        UserError, match=r"its tokenizer reads \d+% of the training texts' tokens as unknown"
    ) as e:
        teacher_log_probs(teacher, _texts(ag_subset, 20), tmp_path / "cache")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "cache" / "teacher").exists() or not any(
        (tmp_path / "cache" / "teacher").iterdir()
    )


def test_a_teacher_folder_without_a_tokenizer_is_refused(tiny_model, ag_subset, tmp_path):
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, folder / name)
    teacher = resolve_teacher([str(folder)], LABELS, 64)
    with pytest.raises(UserError, match="no tokenizer files"):
        teacher_log_probs(teacher, _texts(ag_subset, 3), tmp_path / "cache")


def test_a_folder_that_is_no_teacher_is_refused(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        resolve_teacher([str(tmp_path / "nope")], LABELS, 64)
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.yaml").write_text("{}\n")
    with pytest.raises(UserError, match="no checkpoint-best"):
        resolve_teacher([str(tmp_path / "unfinished")], LABELS, 64)


def test_unlabeled_needs_a_teacher_and_keys_are_checked():
    with pytest.raises(UserError, match="data.unlabeled: needs train.teacher"):
        load_config(None, ["data.unlabeled=x.csv"])
    with pytest.raises(UserError, match="train.distill_weight"):
        load_config(None, ["train.distill_weight=1.5"])
    with pytest.raises(UserError, match="data.unlabeled_share"):
        load_config(None, ["data.unlabeled_share=1"])
    assert load_config(None, ["train.teacher=runs/a,runs/b"]).train.teacher == ["runs/a", "runs/b"]
    assert load_config(None).train.teacher is None


# ---------------------------------------------------------------- unlabelled rows


@pytest.fixture
def unlabeled_setup(tiny_model, small_csv, ag_subset, tmp_path):
    """A student config on small_csv and an unlabelled file: 10 validation texts, 30 new, 1 empty."""
    import pandas as pd

    cfg = load_config(
        None,
        [
            AG_LABELS,
            f"data.train={small_csv}",
            "data.val_size=40",
            "data.test=null",
            f"model.name={tiny_model}",
            f"train.teacher={tiny_model}",
            f"train.cache_dir={tmp_path / 'cache'}",
        ],
    )
    val = load_splits(cfg.data, cfg.train.seed)["validation"]
    used = set(pd.read_csv(small_csv).text)
    fresh = [t for t in ag_subset.text.tolist()[::-1] if t not in used][:30]
    texts = val.texts[:10] + fresh + [" "]
    path = tmp_path / "unlabelled.jsonl"
    pd.DataFrame({"text": texts, "label": [9] * len(texts)}).to_json(
        path, orient="records", lines=True
    )
    return cfg, path, fresh


def test_unlabelled_rows_join_training_and_never_validation(unlabeled_setup):
    from lorafit.config import as_config

    cfg, path, fresh = unlabeled_setup
    cfg = as_config(cfg, [f"data.unlabeled={path}"])
    plain = load_splits(cfg.data, cfg.train.seed)
    splits = load_splits(cfg.data, cfg.train.seed)
    d = prepare_distillation(cfg, splits)

    # validation: the very rows of a run without unlabelled texts, and none of them joined
    assert splits["validation"].texts == plain["validation"].texts
    np.testing.assert_array_equal(splits["validation"].labels, plain["validation"].labels)
    n = len(plain["train"])
    joined = splits["train"].texts[n:]
    assert sorted(joined) == sorted(fresh) and not set(joined) & set(plain["validation"].texts)
    assert splits["train"].texts[:n] == plain["train"].texts
    assert (splits["train"].labels[n:] == -100).all() and (splits["train"].labels[:n] >= 0).all()
    assert d.log_probs.shape == (n + 30, 4)
    assert d.unlabeled["dropped_in_validation"] == 10 and d.unlabeled["dropped_empty"] == 1
    assert d.describe()["unlabeled"]["joined"] == 30


def test_a_missing_unlabelled_file_is_refused_naming_the_key(unlabeled_setup, tmp_path):
    from lorafit.config import as_config

    cfg, _, _ = unlabeled_setup
    cfg = as_config(cfg, [f"data.unlabeled={tmp_path / 'nope.pkl'}"])
    with pytest.raises(UserError, match=r"data.unlabeled .*nope.pkl: file not found"):
        prepare_distillation(cfg, load_splits(cfg.data, cfg.train.seed))


def test_unlabelled_confidence_and_share(unlabeled_setup, caplog):
    from lorafit.config import as_config

    caplog.set_level("INFO", logger="lorafit")
    cfg, path, fresh = unlabeled_setup
    base = [f"data.unlabeled={path}"]
    splits = load_splits(cfg.data, cfg.train.seed)
    n = len(splits["train"])
    full = prepare_distillation(as_config(cfg, base), splits)
    top = np.exp(full.log_probs[n:].astype(np.float64).max(-1))
    cut = float(np.sort(top)[15])  # a row's own confidence: kept (>=), the boundary case
    splits = load_splits(cfg.data, cfg.train.seed)
    d = prepare_distillation(
        as_config(cfg, [*base, f"data.unlabeled_min_confidence={cut!r}"]), splits
    )
    assert d.unlabeled["joined"] == int((top >= cut).sum()) == 15
    assert (np.exp(d.log_probs[n:].astype(np.float64).max(-1)) >= cut).all()
    assert d.unlabeled["min_confidence"] == cut and d.unlabeled["dropped_low_confidence"] == 15
    assert d.unlabeled["share"] is None and d.unlabeled["labelled_rows"] == n
    line = f"data.unlabeled: 15 of 30 usable rows join the {n} labelled ones (15 below confidence {cut:.2f})"
    assert line in caplog.messages
    # share 0.1 of the training rows: 0.1 / 0.9 * 160 = 18 unlabelled rows, seeded
    picks = []
    for _ in range(2):
        splits = load_splits(cfg.data, cfg.train.seed)
        d = prepare_distillation(as_config(cfg, [*base, "data.unlabeled_share=0.1"]), splits)
        picks.append(splits["train"].texts[n:])
    assert len(picks[0]) == round(0.1 / 0.9 * n) and picks[0] == picks[1]
    assert len(set(picks[0])) == len(picks[0]) and set(picks[0]) <= set(
        fresh
    )  # drawn without replacement
    assert d.unlabeled["share"] == 0.1


def test_no_teacher_no_distillation(small_csv):
    cfg = load_config(None, [f"data.train={small_csv}", "data.val_size=40", "data.test=null"])
    splits = load_splits(cfg.data, cfg.train.seed)
    assert prepare_distillation(cfg, splits) is None


# ---------------------------------------------------------------- lorafit teacher


def _tiny_args(tiny_model, small_csv, run_dir):
    return [
        AG_LABELS,
        f"model.name={tiny_model}",
        f"data.train={small_csv}",
        "data.val_size=40",
        "data.test=null",
        "model.max_length=64",
        "train.max_steps=4",
        "train.eval_every=4",
        "train.batch_size=16",
        "log.progress=false",
        f"run.dir={run_dir}",
    ]


@pytest.fixture(scope="module")
def teacher_runs(tiny_model, small_csv, tmp_path_factory):
    """Two tiny teachers made by `lorafit teacher`: full fine-tuning and a LoRA run."""
    from lorafit.cli import main

    runs = tmp_path_factory.mktemp("teachers") / "runs"
    args = _tiny_args(tiny_model, small_csv, runs)
    assert main(["teacher", *args, "lora.mode=full", "train.lr=1e-3", "run.name=full-teacher"]) == 0
    assert main(["teacher", *args, "lora.r=4", "train.lr=1e-2", "run.name=lora-teacher"]) == 0
    return runs


def test_lorafit_teacher_trains_a_full_model_with_the_budget_lifted(
    teacher_runs, tiny_model, small_csv, tmp_path
):
    from lorafit.cli import main

    link = teacher_runs / "full-teacher"
    assert link.is_symlink() and (link / "checkpoint-best").is_dir()
    cfg = load_config(link / "config.yaml")
    assert cfg.lora.mode == "full" and cfg.budget == 10**12
    summary = json.loads((link / "summary.json").read_text())
    assert summary["params"]["trainable"] == summary["params"]["total"] > 1_000_000 // 10
    # the same settings through `lorafit train` stay under the budget: refused
    args = _tiny_args(tiny_model, small_csv, tmp_path / "runs")
    assert main(["train", *args, "lora.mode=full", "budget=1000"]) == 2
    (member,) = resolve_teacher([str(link)], LABELS, 64).members
    assert member.kind == "run" and member.params == summary["params"]["total"]


def test_lorafit_teacher_ensemble_is_the_mean_of_its_runs(teacher_runs, ag_subset, tmp_path):
    from lorafit.cli import main

    a, b = teacher_runs / "full-teacher", teacher_runs / "lora-teacher"
    out = tmp_path / "ens"
    assert main(["teacher", "--ensemble", str(a), str(b), "--output", str(out)]) == 0
    assert len(json.loads((out / "teacher.json").read_text())["members"]) == 2
    texts = _texts(ag_subset, 12)
    both = teacher_log_probs(resolve_teacher([str(out)], LABELS, 64), texts, tmp_path / "c")
    one = [
        teacher_log_probs(resolve_teacher([str(r)], LABELS, 64), texts, tmp_path / "c")
        for r in (a, b)
    ]
    np.testing.assert_allclose(
        np.exp(both), (np.exp(one[0]) + np.exp(one[1])) / 2, rtol=1e-4, atol=1e-6
    )
    # a list in train.teacher is the same ensemble
    listed = teacher_log_probs(resolve_teacher([str(a), str(b)], LABELS, 64), texts, tmp_path / "c")
    np.testing.assert_allclose(listed, both, rtol=1e-6)
    assert main(["teacher", "--ensemble", str(a)]) == 2  # one run is no ensemble


def test_a_cross_fitted_mask_averages_only_the_members_that_did_not_train_on_a_row():
    p1 = np.log(
        np.array(
            [[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.1, 0.7]], dtype=np.float32
        )
    )
    p2 = np.log(
        np.array(
            [[0.1, 0.7, 0.1, 0.1], [0.4, 0.2, 0.2, 0.2], [0.1, 0.1, 0.7, 0.1]], dtype=np.float32
        )
    )
    use = np.array(
        [[True, False, False], [False, True, False]]
    )  # row 3: no member counts, so both do
    got = np.exp(combine([p1, p2], use))
    np.testing.assert_allclose(
        got, [[0.7, 0.1, 0.1, 0.1], [0.4, 0.2, 0.2, 0.2], [0.1, 0.1, 0.4, 0.4]], rtol=1e-5
    )


@pytest.fixture(scope="module")
def folds_teacher(tiny_model, small_csv, tmp_path_factory):
    """A cross-fitted teacher of three tiny runs, made by `lorafit teacher --folds 3`."""
    from lorafit.cli import main

    root = tmp_path_factory.mktemp("folds")
    args = [
        *_tiny_args(tiny_model, small_csv, root / "runs"),
        "lora.r=4",
        "train.lr=1e-2",
        "run.name=cf",
    ]
    assert main(["teacher", *args, "--folds", "3", "--output", str(root / "cf")]) == 0
    return root / "cf", args


def test_a_cross_fitted_teacher_labels_each_training_row_out_of_fold(
    folds_teacher, tiny_model, small_csv, tmp_path
):
    folder, args = folds_teacher
    spec = json.loads((folder / "teacher.json").read_text())
    members = [Path(m) for m in spec["members"]]
    assert len(members) == 3 and all((m / "checkpoint-best").is_dir() for m in members)
    # the config's own split: validation rows kept apart, the training rows cut into 3 folds
    splits = load_splits(load_config(None, args[:-3]).data, 42)
    train, val = splits["train"].texts, splits["validation"].texts
    trained = [
        set(pd.read_json(folder / f, lines=True, dtype=False)["text"]) for f in spec["trained_on"]
    ]
    held_out = [[t for t in train if t not in seen] for seen in trained]
    assert sorted(sum(held_out, [])) == sorted(
        train
    )  # every training row is held out by exactly one member
    assert all(abs(len(h) - len(train) / 3) <= 4 for h in held_out) and not any(
        set(val) & s for s in trained
    )
    for m, f in zip(
        members, spec["trained_on"]
    ):  # each member trained on its file, chose on the validation rows
        cfg = load_config(m / "config.yaml")
        assert Path(cfg.data.train) == folder / f and cfg.data.validation.endswith(
            "validation.jsonl"
        )
    # a training row: the one member that never saw it; a validation row: the mean of all three
    texts = [held_out[0][0], held_out[1][0], held_out[2][0], val[0], val[1]]
    teacher = resolve_teacher([str(folder)], LABELS, 64)
    got = teacher_log_probs(teacher, texts, tmp_path / "c")
    alone = [
        teacher_log_probs(resolve_teacher([str(m)], LABELS, 64), texts, tmp_path / "c")
        for m in members
    ]
    for k in range(3):
        np.testing.assert_allclose(got[k], alone[k][k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.exp(got[3:]), sum(np.exp(a[3:]) for a in alone) / 3, rtol=1e-4, atol=1e-6
    )
    assert teacher.describe()["combine"].startswith("cross-fitted")
    # the same members read as a plain ensemble (no rows recorded) are another teacher
    plain = resolve_teacher([str(m) for m in members], LABELS, 64)
    assert plain.identity != teacher.identity


def test_a_cross_fitted_build_resumes_and_refuses_another_plan(folds_teacher, tmp_path):
    from lorafit.cli import main

    folder, args = folds_teacher
    finished = sorted(p.name for p in folder.glob("fold-*"))
    shutil.rmtree(folder / finished[1])  # member 1 lost: only it trains again
    assert main(["teacher", *args, "--folds", "3", "--output", str(folder)]) == 0
    now = sorted(p.name for p in folder.glob("fold-*"))
    assert (
        now[0] == finished[0]
        and now[2] == finished[2]
        and now[1] != finished[1]
        and now[1].startswith("fold-1-")
    )
    assert json.loads((folder / "teacher.json").read_text())["members"][1].endswith(now[1])
    assert (
        main(["teacher", *args, "--folds", "2", "--output", str(folder)]) == 2
    )  # another plan: refused
    assert sorted(p.name for p in folder.glob("fold-*")) == now
    assert main(["teacher", *args, "--folds", "1", "--output", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    assert (
        main(["teacher", *args, "--output", str(tmp_path / "y")]) == 2
    )  # --output needs --folds or --ensemble


# ---------------------------------------------------------------- training with a teacher


@pytest.fixture
def unlabeled_file(small_csv, ag_subset, tmp_path):
    import pandas as pd

    used = set(pd.read_csv(small_csv).text)
    fresh = [t for t in ag_subset.text.tolist()[::-1] if t not in used][:40]
    path = tmp_path / "unlabelled.csv"
    pd.DataFrame({"text": fresh}).to_csv(path, index=False)
    return path


def _student_args(tiny_model, small_csv, tmp_path, *extra):
    return [
        *_tiny_args(tiny_model, small_csv, tmp_path / "runs"),
        "train.max_steps=8",
        "train.eval_every=4",
        "train.log_every=1",
        "train.lr=5e-3",
        f"train.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]


def _only_run(parent, name):
    (run,) = [p for p in parent.iterdir() if p.name.startswith(name) and not p.is_symlink()]
    return run


def test_a_student_trains_with_a_teacher_and_unlabelled_texts(
    teacher_runs, tiny_model, small_csv, unlabeled_file, tmp_path, monkeypatch, caplog
):
    import logging

    from lorafit.cli import main

    teacher = teacher_runs / "full-teacher"
    args = _student_args(
        tiny_model,
        small_csv,
        tmp_path,
        f"train.teacher={teacher}",
        f"data.unlabeled={unlabeled_file}",
    )
    assert main(["train", *args, "run.name=first"]) == 0
    run = _only_run(tmp_path / "runs", "first")
    summary = json.loads((run / "summary.json").read_text())
    assert (
        summary["teacher"]["teacher"] == [str(teacher)]
        and summary["teacher"]["unlabeled"]["joined"] == 40
    )
    assert summary["params"]["trainable"] < summary["teacher"]["members"][0]["params"]
    assert (
        json.loads((run / "model_description.json").read_text())["teacher"]["distill_weight"] == 0.5
    )
    text = (run / "model_description.txt").read_text()
    assert (
        f"teacher         {teacher} (single model;" in text and "distillation    w=0.5, T=2" in text
    )
    assert f"unlabelled      {unlabeled_file}: 40 of 40 rows joined training" in text
    assert "distilled from the teacher" in (run / "checkpoint-best" / "README.md").read_text()
    # the teacher's lines, logged before the run folder exists, are in train.log, in order
    log_lines = (run / "train.log").read_text().splitlines()
    first = [i for i, line in enumerate(log_lines) if "teacher logits: computing" in line]
    assert (
        len(first) == 2
        and first[0] < [i for i, x in enumerate(log_lines) if "run directory:" in x][0]
    )
    assert any("teacher: " in line and "accuracy on the" in line for line in log_lines)
    stores = sorted((tmp_path / "cache" / "teacher").iterdir())
    assert len(stores) == 2  # the labelled training rows and the unlabelled texts
    mtimes = [(s / "log_probs.npy").stat().st_mtime_ns for s in stores]

    def no_forward(*a, **k):
        raise AssertionError("the teacher ran again")

    monkeypatch.setattr(teacher_logits, "member_log_probs", no_forward)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lorafit"):
        assert main(["train", *args, "run.name=second"]) == 0  # a second run reuses the store
    assert [(s / "log_probs.npy").stat().st_mtime_ns for s in stores] == mtimes
    assert caplog.text.count("teacher logits: reusing") == 2
    assert (_only_run(tmp_path / "runs", "second") / "train.log").read_text().count(
        "teacher logits: reusing"
    ) == 2

    def rows(r):
        lines = (r / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["train_loss"] for x in lines if '"train"' in x]

    assert rows(run) == rows(_only_run(tmp_path / "runs", "second"))


def test_a_teacher_at_weight_zero_leaves_the_losses_of_no_teacher(
    teacher_runs, tiny_model, small_csv, tmp_path
):
    from lorafit.cli import main

    args = _student_args(tiny_model, small_csv, tmp_path)
    assert main(["train", *args, "run.name=plain"]) == 0
    assert (
        main(
            [
                "train",
                *args,
                f"train.teacher={teacher_runs / 'lora-teacher'}",
                "train.distill_weight=0",
                "run.name=zero",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                *args,
                f"train.teacher={teacher_runs / 'lora-teacher'}",
                "train.distill_weight=0.9",
                "run.name=heavy",
            ]
        )
        == 0
    )

    def losses(name):
        run = _only_run(tmp_path / "runs", name)
        return [
            (r["kind"], r.get("train_loss"), r.get("eval_loss"))
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        ]

    assert losses("zero") == losses("plain")  # exactly: the teacher moves no random stream
    assert losses("heavy") != losses("plain")


def test_a_run_with_a_teacher_resumes_exactly(
    teacher_runs, tiny_model, small_csv, unlabeled_file, tmp_path, monkeypatch
):
    from lorafit.train import train

    from .test_resume import assert_same_run, crash_at, resumable_overrides

    parent = tmp_path / "ref"
    extra = [
        f"train.teacher={teacher_runs / 'full-teacher'}",
        f"data.unlabeled={unlabeled_file}",
        f"train.cache_dir={tmp_path / 'cache'}",
        "train.max_steps=12",
        "train.keep_last=100",
        AG_LABELS,
    ]
    reference = train(None, [*resumable_overrides(tiny_model, small_csv, parent), *extra])
    run = Path(shutil.copytree(reference, tmp_path / "run", symlinks=True))
    crash_at(run, 6)
    monkeypatch.setattr(
        teacher_logits, "member_log_probs", lambda *a, **k: pytest.fail("the teacher ran again")
    )
    assert train(resume=run) == run
    assert_same_run(run, reference)


@pytest.mark.parametrize("precision, dtype", [("bf16", "bf16"), ("no", "fp32")])
def test_the_store_filled_before_training_is_the_one_training_reads(
    precision, dtype, teacher_runs, tiny_model, small_csv, tmp_path, monkeypatch
):
    """A bf16 run's teacher runs in bf16 (fp32 run: fp32), and `prepare_distillation` without
    an accelerator (benchmarks/distill.py fills the store first) picks the same store."""
    from lorafit.config import load_config
    from lorafit.data import load_splits
    from lorafit.teacher import prepare_distillation
    from lorafit.train import train

    cfg = load_config(
        None,
        _student_args(
            tiny_model,
            small_csv,
            tmp_path,
            f"train.teacher={teacher_runs / 'lora-teacher'}",
            f"train.mixed_precision={precision}",
        ),
    )
    prepare_distillation(cfg, load_splits(cfg.data, cfg.train.seed))
    (store,) = (tmp_path / "cache" / "teacher").iterdir()
    assert json.loads((store / "meta.json").read_text())["dtype"] == dtype
    monkeypatch.setattr(
        teacher_logits, "member_log_probs", lambda *a, **k: pytest.fail("the teacher ran again")
    )
    train(cfg)
    assert len(list((tmp_path / "cache" / "teacher").iterdir())) == 1


# ---------------------------------------------------------------- benchmarks/distill.py


def test_the_distill_benchmark_scores_an_ensemble_teacher_and_reuses_its_students(
    tiny_model, small_csv, tmp_path, capsys
):
    """The students alone need no teacher; an ensemble of them is then the teacher, scored on
    the holdout (clean and perturbed) as the mean of its members' probabilities, and the
    students are reused, not trained again."""
    import importlib.util

    import pandas as pd

    from lorafit.robustness import perturbed_texts
    from lorafit.teacher.build import write_ensemble

    spec = importlib.util.spec_from_file_location(
        "bench_distill", Path(__file__).parents[1] / "benchmarks" / "distill.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "out"
    common = [
        "--data",
        str(small_csv),
        "--holdout-rows",
        "40",
        "--unlabeled-rows",
        "40",
        "--val-rows",
        "40",
        "--max-length",
        "32",
        "--seeds",
        "1,2",
        "--out",
        str(out),
        "--score-dtype",
        "fp32",
        "--student-overrides",
        f"model.name={tiny_model}",
        "lora.r=4",
        "train.max_steps=4",
        "train.eval_every=4",
        "train.batch_size=16",
        "train.lr=5e-3",
        f"train.cache_dir={tmp_path / 'cache'}",
    ]
    bench.main(["--recipes", "student", *common])
    students = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()][1:]
    assert [r["seed"] for r in students] == [1, 2] and all(
        r["recipe"] == "student" for r in students
    )
    ens = write_ensemble([r["run_dir"] for r in students], tmp_path / "ens")
    capsys.readouterr()

    bench.main(
        [
            "--teacher",
            str(ens),
            "--unlabeled",
            "holdout",
            "--reuse-students",
            "--recipes",
            "student,teacher+unlabeled",
            *common,
        ]
    )
    printed = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    teacher = printed[0]["teacher"]
    assert teacher["members"] == 2
    assert teacher["trainable"] == sum(r["trainable"] for r in students)
    holdout = pd.read_csv(out / "data" / "holdout.csv")
    resolved = resolve_teacher([str(ens)], LABELS, 32)
    for key, texts in (
        ("accuracy", holdout.text.tolist()),
        ("perturbed_accuracy", perturbed_texts(holdout.text.tolist(), "mixed", 0.2, 0)),
    ):
        probs = teacher_log_probs(resolved, texts, tmp_path / "check")
        assert teacher[key] == pytest.approx(
            float((probs.argmax(-1) == holdout.label.to_numpy()).mean())
        )
    reused = [r for r in printed[1:] if r["recipe"] == "student"]
    assert [r.get("reused") for r in reused] == [True, True]
    assert [r["run_dir"] for r in reused] == [r["run_dir"] for r in students]
    taught = [r for r in printed[1:] if r["recipe"] == "teacher+unlabeled"]
    assert len(taught) == 2 and all(
        r["unlabeled"]["file"] == str(out / "data" / "holdout.csv") for r in taught
    )


@pytest.mark.parametrize(
    ("config", "student", "want"),
    [
        (
            {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1},
            600,
            512,
        ),  # positions start after padding
        ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 128, 128),
        ({"model_type": "mpnet", "max_position_embeddings": 514, "pad_token_id": 1}, 1000, 512),
        (
            {"model_type": "bert", "max_position_embeddings": 512, "pad_token_id": 0},
            1000,
            512,
        ),  # no offset
        ({"model_type": "bert", "max_position_embeddings": 300}, 1000, 300),
        (
            {"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1},
            1000,
            512,
        ),
        ({"model_type": "camembert", "max_position_embeddings": 514, "pad_token_id": 1}, 1000, 512),
        (
            {"model_type": "roberta", "max_position_embeddings": 514},
            1000,
            512,
        ),  # transformers' default pad: 1
        ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 0}, 1000, 513),
        ({"model_type": "bert", "max_position_embeddings": 9}, 64, 9),
        (
            {"model_type": "bert", "max_position_embeddings": 8},
            64,
            64,
        ),  # no usable table: the student's
        ({"model_type": "bert"}, 64, 64),
    ],
)
def test_a_model_folders_reading_length_is_the_students_within_its_position_table(
    config, student, want, tmp_path
):
    """A model-folder member reads at most the student's max_length, and no more tokens than its
    position table holds (RoBERTa-style tables lose pad_token_id + 1 rows to the offset)."""
    from lorafit.teacher.logits import _model_member

    (tmp_path / "config.json").write_text(json.dumps({**config, "num_labels": 4}))
    assert _model_member(tmp_path, student).max_length == want


def test_a_model_folders_labels_come_from_id2label_or_num_labels(tmp_path):
    from lorafit.teacher.logits import _model_member

    names = {"0": "World", "1": "Sports", "2": "Business", "3": "Sci/Tech"}
    (tmp_path / "config.json").write_text(
        json.dumps({"id2label": {k: names[k] for k in ["2", "0", "3", "1"]}})
    )
    member = _model_member(tmp_path, 64)
    assert (
        member.label_names == LABELS and member.num_labels == 4 and member.task == "classification"
    )
    assert member.kind == "model" and member.path == tmp_path and member.base == str(tmp_path)
    many = [f"topic{k}" for k in range(12)]  # ids past 9: ordered as numbers, not as strings
    (tmp_path / "config.json").write_text(
        json.dumps({"id2label": {str(k): n for k, n in reversed(list(enumerate(many)))}})
    )
    assert _model_member(tmp_path, 64).label_names == many
    (tmp_path / "config.json").write_text(
        json.dumps({"id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}})
    )
    member = _model_member(tmp_path, 64)
    assert (
        member.label_names is None and member.num_labels == 3
    )  # generic names: any student's names
    (tmp_path / "config.json").write_text(json.dumps({"num_labels": 5}))
    member = _model_member(tmp_path, 64)
    assert member.num_labels == 5 and member.label_names is None
    (tmp_path / "config.json").write_text(json.dumps({}))  # transformers' default: two labels
    assert _model_member(tmp_path, 64).num_labels == 2
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json is not readable JSON"):
        _model_member(tmp_path, 64)


def test_no_cross_fitted_member_means_no_out_of_fold_mask():
    from lorafit.teacher.logits import Teacher, TeacherMember, out_of_fold

    members = [TeacherMember("run", Path(f"m{k}"), LABELS, 4, 32, "base") for k in range(2)]
    assert out_of_fold(Teacher(["t"], members), ["a", "b"]) is None


def test_check_shape_refuses_a_run_member_of_the_other_shape_only():
    from lorafit.data import TextTable
    from lorafit.teacher.logits import TeacherMember, check_shape

    singles, pairs = TextTable(["a"], None, "x"), TextTable(["a"], None, "x", ["b"])
    run = TeacherMember("run", Path("r"), LABELS, 4, 32, "base", text_columns=["text"])
    check_shape(run, singles)
    with pytest.raises(UserError) as e:
        check_shape(run, pairs)
    assert str(e.value) == (
        "train.teacher r: it was trained on single texts, the student reads sentence pairs; "
        "use a teacher trained with the same kind of data.text_column"
    )
    pair_run = TeacherMember("run", Path("p"), LABELS, 4, 32, "base", text_columns=["s1", "s2"])
    check_shape(pair_run, pairs)
    with pytest.raises(
        UserError, match="it was trained on sentence pairs, the student reads single texts"
    ):
        check_shape(pair_run, singles)
    # a model folder reads whatever it is given (its tokenizer encodes a pair), and a run that
    # did not record its columns is not judged
    check_shape(TeacherMember("model", Path("m"), None, 4, 32, "m", text_columns=["text"]), pairs)
    check_shape(TeacherMember("run", Path("old"), LABELS, 4, 32, "base"), pairs)


def test_pair_key_and_single_texts_digest_by_hand():
    """The teacher store's row digest, written out with hashlib: renaming the pairs' tag or
    the length prefix would silently recompute every user's stored teacher logits."""
    import hashlib

    from lorafit.teacher.logits import texts_digest

    def prefixed(text: str) -> bytes:
        b = text.encode("utf-8")
        return len(b).to_bytes(8, "little") + b

    assert texts_digest(["ab", "é"]) == hashlib.sha256(prefixed("ab") + prefixed("é")).hexdigest()
    assert (
        texts_digest(["ab", "x"], ["c", ""])
        == hashlib.sha256(
            b"pairs\0" + prefixed("ab") + prefixed("c") + prefixed("x") + prefixed("")
        ).hexdigest()
    )
    with pytest.raises(ValueError) as e:
        texts_digest(["a", "b"], ["c"])
    assert str(e.value) == "2 texts but 1 pairs"
    # a lone surrogate (a text read with errors="surrogateescape") is hashed, not refused
    lone = "a\udc80"
    raw = lone.encode("utf-8", "surrogatepass")
    assert texts_digest([lone]) == hashlib.sha256(len(raw).to_bytes(8, "little") + raw).hexdigest()


def test_pair_key_of_the_teacher_store_by_hand(tmp_path):
    """store_key: sha256 of the documented header (format, teacher, lengths, dtype, task) and
    the rows' digest; 32 hex digits."""
    import hashlib
    import json

    from lorafit.teacher.logits import (
        STORE_FORMAT,
        Teacher,
        TeacherMember,
        store_key,
        texts_digest,
    )

    for name in ("m1", "m2"):  # a member's identity reads its folder's files
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(f'{{"name": "{name}"}}')
    members = [
        TeacherMember("model", tmp_path / "m1", None, 4, 96, "m1"),
        TeacherMember("model", tmp_path / "m2", None, 4, 64, "m2"),
    ]
    teacher = Teacher(["m1", "m2"], members)
    rows = ["one text", "another"]

    def by_hand(dtype, task=None):
        fields = {
            "format": STORE_FORMAT,
            "teacher": teacher.identity,
            "max_length": [96, 64],
            "dtype": dtype,
            **({"task": task} if task else {}),
        }
        head = json.dumps(fields)
        return hashlib.sha256((head + texts_digest(rows)).encode()).hexdigest()[:32]

    assert store_key(teacher, rows) == by_hand("fp32")  # the default dtype
    assert store_key(teacher, rows, "bf16") == by_hand("bf16")
    for m in members:
        m.task = "regression"
    assert store_key(teacher, rows) == by_hand("fp32", "regression")


def test_row_keys_are_texts_or_pairs_of_texts():
    from lorafit.data import TextTable
    from lorafit.teacher.logits import as_rows, row_keys

    assert row_keys(TextTable(["a", "b"], None, "x")) == ["a", "b"]
    assert row_keys(TextTable(["a", "b"], None, "x", ["c", "d"])) == [("a", "c"), ("b", "d")]
    assert row_keys(as_rows(["a", "b"])) == ["a", "b"]


def test_other_labels_and_a_regression_teachers_outputs_are_refused_word_for_word():
    from lorafit.teacher.logits import TeacherMember, _check_labels

    regression = TeacherMember("run", Path("r"), ["score"], 1, 64, "base", task="regression")
    _check_labels(regression, ["anything"])  # one value, whatever its column is called
    regression.num_labels = 3
    with pytest.raises(UserError) as e:
        _check_labels(regression, ["score"])
    assert str(e.value) == "train.teacher r: it has 3 outputs; a regression teacher has one"
    three = TeacherMember("run", Path("t"), ["x", "y", "z"], 3, 64, "base")
    with pytest.raises(UserError) as e:
        _check_labels(three, ["a", "b"])
    assert str(e.value) == (
        "train.teacher t: it predicts 3 labels, the student 2 (a, b); use a teacher trained on "
        "the same classes"
    )
