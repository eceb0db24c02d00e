"""Direct, fast tests of plan.py's small decisions for mutation testing (`scripts/mutation.sh plan`).

Each function is checked against figures worked out here from the module shapes (a linear
layer of fan-in i and fan-out o costs r * (i + o) at rank r), not against another run of the
planner: the layer and module choices, the head costs, the marking and sorting of candidates,
the overrides and the pasted command, and the table's exact text.
"""

from __future__ import annotations

import shlex

import pytest

from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.plan import (
    Candidate,
    _head_costs,
    _linear_shapes,
    _unit,
    candidate_overrides,
    enumerate_candidates,
    layer_choices,
    mark_best,
    parse_heads,
    parse_ranks,
    plan,
    plan_text,
    sort_candidates,
    target_choices,
    train_command,
)

from .conftest import AG_LABELS

H, FF = 32, 64  # the tiny RoBERTa's hidden and intermediate sizes
MINILM = (
    "all-MiniLM-L6-v2"  # a real shape whose config is installed (no tokenizer training per test)
)


def _roberta_config(layers=2, hidden=H):
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=100,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=40,
        num_labels=4,
    )


def _shapes(model_config):
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        return _linear_shapes(AutoModelForSequenceClassification.from_config(model_config))


def _cand(**kw) -> Candidate:
    base = dict(
        layers="all",
        targets_name="qv",
        targets=["query", "value"],
        r=4,
        head="linear",
        head_rank=None,
        bias="none",
        lora=1000,
        head_params=100,
        bias_params=0,
        coverage=4,
    )
    base.update(kw)
    return Candidate(**base)


# ------------------------------------------------------------------ shapes and units


def test_linear_shapes_lists_each_layers_linear_modules():
    shapes = _shapes(_roberta_config(layers=2))
    assert len(shapes) == 2 * 6  # query, key, value, attention output, intermediate, output
    by_name = {name: (layer, i, o) for layer, name, i, o in shapes}
    assert by_name["roberta.encoder.layer.1.attention.self.query"] == (1, H, H)
    assert by_name["roberta.encoder.layer.0.intermediate.dense"] == (0, H, FF)
    assert by_name["roberta.encoder.layer.0.output.dense"] == (0, FF, H)
    assert not any("classifier" in n or "embeddings" in n for n in by_name)


def test_unit_counts_rank_cost_dora_magnitudes_and_modules():
    shapes = _shapes(_roberta_config(layers=3))
    # query + value in layers 1 and 2: each 32 -> 32
    assert _unit(shapes, [1, 2], ["query", "value"], False) == (4 * (H + H), 0, 4)
    # DoRA adds one magnitude per output feature of each adapted module
    assert _unit(shapes, [1, 2], ["query", "value"], True) == (4 * (H + H), 4 * H, 4)
    # output.dense matches the attention output (32 -> 32) and the feed-forward output (64 -> 32)
    assert _unit(shapes, [0], ["output.dense"], True) == ((H + H) + (FF + H), 2 * H, 2)
    assert _unit(shapes, [0], ["intermediate.dense"], True) == (H + FF, FF, 1)
    assert _unit(shapes, [5], ["query"], False) == (0, 0, 0)  # no such layer


# ------------------------------------------------------------------ choices


@pytest.mark.parametrize(
    "depth, configured, expected",
    [
        (6, "all", {"all": [0, 1, 2, 3, 4, 5], "3-5": [3, 4, 5], "4-5": [4, 5]}),
        (12, "9-11", {"all": list(range(12)), "6-11": list(range(6, 12)), "9-11": [9, 10, 11]}),
        (3, None, {"all": [0, 1, 2], "1-2": [1, 2], "2": [2]}),  # ceil(3/2) = 2, ceil(3/4) = 1
        (1, "all", {"all": [0]}),  # every share is the one layer
        (6, [1, 3], {"all": list(range(6)), "3-5": [3, 4, 5], "4-5": [4, 5], "1,3": [1, 3]}),
        (6, "4-5", {"all": list(range(6)), "3-5": [3, 4, 5], "4-5": [4, 5]}),  # already there
        (6, "0-5", {"all": list(range(6)), "3-5": [3, 4, 5], "4-5": [4, 5]}),
        (
            5,
            "all",
            {"all": list(range(5)), "2-4": [2, 3, 4], "3-4": [3, 4]},
        ),  # ceil(5/2), ceil(5/4)
    ],
)
def test_layer_choices(depth, configured, expected):
    assert layer_choices(depth, configured) == expected


