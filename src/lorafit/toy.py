"""Small random encoders and locally trained tokenizers, for tests and benchmarks.

Nothing here downloads anything: the tokenizer is trained with `tokenizers` on the texts
you pass, and the model is randomly initialised from a `RobertaConfig` or `MPNetConfig` (the
known shapes live in `lorafit.shapes`). Both are saved with `save_pretrained`, so the real
`from_pretrained(path)` code paths run on them.

    from lorafit.toy import save_toy_roberta, save_toy_mpnet
    save_toy_roberta("tiny-roberta", texts, layers=2, hidden=32)
    save_toy_mpnet("tiny-mpnet", texts, layers=2, hidden=32)   # WordPiece, as all-mpnet-base-v2
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import ByteLevelBPETokenizer
from transformers import AutoModelForSequenceClassification, RobertaTokenizerFast

from lorafit.shapes import (  # noqa: F401  (re-exported for tests and benchmarks)
    AG_NEWS_LABELS,
    MPNET_BASE_SHAPE,
    ROBERTA_BASE_SHAPE,
    mpnet_config,
    roberta_config,
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


MPNET_SPECIAL_TOKENS = [
    "<s>",
    "<pad>",
    "</s>",
    "<unk>",
    "[UNK]",
    "<mask>",
]  # ids 0-5, as in all-mpnet-base-v2


def train_mpnet_tokenizer(texts: list[str], vocab_size: int = 2000):
    """Train a lower-cased WordPiece vocabulary on `texts`; MPNet's tokenizer around it."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import MPNetTokenizer

    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=MPNET_SPECIAL_TOKENS
    )
    wordpiece.train_from_iterator(texts, trainer=trainer)
    return MPNetTokenizer(vocab=wordpiece.get_vocab(), model_max_length=512)


def save_toy_mpnet(
    out_dir: str | Path,
    texts: list[str],
    layers: int = 2,
    hidden: int = 32,
    tokenizer_vocab: int = 2000,
    seed: int = 0,
) -> Path:
    """Save a random MPNet classifier plus a WordPiece tokenizer trained on `texts` to `out_dir`."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_mpnet_tokenizer(texts, vocab_size=tokenizer_vocab)
    tokenizer.save_pretrained(out)
    config = mpnet_config(layers=layers, hidden=hidden, vocab_size=max(len(tokenizer), 8))
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(out)
    return out
