"""Counting, the budget check and the description (lorafit.params), pinned exactly: what
mutation testing (`scripts/mutation.sh params`) showed tests/test_params.py leaves loose.

The counts come from a hand-built module whose parameter names are PEFT's (so every branch of
the breakdown is hit in milliseconds) and from roberta-base's shape built without weights; the
description text is compared line by line, as `lorafit describe` prints it.
"""

from __future__ import annotations

import peft.tuners.lora  # noqa: F401 - imported once by mutmut's fork server, not per mutant
import pytest
import torch
import transformers.models.roberta.modeling_roberta  # noqa: F401 - likewise
from torch import nn

from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.params import check_budget, count_parameters, describe_model, description_text

from .conftest import AG_LABELS


def _module(params: dict[str, tuple[int, bool]]) -> nn.Module:
    """A module with exactly these dotted parameter names: name -> (numel, trainable)."""
    root = nn.Module()
    for name, (numel, trainable) in params.items():
        *path, leaf = name.split(".")
        owner = root
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, nn.Module())
            owner = getattr(owner, part)
        owner.register_parameter(leaf, nn.Parameter(torch.zeros(numel), requires_grad=trainable))
    return root


LAYER = "base_model.model.roberta.encoder.layer"
PARAMS = {
    f"{LAYER}.10.attention.self.query.lora_A.default.weight": (40, True),
    f"{LAYER}.10.attention.self.query.lora_B.default.weight": (60, True),
    f"{LAYER}.2.attention.self.value.lora_A.default.weight": (7, True),
    f"{LAYER}.2.attention.self.value.base_layer.weight": (1000, False),
    f"{LAYER}.2.attention.self.value.base_layer.bias": (11, True),
    f"{LAYER}.3.attention.self.query.lora_A.default.weight": (5, False),  # frozen LoRA: not counted
    "base_model.model.roberta.pooler.dense.lora_A.default.weight": (9, True),
    "base_model.model.classifier.modules_to_save.default.dense.weight": (30, True),
    "base_model.model.classifier.original_module.dense.weight": (30, False),
    "base_model.model.roberta.embeddings.word_embeddings.weight": (3000, False),
    "base_model.model.roberta.embeddings.norm_scale": (13, True),
}


def test_counts_by_kind_and_by_layer():
    c = count_parameters(_module(PARAMS))
    total = sum(n for n, _ in PARAMS.values())
    trainable = 40 + 60 + 7 + 11 + 9 + 30 + 13
    assert c == {
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "trainable_pct": round(100 * trainable / total, 4),
        "frozen_pct": round(100 * (total - trainable) / total, 4),
        "breakdown": {"lora": 40 + 60 + 7 + 9, "head": 30, "bias": 11, "other": 13},
        "lora_per_layer": {"2": {"value": 7}, "10": {"query": 100}, "other": {"dense": 9}},
    }
    assert list(c["lora_per_layer"]) == ["2", "10", "other"]  # by layer number, outside last
    assert c["trainable_pct"] == 4.0428 and c["frozen_pct"] == 95.9572


def test_a_model_without_lora_counts_only_what_trains():
    c = count_parameters(
        _module(
            {
                "encoder.layer.0.dense.bias": (4, True),
                "encoder.layer.0.dense.weight": (12, False),
                "score.weight": (8, True),
            }
        )
    )
    assert c["breakdown"] == {"lora": 0, "head": 8, "bias": 4, "other": 0}
    assert c["lora_per_layer"] == {} and (c["total"], c["trainable"], c["frozen"]) == (24, 12, 12)
    assert (c["trainable_pct"], c["frozen_pct"]) == (50.0, 50.0)


def _description(*overrides) -> dict:
    return describe_model(load_config(None, [AG_LABELS, "model.name=roberta-base", *overrides]))


def test_the_description_of_roberta_sections_is_exact():
    d = _description(
        "lora.layers=10-11",
        "lora.sections=[{layers: 11, r: 4, alpha: 8, dropout: 0.0}]",
        "lora.bias=lora_only",
    )
    assert {k: v for k, v in d.items() if k != "lora"} == {
        "model": "roberta-base",
        "model_type": "roberta",
        "num_layers": 12,
        "hidden_size": 768,
        "num_labels": 4,
        "head": "full",
        "head_rank": None,
        "pooling": "first",
        "mode": "lora",
        "budget": 1_000_000,
        "fits_budget": True,
        "params": {
            "total": 125_279_240,
            "trainable": 633_604,
            "frozen": 124_645_636,
            "trainable_pct": 0.5058,
            "frozen_pct": 99.4942,
        },
        "breakdown": {"lora": 36_864, "head": 593_668, "bias": 3_072, "other": 0},
        "lora_per_layer": {
            "10": {"query": 12_288, "value": 12_288},
            "11": {"query": 6_144, "value": 6_144},
        },
    }
    lora = d["lora"]
    assert lora["target_modules"] == ["query", "value"] and lora["bias"] == "lora_only"
    assert lora["layers"] == {
        "10": {"r": 8, "alpha": 16.0, "dropout": 0.1},
        "11": {"r": 4, "alpha": 8.0, "dropout": 0.0},
    }
    assert lora["config"]["layers"] == "10-11" and lora["config"]["r"] == 8
    assert (
        description_text(d)
        == """\
model        roberta-base (roberta, 12 layers, hidden 768)
labels       4   head: full   pooling: first
total         125,279,240
trainable         633,604  (0.506%)
frozen        124,645,636  (99.494%)
budget          1,000,000  -> fits (+366,396 left)

trainable breakdown
  lora             36,864
  head            593,668
  bias              3,072
  other                 0

LoRA per layer  (module: parameters; r / alpha / dropout)
  layer  10  query: 12,288, value: 12,288   (r=8, alpha=16.0, dropout=0.1)
  layer  11  query: 6,144, value: 6,144   (r=4, alpha=8.0, dropout=0.0)

target modules  query, value
bias            lora_only
"""
    )


