"""The training loop's decisions (lorafit.train) tested directly, without training: what
mutation testing (`scripts/mutation.sh train`) needs, since the end-to-end tests (tests/test_train.py,
tests/test_oracles_training.py, tests/test_resume.py) train a model for every check.

Parameter groups and the optimizer's kind, the learning-rate schedule, the step count, the
task losses, what counts as an improvement, the moving average, class weights, when a
checkpoint is due, the resumed run's config, a train row's figures, the checkpoint folder's
recovery and the copies of the trainable tensors. Every expected value is computed here, by
hand or with torch.nn.functional, never with lorafit.train itself; every object is built in the
test (tiny `torch.nn` modules, stand-ins for Accelerate and the scheduler).
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lorafit.config import config_to_yaml, load_config
from lorafit.errors import UserError
from lorafit.train import (
    Run,
    TrainState,
    _already_finished,
    _checkpoint_due,
    _class_weight,
    _config_for,
    _load_trainable,
    _saved_ema,
    _train_row,
    build_optimizer,
    build_scheduler,
    ema_weights,
    improved,
    recover_best_dir,
    total_steps,
    trainable_state,
    update_ema,
)

train_mod = importlib.import_module("lorafit.train")  # `lorafit.train` is also the function
# imported once here, where scripts/mutation.sh's fork server imports the tests, not in every
# mutant's worker: an optimizer's first construction imports torch._dynamo (2 s), the
# scheduler transformers (1-3 s)
importlib.import_module("torch._dynamo")
importlib.import_module("transformers.optimization")
importlib.import_module("lion_pytorch")


def _cfg(*overrides: str):
    return load_config(None, ["data.label_names=[a,b,c]", *overrides])


# --- build_optimizer ----------------------------------------------------------------------


def _lora_model() -> nn.Module:
    """Two layers, each a frozen base weight, LoRA A and B and a norm; embeddings; a head."""
    torch.manual_seed(0)

    def block() -> nn.Module:
        b = nn.Module()
        b.q = nn.Module()
        b.q.base = nn.Linear(4, 4)
        b.q.base.requires_grad_(False)
        b.q.lora_A = nn.ModuleDict({"default": nn.Linear(4, 2, bias=False)})
        b.q.lora_B = nn.ModuleDict({"default": nn.Linear(2, 4, bias=False)})
        b.norm = nn.LayerNorm(4)
        return b

    model = nn.Module()
    model.embeddings = nn.Module()
    model.embeddings.word = nn.Embedding(5, 4)
    model.encoder = nn.Module()
    model.encoder.layer = nn.ModuleList([block(), block()])
    model.classifier = nn.Linear(4, 3)
    model.config = SimpleNamespace(num_hidden_layers=2)
    return model


def _groups_by_name(model: nn.Module, optimizer) -> dict[str, tuple[float, float]]:
    """name -> (lr, weight_decay) of the one group holding the parameter."""
    names = {id(p): n for n, p in model.named_parameters()}
    seen: dict[str, tuple[float, float]] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            assert name not in seen, f"{name} in two groups"
            seen[name] = (group["lr"], group["weight_decay"])
    return seen


def test_optimizer_groups_plain_lora_decay_only_on_matrices():
    model = _lora_model()
    cfg = _cfg("train.lr=0.002", "train.weight_decay=0.05")
    opt = build_optimizer(model, cfg)
    assert type(opt) is torch.optim.AdamW
    assert opt.defaults["lr"] == 0.002  # not AdamW's default 1e-3
    got = _groups_by_name(model, opt)
    expected = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            expected[n] = (0.002, 0.05 if p.ndim == 2 else 0.0)
    assert got == expected
    assert "encoder.layer.0.q.base.weight" not in got  # frozen: not optimized
    assert "encoder.layer.1.q.base.bias" not in got
    # the first group (its lr is the training log's `lr`) is the full lr with decay
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]) == (0.002, 0.05)


def test_optimizer_groups_lora_plus_and_layer_decay():
    model = _lora_model()
    lr, wd, ratio, decay = 0.001, 0.05, 4.0, 0.5
    cfg = _cfg(
        f"train.lr={lr}",
        f"train.weight_decay={wd}",
        f"train.lora_plus_ratio={ratio}",
        f"train.layer_decay={decay}",
    )
    opt = build_optimizer(model, cfg)
    got = _groups_by_name(model, opt)
    # two layers: layer 0 at decay^1, layer 1 at decay^0, embeddings at decay^2, head at 1
    expected = {
        "embeddings.word.weight": (lr * 0.25, wd),
        "encoder.layer.0.q.lora_A.default.weight": (lr * 0.5, wd),
        "encoder.layer.0.q.lora_B.default.weight": (lr * 0.5 * 4, wd),
        "encoder.layer.0.norm.weight": (lr * 0.5, 0.0),
        "encoder.layer.0.norm.bias": (lr * 0.5, 0.0),
        "encoder.layer.1.q.lora_A.default.weight": (lr, wd),
        "encoder.layer.1.q.lora_B.default.weight": (lr * 4, wd),
        "encoder.layer.1.norm.weight": (lr, 0.0),
        "encoder.layer.1.norm.bias": (lr, 0.0),
        "classifier.weight": (lr, wd),
        "classifier.bias": (lr, 0.0),
    }
    assert got.keys() == expected.keys()
    for name, (want_lr, want_wd) in expected.items():
        assert got[name][0] == pytest.approx(want_lr, rel=1e-12), name
        assert got[name][1] == want_wd, name
    assert opt.param_groups[0]["lr"] == lr  # a scale-1 group first


def test_optimizer_lion():
    from lion_pytorch import Lion

    model = _lora_model()
    opt = build_optimizer(model, _cfg("train.optimizer=lion", "train.lr=0.0003"))
    assert type(opt) is Lion
    assert opt.defaults["lr"] == 0.0003
    assert {lr for lr, _ in _groups_by_name(model, opt).values()} == {0.0003}


# --- build_scheduler ----------------------------------------------------------------------


def _factor(kind: str, step: int, warmup: int, total: int) -> float:
    """transformers' schedules written out: linear warm-up, then the decay."""
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _lrs(cfg, total: int, base: float = 2.0) -> list[float]:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = build_scheduler(opt, cfg, total)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(total):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    return lrs


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_scheduler_warmup_ratio_rounds_up(kind):
    # 0.25 x 10 = 2.5 warm-up steps: 3 (rounded up)
    lrs = _lrs(_cfg(f"train.scheduler={kind}", "train.warmup_ratio=0.25"), 10)
    assert lrs == pytest.approx([2.0 * _factor(kind, s, 3, 10) for s in range(11)], abs=1e-12)


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_scheduler_warmup_steps_override_the_ratio(kind):
    cfg = _cfg(f"train.scheduler={kind}", "train.warmup_ratio=0.25", "train.warmup_steps=4")
    lrs = _lrs(cfg, 10)
    assert lrs == pytest.approx([2.0 * _factor(kind, s, 4, 10) for s in range(11)], abs=1e-12)