def test_the_configs_layers_beyond_the_model_are_a_user_error(capsys):
    from lorafit.cli import main

    with pytest.raises(UserError) as err:
        layer_choices(6, "4-7")
    assert str(err.value) == "lora.layers: layer 7 is out of range; the model has layers 0-5"
    assert main(["plan", AG_LABELS, f"model.name={MINILM}", "lora.layers=7", "--top", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "lorafit: error: lora.layers: layer 7 is out of range; the model has layers 0-5"
    ]


def test_enumerate_candidates_dora_and_head_rank():
    base = [AG_LABELS, f"model.name={MINILM}", "lora.target_modules=[query,value]"]
    dora = enumerate_candidates(
        load_config(None, [*base, "lora.use_dora=true"]), 10**9, [("lowrank", 3)], [1]
    )
    row = next(c for c in dora if (c.layers, c.targets_name, c.bias) == ("all", "qv", "none"))
    assert (
        row.lora == 6 * 2 * (384 + 384) + 6 * 2 * 384
    )  # r x (in + out), plus a magnitude per output
    assert row.head == "lowrank" and row.head_rank == 3


def test_target_choices_offers_each_preset_that_fits_and_the_configs_own():
    mc = _roberta_config()
    shapes = _shapes(mc)
    cfg = load_config(None, [AG_LABELS])  # default targets: query, value (qv itself)
    assert target_choices(cfg, mc, shapes) == {
        "qv": ["query", "value"],
        "qkv": ["query", "key", "value"],
        "qkvo": ["query", "key", "value", "attention.output.dense"],
        "all-linear": ["query", "key", "value", "output.dense", "intermediate.dense"],
    }
    own = load_config(None, [AG_LABELS, "lora.target_modules=[key,intermediate.dense]"])
    choices = target_choices(own, mc, shapes)
    assert choices["config"] == ["key", "intermediate.dense"] and len(choices) == 5


def test_target_choices_skip_a_preset_one_layer_lacks():
    mc = _roberta_config(layers=2)
    shapes = [s for s in _shapes(mc) if not (s[0] == 1 and s[1].endswith(".key"))]
    choices = target_choices(load_config(None, [AG_LABELS]), mc, shapes)
    assert set(choices) == {"qv"}  # qkv, qkvo and all-linear need key in every layer


# ------------------------------------------------------------------ options


def test_parse_heads():
    assert parse_heads("full,linear,lowrank:16", 8) == [
        ("full", None),
        ("linear", None),
        ("lowrank", 16),
    ]
    assert parse_heads(" lowrank , dense_lora:4,, linear:7 ", 12) == [
        ("lowrank", 12),
        ("dense_lora", 4),
        ("linear", None),
    ]
    assert parse_heads("dense_lora:x", 5) == [("dense_lora", 5)]  # not a number: the default
    with pytest.raises(UserError) as err:
        parse_heads("mlp", 8)
    assert (
        str(err.value)
        == "--heads: unknown head 'mlp'; use full, linear, lowrank, dense_lora (lowrank:K for a rank)"
    )
    with pytest.raises(UserError) as err:
        parse_heads(" , ", 8)
    assert str(err.value) == "--heads: give at least one head, e.g. full,linear,lowrank:16"


def test_parse_ranks():
    assert parse_ranks("1-4") == [1, 2, 3, 4]
    assert parse_ranks("16,4,8") == [4, 8, 16]
    assert parse_ranks("1") == [1]
    with pytest.raises(UserError) as err:
        parse_ranks("0-2")
    assert str(err.value) == "--ranks: ranks start at 1, e.g. 1-64 or 4,8,16"
    with pytest.raises(UserError) as err:
        parse_ranks("a-b")
    assert str(err.value) == "--ranks: cannot read 'a-b'; write 'all', '9-11' or [9, 10, 11]"


# ------------------------------------------------------------------ head costs


def test_head_costs_per_kind_on_a_roberta_shape():
    mc = _roberta_config()
    cfg = load_config(None, [AG_LABELS, "model.head_rank=5"])
    costs = _head_costs(
        cfg, mc, [("full", None), ("linear", None), ("lowrank", 3), ("dense_lora", None)]
    )
    # a layer: q, k, v, attention output, intermediate, output, and its two LayerNorms' biases;
    # then the embeddings' LayerNorm (a parameter named "bias", not its weight)
    biases = 2 * (H + H + H + H + FF + H + 2 * H) + H
    assert costs == {
        ("full", None): (H * H + H + H * 4 + 4, biases),
        ("linear", None): (H * 4 + 4, biases),
        ("lowrank", 3): (H * 3 + 3 * H + H + H * 4 + 4, biases),
        ("dense_lora", None): (H * 5 + 5 * H + H + H * 4 + 4, biases),  # the config's head_rank
    }


def test_head_costs_skip_a_head_the_architecture_lacks():
    from transformers import DistilBertConfig

    mc = DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32, num_labels=2)
    costs = _head_costs(load_config(None, [AG_LABELS]), mc, [("full", None), ("linear", None)])
    assert list(costs) == [("full", None)]
    costs = _head_costs(
        load_config(None, [AG_LABELS]), mc, [("linear", None), ("lowrank", 2), ("full", None)]
    )
    assert list(costs) == [("full", None)]  # the heads after a refused one are still costed


