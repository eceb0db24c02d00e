"""Known model shapes: the exact configs of the encoders lorafit counts without the hub.

    from lorafit.shapes import known_config, roberta_config, mpnet_config
    known_config("roberta-base")              # RobertaConfig with roberta-base's shape
    mpnet_config(layers=2, hidden=32)         # a tiny MPNet of the same family

`model.name=roberta-base` (or an MPNet hub id below) describes, plans and counts offline:
these numbers are all the counting needs. Weights still need the hub or a local folder.
"""

from __future__ import annotations

#: roberta-base's exact shape (the numbers the competition's parameter counts use).
ROBERTA_BASE_SHAPE = dict(
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

#: all-mpnet-base-v2's (and microsoft/mpnet-base's) exact shape, from its config.json.
MPNET_BASE_SHAPE = dict(
    vocab_size=30527,
    max_position_embeddings=514,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    relative_attention_num_buckets=32,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)

AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]

ROBERTA_NAMES = ("roberta-base", "FacebookAI/roberta-base")
MPNET_NAMES = ("microsoft/mpnet-base", "sentence-transformers/all-mpnet-base-v2")


def _labelled(num_labels: int) -> dict:
    names = (
        AG_NEWS_LABELS[:num_labels]
        if num_labels <= 4
        else [f"LABEL_{i}" for i in range(num_labels)]
    )
    return dict(
        num_labels=num_labels,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )


def _sized(base: dict, layers: int, hidden: int, heads: int | None, overrides: dict) -> dict:
    shape = dict(base)
    heads = heads or (hidden // 64 if hidden >= 64 else 2)
    shape.update(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
    )
    shape.update(overrides)
    return shape


def roberta_config(
    layers: int = 12, hidden: int = 768, heads: int | None = None, num_labels: int = 4, **overrides
):
    """A `RobertaConfig` with roberta-base's vocabulary and positions; width and depth as asked."""
    from transformers import RobertaConfig

    shape = _sized(ROBERTA_BASE_SHAPE, layers, hidden, heads, overrides)
    return RobertaConfig(**shape, **_labelled(num_labels))


def mpnet_config(
    layers: int = 12, hidden: int = 768, heads: int | None = None, num_labels: int = 4, **overrides
):
    """An `MPNetConfig` with all-mpnet-base-v2's vocabulary and positions; width and depth as asked."""
    from transformers import MPNetConfig

    shape = _sized(MPNET_BASE_SHAPE, layers, hidden, heads, overrides)
    return MPNetConfig(**shape, **_labelled(num_labels))


def known_config(name: str, labels: dict | None = None):
    """The config of a known model name (None if unknown), with `labels` (num_labels, id2label,
    label2id and, for a regression or multi-label task, problem_type) applied, as
    `AutoConfig.from_pretrained(name, **labels)` applies them."""
    labels = labels or _labelled(4)
    if name in ROBERTA_NAMES:
        config = roberta_config(num_labels=labels["num_labels"])
    elif name in MPNET_NAMES:
        config = mpnet_config(num_labels=labels["num_labels"])
    else:
        return None
    config.id2label, config.label2id = labels["id2label"], labels["label2id"]
    if "problem_type" in labels:  # what an export's config.json tells pipelines and teachers
        config.problem_type = labels["problem_type"]
    return config
