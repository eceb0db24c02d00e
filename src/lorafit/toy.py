"""Small random encoders and locally trained tokenizers, for tests and benchmarks.

Nothing here downloads anything: the tokenizer is trained with `tokenizers` on the texts
you pass, and the model is randomly initialised from a `RobertaConfig`. Both are saved with
`save_pretrained`, so the real `from_pretrained(path)` code paths run on them.

    from lorafit.toy import save_toy_roberta
    save_toy_roberta("tiny-roberta", texts, layers=2, hidden=32)
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoModelForSequenceClassification,
    RobertaConfig,
    RobertaTokenizerFast,
)

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

AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def roberta_config(
    layers: int = 12, hidden: int = 768, heads: int | None = None, num_labels: int = 4, **overrides
) -> RobertaConfig:
    """A `RobertaConfig` with roberta-base's vocabulary and positions; width and depth as asked."""
    shape = dict(ROBERTA_BASE_SHAPE)
    heads = heads or (hidden // 64 if hidden >= 64 else 2)
    shape.update(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
    )
    shape.update(overrides)
    return RobertaConfig(
        **shape,
        num_labels=num_labels,
        id2label=dict(enumerate(AG_NEWS_LABELS[:num_labels])),
        label2id={n: i for i, n in enumerate(AG_NEWS_LABELS[:num_labels])},
    )


def train_roberta_tokenizer(texts: list[str], vocab_size: int = 2000) -> RobertaTokenizerFast:
    """Train a byte-level BPE tokenizer with RoBERTa's special tokens on `texts`."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    from tokenizers.processors import RobertaProcessing

    bpe._tokenizer.post_processor = RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>"))
    )
    return RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=512)


def save_toy_roberta(
    out_dir: str | Path,
    texts: list[str],
    layers: int = 2,
    hidden: int = 32,
    vocab_size: int | None = None,
    tokenizer_vocab: int = 2000,
    seed: int = 0,
) -> Path:
    """Save a random RoBERTa classifier plus a tokenizer trained on `texts` to `out_dir`.

    `vocab_size` defaults to the tokenizer's size; pass 50265 for roberta-base's shape.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_roberta_tokenizer(texts, vocab_size=tokenizer_vocab)
    tokenizer.save_pretrained(out)
    config = roberta_config(
        layers=layers, hidden=hidden, vocab_size=vocab_size or max(len(tokenizer), 8)
    )
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(out)
    return out