# ------------------------------------------------------------------ candidates


def test_candidate_totals():
    c = _cand(lora=1000, head_params=100, bias_params=10)
    assert (c.trainable, c.encoder) == (1110, 1010)
    assert (c.counted, c.best, c.overrides) == ("estimate", False, [])


def test_enumerate_candidates_counts_and_budget_edge():
    # all-MiniLM-L6-v2's shape (its config ships with the package: offline): 6 BERT layers,
    # 384 wide, feed-forward 1536; its pooler is replaced by the linear head's Pool
    cfg = load_config(None, [AG_LABELS, f"model.name={MINILM}"])
    cands = enumerate_candidates(cfg, 10**9, [("linear", None)], [1, 3])
    h, wide = 384, 1536
    rank_cost = {"qv": 6 * 2 * (h + h), "all-linear": 6 * (4 * (h + h) + (h + wide) + (wide + h))}
    biases = 6 * (5 * h + wide + 2 * h) + h
    for c in cands:
        if c.layers == "all" and c.targets_name in rank_cost:
            assert c.lora == c.r * rank_cost[c.targets_name]
        assert c.head_params == h * 4 + 4
        assert c.bias_params == (biases if c.bias == "all" else 0)
    assert {c.bias for c in cands} == {"none", "all"} and {c.r for c in cands} == {1, 3}
    # layers all, 3-5 and 4-5, four presets, two biases, two ranks
    assert len(cands) == 3 * 4 * 2 * 2
    qv_all = next(
        c for c in cands if (c.layers, c.targets_name, c.bias) == ("all", "qv", "none") and c.r == 1
    )
    assert qv_all.coverage == 12
    exact = qv_all.lora + qv_all.head_params  # a budget of exactly that still fits
    fitting = enumerate_candidates(cfg, exact, [("linear", None)], [1])
    assert any((c.layers, c.targets_name, c.bias) == ("all", "qv", "none") for c in fitting)
    assert all(c.trainable <= exact for c in fitting)
    below = enumerate_candidates(cfg, exact - 1, [("linear", None)], [1])
    assert not any((c.layers, c.targets_name, c.bias) == ("all", "qv", "none") for c in below)


def test_mark_best_tolerance_edge():
    cands = [_cand(lora=1000), _cand(lora=980), _cand(lora=979), _cand(lora=0, bias_params=990)]
    mark_best(cands, 0.02)
    assert [c.best for c in cands] == [True, True, False, True]  # 980 = 98% of 1000: in
    mark_best(cands, 0.0)
    assert [c.best for c in cands] == [True, False, False, False]
    mark_best([], 0.02)  # nothing fits: nothing to mark


def test_sort_orders_and_their_tie_breaks():
    a = _cand(r=2, lora=900, head_params=50, coverage=8)
    b = _cand(r=8, lora=900, head_params=10, coverage=8)
    c = _cand(r=4, lora=950, head_params=10, coverage=2)
    d = _cand(r=8, lora=500, head_params=400, coverage=8)
    for x in (a, b, c):
        x.best = True
    assert sort_candidates([d, c, a, b], "spend") == [
        b,
        a,
        c,
        d,
    ]  # best, coverage, encoder, smaller head
    assert [x.trainable for x in sort_candidates([a, b, c, d], "trainable")] == [960, 950, 910, 900]
    assert sort_candidates([a, c, d], "encoder") == [c, a, d]
    assert sort_candidates([c, d, a], "coverage") == [a, d, c]  # coverage, then encoder
    assert sort_candidates([a, c, d], "rank") == [d, c, a]
    assert sort_candidates([d, b, c], "head") == [c, b, d]  # smallest head, then most encoder
    with pytest.raises(UserError) as err:
        sort_candidates([a], "price")
    assert (
        str(err.value) == "--sort price: use one of spend, trainable, encoder, coverage, rank, head"
    )


def test_sort_spend_prefers_more_encoder_parameters_at_equal_coverage():
    small = _cand(lora=800, coverage=6)
    large = _cand(lora=990, coverage=6)
    small.best = large.best = True
    assert sort_candidates([small, large], "spend") == [large, small]


