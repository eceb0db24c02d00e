"""Exact trainable-parameter counts on roberta-base's shape (no weights needed)."""

from __future__ import annotations

import pytest

from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.model import build_model
from lorafit.params import check_budget, count_parameters, describe_model, description_text

from .conftest import AG_LABELS


def _describe(*overrides):
    return describe_model(load_config(None, [AG_LABELS, "model.name=roberta-base", *overrides]))


def test_seed_recipe_count():
    d = _describe("lora.layers=9-11", "lora.target_modules=[query,value]")
    assert d["params"]["trainable"] == 667_396
    assert d["breakdown"] == {"lora": 73_728, "head": 593_668, "bias": 0, "other": 0}
    assert sorted(d["lora_per_layer"]) == ["10", "11", "9"]
    assert d["lora_per_layer"]["9"] == {"query": 6144 * 2, "value": 6144 * 2}


def test_all_layers_query_value_count():
    assert _describe("lora.layers=all")["params"]["trainable"] == 888_580


def test_qkv_rank4_with_all_biases_count():
    d = _describe("lora.r=4", "lora.target_modules=[query,key,value]", "lora.bias=all")
    assert d["params"]["trainable"] == 916_996
    assert d["breakdown"]["bias"] == 102_144


def test_head_alone_is_593668_and_frozen_copy_not_counted():
    model = build_model(load_config(None, [AG_LABELS, "model.name=roberta-base"]), weights=False)
    head = {n: p for n, p in model.named_parameters() if "classifier" in n}
    trainable = sum(p.numel() for n, p in head.items() if p.requires_grad)
    frozen = sum(p.numel() for n, p in head.items() if not p.requires_grad)
    assert trainable == 593_668
    assert frozen == 593_668  # PEFT's original copy, frozen
    assert count_parameters(model)["breakdown"]["head"] == 593_668


def test_over_budget_is_refused_with_breakdown():
    d = _describe("lora.r=64", "lora.target_modules=[query,key,value,dense]")
    assert not d["fits_budget"]
    with pytest.raises(UserError, match=r"exceed the budget of 1,000,000 .*head 593,668"):
        check_budget(d)


def test_sections_give_every_layer_its_own_values():
    cfg = load_config(
        None,
        [
            AG_LABELS,
            "model.name=roberta-base",
            "lora.layers=6-11",
            "lora.sections=[{layers: 6-7, r: 2, alpha: 4, dropout: 0.0},"
            "{layers: 8-9, r: 4, alpha: 8, dropout: 0.05},{layers: 10-11, r: 16, alpha: 32, dropout: 0.2}]",
        ],
    )
    model = build_model(cfg, weights=False)
    want = {
        6: (2, 2.0, 0.0),
        7: (2, 2.0, 0.0),
        8: (4, 2.0, 0.05),
        9: (4, 2.0, 0.05),
        10: (16, 2.0, 0.2),
        11: (16, 2.0, 0.2),
    }
    seen = {}
    for name, module in model.named_modules():
        if name.endswith(("attention.self.query", "attention.self.value")) and hasattr(module, "r"):
            layer = int(name.split(".layer.")[1].split(".")[0])
            p = getattr(module.lora_dropout["default"], "p", 0.0)
            got = (module.r["default"], module.scaling["default"], p)
            assert seen.setdefault(layer, got) == got
    assert seen == want
    d = describe_model(cfg, model)
    assert d["lora"]["layers"]["10"] == {"r": 16, "alpha": 32.0, "dropout": 0.2}
    # two modules per layer, each r * (768 + 768) parameters
    assert d["params"]["trainable"] == 593_668 + 2 * 1536 * (2 + 2 + 4 + 4 + 16 + 16)


def test_section_outside_layers_and_layer_out_of_range_are_errors():
    with pytest.raises(UserError, match=r"lora.sections\[0\].layers: layers \[3\]"):
        _describe("lora.layers=9-11", "lora.sections=[{layers: 3, r: 2}]")
    with pytest.raises(UserError, match="layer 12 is out of range; the model has layers 0-11"):
        _describe("lora.layers=10-12")


def test_missing_target_module_is_an_error():
    with pytest.raises(UserError, match="lora.target_modules"):
        _describe("lora.target_modules=[nonexistent]")


def test_description_text_names_counts():
    text = description_text(_describe("lora.layers=9-11"))
    assert "667,396" in text and "593,668" in text and "layer  11" in text


def test_target_outside_the_layer_stack_is_counted_apart():
    """MiniLM (BERT) has a pooler: `pooler.dense` takes LoRA but sits in no layer."""
    d = describe_model(
        load_config(
            None,
            [
                AG_LABELS,
                "model.name=all-MiniLM-L6-v2",
                "lora.r=8",
                "lora.target_modules=[query,pooler.dense]",
            ],
        )
    )
    per_layer = d["lora_per_layer"]
    assert list(per_layer)[-1] == "other" and per_layer["other"] == {"dense": 2 * 8 * 384}
    assert sum(sum(m.values()) for m in per_layer.values()) == d["breakdown"]["lora"]
    assert "outside layers  dense: 6,144" in description_text(d)