def test_scheduler_zero_warmup_steps_mean_none():
    cfg = _cfg("train.scheduler=linear", "train.warmup_ratio=0.5", "train.warmup_steps=0")
    lrs = _lrs(cfg, 8)
    assert lrs[0] == 2.0  # no warm-up: the peak at once
    assert lrs == pytest.approx([2.0 * (8 - s) / 8 for s in range(9)], abs=1e-12)


# --- total_steps --------------------------------------------------------------------------


def test_total_steps():
    assert total_steps(_cfg("train.max_steps=7", "train.epochs=3"), 100) == 7
    assert total_steps(_cfg("train.epochs=2", "train.grad_accum=3"), 10) == 7  # ceil(20 / 3)
    assert total_steps(_cfg("train.epochs=2"), 10) == 20
    assert total_steps(_cfg("train.epochs=0.5"), 5) == 3  # ceil(2.5)
    assert total_steps(_cfg("train.epochs=0.25", "train.grad_accum=2"), 12) == 2  # ceil(1.5)
    assert total_steps(_cfg("train.epochs=0.5"), 2) == 1
    assert total_steps(_cfg("train.epochs=0.1"), 1) == 1  # at least one step
    assert total_steps(_cfg("train.epochs=3"), 0) == 1  # even without a batch


# --- task_loss ----------------------------------------------------------------------------


