"""PEFT variants and training options: DoRA, rsLoRA, LoRA+, layer decay, bias-only, full, label smoothing."""

from __future__ import annotations

import json
import math

import pytest

from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.model import build_model
from lorafit.params import check_budget, describe_model
from lorafit.variants import lr_scale

from .conftest import AG_LABELS

HEAD = 593_668  # roberta-base's own head


def _roberta(*overrides):
    return load_config(None, [AG_LABELS, "model.name=roberta-base", *overrides])


def test_dora_adds_one_magnitude_per_output_feature():
    plain = describe_model(_roberta())
    dora = describe_model(_roberta("lora.use_dora=true"))
    # query and value of 12 layers, 768 outputs each
    assert dora["breakdown"]["lora"] - plain["breakdown"]["lora"] == 12 * 2 * 768
    assert dora["params"]["trainable"] == 888_580 + 18_432


def test_rslora_scales_by_the_square_root_of_the_rank():
    for flag, expected in (("false", 16 / 8), ("true", 16 / math.sqrt(8))):
        model = build_model(_roberta(f"lora.use_rslora={flag}"), weights=False)
        query = model.get_base_model().roberta.encoder.layer[0].attention.self.query
        assert query.scaling["default"] == pytest.approx(expected)


def test_bias_only_trains_every_bias_and_the_head():
    d = describe_model(_roberta("lora.mode=bias_only"))
    assert d["breakdown"] == {"lora": 0, "head": HEAD, "bias": 102_144, "other": 0}
    assert d["mode"] == "bias_only" and d["lora"]["target_modules"] == []
    lean = describe_model(_roberta("lora.mode=bias_only", "model.head=linear"))
    assert lean["params"]["trainable"] == 102_144 + 3_076


def test_full_mode_needs_the_budget_raised():
    d = describe_model(_roberta("lora.mode=full"))
    # roberta-base's 124,645,632 less its pooler (590,592) plus the classification head
    assert d["params"]["trainable"] == d["params"]["total"] == 124_645_632 - 590_592 + HEAD
    assert d["params"]["frozen"] == 0
    with pytest.raises(UserError, match=r"exceed the budget of 1,000,000"):
        check_budget(d)
    check_budget(describe_model(_roberta("lora.mode=full", "budget=200000000")))


def test_bad_values_name_the_key():
    for override, message in [
        ("lora.mode=half", "lora.mode: must be one of lora, bias_only, full"),
        ("train.lora_plus_ratio=0", "train.lora_plus_ratio: must be > 0"),
        ("train.layer_decay=1.5", "train.layer_decay: must be in"),
        ("train.label_smoothing=1", "train.label_smoothing: must be in"),
        ("model.head=mlp", "model.head: must be one of full, linear, lowrank, dense_lora"),
    ]:
        with pytest.raises(UserError, match=message):
            load_config(None, [AG_LABELS, override])


def test_lr_scale():
    name = "base_model.model.roberta.encoder.layer.{}.attention.self.query.lora_{}.default.weight"
    assert lr_scale(name.format(3, "A"), 12) == 1.0
    assert lr_scale(name.format(3, "B"), 12, lora_plus_ratio=16) == 16.0
    assert lr_scale(name.format(11, "A"), 12, layer_decay=0.5) == 1.0
    assert lr_scale(name.format(9, "B"), 12, 16, 0.5) == 16 * 0.5**2
    assert lr_scale("base_model.model.roberta.embeddings.LayerNorm.bias", 12, 1, 0.5) == 0.5**12
    head = "base_model.model.classifier.modules_to_save.default.out_proj.weight"
    assert lr_scale(head, 12, 16, 0.5) == 1.0


def _tiny_cfg(tiny_model, *overrides):
    return load_config(None, [AG_LABELS, f"model.name={tiny_model}", *overrides])


def test_optimizer_groups_follow_lora_plus_and_layer_decay(tiny_model):
    from lorafit.train import build_optimizer

    cfg = _tiny_cfg(
        tiny_model,
        "train.lr=1e-3",
        "train.lora_plus_ratio=8",
        "train.layer_decay=0.5",
        "lora.bias=all",
    )
    model = build_model(cfg, weights=True)
    optimizer = build_optimizer(model, cfg)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(lr_of) == {id(p) for p in named.values()}  # every trainable parameter, once
    expect = {
        "layer.1.attention.self.query.lora_A": 1e-3,
        "layer.1.attention.self.query.lora_B": 8e-3,
        "layer.0.attention.self.value.lora_B": 8e-3 * 0.5,
        "layer.0.attention.self.value.lora_A": 1e-3 * 0.5,
        "embeddings.LayerNorm.bias": 1e-3 * 0.25,
        "classifier.modules_to_save.default.dense.weight": 1e-3,
    }
    for fragment, lr in expect.items():
        (name,) = [n for n in named if fragment in n]
        assert lr_of[id(named[name])] == pytest.approx(lr), name
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # what the log reports
    bias = next(p for n, p in named.items() if n.endswith("query.base_layer.bias"))
    assert wd_of[id(bias)] == 0.0


def test_label_smoothing_reaches_the_loss(tiny_overrides, monkeypatch):
    import torch.nn.functional as F

    from lorafit.cli import main

    seen = []
    original = F.cross_entropy

    def spy(*args, **kwargs):
        seen.append(kwargs.get("label_smoothing", 0.0))
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", spy)
    assert (
        main(
            [
                "train",
                *tiny_overrides,
                "train.max_steps=2",
                "train.eval_every=2",
                "train.label_smoothing=0.2",
                "data.test=null",
            ]
        )
        == 0
    )
    assert seen[:2] == [0.2, 0.2]


@pytest.mark.parametrize(
    "overrides",
    [
        ["lora.mode=bias_only", "train.layer_decay=0.8"],
        ["lora.mode=full", "budget=100000000", "model.head=linear"],
        ["lora.use_dora=true", "lora.use_rslora=true", "train.lora_plus_ratio=16"],
    ],
    ids=["bias_only", "full", "dora_rslora_loraplus"],
)
def test_variants_train_and_reload(overrides, tiny_overrides, tmp_path):
    """Each variant trains, logs the base lr, and its checkpoint scores as it did in training."""
    from lorafit.cli import main
    from lorafit.data import resolve_source
    from lorafit.predict import evaluate

    assert (
        main(
            [
                "train",
                *tiny_overrides,
                "data.test=sample-test",
                "train.lr=1e-3",
                "train.mixed_precision=no",
                *overrides,
            ]
        )
        == 0
    )
    run = tmp_path / "runs" / "latest"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["lr"] for r in rows if r["kind"] == "train") <= 1e-3 + 1e-12
    (saved,) = (run / "evaluations").glob("test-*.json")
    after = evaluate(run, resolve_source("sample-test"), device="cpu", dtype="fp32")
    assert after["loss"] == pytest.approx(json.loads(saved.read_text())["loss"], abs=1e-5)
    d = json.loads((run / "model_description.json").read_text())
    if "lora.mode=bias_only" in overrides:
        assert d["breakdown"]["lora"] == 0 and d["breakdown"]["bias"] > 0