def test_sort_trainable_breaks_ties_by_coverage():
    a = _cand(lora=900, coverage=2)
    b = _cand(lora=900, coverage=6)
    assert sort_candidates([a, b], "trainable") == [b, a]
    assert sort_candidates([a, b], "encoder") == [b, a]
    c = _cand(lora=900, coverage=6, r=9)
    d = _cand(lora=950, coverage=6, r=9)
    assert sort_candidates([c, d], "coverage") == [d, c]
    assert sort_candidates([c, d], "rank") == [d, c]


def test_candidate_overrides():
    cfg = load_config(None, [AG_LABELS, "lora.r=8", "lora.alpha=12"])
    c = _cand(
        layers="1,3", targets=["query", "value"], r=6, head="lowrank", head_rank=4, bias="all"
    )
    assert candidate_overrides(c, cfg) == [
        "lora.layers=[1,3]",
        "lora.target_modules=[query,value]",
        "lora.r=6",
        "lora.alpha=9",  # alpha / r kept at 1.5
        "lora.bias=all",
        "lora.sections=[]",
        "model.head=lowrank",
        "model.head_rank=4",
    ]
    assert candidate_overrides(_cand(layers="9-11", r=3), cfg)[0] == "lora.layers=9-11"
    assert candidate_overrides(_cand(layers="all", r=3), cfg)[:4] == [
        "lora.layers=all",
        "lora.target_modules=[query,value]",
        "lora.r=3",
        "lora.alpha=4.5",
    ]
    assert candidate_overrides(_cand(layers="4"), cfg)[0] == "lora.layers=4"
    mean = load_config(None, [AG_LABELS, "model.head=linear", "model.pooling=mean"])
    assert candidate_overrides(_cand(head="full"), mean)[-1] == "model.pooling=first"
    assert "model.pooling=first" not in candidate_overrides(_cand(head="linear"), mean)
    assert "model.pooling=first" not in candidate_overrides(_cand(head="full"), cfg)
    assert "lora.mode=lora" not in candidate_overrides(_cand(), cfg)
    full = load_config(None, [AG_LABELS, "lora.mode=full"])
    assert candidate_overrides(_cand(), full)[-1] == "lora.mode=lora"


def test_a_full_fine_tuning_config_is_planned_as_lora():
    """Its rows count LoRA, not every weight, and their command trains LoRA."""
    lora = plan(
        None,
        [AG_LABELS, f"model.name={MINILM}"],
        budget=300_000,
        top=2,
        heads="linear",
        ranks="2,4",
    )
    full = plan(
        None,
        [AG_LABELS, f"model.name={MINILM}", "lora.mode=full"],
        budget=300_000,
        top=2,
        heads="linear",
        ranks="2,4",
    )
    assert [r["trainable"] for r in full["candidates"]] == [
        r["trainable"] for r in lora["candidates"]
    ]
    assert all(r["overrides"][-1] == "lora.mode=lora" for r in full["candidates"])
    assert (
        full["command"].endswith(" lora.mode=lora")
        and full["candidates"][0]["trainable"] <= 300_000
    )


def test_train_command():
    cfg = load_config(None, [AG_LABELS, "budget=500000"])
    rows = ["lora.r=4", "model.head=linear"]
    assert train_command(None, [AG_LABELS, "lora.r=2", "train.lr=1e-3"], cfg, 500_000, rows) == (
        "lorafit train model.name=all-MiniLM-L6-v2 "
        + shlex.quote(AG_LABELS)
        + " train.lr=1e-3 lora.r=4 model.head=linear"
    )
    with_path = train_command(
        "my configs/x.yaml", ["budget = 9", " model.name=x"], cfg, 700_000, rows
    )
    assert with_path == (
        "lorafit train --config 'my configs/x.yaml' model.name=all-MiniLM-L6-v2 budget=700000 "
        "lora.r=4 model.head=linear"
    )
    from pathlib import Path

    assert train_command(Path("c.yaml"), [], cfg, 500_000, []).startswith(
        "lorafit train --config c.yaml "
    )
    # a key is what comes before the first "=": values may hold more of them
    odd = train_command(
        None, ["model.name=org/m=v2", "x.y=old", "a.b=c=d"], cfg, 500_000, ["x.y=new=1"]
    )
    assert odd == "lorafit train model.name=all-MiniLM-L6-v2 a.b=c=d x.y=new=1"


# ------------------------------------------------------------------ the whole plan and its text