# --- layer selection on the built PEFT model ------------------------------------------------

ROBERTA = "roberta-base"
MPNET = "sentence-transformers/all-mpnet-base-v2"  # a known shape: counted without the hub
SHAPES = {ROBERTA: ("query", "value"), MPNET: ("attn.q", "attn.v")}


def _built_lora(model) -> dict[tuple[int, str], tuple[int, float, float]]:
    """{(layer, module): (r, scaling, dropout)} read from every LoRA module PEFT built."""
    from peft.tuners.lora import LoraLayer

    from lorafit.model import layer_index

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            key = (layer_index(name), name.rsplit(".", 1)[-1])
            assert key not in out, name
            drop = module.lora_dropout["default"]
            out[key] = (module.r["default"], module.scaling["default"], getattr(drop, "p", 0.0))
    return out


@pytest.mark.parametrize("name", [ROBERTA, MPNET])
def test_sections_on_layer_1_do_not_reach_layers_10_and_11(name):
    """All 12 layers at r=4 / alpha 8 / dropout 0.05; layer 1 and layers 10-11 each their own.

    `layer.1` must not match `layer.10` or `layer.11` (the dot after the layer number)."""
    q, v = SHAPES[name]
    cfg = load_config(
        None,
        [
            AG_LABELS,
            f"model.name={name}",
            "lora.layers=all",
            "lora.r=4",
            "lora.alpha=8",
            "lora.dropout=0.05",
            f"lora.target_modules=[{q},{v}]",
            "lora.sections=[{layers: 1, r: 2, alpha: 6, dropout: 0.0},"
            "{layers: 10-11, r: 16, alpha: 8, dropout: 0.2}]",
        ],
    )
    model = build_model(cfg, weights=False)
    expect = {}
    for layer in range(12):
        setting = {1: (2, 3.0, 0.0), 10: (16, 0.5, 0.2), 11: (16, 0.5, 0.2)}.get(
            layer, (4, 2.0, 0.05)
        )
        for module in (q, v):
            expect[(layer, module.rsplit(".", 1)[-1])] = setting
    assert _built_lora(model) == expect
    d = describe_model(cfg, model)
    assert d["params"]["trainable"] - d["breakdown"]["head"] == 2 * 1536 * (9 * 4 + 2 + 2 * 16)


@pytest.mark.parametrize("name", [ROBERTA, MPNET])
def test_only_the_chosen_layers_carry_lora(name):
    """lora.layers=[1,10,11]: LoRA on exactly those layers (none on 0, 2-9), layer 1 its own."""
    q, v = SHAPES[name]
    cfg = load_config(
        None,
        [
            AG_LABELS,
            f"model.name={name}",
            "lora.layers=[1,10,11]",
            f"lora.target_modules=[{q},{v}]",
            "lora.sections=[{layers: 1, r: 4, alpha: 4, dropout: 0.3}]",
        ],
    )
    built = _built_lora(build_model(cfg, weights=False))
    want = {1: (4, 1.0, 0.3), 10: (8, 2.0, 0.1), 11: (8, 2.0, 0.1)}
    assert built == {(i, m.rsplit(".", 1)[-1]): s for i, s in want.items() for m in (q, v)}


@pytest.mark.parametrize("name", [ROBERTA, MPNET])
def test_budget_exactly_at_the_limit_fits_and_one_over_is_refused(name):
    q, v = SHAPES[name]
    base = [f"model.name={name}", "lora.layers=9-11", f"lora.target_modules=[{q},{v}]"]
    n = _count(base)
    assert n == 667_396  # both shapes: 3 layers x 2 modules x 8 x 1,536 + the 593,668 head
    at = describe_model(load_config(None, [AG_LABELS, *base, f"budget={n}"]))
    assert at["fits_budget"]
    check_budget(at)  # no error
    over = describe_model(load_config(None, [AG_LABELS, *base, f"budget={n - 1}"]))
    assert not over["fits_budget"]
    with pytest.raises(UserError, match=r"exceed the budget of 667,395 by 1 .*`lorafit plan"):
        check_budget(over)


def _count(overrides) -> int:
    return describe_model(load_config(None, [AG_LABELS, *overrides]))["params"]["trainable"]


def test_a_name_the_model_lacks_lists_the_names_it_has():
    with pytest.raises(UserError) as e:
        _describe_mpnet = describe_model(
            load_config(
                None, [AG_LABELS, f"model.name={MPNET}", "lora.target_modules=[query,value]"]
            )
        )
        del _describe_mpnet
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("lora.target_modules: query, value not in this mpnet model")
    assert "query -> attn.q, value -> attn.v" in message
    assert message.endswith(
        "attention.attn.q, attention.attn.k, attention.attn.v, attention.attn.o, "
        "intermediate.dense, output.dense"
    )
    with pytest.raises(
        UserError,
        match=r"attn.q not in this roberta model \(here: attn.q -> query\).*attention.self.query",
    ):
        _describe("lora.target_modules=[attn.q]")
