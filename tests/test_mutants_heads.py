"""Direct, fast tests of heads.py for mutation testing (`scripts/mutation.sh heads`).

No training: tiny random RoBERTa- and BERT-style classifiers built from a config, heads
installed with random weights, and each function's result checked against a computation
written here (the folded own head against the lorafit head it came from, the output bias
against the log-odds worked out by hand, the pooler and classifier a head replaces).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lorafit.errors import UserError
from lorafit.heads import (
    DenseLoraHead,
    LinearHead,
    LowRankHead,
    Pool,
    check_exportable,
    head_module,
    init_output_bias,
    install_head,
    is_head_parameter,
    restore_own_head,
)


def _tiny(kind: str, num_labels: int, extra: dict):
    """A random one-layer, 16-wide classifier: RoBERTa-style (`roberta`) or BERT-style (`bert`)."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    config_cls, model_cls = {
        "roberta": (RobertaConfig, RobertaForSequenceClassification),
        "bert": (BertConfig, BertForSequenceClassification),
    }[kind]
    config = config_cls(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        num_labels=num_labels,
        **extra,
    )
    torch.manual_seed(0)
    return model_cls(config), config


def _roberta(num_labels=3, **extra):
    return _tiny("roberta", num_labels, extra)


def _bert(num_labels=3, **extra):
    return _tiny("bert", num_labels, extra)


