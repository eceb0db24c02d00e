"""Independent oracle for parameter counts (issue 30): lorafit's counts against PEFT's own
`get_nb_trainable_parameters()`, `requires_grad` sums and hand arithmetic.

Each reference model is built here from a `RobertaConfig` (roberta-base's exact shape: vocab
50265, 514 positions, one token type; on the meta device, so nothing is allocated or
downloaded) and wrapped with a `peft.LoraConfig` written here, ranks per layer included. The
counts lorafit reports (`describe`, the budget check's numbers, `lorafit plan`'s estimate)
must equal PEFT's.
"""

from __future__ import annotations

import pytest
import torch

from lorafit.config import load_config
from lorafit.params import describe
from lorafit.plan import enumerate_candidates

from .conftest import AG_LABELS

# written out here, not imported from lorafit.shapes: a wrong number there must show as a
# count that disagrees with PEFT's on this shape
ROBERTA_BASE = dict(
    vocab_size=50265,
    max_position_embeddings=514,
    type_vocab_size=1,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)
LABELS = 4


def roberta_base_total(hidden=768, layers=12, ffn=3072, vocab=50265, positions=514, types=1) -> int:
    """RobertaForSequenceClassification's parameters, by hand (no pooler; dense + out_proj head)."""
    embeddings = (vocab + positions + types) * hidden + 2 * hidden
    attention = 4 * (hidden * hidden + hidden) + 2 * hidden
    feed_forward = hidden * ffn + ffn + ffn * hidden + hidden + 2 * hidden
    head = hidden * hidden + hidden + hidden * LABELS + LABELS
    return embeddings + layers * (attention + feed_forward) + head


def head_params(hidden=768) -> int:
    return hidden * hidden + hidden + hidden * LABELS + LABELS


def peft_reference(ranks: dict[int, int], targets=("query", "value"), shape=ROBERTA_BASE):
    """PEFT's model for LoRA of rank `ranks[layer]` on `targets` of those layers only."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(**shape, num_labels=LABELS)
    default = max(set(ranks.values()), key=list(ranks.values()).count)
    pattern = {
        rf"encoder\.layer\.{layer}\.attention\.self\.{t}": r
        for layer, r in ranks.items()
        for t in targets
        if r != default
    }
    all_layers = sorted(ranks) == list(range(shape["num_hidden_layers"]))
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=default,
        lora_alpha=2 * default,
        target_modules=list(targets),
        layers_to_transform=None if all_layers else sorted(ranks),
        layers_pattern=None if all_layers else "layer",
        rank_pattern=pattern,
    )
    with torch.device("meta"):
        return get_peft_model(RobertaForSequenceClassification(config), lora)


def peft_counts(model) -> tuple[int, int]:
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


CASES = {
    # name: (lorafit overrides, rank per adapted layer)
    "all-layers-r8": (["lora.r=8"], dict.fromkeys(range(12), 8)),
    "latent-9-11-r16": (["lora.layers=9-11", "lora.r=16"], dict.fromkeys(range(9, 12), 16)),
    "latent-list-r4": (["lora.layers=[0,5,11]", "lora.r=4"], {0: 4, 5: 4, 11: 4}),
    "sections": (
        [
            "lora.layers=6-11",
            "lora.r=8",
            "lora.sections=[{layers: 6-8, r: 2, alpha: 4, dropout: 0.0}, {layers: 10-11, r: 16, alpha: 32}]",
        ],
        {6: 2, 7: 2, 8: 2, 9: 8, 10: 16, 11: 16},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_roberta_base_counts_equal_peft_and_hand_arithmetic(case):
    overrides, ranks = CASES[case]
    reference = peft_reference(ranks)
    trainable, total = peft_counts(reference)
    # by hand: query and value are 768 x 768, LoRA adds r x (768 + 768) to each; PEFT keeps
    # a trainable copy of the head beside the frozen original
    lora = sum(2 * r * (768 + 768) for r in ranks.values())
    assert trainable == lora + head_params()
    assert total == roberta_base_total() + lora + head_params()
    assert roberta_base_total() == 124_648_708  # roberta-base with a 4-class head

    d = describe(None, ["model.name=roberta-base", AG_LABELS, *overrides])
    assert d["params"]["trainable"] == trainable
    assert d["params"]["total"] == total
    assert d["params"]["frozen"] == total - trainable
    assert d["breakdown"]["lora"] == lora and d["breakdown"]["head"] == head_params()
    per_layer = {int(k): sum(v.values()) for k, v in d["lora_per_layer"].items()}
    assert per_layer == {layer: 2 * r * 1536 for layer, r in ranks.items()}
    assert d["fits_budget"] == (trainable <= d["budget"])


def test_the_budget_count_of_a_run_config_equals_peft_on_the_real_tiny_model(tiny_model):
    """The tiny model with its real weights: lorafit's count, as `lorafit train` checks it."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    hidden = base.config.hidden_size
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=3,
        lora_alpha=6,
        target_modules=["query", "value"],
        layers_to_transform=[1],
        layers_pattern="layer",
    )
    trainable, total = peft_counts(get_peft_model(base, lora))
    assert trainable == 2 * 3 * 2 * hidden + head_params(hidden)
    d = describe(None, [f"model.name={tiny_model}", AG_LABELS, "lora.r=3", "lora.layers=[1]"])
    assert (d["params"]["trainable"], d["params"]["total"]) == (trainable, total)


def test_plans_estimate_of_latent_lora_equals_peft():
    """`lorafit plan` counts candidates from module shapes before the exact recount: those
    estimates must already be PEFT's numbers (a candidate's rank x (in + out) per module)."""
    cfg = load_config(None, ["model.name=roberta-base", AG_LABELS])
    candidates = enumerate_candidates(cfg, 10**9, [("full", None)], [4, 8])
    found = {(c.layers, c.targets_name, c.r, c.bias): c for c in candidates}
    for layers, span in (("all", range(12)), ("6-11", range(6, 12)), ("9-11", range(9, 12))):
        for r in (4, 8):
            c = found[(layers, "qv", r, "none")]
            trainable, _ = peft_counts(peft_reference(dict.fromkeys(span, r)))
            assert c.trainable == trainable, (layers, r)
            assert c.coverage == 2 * len(span)