def _logits(rows: int, cols: int, dtype=torch.float32) -> torch.Tensor:
    torch.manual_seed(1)
    return (torch.randn(rows, cols) * 2).to(dtype)


def test_loss_classification_plain_is_the_mean_negative_log_likelihood():
    logits, labels = _logits(5, 3), torch.tensor([0, 2, 1, 2, 2])
    loss = train_mod.task_loss(_cfg(), logits, labels, None)
    logp = logits.double().log_softmax(1)
    hand = -logp[torch.arange(5), labels].mean()
    assert loss.item() == pytest.approx(hand.item(), rel=1e-6)


def test_loss_classification_label_smoothing():
    logits, labels = _logits(5, 3), torch.tensor([0, 2, 1, 2, 2])
    loss = train_mod.task_loss(_cfg("train.label_smoothing=0.2"), logits, labels, None)
    logp = logits.double().log_softmax(1)
    # target: 0.8 on the label plus 0.2 spread over the 3 classes
    target = torch.full((5, 3), 0.2 / 3, dtype=torch.float64)
    target[torch.arange(5), labels] += 0.8
    hand = -(target * logp).sum(1).mean()
    assert loss.item() == pytest.approx(hand.item(), rel=1e-6)


def test_loss_classification_class_weights_and_smoothing():
    logits, labels = _logits(6, 3), torch.tensor([0, 0, 1, 2, 2, 2])
    weight = torch.tensor([0.5, 2.0, 1.5])
    loss = train_mod.task_loss(_cfg("train.label_smoothing=0.1"), logits, labels, weight)
    expected = F.cross_entropy(logits, labels, weight=weight, label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    unweighted = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert loss.item() != pytest.approx(unweighted.item(), rel=1e-3)
    # without smoothing: the weighted mean of the rows' negative log-likelihoods
    loss0 = train_mod.task_loss(_cfg(), logits, labels, weight)
    logp = logits.double().log_softmax(1)
    w = weight.double()[labels]
    hand = (w * -logp[torch.arange(6), labels]).sum() / w.sum()
    assert loss0.item() == pytest.approx(hand.item(), rel=1e-6)


def test_loss_in_fp32_from_half_logits():
    logits, labels = _logits(4, 3, torch.bfloat16), torch.tensor([0, 1, 2, 1])
    loss = train_mod.task_loss(_cfg(), logits, labels, None)
    assert loss.dtype == torch.float32
    expected = F.cross_entropy(logits.float(), labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_regression_is_the_mean_squared_error_of_the_one_output():
    cfg = _cfg("task=regression", "data.label_names=[score]")
    logits = torch.tensor([[1.0], [2.5], [-1.0]], dtype=torch.bfloat16)
    labels = torch.tensor([0.5, 3.0, 1.0], dtype=torch.float64)  # as numpy hands them over
    loss = train_mod.task_loss(cfg, logits, labels, None)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((0.25 + 0.25 + 4.0) / 3, rel=1e-6)


def test_loss_multi_label_is_the_mean_binary_cross_entropy():
    cfg = _cfg("task=multi_label")
    logits = _logits(4, 3)
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.float64)
    loss = train_mod.task_loss(cfg, logits, labels, None)
    x, y = logits.double(), labels
    hand = (torch.clamp(x, min=0) - x * y + torch.log1p(torch.exp(-x.abs()))).mean()
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(hand.item(), rel=1e-6)


# --- improved -----------------------------------------------------------------------------


def test_improved():
    assert improved(0.1, None, "eval_accuracy") and improved(9.0, None, "eval_loss")
    assert improved(0.8, 0.7, "eval_accuracy") and not improved(0.6, 0.7, "eval_accuracy")
    assert not improved(0.7, 0.7, "eval_accuracy")  # a tie keeps the earlier best
    assert improved(0.3, 0.4, "eval_loss") and not improved(0.5, 0.4, "eval_loss")
    assert not improved(0.4, 0.4, "eval_loss")
    assert improved(0.9, 0.2, "eval_f1") and not improved(0.1, 0.2, "eval_mcc")


# --- update_ema, ema_weights --------------------------------------------------------------


def _two_param_model() -> nn.Module:
    m = nn.Linear(3, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        m.bias.copy_(torch.tensor([10.0, -10.0]))
    m.bias.requires_grad_(False)
    return m


@pytest.mark.parametrize(
    ("decay", "step", "d"),
    [
        (0.99, 0, 1 / 10),  # warm-up: (1 + 0) / (10 + 0)
        (0.99, 5, 6 / 15),
        (0.5, 20, 0.5),  # 21/30 > 0.5: the configured decay
        (0.99, 1000, 0.99),  # 1001/1010 > 0.99
    ],
)
def test_update_ema_warm_up_decay_and_direction(decay, step, d):
    model = _two_param_model()
    start = torch.zeros(2, 3)
    ema = {"weight": start.clone()}
    update_ema(ema, model, decay, step)
    w = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    hand = d * start.double() + (1 - d) * w
    assert torch.allclose(ema["weight"].double(), hand, rtol=0, atol=1e-6)
    assert set(ema) == {"weight"}  # the frozen bias has no average
    assert model.weight[0, 0].item() == 1.0  # the weights themselves are untouched


def test_update_ema_twice():
    model = _two_param_model()
    ema = {"weight": torch.ones(2, 3)}
    update_ema(ema, model, 0.9, 1)  # d = 2/11
    update_ema(ema, model, 0.9, 2)  # d = 3/12
    w = model.weight.detach().double()
    e = 2 / 11 * 1.0 + (1 - 2 / 11) * w
    e = 3 / 12 * e + (1 - 3 / 12) * w
    assert torch.allclose(ema["weight"].double(), e, atol=1e-6)


def _fake_accelerator(processes: int = 1, reduce=None) -> SimpleNamespace:
    return SimpleNamespace(
        num_processes=processes,
        device=torch.device("cpu"),
        unwrap_model=lambda m: m,
        reduce=reduce,
    )


def _run(model=None, **kw) -> Run:
    return Run(
        _cfg(*kw.pop("overrides", ())),
        kw.pop("accelerator", _fake_accelerator()),
        Path("."),
        model,
        None,
        None,
        kw.pop("scheduler", None),
        {},
        10,
        **kw,
    )


def test_ema_weights_swaps_the_average_in_and_back():
    model = _two_param_model()
    run = _run(model, ema={"weight": torch.full((2, 3), 7.0)})
    with ema_weights(run):
        assert torch.equal(model.weight.detach(), torch.full((2, 3), 7.0))
        assert model.bias.tolist() == [10.0, -10.0]
    assert model.weight.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    with pytest.raises(RuntimeError), ema_weights(run):
        raise RuntimeError("inside")
    assert model.weight.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]  # restored on errors too
    assert torch.equal(run.ema["weight"], torch.full((2, 3), 7.0))


def test_ema_weights_without_an_average_keeps_the_weights():
    model = _two_param_model()
    run = _run(model)
    with ema_weights(run):
        assert model.weight.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


# --- _class_weight ------------------------------------------------------------------------


def test_class_weight_balanced(caplog):
    import numpy as np

    cfg = _cfg("train.class_weights=balanced")
    labels = np.array([0, 0, 0, 1, 2, 2])
    with caplog.at_level(logging.INFO, logger="lorafit"):
        w = _class_weight(cfg, labels, torch.device("cpu"))
    assert w is not None and w.dtype == torch.float32 and w.device.type == "cpu"
    # rows / (classes x rows of the class): 6 / (3 x 3), 6 / (3 x 1), 6 / (3 x 2)
    assert w.tolist() == pytest.approx([6 / 9, 2.0, 1.0])
    assert "a 3 rows x 0.667, b 1 rows x 2.000, c 2 rows x 1.000" in caplog.text


def test_class_weight_none():
    import numpy as np

    assert _class_weight(_cfg(), np.array([0, 1, 1]), torch.device("cpu")) is None


# --- _checkpoint_due ----------------------------------------------------------------------


def test_checkpoint_due():
    every5 = _cfg("train.checkpoint_every=5")
    assert [s for s in range(1, 17) if _checkpoint_due(s, every5)] == [5, 10, 15]
    never = _cfg("train.checkpoint_every=0")
    assert not any(_checkpoint_due(s, never) for s in range(1, 20))
    one = _cfg("train.checkpoint_every=1")
    assert all(_checkpoint_due(s, one) for s in range(1, 5))
    assert _checkpoint_due(5, every5) is True and _checkpoint_due(4, every5) is False


# --- _config_for, _already_finished -------------------------------------------------------


def _run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = _cfg("train.lr=0.0123", "train.threads=3", "run.name=mine")
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    return run_dir


def test_config_for_a_new_run():
    cfg, resume_dir = _config_for(None, ["train.lr=0.5", "data.label_names=[x,y]"], None)
    assert resume_dir is None and cfg.train.lr == 0.5 and cfg.data.label_names == ["x", "y"]
    given = _cfg("train.lr=0.25")
    cfg, resume_dir = _config_for(given, (), None)
    assert resume_dir is None and cfg.train.lr == 0.25


def test_config_for_a_resume_reads_the_runs_config(tmp_path):
    run_dir = _run_dir(tmp_path)
    cfg, resume_dir = _config_for(None, (), str(run_dir))
    assert resume_dir == run_dir and isinstance(resume_dir, Path)
    assert cfg.train.lr == 0.0123 and cfg.run.name == "mine" and cfg.train.threads == 3
    cfg, _ = _config_for(None, ["train.threads=1"], run_dir)  # only the threads may change
    assert cfg.train.threads == 1 and cfg.train.lr == 0.0123


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("some.yaml", ()),
        (None, ["train.lr=1"]),
        (None, ["train.threads=2", "train.lr=1"]),
    ],
)
def test_config_for_a_resume_refuses_settings(tmp_path, config, overrides):
    run_dir = _run_dir(tmp_path)
    with pytest.raises(UserError, match="uses its own config.yaml"):
        _config_for(config, overrides, run_dir)


