"""`lorafit plan`: fitting configurations with exact counts, best spenders marked."""

from __future__ import annotations

import json
import random

import pytest

from lorafit.cli import build_parser, main
from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.params import describe_model
from lorafit.plan import (
    candidate_overrides,
    enumerate_candidates,
    parse_heads,
    parse_ranks,
    plan,
    plan_text,
)

from .conftest import AG_LABELS


@pytest.fixture(scope="module")
def roberta_plan():
    return plan(None, [AG_LABELS, "model.name=roberta-base"], budget=1_000_000, top=8)


def test_estimates_equal_the_training_count():
    """The fast count from module shapes agrees with `describe_model` on a spread of candidates."""
    cfg = load_config(None, [AG_LABELS, "model.name=roberta-base", "lora.use_dora=true"])
    cands = enumerate_candidates(
        cfg, 1_000_000, parse_heads("full,linear,lowrank:8,dense_lora:4", 16), [1, 2, 5, 13]
    )
    families = {}
    for c in cands:
        families.setdefault((c.layers, c.targets_name, c.head, c.bias), c)
    sample = random.Random(0).sample(sorted(families.values(), key=repr), 8)
    for c in sample:
        d = describe_model(
            load_config(
                None,
                [
                    AG_LABELS,
                    "model.name=roberta-base",
                    "lora.use_dora=true",
                    *candidate_overrides(c, cfg),
                ],
            )
        )
        b = d["breakdown"]
        assert (b["lora"], b["head"], b["bias"]) == (c.lora, c.head_params, c.bias_params), c


def test_roberta_plan_rows(roberta_plan):
    rows = roberta_plan["candidates"]
    assert roberta_plan["shown"] == len(rows) == 8 and roberta_plan["fitting"] > 1000
    assert all(r["counted"] == "exact" and r["trainable"] <= 1_000_000 for r in rows)
    first = rows[0]
    # the best spender with the most coverage: every linear layer of all 12 layers, r=6,
    # a linear head (3,076) instead of the 593,668-parameter full head
    assert (first["layers"], first["targets_name"], first["r"], first["head"]) == (
        "all",
        "all-linear",
        6,
        "linear",
    )
    assert first["trainable"] == 998_404 and first["best"]
    assert all(
        r["head"] != "full" for r in rows if r["best"]
    )  # the full head cannot be a best spender here
    coverages = [r["coverage"] for r in rows if r["best"]]
    assert coverages == sorted(coverages, reverse=True)


def test_sorting_and_ranks():
    p = plan(
        None,
        [AG_LABELS, "model.name=all-MiniLM-L6-v2"],
        budget=200_000,
        top=5,
        sort="trainable",
        heads="full",
        ranks="4,8,16",
    )
    values = [r["trainable"] for r in p["candidates"]]
    assert values == sorted(values, reverse=True) and values[0] <= 200_000
    assert {r["r"] for r in p["candidates"]} <= {4, 8, 16}
    by_rank = plan(
        None,
        [AG_LABELS, "model.name=all-MiniLM-L6-v2"],
        budget=200_000,
        top=3,
        sort="rank",
        heads="full",
        ranks="4,8,16",
    )
    assert [r["r"] for r in by_rank["candidates"]] == [16, 16, 16]


def test_layer_choices_include_the_configs_own():
    p = plan(
        None,
        [AG_LABELS, "model.name=all-MiniLM-L6-v2", "lora.layers=[1,3]"],
        budget=50_000,
        top=0,
        heads="linear",
        ranks="2",
    )
    assert {r["layers"] for r in p["candidates"]} == {"all", "3-5", "4-5", "1,3"}
    row = next(r for r in p["candidates"] if r["layers"] == "1,3")
    assert "lora.layers=[1,3]" in row["overrides"]


def test_every_shown_row_trains_within_budget(tiny_model):
    """The overrides of a row give a config whose budget check passes at the plan's count."""
    p = plan(None, [AG_LABELS, f"model.name={tiny_model}"], budget=20_000, top=3)
    for row in p["candidates"]:
        cfg = load_config(
            None, [AG_LABELS, f"model.name={tiny_model}", "budget=20000", *row["overrides"]]
        )
        d = describe_model(cfg)
        assert d["fits_budget"] and d["params"]["trainable"] == row["trainable"]