def _randomise(module: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in [*module.parameters(), *module.buffers()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _batch():
    ids = torch.tensor([[0, 5, 9, 11, 2, 1, 1], [0, 7, 8, 13, 21, 30, 2]])
    return {"input_ids": ids, "attention_mask": (ids != 1).long()}


# ------------------------------------------------------------------ building heads


@pytest.mark.parametrize(
    "kind, cls", [("linear", LinearHead), ("lowrank", LowRankHead), ("dense_lora", DenseLoraHead)]
)
def test_head_module_builds_each_kind_with_its_shapes(kind, cls):
    head = head_module(kind, hidden=12, num_labels=5, dropout=0.25, rank=3, pooling="mean")
    assert type(head) is cls
    assert head.pool.kind == "mean" and head.dropout.p == 0.25
    assert head.out_proj.in_features == 12 and head.out_proj.out_features == 5
    assert head.out_proj.bias is not None
    if kind != "linear":
        assert (head.down.in_features, head.down.out_features) == (12, 3) and head.down.bias is None
        assert (head.up.in_features, head.up.out_features) == (3, 12)
    if kind == "lowrank":
        assert head.up.bias is not None and head.up.bias.shape == (12,)
    if kind == "dense_lora":
        assert head.up.bias is None and torch.count_nonzero(head.up.weight) == 0
        assert head.fixed_weight.shape == (12, 12) and "fixed_weight" in dict(head.named_buffers())
        assert torch.count_nonzero(head.bias) == 0 and head.bias.requires_grad
    with pytest.raises(ValueError, match="model.head: unknown head 'full'"):
        head_module("full", 12, 5, 0.1, 3)


def test_head_module_default_pooling_is_the_first_token():
    for kind in ("linear", "lowrank", "dense_lora"):
        assert head_module(kind, 8, 2, 0.0, 2).pool.kind == "first"
    # each class's own default too (built here, not at import: mutants are tested on calls)
    assert LinearHead(8, 2, 0.0).pool.kind == "first"
    assert LowRankHead(8, 2, 0.0, 2).pool.kind == "first"
    assert DenseLoraHead(8, 2, 0.0, 2).pool.kind == "first"


def test_dense_lora_random_matrix_has_the_given_spread():
    torch.manual_seed(0)
    head = DenseLoraHead(256, 2, 0.0, 2)
    assert head.fixed_weight.std().item() == pytest.approx(0.02, rel=0.05)
    torch.manual_seed(0)
    assert DenseLoraHead(256, 2, 0.0, 2, std=0.1).fixed_weight.std().item() == pytest.approx(
        0.1, rel=0.05
    )


def test_dense_lora_forward_is_dense_tanh_projection():
    torch.manual_seed(0)
    head = DenseLoraHead(8, 3, 0.0, 2)
    _randomise(head)
    x = torch.randn(4, 8)
    dense = x @ head.fixed_weight.T + head.bias + x @ head.down.weight.T @ head.up.weight.T
    expected = torch.tanh(dense) @ head.out_proj.weight.T + head.out_proj.bias
    torch.testing.assert_close(head.eval()(x), expected)


def test_lowrank_forward_is_dense_tanh_projection():
    head = LowRankHead(8, 3, 0.0, 2)
    _randomise(head)
    x = torch.randn(4, 8)
    dense = x @ head.down.weight.T @ head.up.weight.T + head.up.bias
    expected = torch.tanh(dense) @ head.out_proj.weight.T + head.out_proj.bias
    torch.testing.assert_close(head.eval()(x), expected)


def test_heads_apply_their_dropout_in_training():
    for kind in ("linear", "lowrank", "dense_lora"):
        head = head_module(kind, 64, 2, 0.5, 4)
        _randomise(head)
        x = torch.randn(8, 64)
        torch.manual_seed(0)
        train_out = head.train()(x)
        assert not torch.allclose(train_out, head.eval()(x)), kind


def test_pool_rejects_an_unknown_kind_and_shows_its_kind():
    with pytest.raises(ValueError, match="model.pooling: unknown pooling 'max'"):
        Pool("max")
    assert Pool().kind == "first" and Pool().mask is None
    assert repr(Pool("mean")) == "Pool(mean)"


def test_pool_mean_without_a_mask_averages_every_token_and_empty_rows_do_not_divide_by_zero():
    seq = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    pool = Pool("mean")
    torch.testing.assert_close(pool(seq), seq.mean(1))
    pool.mask = torch.tensor([[0, 0, 0], [1, 0, 1]])
    out = pool(seq)
    assert torch.equal(out[0], torch.zeros(2))  # no real token: zeros, not NaN
    torch.testing.assert_close(out[1], (seq[1, 0] + seq[1, 2]) / 2)
    pool.mask = torch.tensor([[1.0, 0.5, 0.0], [1, 1, 1]])  # weights, in the features' dtype
    torch.testing.assert_close(pool(seq.double())[0], (seq[0, 0] + 0.5 * seq[0, 1]).double() / 1.5)


def test_pool_mask_shape_error_names_both_shapes():
    pool = Pool("mean")
    pool.mask = torch.ones(2, 5)
    with pytest.raises(
        RuntimeError,
        match=r"^Pool: attention mask \(2, 5\) does not match the hidden states \(2, 3\)$",
    ):
        pool(torch.zeros(2, 3, 4))


def test_is_head_parameter_names():
    assert is_head_parameter("classifier.out_proj.weight")
    assert is_head_parameter("base_model.model.classifier.modules_to_save.default.up.weight")
    assert is_head_parameter("score.weight") and is_head_parameter("model.score.bias")
    assert is_head_parameter("base_model.model.classifier.original_module.dense.weight")
    assert not is_head_parameter("roberta.encoder.layer.0.attention.self.query.weight")
    assert not is_head_parameter("classifier_weight")  # a prefix, not a module
    assert not is_head_parameter("roberta.scores.weight") and not is_head_parameter(
        "myclassifier.x"
    )


# ------------------------------------------------------------------ installing heads


@pytest.mark.parametrize("kind", ["linear", "lowrank", "dense_lora"])
def test_install_head_on_roberta_replaces_the_classifier(kind):
    model, config = _roberta(hidden_dropout_prob=0.3)
    install_head(model, kind, 4, config)
    head = model.classifier
    assert head.out_proj.out_features == 3 and head.out_proj.in_features == 16
    assert head.dropout.p == 0.3  # classifier_dropout unset: the hidden dropout
    assert head.pool.kind == "first"
    if kind != "linear":
        assert head.down.out_features == 4
    assert model.roberta.pooler is None  # RoBERTa's classifier has no pooler to replace


def test_install_head_takes_classifier_dropout_when_set():
    model, config = _roberta(hidden_dropout_prob=0.3, classifier_dropout=0.05)
    install_head(model, "linear", 4, config)
    assert model.classifier.dropout.p == 0.05
    model, config = _roberta(hidden_dropout_prob=0.3, classifier_dropout=0.0)
    install_head(model, "linear", 4, config)
    assert model.classifier.dropout.p == 0.0  # 0 is a value, not "unset"


def test_install_head_on_bert_swaps_the_pooler_for_a_pool():
    model, config = _bert()
    install_head(model, "lowrank", 4, config, pooling="mean")
    assert isinstance(model.bert.pooler, Pool) and model.bert.pooler.kind == "mean"
    assert isinstance(model.classifier, LowRankHead) and model.classifier.pool.kind == "mean"
    assert not any(p.numel() for p in model.bert.pooler.parameters())


def test_install_head_keeps_the_device_of_the_old_head():
    model, config = _roberta()
    install_head(model, "lowrank", 4, config)
    assert all(p.device.type == "cpu" for p in model.classifier.parameters())
    model, config = _roberta()
    model.classifier.to("meta")
    install_head(model, "lowrank", 4, config)
    assert all(p.device.type == "meta" for p in model.classifier.parameters())


def test_full_head_leaves_the_model_as_it_was():
    model, config = _bert()
    before = model.classifier
    install_head(model, "full", 4, config, pooling="first")
    assert model.classifier is before and not isinstance(model.bert.pooler, Pool)
    assert not model.bert._forward_pre_hooks


@pytest.mark.parametrize("build", [_roberta, _bert])
def test_mean_pooling_hook_hands_the_mask_to_every_pool(build):
    model, config = build()
    install_head(model, "linear", 4, config, pooling="mean")
    encoder = getattr(model, model.base_model_prefix)
    assert len(encoder._forward_pre_hooks) == 1
    batch = _batch()
    model.eval()(**batch)
    pools = [m for m in model.modules() if isinstance(m, Pool)]
    assert pools and all(torch.equal(p.mask, batch["attention_mask"]) for p in pools)
    # positional arguments as a direct call of the encoder passes them
    other = (batch["input_ids"] > 8).long()
    encoder(batch["input_ids"], other)
    assert all(torch.equal(p.mask, other) for p in pools)
    encoder(batch["input_ids"])  # no mask: every token counts
    assert all(p.mask is None for p in pools)


def test_mean_pooling_hook_runs_on_an_encoder_without_a_pooler_attribute():
    from lorafit.heads import _mask_to_pools

    model, config = _roberta()
    install_head(model, "linear", 4, config, pooling="mean")
    mask = torch.ones(2, 3)
    _mask_to_pools(model)(nn.Module(), (), {"attention_mask": mask})  # no `pooler` at all
    assert model.classifier.pool.mask is mask


def test_mean_pooling_hook_finds_a_head_installed_after_it():
    """PEFT copies the head after install_head; the hook must reach the copy."""
    model, config = _roberta()
    install_head(model, "linear", 4, config, pooling="mean")
    copy = head_module("linear", 16, 3, 0.0, 4, "mean")
    model.classifier = nn.Sequential(copy)
    batch = _batch()
    model.eval()(**batch)
    assert torch.equal(copy.pool.mask, batch["attention_mask"])


def test_install_head_error_names_the_model_and_the_way_out():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(
        vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32, num_labels=2
    )
    with pytest.raises(UserError) as err:
        install_head(DistilBertForSequenceClassification(config), "lowrank", 4, config)
    assert str(err.value) == (
        "model.head=lowrank: not available for DistilBertForSequenceClassification (BERT- and "
        "RoBERTa-style classifiers only); use model.head=full"
    )
    model, config = _bert()
    model.bert.pooler = None  # a BERT without its pooler: no dense + tanh to replace
    with pytest.raises(UserError, match="not available for BertForSequenceClassification"):
        install_head(model, "linear", 4, config)


# ------------------------------------------------------------------ export: folding back


def test_check_exportable_messages():
    with pytest.raises(UserError) as err:
        check_exportable("linear")
    assert str(err.value) == (
        "model.head=linear: the model's own head has a dense layer and tanh that a linear head "
        "cannot be written as, so transformers could not load it; use `lorafit predict` on the "
        "run, or train with model.head=lowrank, dense_lora or full to export"
    )
    with pytest.raises(UserError) as err:
        check_exportable("lowrank", "mean")
    assert str(err.value) == (
        "model.pooling=mean: the model's own head reads the first token, so transformers could "
        "not load this head; use `lorafit predict` on the run"
    )
    with pytest.raises(UserError, match="model.head=linear"):
        check_exportable("linear", "mean")  # the head is named first
    for kind in ("full", "lowrank", "dense_lora"):
        check_exportable(kind)
        check_exportable(kind, "first")


@pytest.mark.parametrize("build", [_roberta, _bert])
@pytest.mark.parametrize("kind", ["lowrank", "dense_lora"])
def test_restore_own_head_computes_what_the_lorafit_head_did(build, kind, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model, config = build()
    install_head(model, kind, 3, config)
    _randomise(model.classifier)
    batch = _batch()
    with torch.no_grad():
        expected = model.eval()(**batch).logits
    model.train()
    restored = restore_own_head(model, kind)
    assert restored is model and not any(m.training for m in model.modules())
    assert not any(isinstance(m, (Pool, LowRankHead, DenseLoraHead)) for m in model.modules())
    with torch.no_grad():
        got = model(**batch).logits
    assert expected.std() > 1e-3
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the folded model is transformers' own: it saves and loads without lorafit
    model.save_pretrained(tmp_path)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, expected, atol=1e-5, rtol=1e-5)


def test_restore_own_head_leaves_a_full_head_and_refuses_linear():
    model, _ = _roberta()
    before = model.classifier
    assert restore_own_head(model, "full") is model and model.classifier is before
    with pytest.raises(UserError, match="model.head=linear"):
        restore_own_head(model, "linear")
    model, config = _roberta()
    install_head(model, "lowrank", 3, config, pooling="mean")
    with pytest.raises(UserError, match="model.pooling=mean"):
        restore_own_head(model, "lowrank", "mean")
    assert isinstance(model.classifier, LowRankHead)  # refused before any change


# ------------------------------------------------------------------ the output bias


def test_init_output_bias_multi_label_log_odds_clipped():
    model, config = _roberta(num_labels=3)
    install_head(model, "linear", 4, config)
    labels = [[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]]  # shares 3/4, 1/4, 0
    said = init_output_bias(model, "multi_label", labels)
    assert said == "head's output bias starts at each label's log-odds in the training rows"
    clipped = math.log(1e-4 / (1 - 1e-4))
    assert model.classifier.out_proj.bias.tolist() == pytest.approx(
        [math.log(3), -math.log(3), clipped], rel=1e-6
    )
    init_output_bias(model, "multi_label", [[1, 1, 0]] * 4)  # a share of 1 is clipped too
    assert model.classifier.out_proj.bias.tolist()[:2] == pytest.approx(
        [-clipped, -clipped], rel=1e-6
    )


def test_init_output_bias_regression_mean_and_classification_untouched():
    model, config = _roberta(num_labels=1)
    install_head(model, "lowrank", 4, config)
    up_bias = model.classifier.up.bias.detach().clone()
    said = init_output_bias(model, "regression", [1.0, 2.0, 4.5])
    assert said == "head's output bias starts at the training values' mean (2.5)"
    assert model.classifier.out_proj.bias.tolist() == [2.5]
    assert torch.equal(model.classifier.up.bias, up_bias)  # the output layer's, not the first
    model, config = _roberta(num_labels=3)
    before = model.classifier.out_proj.bias.detach().clone()
    assert init_output_bias(model, "classification", [0, 1, 2]) is None
    assert torch.equal(model.classifier.out_proj.bias, before)


def test_init_output_bias_finds_bert_own_classifier_outside_peft():
    """BERT's own head is one nn.Linear named `classifier`: its bias is `classifier.bias`."""
    model, _ = _bert(num_labels=2)
    assert init_output_bias(model, "multi_label", [[1, 0], [0, 0]]) is not None
    clipped = math.log(1e-4 / (1 - 1e-4))
    assert model.classifier.bias.tolist() == pytest.approx([0.0, clipped], abs=1e-6)


def test_init_output_bias_only_touches_a_trainable_head_output_of_the_right_size():
    model, config = _roberta(num_labels=2)
    install_head(model, "linear", 4, config)
    model.classifier.out_proj.bias.requires_grad_(False)
    before = model.classifier.out_proj.bias.detach().clone()
    assert init_output_bias(model, "multi_label", [[1, 0], [0, 0]]) is None  # frozen: left alone
    assert torch.equal(model.classifier.out_proj.bias, before)
    model.classifier.out_proj.bias.requires_grad_(True)
    assert init_output_bias(model, "multi_label", [[1, 0, 1]]) is None  # three labels, two outputs
    assert torch.equal(model.classifier.out_proj.bias, before)


# ------------------------------------------------------------------ configs and models of other shapes


def test_head_dropout_falls_back_for_configs_without_the_keys():
    from types import SimpleNamespace

    from lorafit.heads import _dropout

    assert _dropout(SimpleNamespace()) == 0.1  # neither key: the usual 0.1
    assert _dropout(SimpleNamespace(hidden_dropout_prob=0.2)) == 0.2
    assert _dropout(SimpleNamespace(classifier_dropout=None, hidden_dropout_prob=0.3)) == 0.3
    assert _dropout(SimpleNamespace(classifier_dropout=0.05)) == 0.05


def test_pooled_encoder_needs_a_linear_classifier_and_an_encoder_with_a_pooler():
    from lorafit.heads import _pooled_encoder

    class Bare(nn.Module):  # no base_model_prefix at all
        def __init__(self):
            super().__init__()
            self.classifier = nn.Linear(4, 2)

    bare = Bare()
    assert _pooled_encoder(bare, bare.classifier) is None
    bare.base_model_prefix = "encoder"  # names an attribute the model does not have
    assert _pooled_encoder(bare, bare.classifier) is None
    model, _ = _bert()
    assert _pooled_encoder(model, model.classifier) is model.bert
    assert _pooled_encoder(model, nn.Sequential(model.classifier)) is None
    roberta, _ = _roberta()
    assert _pooled_encoder(roberta, roberta.classifier) is None


def test_install_head_on_a_model_without_a_classifier_is_a_user_error():
    _, config = _roberta()
    with pytest.raises(UserError, match=r"^model.head=linear: not available for Module "):
        install_head(nn.Module(), "linear", 4, config)