def test_config_for_a_resume_of_no_run(tmp_path):
    with pytest.raises(UserError, match="no such run directory"):
        _config_for(None, (), tmp_path / "missing")


def test_already_finished_only_refreshes_outputs(tmp_path, monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(train_mod, "_finish_outputs", calls.append)
    with caplog.at_level(logging.INFO, logger="lorafit"):
        assert _already_finished(tmp_path) == tmp_path
    assert calls == [tmp_path]
    assert "already finished" in caplog.text


def test_train_resume_of_a_finished_run_trains_nothing(tmp_path, monkeypatch):
    run_dir = _run_dir(tmp_path)
    (run_dir / "summary.json").write_text("{}")
    calls = []
    monkeypatch.setattr(train_mod, "_finish_outputs", calls.append)
    monkeypatch.setattr(train_mod, "make_accelerator", lambda cfg: pytest.fail("trained"))
    assert train_mod.train(resume=run_dir) == run_dir
    assert calls == [run_dir]


# --- _train_row, Run.count_batch ----------------------------------------------------------


class _Sched:
    def get_last_lr(self):
        return [0.125, 99.0]


def test_train_row_fields_and_arithmetic():
    run = _run(scheduler=_Sched())
    run.state.step = 7
    run.window = dict(loss=3.0, steps=2, samples=40, tokens=300, padded=100)
    run.started = time.time() - 10.0
    row = _train_row(run, 1.234567, 4.0)
    assert set(row) == {
        "kind",
        "step",
        "epoch",
        "time_s",
        "lr",
        "train_loss",
        "samples_per_s",
        "tokens_per_s",
        "padding_share",
        "memory_mb",
        "memory_now_mb",
    }
    assert row["kind"] == "train" and row["step"] == 7
    assert row["epoch"] == 1.2346
    assert 10.0 <= row["time_s"] < 12.0 and row["time_s"] == round(row["time_s"], 3)
    assert row["lr"] == 0.125
    assert row["train_loss"] == 1.5  # the window's loss over its steps
    assert row["samples_per_s"] == 10.0  # 40 samples in 4 s
    assert row["tokens_per_s"] == 75.0  # real tokens only
    assert row["padding_share"] == 0.25  # 100 of 400
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert 0 < row["memory_mb"] <= round(peak, 1) + 0.1
    assert row["memory_mb"] == round(row["memory_mb"], 1)
    assert 0 < row["memory_now_mb"] <= row["memory_mb"] + 0.1
    assert row["memory_now_mb"] == round(row["memory_now_mb"], 1)


def test_train_row_empty_window_and_no_time():
    run = _run(scheduler=_Sched())
    run.window = dict(loss=0.5, steps=0, samples=8, tokens=0, padded=0)
    run.started = time.time()
    row = _train_row(run, 0.0, 0.0)
    assert row["train_loss"] == 0.5  # no steps: not divided by zero
    assert row["padding_share"] == 0.0
    assert row["samples_per_s"] == pytest.approx(8 / 1e-9)
    assert row["tokens_per_s"] == 0.0


def test_train_row_averages_the_loss_over_processes():
    seen = []

    def reduce(tensor, reduction):
        seen.append((tensor.tolist(), reduction))
        return torch.tensor([9.0])

    run = _run(scheduler=_Sched(), accelerator=_fake_accelerator(2, reduce))
    run.window = dict(loss=3.0, steps=3, samples=8, tokens=10, padded=0)
    run.started = time.time()
    row = _train_row(run, 0.5, 1.0)
    assert seen == [([3.0], "mean")]
    assert row["train_loss"] == 3.0  # the reduced 9.0 over 3 steps


@pytest.mark.parametrize("world", [1, 2])
def test_count_batch(world):
    run = _run(overrides=["train.grad_accum=4"], accelerator=_fake_accelerator(world))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # 5 real tokens of 8
    run.count_batch(torch.tensor(2.0), 2, mask)
    run.count_batch(torch.tensor(1.0), 3, mask)
    assert run.window == dict(
        loss=0.75, steps=0, samples=5, tokens=2 * 5 * world, padded=2 * 3 * world
    )


# --- recover_best_dir ---------------------------------------------------------------------


def _folder(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "weights").write_text(text)
    return path


def test_recover_best_dir_puts_the_old_one_back(tmp_path):
    path = tmp_path / "checkpoint-best"
    _folder(tmp_path / "checkpoint-best.old", "good")
    recover_best_dir(path)
    assert (path / "weights").read_text() == "good"
    assert not (tmp_path / "checkpoint-best.old").exists()


def test_recover_best_dir_drops_the_old_one_beside_a_new_one(tmp_path):
    path = _folder(tmp_path / "checkpoint-best", "new")
    _folder(tmp_path / "checkpoint-best.old", "old")
    recover_best_dir(path)
    assert (path / "weights").read_text() == "new"
    assert not (tmp_path / "checkpoint-best.old").exists()


def test_recover_best_dir_without_an_old_one(tmp_path):
    path = tmp_path / "checkpoint-best"
    recover_best_dir(path)
    assert list(tmp_path.iterdir()) == []
    _folder(path, "only")
    _folder(tmp_path / "other.old", "not ours")
    recover_best_dir(path)
    assert (path / "weights").read_text() == "only"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-best", "other.old"]


# --- trainable_state, _load_trainable, _saved_ema -----------------------------------------


def test_trainable_state_is_a_detached_copy_of_the_trainable_tensors():
    model = _two_param_model()
    state = trainable_state(model)
    assert set(state) == {"weight"}
    assert state["weight"].tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert state["weight"].device.type == "cpu" and not state["weight"].requires_grad
    with torch.no_grad():
        model.weight.add_(1.0)
    assert state["weight"][0, 0].item() == 1.0  # a copy, not a view
    state["weight"].zero_()
    assert model.weight[0, 0].item() == 2.0


def test_load_trainable_checks_the_names(tmp_path):
    model = _two_param_model()
    _load_trainable(model, {"weight": torch.zeros(2, 3)}, tmp_path)
    assert model.weight.abs().sum().item() == 0.0 and model.bias.tolist() == [10.0, -10.0]
    for tensors in ({}, {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}):
        with pytest.raises(UserError, match=r"do not match the model of config.yaml \(1 names"):
            _load_trainable(model, tensors, tmp_path)


def test_saved_ema_checks_and_moves_to_the_model(tmp_path):
    model = _two_param_model()
    ema = _saved_ema(model, {"weight": torch.ones(2, 3, dtype=torch.float64)}, tmp_path)
    assert set(ema) == {"weight"} and ema["weight"].dtype == torch.float32
    assert ema["weight"].tolist() == [[1.0] * 3] * 2
    for bad in (None, {}, {"weight": torch.ones(2, 3), "bias": torch.ones(2)}):
        with pytest.raises(UserError, match="no moving average"):
            _saved_ema(model, bad, tmp_path)


def test_train_state_starts_empty():
    s = TrainState()
    assert (s.step, s.epoch, s.micro, s.best_value, s.best_step, s.bad_evals) == (
        0,
        0,
        0,
        None,
        None,
        0,
    )
    assert not s.stopped_early and s.elapsed_s == 0.0 and s.best_thresholds is None


# --- the exact words and figures users read ------------------------------------------------


def test_train_row_rounds_and_floors_as_written(monkeypatch):
    now = 1000.0
    monkeypatch.setattr(train_mod.time, "time", lambda: now)
    monkeypatch.setattr(train_mod, "current_memory_mb", lambda device: 123.456)
    run = _run(scheduler=_Sched())
    run.started = now - 10.12345
    run.window = dict(loss=1.0, steps=1, samples=2, tokens=3, padded=0)
    row = _train_row(run, 0.5, 0.5)  # under a second: tokens/s is not floored at 1 s
    assert row["time_s"] == 10.123 and row["tokens_per_s"] == 6.0 and row["samples_per_s"] == 4.0
    assert row["memory_now_mb"] == 123.5
    run.window = dict(loss=1.0, steps=1, samples=1, tokens=0, padded=1)
    assert _train_row(run, 0.5, 1.0)["padding_share"] == 1.0  # 1 padded token of 1


def test_messages_users_read_word_for_word(tmp_path, caplog):
    run_dir = _run_dir(tmp_path)
    with pytest.raises(UserError) as e:
        _config_for(None, ["train.lr=1"], run_dir)
    assert str(e.value) == (
        f"--resume {run_dir}: a resumed run uses its own config.yaml; drop --config and the "
        "key=value overrides (only --threads may change; start a new run to change settings)"
    )
    model = _two_param_model()
    with pytest.raises(UserError) as e:
        _load_trainable(model, {}, tmp_path)
    assert str(e.value) == (
        f"{tmp_path}: its weights do not match the model of config.yaml (1 names differ); "
        "was config.yaml edited? Restore it or start a new run"
    )
    with pytest.raises(UserError) as e:
        _saved_ema(model, None, tmp_path)
    assert str(e.value) == (
        f"{tmp_path}: no moving average of these weights (ema.safetensors) although config.yaml "
        "sets train.ema_decay; was config.yaml edited? Restore it or start a new run"
    )
    import numpy as np

    with caplog.at_level(logging.INFO, logger="lorafit"):
        _class_weight(
            _cfg("train.class_weights=balanced"), np.array([0, 1, 2, 2]), torch.device("cpu")
        )
    assert caplog.messages[-1] == (
        "class weights (train.class_weights=balanced, rows / (classes x class rows)): "
        "a 1 rows x 1.333, b 1 rows x 1.333, c 2 rows x 0.667"
    )


def test_already_finished_says_so_word_for_word(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(train_mod, "_finish_outputs", lambda run_dir: None)
    with caplog.at_level(logging.INFO, logger="lorafit"):
        _already_finished(tmp_path)
    assert caplog.messages[-1] == (
        f"{tmp_path}: this run already finished (summary.json exists); nothing to resume. "
        "Refreshed its plots and training_log.txt; start a new run to train more"
    )
