"""Tokens and batches: encode texts once (no padding), pad a batch, order the batches of an epoch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lorafit.errors import UserError

if TYPE_CHECKING:
    from lorafit.data.tables import TextTable


@dataclass
class Encoded:
    """Token ids per row (no padding), labels, how many rows were truncated and, for sentence
    pairs on a model with segment embeddings (BERT), the token type ids (else None: all 0)."""

    ids: list[list[int]]
    labels: np.ndarray | None
    truncated: int
    types: list[list[int]] | None = None

    def type_rows(self, rows) -> list[list[int]] | None:
        """The token type ids of `rows`, or None when every one is 0."""
        return None if self.types is None else [self.types[i] for i in rows]

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))


def encode(tokenizer, table: TextTable, max_length: int) -> Encoded:
    """Tokenise once, truncating to `max_length` tokens with the special tokens kept.

    Sentence pairs (`table.pairs`) are encoded as the tokenizer encodes a text pair (its
    separator tokens and, for BERT, segment ids), truncating the longer text of the pair first
    (`longest_first`), so both keep their tokens as far as they fit.
    """
    if table.pairs is not None:
        return _encode_pairs(tokenizer, table, max_length)
    prefix, suffix = special_tokens(tokenizer)
    room = max_length - len(prefix) - len(suffix)
    raw = tokenizer(table.texts, add_special_tokens=False, truncation=False, verbose=False)[
        "input_ids"
    ]
    truncated = sum(len(x) > room for x in raw)
    ids = [prefix + x[:room] + suffix for x in raw]
    return Encoded(ids, table.labels, truncated)


def _encode_pairs(tokenizer, table: TextTable, max_length: int) -> Encoded:
    whole = tokenizer(table.texts, table.pairs, truncation=False, verbose=False)["input_ids"]
    truncated = sum(len(x) > max_length for x in whole)
    enc = tokenizer(
        table.texts, table.pairs, truncation="longest_first", max_length=max_length, verbose=False
    )
    types = enc.get("token_type_ids")
    if types is not None and not any(any(row) for row in types):
        types = None  # RoBERTa, MPNet: one segment id, the model's default
    return Encoded(
        [list(x) for x in enc["input_ids"]],
        table.labels,
        truncated,
        None if types is None else [list(t) for t in types],
    )


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single text (e.g. <s> ... </s>)."""
    bare = tokenizer("news", add_special_tokens=False)["input_ids"]
    full = tokenizer("news")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise UserError(f"cannot tell where {type(tokenizer).__name__} puts its special tokens")


PAD_MULTIPLE = 8
"""Batches are padded to a multiple of this many tokens. On a CPU, widths that change by one
token every batch leave the C allocator's heap fragmented and the process's resident memory
growing for the whole run (MiniLM, every layer adapted, batch 32: 1.7 GB -> 3.2 GB in 225
steps); eight-token steps give it a few sizes it reuses (flat at 1.4 GB), for about 3.5 padded
tokens a row. The widths also suit bf16 and fp16 matrix kernels (tensor cores, AMX)."""


def padded_width(longest: int, multiple: int = PAD_MULTIPLE) -> int:
    """The width a batch whose longest row has `longest` tokens is padded to."""
    return -(-max(longest, 1) // multiple) * multiple


def pad_batch(rows: list[list[int]], pad_id: int, multiple: int = PAD_MULTIPLE):
    """Right-pad token id lists to `padded_width` of the longest row: (input_ids,
    attention_mask) tensors."""
    import torch

    width = padded_width(max(len(r) for r in rows), multiple)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def batch_inputs(encoded: Encoded, rows, pad_id: int, device, multiple: int = PAD_MULTIPLE) -> dict:
    """The model's keyword inputs for `rows` of `encoded`: input_ids, attention_mask and, for
    pairs on a model with segment embeddings, token_type_ids; padded to a `multiple`."""
    ids, mask = pad_batch([encoded.ids[i] for i in rows], pad_id, multiple)
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    types = encoded.type_rows(rows)
    if types is not None:
        inputs["token_type_ids"] = pad_batch(types, 0, multiple)[0].to(device)
    return inputs


def epoch_batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[np.ndarray]:
    """The batches of one epoch, the same for the same (seed, epoch) on every process.

    With `group_by_length`, a shuffled order is cut into mega-batches of 50 batches, each
    sorted by length, so a batch holds texts of similar length and needs little padding; the
    batch order is then shuffled again so lengths do not drift through the epoch.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if group_by_length:
        mega = batch_size * 50
        order = np.concatenate(
            [
                c[np.argsort(-lengths[c], kind="stable")]
                for c in np.split(order, range(mega, len(order), mega))
            ]
        )
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches for inference: rows sorted by length, longest first (least padding)."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