def test_an_over_budget_low_rank_head_description():
    d = _description(
        "model.head=lowrank",
        "model.head_rank=8",
        "model.pooling=mean",
        "lora.layers=11",
        "lora.r=64",
        "lora.target_modules=[query,key,value,dense]",
        "budget=100000",
    )
    assert d["head_rank"] == 8 and not d["fits_budget"]
    assert d["params"]["trainable"] == 16_132 + 64 * (
        3 * 1536 + 1536 + 2 * (768 + 3072)
    )  # dense: 3 of them
    text = description_text(d)
    assert "labels       4   head: lowrank   pooling: mean\n" in text
    assert (
        f"budget            100,000  -> OVER BUDGET ({100_000 - d['params']['trainable']:+,} left)\n"
        in text
    )
    assert (
        "  layer  11  query: 98,304, key: 98,304, value: 98,304, dense: 589,824   (r=64, alpha=16.0, dropout=0.1)\n"
        in text
    )
    assert text.endswith("target modules  dense, key, query, value\nbias            none\n")


def test_without_adapters_there_are_no_targets_or_layers():
    d = _description("lora.mode=bias_only")
    assert (
        d["mode"] == "bias_only" and d["lora"]["target_modules"] == [] and d["lora_per_layer"] == {}
    )
    assert d["breakdown"] == {"lora": 0, "head": 593_668, "bias": 102_144, "other": 0}
    assert "target modules  \nbias            none\n" in description_text(d)


def test_text_for_a_module_outside_the_layers_and_a_missing_pooling_key():
    d = {
        "model": "m",
        "model_type": "bert",
        "num_layers": 6,
        "hidden_size": 384,
        "num_labels": 4,
        "head": "full",
        "budget": 10,
        "fits_budget": True,
        "params": {
            "total": 20,
            "trainable": 10,
            "frozen": 10,
            "trainable_pct": 50.0,
            "frozen_pct": 50.0,
        },
        "breakdown": {"lora": 6, "head": 4, "bias": 0, "other": 0},
        "lora_per_layer": {"0": {"query": 2}, "other": {"dense": 4}},
        "lora": {
            "layers": {"0": {"r": 1, "alpha": 2, "dropout": 0.0}},
            "target_modules": ["query", "pooler.dense"],
            "bias": "none",
        },
    }
    lines = description_text(d).splitlines()
    assert lines[1] == "labels       4   head: full   pooling: first"
    assert lines[5] == "budget                 10  -> fits (+0 left)"
    assert lines[-5:] == [
        "  layer   0  query: 2   (r=1, alpha=2, dropout=0.0)",
        "  outside layers  dense: 4   (lora.r, lora.alpha, lora.dropout)",
        "",
        "target modules  query, pooler.dense",
        "bias            none",
    ]


def _budget(trainable: int, budget: int) -> dict:
    return {
        "params": {"trainable": trainable},
        "budget": budget,
        "breakdown": {"lora": 1_000, "head": 2_000, "bias": 30, "other": 4},
    }


def test_the_budget_check_at_and_over_the_limit():
    check_budget(_budget(1_000_000, 1_000_000))  # exactly at the budget fits
    check_budget(_budget(0, 1_000_000))
    with pytest.raises(UserError) as e:
        check_budget(_budget(1_000_001, 1_000_000))
    assert str(e.value) == (
        "budget: 1,000,001 trainable parameters exceed the budget of 1,000,000 by 1 "
        "(LoRA 1,000, head 2,000, biases 30, other 4); lower lora.r, adapt fewer layers or "
        "modules, or raise budget; `lorafit plan [--config FILE] [key=value ...]` lists the "
        "configurations that fit"
    )


def test_describe_from_a_yaml_file_writes_both_files(tmp_path):
    import json

    from lorafit.params import describe

    config = tmp_path / "run.yaml"
    config.write_text(
        "model:\n  name: roberta-base\ndata:\n  label_names: [a, b, c, d]\nlora:\n  layers: '11'\n"
    )
    out = tmp_path / "out" / "nested"
    d = describe(str(config), ["lora.r=4"], output_dir=out)
    assert d["lora"]["layers"] == {"11": {"r": 4, "alpha": 16.0, "dropout": 0.1}}
    assert d["params"]["trainable"] == 593_668 + 2 * 4 * 1536
    assert json.loads((out / "model_description.json").read_text()) == d
    assert (out / "model_description.txt").read_text() == description_text(d)
    again = describe(config, ["lora.r=2"], output_dir=out)  # the folder exists: rewritten
    assert json.loads((out / "model_description.json").read_text()) == again != d
    assert (
        describe(load_config(str(config))) == describe(config)
        and not (tmp_path / "model_description.json").exists()
    )


def test_the_head_rank_is_shown_for_the_heads_that_have_one():
    assert _description("model.head=dense_lora", "model.head_rank=8")["head_rank"] == 8
    assert _description("model.head=lowrank", "model.head_rank=4")["head_rank"] == 4
    assert _description("model.head=full", "model.head_rank=8")["head_rank"] is None