def test_cli_table_and_json(capsys, tiny_model):
    assert (
        main(
            [
                "plan",
                AG_LABELS,
                f"model.name={tiny_model}",
                "--budget",
                "20000",
                "--top",
                "4",
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["budget"] == 20_000 and len(data["candidates"]) == 4
    assert (
        main(["plan", AG_LABELS, f"model.name={tiny_model}", "--budget", "20000", "--top", "4"])
        == 0
    )
    text = capsys.readouterr().out
    assert "configurations fit a budget of 20,000" in text and "first row: lorafit train" in text
    assert (
        text
        == plan_text(plan(None, [AG_LABELS, f"model.name={tiny_model}"], budget=20_000, top=4))
        + "\n"
    )


def test_bad_options_are_user_errors(capsys, tiny_model):
    with pytest.raises(UserError, match="--heads: unknown head 'mlp'"):
        parse_heads("full,mlp", 16)
    with pytest.raises(UserError, match="--ranks: ranks start at 1"):
        parse_ranks("0-4")
    assert main(["plan", AG_LABELS, f"model.name={tiny_model}", "--sort", "price"]) == 2
    assert "--sort price: use one of spend" in capsys.readouterr().err


def test_nothing_fits_a_tiny_budget(tiny_model):
    p = plan(None, [AG_LABELS, f"model.name={tiny_model}"], budget=10)
    assert p["fitting"] == 0 and p["candidates"] == []


def test_help():
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["plan", "--help"])
    assert e.value.code == 0


def test_full_head_rows_of_a_mean_pooled_config_switch_pooling_back(tiny_model):
    """The model's own head reads the first token: its rows say so, and every row loads."""
    from lorafit.config import load_config

    base = [AG_LABELS, f"model.name={tiny_model}", "model.head=linear", "model.pooling=mean"]
    p = plan(None, base, budget=20_000, top=100_000, heads="full,linear", ranks="2")
    kinds = {c["head"] for c in p["candidates"]}
    assert kinds == {"full", "linear"}
    for c in p["candidates"]:
        cfg = load_config(None, [*base, *c["overrides"]])
        assert cfg.model.pooling == ("first" if c["head"] == "full" else "mean")


MPNET = "sentence-transformers/all-mpnet-base-v2"  # a known shape: planned without the hub


def _pasted(command: str):
    """The config that `command` (a `lorafit train ...` line) trains, as the CLI would load it."""
    import shlex

    args = shlex.split(command)
    assert args[:2] == ["lorafit", "train"]
    args = args[2:]
    path = None
    if args[:1] == ["--config"]:
        path, args = args[1], args[2:]
    return load_config(path, args)


def test_suggested_command_carries_config_and_model():
    from .conftest import ROOT

    path = str(ROOT / "configs" / "agnews_roberta_latent.yaml")
    p = plan(path, ["train.lr=1e-3"], budget=700_000, top=2, heads="full,linear", ranks="2,4")
    prefix = f"lorafit train --config {path} model.name=roberta-base train.lr=1e-3 budget=700000 "
    assert p["command"].startswith(prefix)
    cfg = _pasted(p["command"])
    assert (cfg.model.name, cfg.train.lr, cfg.budget, cfg.data.val_size) == (
        "roberta-base",
        1e-3,
        700_000,
        640,
    )
    d = describe_model(cfg)
    assert d["params"]["trainable"] == p["candidates"][0]["trainable"] and d["fits_budget"]


def test_suggested_command_without_config_trains_the_planned_model(capsys):
    """Pasted without --config it must not fall back to the default model (MiniLM)."""
    assert (
        main(["plan", AG_LABELS, f"model.name={MPNET}", "--budget", "1000000", "--top", "1"]) == 0
    )
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("first row: "))
    command = line.removeprefix("first row: ")
    assert "--config" not in command and f"model.name={MPNET}" in command
    cfg = _pasted(command)
    assert cfg.model.name == MPNET
    d = describe_model(cfg)
    assert d["model_type"] == "mpnet" and d["params"]["trainable"] == 998_404


def test_mpnet_presets_use_mpnets_module_names():
    p = plan(
        None,
        [AG_LABELS, f"model.name={MPNET}"],
        budget=1_000_000,
        top=1,
        heads="linear",
        ranks="1-8",
    )
    first = p["candidates"][0]
    # every linear layer of all 12 layers at r=6 and a linear head, as on roberta-base
    assert (first["layers"], first["targets_name"], first["r"], first["trainable"]) == (
        "all",
        "all-linear",
        6,
        998_404,
    )
    assert first["targets"] == [
        "attn.q",
        "attn.k",
        "attn.v",
        "attn.o",
        "intermediate.dense",
        "output.dense",
    ]
    import torch
    from transformers import AutoModelForSequenceClassification

    from lorafit.model import load_model_config
    from lorafit.plan import _linear_shapes, target_choices

    cfg = load_config(None, [AG_LABELS, f"model.name={MPNET}"])
    mc = load_model_config(cfg)
    with torch.device("meta"):
        shapes = _linear_shapes(AutoModelForSequenceClassification.from_config(mc))
    choices = target_choices(cfg, mc, shapes)
    assert choices == {
        "qv": ["attn.q", "attn.v"],
        "qkv": ["attn.q", "attn.k", "attn.v"],
        "qkvo": ["attn.q", "attn.k", "attn.v", "attn.o"],
        "all-linear": [
            "attn.q",
            "attn.k",
            "attn.v",
            "attn.o",
            "intermediate.dense",
            "output.dense",
        ],
    }