def test_plan_refuses_bad_budget_and_sort_before_any_work():
    with pytest.raises(UserError) as err:
        plan(None, [AG_LABELS, "model.name=/no/such/model"], budget=-5)
    assert str(err.value) == "--budget -5: must be a positive number of parameters"
    with pytest.raises(UserError, match="^--sort price: use one of"):
        plan(None, [AG_LABELS, "model.name=/no/such/model"], budget=10, sort="price")


def test_plan_fields_and_text():
    base = [AG_LABELS, f"model.name={MINILM}"]
    budget = 19_997  # shares with more than six decimals: the rounding shows
    p = plan(None, base, budget=budget, top=2, heads="linear,lowrank:2", ranks="2")
    assert (p["model"], p["budget"], p["sort"], p["shown"]) == (MINILM, budget, "spend", 2)
    assert p["fitting"] > p["best"] >= 1
    row = p["candidates"][0]
    assert row["counted"] == "exact" and row["budget_used"] == round(row["trainable"] / budget, 6)
    assert row["budget_used"] != round(row["trainable"] / budget, 7)
    assert row["encoder"] == row["lora"] + row["bias_params"]
    assert row["trainable"] == row["encoder"] + row["head_params"]
    assert p["command"] == train_command(
        None, base, load_config(None, base), budget, row["overrides"]
    )
    everything = plan(None, base, budget=budget, top=0, heads="linear", ranks="2")
    assert everything["shown"] == everything["fitting"]
    assert everything["best"] == sum(r["best"] for r in everything["candidates"]) >= 1
    assert plan(None, base, top=1)["budget"] == 1_000_000  # the config's


def test_plan_text_layout():
    rows = [
        dict(
            best=True,
            layers="all",
            targets_name="qv",
            targets=["query", "value"],
            r=4,
            head="lowrank",
            head_rank=8,
            bias="none",
            trainable=12_345,
            budget_used=0.61725,
            lora=10_000,
            head_params=2_345,
            bias_params=0,
        ),
        dict(
            best=False,
            layers="1",
            targets_name="qkv",
            targets=["query", "key", "value"],
            r=12,
            head="linear",
            head_rank=None,
            bias="all",
            trainable=9_000,
            budget_used=0.45,
            lora=8_000,
            head_params=132,
            bias_params=868,
        ),
    ]
    p = {
        "model": "m",
        "fitting": 1_234,
        "budget": 20_000,
        "best": 3,
        "shown": 2,
        "sort": "rank",
        "candidates": rows,
        "command": "lorafit train x",
    }
    assert plan_text(p).splitlines() == [
        "m: 1,234 configurations fit a budget of 20,000; 3 spend it best (*); showing 2 by rank",
        "",
        "  layers  modules        r  head        bias    trainable    used       lora     head   biases",
        "* all     qv             4  lowrank:8   none       12,345   61.7%     10,000    2,345        0",
        "  1       qkv           12  linear      all         9,000   45.0%      8,000      132      868",
        "",
        "modules: qv = query, value; qkv = query, key, value",
        "first row: lorafit train x",
    ]
    p.update(candidates=[], command=None, shown=0)
    assert plan_text(p).splitlines()[-1] == "modules: "


def test_plan_defaults_edges_and_the_configs_own_choices():
    base = [AG_LABELS, f"model.name={MINILM}"]
    assert plan(None, base, heads="linear", ranks="1-8")["shown"] == 15  # the default top
    nothing = plan(None, base, budget=1)  # a budget of one parameter is a budget: nothing fits
    assert (nothing["fitting"], nothing["candidates"], nothing["command"]) == (0, [], None)
    with pytest.raises(UserError) as err:
        plan(None, base, budget=10, sort="price")
    assert (
        str(err.value) == "--sort price: use one of spend, trainable, encoder, coverage, rank, head"
    )
    # a row that spends the budget exactly is shown: query+value of 6 layers at r=1 (6 x 2 x 768)
    # and a linear head (384 x 4 + 4)
    exact = 6 * 2 * 768 + 1540
    rows = plan(None, base, budget=exact, top=0, heads="linear", ranks="1")["candidates"]
    assert exact in [r["trainable"] for r in rows]
    # the config's own layers are a choice, and its head_rank is the head's default rank
    own = enumerate_candidates(
        load_config(None, [*base, "lora.layers=[1,3]"]), 50_000, [("linear", None)], [1]
    )
    assert "1,3" in {c.layers for c in own}
    ranked = plan(
        None, [*base, "model.head_rank=5"], budget=50_000, top=1, heads="lowrank", ranks="1"
    )
    assert ranked["candidates"][0]["head_rank"] == 5
