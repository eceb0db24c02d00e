"""Head options: exact counts on roberta-base's shape and MiniLM, forward shapes, checkpoint round trip."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.heads import (
    DenseLoraHead,
    LinearHead,
    LowRankHead,
    Pool,
    install_head,
)
from lorafit.model import build_model
from lorafit.params import describe_model

from .conftest import AG_LABELS

QV_ALL_LAYERS = 12 * 2 * 8 * (768 + 768)  # query+value of 12 layers at r=8: 294,912


def _describe(*overrides):
    return describe_model(load_config(None, [AG_LABELS, "model.name=roberta-base", *overrides]))


@pytest.mark.parametrize(
    "head, extra, head_params",
    [
        ("full", [], 768 * 768 + 768 + 768 * 4 + 4),  # 593,668
        ("linear", [], 768 * 4 + 4),  # 3,076
        ("lowrank", ["model.head_rank=16"], 768 * 16 + 16 * 768 + 768 + 768 * 4 + 4),  # 28,420
        ("lowrank", ["model.head_rank=4"], 768 * 4 + 4 * 768 + 768 + 768 * 4 + 4),  # 10,756
        ("dense_lora", ["model.head_rank=16"], 768 * 16 + 16 * 768 + 768 + 768 * 4 + 4),
    ],
)
def test_head_counts_on_roberta_base(head, extra, head_params):
    d = _describe(f"model.head={head}", *extra)
    assert d["breakdown"] == {"lora": QV_ALL_LAYERS, "head": head_params, "bias": 0, "other": 0}
    assert d["params"]["trainable"] == QV_ALL_LAYERS + head_params


def test_freed_budget_goes_to_adapters():
    # the seed recipe's 3 layers of query+value at r=8 with the full head, against every
    # linear layer of every layer at r=6 with a linear head: same budget, 13x the adapters
    seed = _describe("lora.layers=9-11", "lora.target_modules=[query,value]")
    lean = _describe(
        "model.head=linear",
        "lora.r=6",
        "lora.target_modules=[query,key,value,output.dense,intermediate.dense]",
    )
    assert seed["params"]["trainable"] == 667_396
    assert lean["params"]["trainable"] == 998_404 and lean["breakdown"]["lora"] == 995_328
    assert lean["fits_budget"] and lean["breakdown"]["lora"] > 13 * seed["breakdown"]["lora"]


def test_dense_lora_keeps_its_random_matrix_frozen():
    model = build_model(
        load_config(None, [AG_LABELS, "model.name=roberta-base", "model.head=dense_lora"]),
        weights=False,
    )
    names = {n for n, _ in model.named_buffers()}
    assert any(n.endswith("fixed_weight") for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("fixed_weight" in n for n in trainable)
    assert any(n.endswith("classifier.modules_to_save.default.up.weight") for n in trainable)


def test_minilm_heads_replace_the_pooler():
    """MiniLM is BERT-style: the full head is the frozen pooler + a 384x4 classifier."""
    full = describe_model(load_config(None, [AG_LABELS, "model.name=all-MiniLM-L6-v2"]))
    linear_cfg = load_config(
        None, [AG_LABELS, "model.name=all-MiniLM-L6-v2", "model.head=lowrank", "model.head_rank=8"]
    )
    model = build_model(linear_cfg, weights=False)
    lowrank = describe_model(linear_cfg, model)
    assert full["breakdown"]["head"] == 384 * 4 + 4
    assert lowrank["breakdown"]["head"] == 384 * 8 * 2 + 384 + 384 * 4 + 4
    pooler = model.get_base_model().bert.pooler
    assert isinstance(pooler, Pool) and pooler.kind == "first"
    assert not any("pooler" in n for n, _ in model.named_parameters())  # its dense + tanh are gone
    full_model = build_model(
        load_config(None, [AG_LABELS, "model.name=all-MiniLM-L6-v2"]), weights=False
    )
    pooler_params = {n: p for n, p in full_model.named_parameters() if "pooler" in n}
    assert sum(p.numel() for p in pooler_params.values()) == 384 * 384 + 384
    assert not any(
        p.requires_grad for p in pooler_params.values()
    )  # the full head leaves it frozen


@pytest.mark.parametrize(
    "head", [LinearHead(32, 4, 0.0), LowRankHead(32, 4, 0.0, 3), DenseLoraHead(32, 4, 0.0, 3)]
)
def test_heads_read_the_first_token(head):
    torch.manual_seed(0)
    seq = torch.randn(5, 7, 32)
    out = head.eval()(seq)
    assert out.shape == (5, 4)
    changed = seq.clone()
    changed[:, 1:] = 0  # only the first token matters
    assert torch.allclose(head(changed), out)
    assert torch.allclose(head(seq[:, 0]), out)  # a pooled (batch, hidden) input works too


def test_dense_lora_starts_as_its_random_dense_layer():
    torch.manual_seed(0)
    head = DenseLoraHead(16, 3, 0.0, 2).eval()
    x = torch.randn(4, 16)
    expected = head.out_proj(torch.tanh(x @ head.fixed_weight.T + head.bias))
    assert torch.allclose(head(x), expected)  # up starts at zero
    with torch.no_grad():
        head.up.weight.fill_(0.5)
    assert not torch.allclose(head(x), expected)


def test_unsupported_architecture_is_a_user_error():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(
        vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64, num_labels=4
    )
    model = DistilBertForSequenceClassification(config)
    with pytest.raises(
        UserError, match=r"model.head=linear: not available for DistilBert.*use model.head=full"
    ):
        install_head(model, "linear", 8, config)
    install_head(model, "full", 8, config)  # the model's own head is always fine
    assert isinstance(model.classifier, nn.Linear)


@pytest.mark.parametrize(
    "head, pooling", [("lowrank", "first"), ("dense_lora", "first"), ("linear", "mean")]
)
def test_trained_head_reloads_exactly(head, pooling, tiny_overrides, tmp_path):
    """The checkpoint restores the head (and dense_lora's frozen random matrix): `evaluate` on
    the test file gives what training measured with the best weights in memory."""
    from lorafit.cli import main
    from lorafit.data import resolve_source
    from lorafit.predict import evaluate

    assert (
        main(
            [
                "train",
                *tiny_overrides,
                f"model.head={head}",
                "model.head_rank=4",
                f"model.pooling={pooling}",
                "data.test=sample-test",
                "train.mixed_precision=no",  # evaluate below scores in fp32 too
            ]
        )
        == 0
    )
    run = tmp_path / "runs" / "latest"
    description = json.loads((run / "model_description.json").read_text())
    assert description["head"] == head and description["pooling"] == pooling
    assert description["breakdown"]["head"] == (32 * 4 * 2 + 32) * (head != "linear") + 32 * 4 + 4
    (saved,) = (run / "evaluations").glob("test-*.json")
    during = json.loads(saved.read_text())
    after = evaluate(run, resolve_source("sample-test"), device="cpu", dtype="fp32")
    assert after["accuracy"] == during["accuracy"]
    assert after["loss"] == pytest.approx(during["loss"], abs=1e-5)


@pytest.mark.parametrize(
    "name, trainable, head",
    [("agnews_best.yaml", 996_868, 1_540), ("agnews_roberta_best.yaml", 998_404, 3_076)],
)
def test_shipped_best_configs_fill_the_budget(name, trainable, head):
    from .conftest import ROOT

    d = describe_model(load_config(ROOT / "configs" / name))
    assert d["params"]["trainable"] == trainable and d["breakdown"]["head"] == head
    assert d["fits_budget"] and d["budget"] - trainable < 5_000


def test_mean_pool_averages_the_real_tokens_only():
    pool = Pool("mean")
    seq = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    pool.mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    out = pool(seq)
    assert torch.allclose(out[0], seq[0, :2].mean(0)) and torch.allclose(out[1], seq[1].mean(0))
    assert torch.equal(pool(out), out)  # an already pooled input passes through
    pool.mask = torch.ones(2, 5)
    with pytest.raises(RuntimeError, match="does not match"):
        pool(seq)


@pytest.mark.parametrize("model_name", ["tiny", "all-MiniLM-L6-v2"])
@pytest.mark.parametrize("head", ["linear", "lowrank"])
def test_mean_pooling_ignores_padding_and_reads_every_token(model_name, head, tiny_model):
    """Through the whole (PEFT-wrapped) model: the encoder hook hands the mask to the head,
    so padding a row changes nothing, while its later tokens do matter."""
    from lorafit.model import load_tokenizer

    name = tiny_model if model_name == "tiny" else model_name
    cfg = load_config(
        None,
        [
            AG_LABELS,
            f"model.name={name}",
            f"model.head={head}",
            "model.pooling=mean",
            "lora.layers=0",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tokenizer = load_tokenizer(cfg)
    short, long = (
        "Stocks rally on rate hopes",
        "Rain delays the final day of the cricket test in Leeds again",
    )
    with torch.no_grad():
        alone = model(**tokenizer([short], return_tensors="pt")).logits
        padded = model(**tokenizer([short, long], padding=True, return_tensors="pt")).logits
        other = model(**tokenizer(["Stocks fall on rate fears"], return_tensors="pt")).logits
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-4)
    assert (other - alone).abs().max() > 1e-4  # words after the first token change the output


def test_mean_pooling_needs_a_lorafit_head():
    with pytest.raises(UserError, match="model.pooling: mean needs a lorafit head"):
        load_config(None, [AG_LABELS, "model.pooling=mean"])
    with pytest.raises(UserError, match="model.pooling: must be first or mean"):
        load_config(None, [AG_LABELS, "model.head=linear", "model.pooling=max"])
