"""Classification heads that cost less of the trainable-parameter budget.

    model.head=linear                     # one projection of the first token: H*C + C
    model.head=lowrank model.head_rank=16 # dense layer factored through rank k, tanh, projection
    model.head=dense_lora                 # frozen random dense layer + a trained rank-k update
    model.pooling=mean                    # any of them reads the mean of the real tokens

RoBERTa's own head (`full`) is a fresh 768x768 dense layer, tanh and a 768x4 projection:
593,668 parameters, 59% of a 1,000,000 budget, spent on a layer that starts from random.
These heads free most of that for adapters in the encoder.

Two head layouts are handled:
- RoBERTa-style (`classifier` has `dense` and `out_proj` and receives the whole sequence;
  MPNet's head too): the classifier is replaced; the new head pools the sequence itself (`Pool`).
- BERT-style (`classifier` is one `nn.Linear` fed by the encoder's `pooler`, a dense + tanh
  on the first token): the pooler becomes `Pool` (no parameters) and the classifier
  the new head, so the head sees the first token's hidden state as in RoBERTa.

`model.pooling=mean` makes these heads read the mean of the last hidden states over the real
(unpadded) tokens instead of the first token: what sentence-embedding models such as
all-MiniLM-L6-v2 were trained to put their meaning in. transformers does not hand the
attention mask to the head, so a forward pre-hook on the encoder leaves it on every `Pool`.

Every head keeps its trained modules under `classifier`, so PEFT saves it as the head
(`modules_to_save`) and `params.count_parameters` counts it as head.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from lorafit.config import POOLINGS
from lorafit.errors import UserError

#: the top-level modules that make up a model's classification head
HEAD_MODULES = ("classifier", "score")


def is_head_parameter(name: str) -> bool:
    """True for parameters of the classification head, in a plain or PEFT-wrapped model."""
    return "modules_to_save" in name or any(
        name.startswith(m + ".") or f".{m}." in name for m in HEAD_MODULES
    )


class Pool(nn.Module):
    """The sequence's summary for a head: the first token, or the mean over real tokens.

    (batch, tokens, hidden) -> (batch, hidden); an already pooled (batch, hidden) input
    passes through. For `mean`, `self.mask` is the attention mask of the current forward pass,
    set by the hook `install_head` puts on the encoder (None: every token counts).
    """

    def __init__(self, kind: str = "first"):
        super().__init__()
        if kind not in POOLINGS:
            raise ValueError(f"model.pooling: unknown pooling {kind!r}")
        self.kind = kind
        self.mask: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() == 2:
            return features
        if self.kind == "first":
            return features[:, 0]
        if self.mask is None:
            return features.mean(1)
        if self.mask.shape != features.shape[:2]:
            raise RuntimeError(
                f"Pool: attention mask {tuple(self.mask.shape)} does not match the hidden states "
                f"{tuple(features.shape[:2])}"
            )
        weights = self.mask.unsqueeze(-1).to(features.dtype)
        return (features * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def extra_repr(self) -> str:
        return self.kind


class LinearHead(nn.Module):
    """Dropout, then one projection from the pooled hidden state to the classes."""

    def __init__(self, hidden: int, num_labels: int, dropout: float, pooling: str = "first"):
        super().__init__()
        self.pool = Pool(pooling)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor, **_) -> torch.Tensor:
        return self.out_proj(self.dropout(self.pool(features)))


class LowRankHead(nn.Module):
    """RoBERTa's head with its dense layer factored as up(down(x)) through rank k.

    Same shape of computation (dense, tanh, dropout, projection) at 2*H*k + H instead of
    H*H + H parameters for the dense part.
    """

    def __init__(
        self, hidden: int, num_labels: int, dropout: float, rank: int, pooling: str = "first"
    ):
        super().__init__()
        self.pool = Pool(pooling)
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Linear(hidden, rank, bias=False)
        self.up = nn.Linear(rank, hidden)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor, **_) -> torch.Tensor:
        x = self.dropout(self.pool(features))
        x = self.dropout(torch.tanh(self.up(self.down(x))))
        return self.out_proj(x)


class DenseLoraHead(nn.Module):
    """RoBERTa's head with its dense layer frozen at a random start and a rank-k update trained.

    The frozen weight is a persistent buffer, not a parameter: PEFT makes every parameter
    of a saved head trainable, but it saves and restores buffers with the head, so the same
    random matrix comes back at prediction time. The update starts at zero (as LoRA's B).
    """

    def __init__(
        self,
        hidden: int,
        num_labels: int,
        dropout: float,
        rank: int,
        pooling: str = "first",
        std: float = 0.02,
    ):
        super().__init__()
        self.pool = Pool(pooling)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("fixed_weight", torch.randn(hidden, hidden) * std)
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.down = nn.Linear(hidden, rank, bias=False)
        self.up = nn.Linear(rank, hidden, bias=False)
        nn.init.zeros_(self.up.weight)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor, **_) -> torch.Tensor:
        x = self.dropout(self.pool(features))
        dense = x @ self.fixed_weight.T + self.bias + self.up(self.down(x))
        return self.out_proj(self.dropout(torch.tanh(dense)))


def head_module(
    kind: str, hidden: int, num_labels: int, dropout: float, rank: int, pooling: str = "first"
) -> nn.Module:
    """A new head of `kind` (not `full`), on the current default device."""
    if kind == "linear":
        return LinearHead(hidden, num_labels, dropout, pooling)
    if kind == "lowrank":
        return LowRankHead(hidden, num_labels, dropout, rank, pooling)
    if kind == "dense_lora":
        return DenseLoraHead(hidden, num_labels, dropout, rank, pooling)
    raise ValueError(f"model.head: unknown head {kind!r}")


def _dropout(model_config) -> float:
    p = getattr(model_config, "classifier_dropout", None)
    return p if p is not None else getattr(model_config, "hidden_dropout_prob", 0.1)


def install_head(
    model: nn.Module, kind: str, rank: int, model_config, pooling: str = "first"
) -> None:
    """Replace `model`'s classification head by a head of `kind` (in place; `full` keeps it).

    With `pooling="mean"` the head reads the masked mean of the last hidden states.
    """
    if kind == "full":  # (config refuses model.pooling=mean with it)
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
            kind,
            model_config.hidden_size,
            model_config.num_labels,
            _dropout(model_config),
            rank,
            pooling,
        )
    if pooled is not None:
        pooled.pooler = Pool(pooling)  # the encoder's pooler_output is the head's summary
    if pooling == "mean":
        encoder = getattr(model, cast(str, model.base_model_prefix))
        encoder.register_forward_pre_hook(_mask_to_pools(model), with_kwargs=True)


def _mask_to_pools(model: nn.Module):
    """A pre-hook for the encoder that hands each forward pass's attention mask to every Pool.

    The pools (the encoder's pooler for BERT, the head's own for RoBERTa) are looked up at
    call time: PEFT copies the head (`modules_to_save`) after it is installed, and the copy
    is the one that runs.
    """

    def hook(encoder, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        for m in (getattr(encoder, "pooler", None), *cast(nn.Module, model.classifier).modules()):
            if isinstance(m, Pool):
                m.mask = mask

    return hook


def check_exportable(kind: str, pooling: str = "first") -> None:
    """A UserError for a head that the model's own head layout cannot hold."""
    if kind == "linear":
        raise UserError(
            "model.head=linear: the model's own head has a dense layer and tanh that a linear "
            "head cannot be written as, so transformers could not load it; use `lorafit "
            "predict` on the run, or train with model.head=lowrank, dense_lora or full to export"
        )
    if pooling != "first":
        raise UserError(
            f"model.pooling={pooling}: the model's own head reads the first token, so transformers "
            "could not load this head; use `lorafit predict` on the run"
        )


def restore_own_head(model: nn.Module, kind: str, pooling: str = "first") -> nn.Module:
    """Fold a `lowrank` or `dense_lora` head back into the model's own head layout, in place.

    Both heads compute dense, tanh, projection with a dense weight that is a sum of products
    (`up @ down`, plus the frozen matrix for `dense_lora`), so the model's own head (RoBERTa's
    `classifier.dense` + `out_proj`, or BERT's `pooler.dense` + `classifier`) holds them
    exactly, and `AutoModelForSequenceClassification.from_pretrained` loads the result
    without lorafit. `linear` has no dense layer + tanh to fold into, and the own head reads
    the first token, not a mean: both a UserError. `full` returns the model unchanged.
    """
    from transformers import AutoModelForSequenceClassification

    check_exportable(kind, pooling)
    if kind == "full":
        return model
    # the heads' own attributes (up, down, ...): nn.Module's __getattr__ types them Tensor | Module
    head: Any = model.classifier
    weight = head.up.weight @ head.down.weight
    if kind == "dense_lora":
        weight, bias = weight + head.fixed_weight, head.bias
    else:
        bias = head.up.bias
    with torch.device("meta"):
        own: Any = AutoModelForSequenceClassification.from_config(model.config)
    encoder: Any = _pooled_encoder(own, own.classifier)
    if encoder is not None:  # BERT-style: the dense layer + tanh is the encoder's pooler
        dense, out = encoder.pooler.to_empty(device="cpu"), own.classifier.to_empty(device="cpu")
        getattr(model, cast(str, model.base_model_prefix)).pooler = dense
        dense = dense.dense
    else:
        out = own.classifier.to_empty(device="cpu")
        dense, out = out.dense, out.out_proj
    with torch.no_grad():
        dense.weight.copy_(weight)
        dense.bias.copy_(bias)
        out.weight.copy_(head.out_proj.weight)
        out.bias.copy_(head.out_proj.bias)
    model.classifier = own.classifier
    return model.to(weight.device).eval()


def _pooled_encoder(model: nn.Module, classifier) -> nn.Module | None:
    """The encoder whose pooler feeds a BERT-style linear classifier, else None."""
    if not isinstance(classifier, nn.Linear):
        return None
    encoder = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return encoder if getattr(encoder, "pooler", None) is not None else None


def init_output_bias(model: nn.Module, task: str, labels) -> str | None:
    """Start the head's output bias at what the training labels say, before training: a
    multi-label run's at each label's log-odds (its share of the rows), a regression's at the
    mean value; a classification's stays as built. Returns what was done (for the log).

    Without it the first steps of a multi-label run spend their large, uniform gradient (every
    output starts at probability 0.5 where most labels are rare) pulling the encoder towards
    one output for every text: measured on GoEmotions with MiniLM, LoRA r=23 on every module
    at lr 1e-3, the outputs' spread over texts fell from 0.12 to 0.0003 in 20 steps and never
    came back; from the log-odds it grew to 1.0 in 80 steps.
    """
    import numpy as np

    if task not in ("multi_label", "regression"):
        return None
    labels = np.asarray(labels, dtype=np.float64)
    if task == "multi_label":
        share = np.clip(labels.mean(axis=0), 1e-4, 1 - 1e-4)
        start, what = np.log(share / (1 - share)), "each label's log-odds in the training rows"
    else:
        start, what = np.array([labels.mean()]), f"the training values' mean ({labels.mean():.4g})"
    outputs = [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
        and m.bias is not None
        and m.bias.requires_grad
        and is_head_parameter(name + ".bias")
        and m.out_features == len(start)
    ]
    if not outputs:
        return None
    with torch.no_grad():
        outputs[-1].bias.copy_(torch.as_tensor(start, dtype=outputs[-1].bias.dtype))
    return f"head's output bias starts at {what}"
