"""Classification heads that cost less of the trainable-parameter budget.

    model.head=linear                     # one projection of the first token: H*C + C
    model.head=lowrank model.head_rank=16 # dense layer factored through rank k, tanh, projection
    model.head=dense_lora                 # frozen random dense layer + a trained rank-k update

RoBERTa's own head (`full`) is a fresh 768x768 dense layer, tanh and a 768x4 projection:
593,668 parameters, 59% of a 1,000,000 budget, spent on a layer that starts from random.
These heads free most of that for adapters in the encoder.

Two head layouts are handled:
- RoBERTa-style (`classifier` has `dense` and `out_proj` and receives the whole sequence):
  the classifier is replaced; the new head reads the first token itself.
- BERT-style (`classifier` is one `nn.Linear` fed by the encoder's `pooler`, a dense + tanh
  on the first token): the pooler becomes `FirstToken` (no parameters) and the classifier
  the new head, so the head sees the first token's hidden state as in RoBERTa.

Every head keeps its trained modules under `classifier`, so PEFT saves it as the head
(`modules_to_save`) and `params.count_parameters` counts it as head.
"""

from __future__ import annotations

import torch
from torch import nn

from lorafit.errors import UserError

#: the top-level modules that make up a model's classification head
HEAD_MODULES = ("classifier", "score")


def is_head_parameter(name: str) -> bool:
    """True for parameters of the classification head, in a plain or PEFT-wrapped model."""
    return "modules_to_save" in name or any(
        name.startswith(m + ".") or f".{m}." in name for m in HEAD_MODULES
    )


def _first_token(features: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, hidden) -> the first token; (batch, hidden) passes through."""
    return features[:, 0] if features.dim() == 3 else features


class FirstToken(nn.Module):
    """Stands in for a BERT pooler: the first token's hidden state, untouched."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states[:, 0]


class LinearHead(nn.Module):
    """Dropout, then one projection from the first token's hidden state to the classes."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor, **_) -> torch.Tensor:
        return self.out_proj(self.dropout(_first_token(features)))


class LowRankHead(nn.Module):
    """RoBERTa's head with its dense layer factored as up(down(x)) through rank k.

    Same shape of computation (dense, tanh, dropout, projection) at 2*H*k + H instead of
    H*H + H parameters for the dense part.
    """

    def __init__(self, hidden: int, num_labels: int, dropout: float, rank: int):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Linear(hidden, rank, bias=False)
        self.up = nn.Linear(rank, hidden)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor, **_) -> torch.Tensor:
        x = self.dropout(_first_token(features))
        x = self.dropout(torch.tanh(self.up(self.down(x))))
        return self.out_proj(x)


class DenseLoraHead(nn.Module):
    """RoBERTa's head with its dense layer frozen at a random start and a rank-k update trained.

    The frozen weight is a persistent buffer, not a parameter: PEFT makes every parameter
    of a saved head trainable, but it saves and restores buffers with the head, so the same
    random matrix comes back at prediction time. The update starts at zero (as LoRA's B).
    """

    def __init__(self, hidden: int, num_labels: int, dropout: float, rank: int, std: float = 0.02):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("fixed_weight", torch.randn(hidden, hidden) * std)
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.down = nn.Linear(hidden, rank, bias=False)
        self.up = nn.Linear(rank, hidden, bias=False)
        nn.init.zeros_(self.up.weight)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor, **_) -> torch.Tensor:
        x = self.dropout(_first_token(features))
        dense = x @ self.fixed_weight.T + self.bias + self.up(self.down(x))
        return self.out_proj(self.dropout(torch.tanh(dense)))


def head_module(kind: str, hidden: int, num_labels: int, dropout: float, rank: int) -> nn.Module:
    """A new head of `kind` (not `full`), on the current default device."""
    if kind == "linear":
        return LinearHead(hidden, num_labels, dropout)
    if kind == "lowrank":
        return LowRankHead(hidden, num_labels, dropout, rank)
    if kind == "dense_lora":
        return DenseLoraHead(hidden, num_labels, dropout, rank)
    raise ValueError(f"model.head: unknown head {kind!r}")


def head_parameters(kind: str, hidden: int, num_labels: int, rank: int) -> int:
    """Trainable parameters of a head of `kind` (not `full`), without building it."""
    out = hidden * num_labels + num_labels
    if kind == "linear":
        return out
    if kind in ("lowrank", "dense_lora"):
        return out + 2 * hidden * rank + hidden
    raise ValueError(f"model.head: unknown head {kind!r}")


def _dropout(model_config) -> float:
    p = getattr(model_config, "classifier_dropout", None)
    return p if p is not None else getattr(model_config, "hidden_dropout_prob", 0.1)


def install_head(model: nn.Module, kind: str, rank: int, model_config) -> None:
    """Replace `model`'s classification head by a head of `kind` (in place; `full` keeps it)."""
    if kind == "full":
        return
    classifier = getattr(model, "classifier", None)
    pooled = _pooled_encoder(model, classifier)
    if classifier is None or not (hasattr(classifier, "out_proj") or pooled is not None):
        raise UserError(
            f"model.head={kind}: not available for {type(model).__name__} (BERT- and RoBERTa-style "
            "classifiers only); use model.head=full"
        )
    device = next(classifier.parameters()).device
    with torch.device(device):
        model.classifier = head_module(
            kind, model_config.hidden_size, model_config.num_labels, _dropout(model_config), rank
        )
    if pooled is not None:
        pooled.pooler = FirstToken()


def _pooled_encoder(model: nn.Module, classifier) -> nn.Module | None:
    """The encoder whose pooler feeds a BERT-style linear classifier, else None."""
    if not isinstance(classifier, nn.Linear):
        return None
    encoder = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return encoder if getattr(encoder, "pooler", None) is not None else None
