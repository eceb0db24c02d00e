"""Data: read labelled or unlabelled texts from local files or the hub, map labels, split, tokenise, batch.

    splits = load_splits(cfg.data, seed=42)   # {"train", "validation"(, "test")}: TextTables
    encoded = encode(tokenizer, splits["train"], max_length=128)

One room per stage: `readers` (a file as it comes -> a frame of strings), `columns` (which
column is the text, which the label), `labels` (the class list and label -> id), `tables`
(checked rows, splits) and `tokens` (token ids, batches).
"""

from lorafit.data.labels import class_names, label_ids
from lorafit.data.readers import SAMPLES, TABULAR, read_frame, resolve_source
from lorafit.data.tables import (
    TextTable,
    file_digest,
    load_splits,
    load_table,
    settle,
    settle_classes,
    split_table,
    stratified_subset,
    to_table,
)
from lorafit.data.tokens import (
    Encoded,
    encode,
    epoch_batches,
    length_sorted_batches,
    pad_batch,
    padded_width,
    special_tokens,
)

__all__ = [
    "SAMPLES",
    "TABULAR",
    "Encoded",
    "TextTable",
    "class_names",
    "encode",
    "epoch_batches",
    "file_digest",
    "label_ids",
    "length_sorted_batches",
    "load_splits",
    "load_table",
    "pad_batch",
    "padded_width",
    "read_frame",
    "resolve_source",
    "settle",
    "settle_classes",
    "special_tokens",
    "split_table",
    "stratified_subset",
    "to_table",
]
