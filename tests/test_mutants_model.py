"""LoRA layer selection (lorafit.model) pinned piece by piece: what mutation testing
(`scripts/mutation.sh model`) showed tests/test_params.py leaves loose.

The pure pieces (layer index, the rank/alpha pattern, per-layer settings, the PEFT config, the
depth and default targets, the target-name rule) are checked directly; dropout per section,
the module names and the target-module error on roberta-base's shape built without weights.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import peft.tuners.lora  # noqa: F401 - imported once by mutmut's fork server, not per mutant
import pytest
import transformers.models.roberta.modeling_roberta  # noqa: F401 - likewise
from torch import nn

from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.model import (
    _module_matches,
    _pattern,
    apply_section_dropout,
    build_model,
    check_target_modules,
    default_target_modules,
    layer_index,
    layer_module_names,
    layer_settings,
    num_layers,
    peft_lora_config,
)

from .conftest import AG_LABELS


def _cfg(*overrides):
    return load_config(None, [AG_LABELS, "model.name=roberta-base", *overrides])


def test_layer_index_reads_the_number_after_a_layer_container():
    assert layer_index("base_model.model.roberta.encoder.layer.3.attention.self.query") == 3
    assert layer_index("x.layer.11.output.dense.lora_A.default.weight") == 11
    assert layer_index("m.encoder.layers.0.attn.q") == 0  # mpnet-like, "layers"
    assert layer_index("transformer.h.7.attn.c_attn") == 7
    assert (
        layer_index("encoder.block.12.layer.0.SelfAttention.q") == 12
    )  # the outer container first
    assert layer_index("t.blocks.5.mlp") == 5
    assert layer_index("roberta.pooler.dense") is None
    assert layer_index("layer.3.attention") is None  # no dot before: not inside a layer stack
    assert layer_index("x.layer.3") is None  # nothing after the number: the layer itself
    assert layer_index("x.sublayer.3.dense") is None and layer_index("x.layer.3a.dense") is None


def test_the_pattern_matches_one_layer_and_that_module_only():
    p = re.compile(_pattern(1, "query"))
    assert p.fullmatch("layer.1.attention.self.query")
    assert p.fullmatch("layer.1.query")
    for other in (
        "layer.10.attention.self.query",
        "layer.11.attention.self.query",
        "layer.1.attention.self.value",
        "layer.21.query",
    ):
        assert not p.fullmatch(other), other
    for container in ("layer", "layers", "h", "block", "blocks"):
        assert re.compile(_pattern(4, "attn.q")).fullmatch(f"{container}.4.attention.attn.q"), (
            container
        )
    assert not re.compile(_pattern(4, "attn.q")).fullmatch("layers.4.attention.attnXq")
    assert not re.compile(_pattern(4, "query")).fullmatch("layers.4.attention.self.query_proj")


def test_settings_per_layer_with_sections_in_order():
    cfg = _cfg(
        "lora.layers=2-5",
        "lora.r=8",
        "lora.alpha=16",
        "lora.dropout=0.1",
        "lora.sections=[{layers: 3-5, r: 2, alpha: 4, dropout: 0.0},{layers: 5, r: 32, alpha: 8, dropout: 0.3}]",
    )
    assert layer_settings(cfg, 12) == {
        2: {"r": 8, "alpha": 16, "dropout": 0.1},
        3: {"r": 2, "alpha": 4, "dropout": 0.0},
        4: {"r": 2, "alpha": 4, "dropout": 0.0},
        5: {"r": 32, "alpha": 8, "dropout": 0.3},
    }
    every = _cfg("lora.layers=all", "lora.sections=[{layers: all, r: 1, alpha: 2, dropout: 0.0}]")
    assert layer_settings(every, 3) == {i: {"r": 1, "alpha": 2, "dropout": 0.0} for i in range(3)}


def test_a_section_outside_the_adapted_layers_is_refused():
    cfg = _cfg("lora.layers=9-11", "lora.sections=[{layers: 9, r: 2},{layers: 7-9, r: 4}]")
    with pytest.raises(UserError) as e:
        layer_settings(cfg, 12)
    assert str(e.value) == (
        "lora.sections[1].layers: layers [7, 8] are not in lora.layers (9-11); widen lora.layers "
        "or narrow the section"
    )
    with pytest.raises(UserError) as e:
        layer_settings(_cfg("lora.layers=9-12"), 12)
    assert str(e.value) == "lora.layers: layer 12 is out of range; the model has layers 0-11"
    with pytest.raises(UserError) as e:
        layer_settings(_cfg("lora.layers=all", "lora.sections=[{layers: 11-12, r: 2}]"), 12)
    assert (
        str(e.value)
        == "lora.sections[0].layers: layer 12 is out of range; the model has layers 0-11"
    )


def test_the_peft_config_carries_patterns_only_where_a_layer_differs():
    cfg = _cfg(
        "lora.layers=9-11",
        "lora.r=8",
        "lora.alpha=16",
        "lora.dropout=0.05",
        "lora.target_modules=[query,value]",
        "lora.bias=lora_only",
        "lora.sections=[{layers: 10, r: 4, alpha: 16},{layers: 11, r: 8, alpha: 32}]",
    )
    model_config = SimpleNamespace(num_hidden_layers=12, model_type="roberta")
    pc = peft_lora_config(cfg, model_config)
    assert (pc.r, pc.lora_alpha, pc.lora_dropout, pc.bias) == (8, 16, 0.05, "lora_only")
    assert sorted(pc.target_modules) == ["query", "value"] and str(pc.task_type.value) == "SEQ_CLS"
    assert pc.layers_to_transform == [9, 10, 11]
    assert pc.layers_pattern == ["layer", "layers", "h", "block", "blocks"]
    assert pc.rank_pattern == {_pattern(10, "query"): 4, _pattern(10, "value"): 4}
    assert pc.alpha_pattern == {_pattern(11, "query"): 32, _pattern(11, "value"): 32}
    assert (pc.use_dora, pc.use_rslora) == (False, False)
    every = peft_lora_config(
        _cfg("lora.layers=all", "lora.use_rslora=true", "lora.use_dora=true"), model_config
    )
    assert every.layers_to_transform is None and every.layers_pattern is None
    assert (
        every.rank_pattern == {}
        and every.alpha_pattern == {}
        and every.use_rslora
        and every.use_dora
    )
    assert sorted(every.target_modules) == ["query", "value"]  # roberta's default targets
    first11 = peft_lora_config(_cfg("lora.layers=0-10"), model_config)
    assert first11.layers_to_transform == list(range(11))  # not all 12: the list is kept


def test_depth_and_default_targets():
    assert num_layers(SimpleNamespace(num_hidden_layers=12, n_layers=6, model_type="x")) == 12
    assert num_layers(SimpleNamespace(n_layers="6", num_layers=3, model_type="x")) == 6
    assert num_layers(SimpleNamespace(num_layers=3, model_type="x")) == 3
    with pytest.raises(UserError) as e:
        num_layers(SimpleNamespace(model_type="odd"))
    assert str(e.value) == "cannot tell how many layers a odd model has"
    assert default_target_modules("roberta") == ["query", "value"]
    assert default_target_modules("mpnet") == ["attn.q", "attn.v"]
    assert default_target_modules("distilbert") == ["q_lin", "v_lin"]
    with pytest.raises(UserError) as e:
        default_target_modules("no-such-type")
    assert (
        str(e.value)
        == "no default LoRA targets for model type 'no-such-type'; set lora.target_modules"
    )


def test_a_target_name_matches_whole_dotted_parts():
    assert _module_matches("query", "query")
    assert _module_matches("encoder.layer.0.attention.self.query", "query")
    assert _module_matches("encoder.layer.0.attention.self.query", "self.query")
    assert not _module_matches("encoder.layer.0.attention.self.xquery", "query")
    assert not _module_matches("encoder.layer.0.attention.self.query_proj", "query")


@pytest.fixture(scope="module")
def roberta():
    cfg = _cfg(
        "lora.layers=9-11",
        "lora.dropout=0.1",
        "lora.sections=[{layers: 10, dropout: 0.0},{layers: 11, dropout: 0.25}]",
    )
    return cfg, build_model(cfg, weights=False)


def _dropouts(model) -> dict:
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            drop = module.lora_dropout["default"]
            out[(layer_index(name), name.rsplit(".", 1)[-1])] = (
                type(drop).__name__,
                getattr(drop, "p", None),
            )
    return out


def test_each_layer_gets_its_sections_dropout(roberta):
    _, model = roberta
    want = {9: ("Dropout", 0.1), 10: ("Identity", None), 11: ("Dropout", 0.25)}
    assert _dropouts(model) == {(i, m): d for i, d in want.items() for m in ("query", "value")}
    apply_section_dropout(model, {9: {"dropout": 0.5}, 10: {"dropout": 0.0}})  # 11 left as it is
    want = {9: ("Dropout", 0.5), 10: ("Identity", None), 11: ("Dropout", 0.25)}
    assert _dropouts(model) == {(i, m): d for i, d in want.items() for m in ("query", "value")}
    apply_section_dropout(model, {9: {"dropout": 0.1}})


def test_the_module_names_and_the_error_for_a_missing_target(roberta):
    _, model = roberta
    inside = [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ]
    names = layer_module_names(model)
    assert [n.split(".base_layer")[0] for n in names if "lora_" not in n][: len(inside)] == inside
    assert not any("classifier" in n for n in names)
    check_target_modules(
        model, ["query", "value", "output.dense"], "roberta"
    )  # all there: no error
    with pytest.raises(UserError) as e:
        check_target_modules(model, ["query", "attn.q", "q_lin", "nothing"], "roberta")
    message = str(e.value)
    assert message.startswith(
        "lora.target_modules: attn.q, q_lin, nothing not in this roberta model "
        "(here: attn.q -> query, q_lin -> query); its linear modules per layer: attention.self.query"
    )
    assert "\n" not in message


def test_linear_modules_outside_the_layers_are_listed_after_them():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList([nn.Module(), nn.Module(), nn.Module()])
            for block in self.encoder.layer:
                block.q = nn.Linear(2, 2)
                block.ff = nn.Sequential(nn.Linear(2, 2))
            self.pooler = nn.Module()
            self.pooler.dense = nn.Linear(2, 2)
            self.classifier = nn.Linear(2, 2)

    wrapped = nn.Module()
    wrapped.model = Tiny()
    wrapped.proj = nn.Linear(2, 2)  # a linear module at the top: named as it is
    assert layer_module_names(wrapped) == [
        "q",
        "ff.0",
        "pooler.dense",
        "proj",
    ]  # the first layer's, once
    with pytest.raises(
        UserError,
        match=r"^lora.target_modules: value not in this tiny model; its linear modules per layer: q, ff.0, pooler.dense, proj$",
    ):
        check_target_modules(wrapped, ["q", "value"], "tiny")
