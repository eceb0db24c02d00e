"""Optimizer parameter groups for LoRA+ and layer-wise learning-rate decay.

    groups = param_groups(model, cfg)   # what `train.build_optimizer` hands to AdamW / Lion

- LoRA+ (Hayou et al., 2024): the B matrices of LoRA learn at `train.lora_plus_ratio` times
  the learning rate of the A matrices (the paper suggests ratios around 16).
- Layer-wise decay (as in ELECTRA / BEiT fine-tuning): with L layers, layer i learns at
  lr x decay^(L-1-i) and the embeddings at lr x decay^L, so the top layers move most; the
  head and anything outside the layers (pooler, final norms) learn at lr.

Each group carries `lr` = scale x `train.lr`; the scheduler multiplies every group's own
initial lr, so the scales hold through warmup and decay. Biases and norms (1-D tensors)
get no weight decay, as before.
"""

from __future__ import annotations

from torch import nn

from lorafit.config import Config
from lorafit.heads import is_head_parameter
from lorafit.model import layer_index, num_layers


def lr_scale(
    name: str, depth: int, lora_plus_ratio: float = 1.0, layer_decay: float = 1.0
) -> float:
    """The learning-rate multiplier of parameter `name` in a model with `depth` layers."""
    scale = lora_plus_ratio if ".lora_B." in name else 1.0
    if layer_decay == 1.0 or is_head_parameter(name):
        return scale
    layer = layer_index(name)
    if layer is not None:
        return scale * layer_decay ** (depth - 1 - layer)
    if ".embeddings." in name or name.startswith("embeddings."):
        return scale * layer_decay**depth
    return scale


def param_groups(model: nn.Module, cfg: Config) -> list[dict]:
    """Trainable parameters grouped by (lr scale, weight decay); the lr-scale-1 groups first.

    The first group's lr is what the training log reports as `lr`.
    """
    depth = num_layers(model.config)
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = lr_scale(name, depth, cfg.train.lora_plus_ratio, cfg.train.layer_decay)
        decay = 0.0 if p.ndim < 2 else cfg.train.weight_decay
        groups.setdefault((scale, decay), []).append(p)
    order = sorted(groups, key=lambda k: (k[0] != 1.0, -k[0], k[1] == 0.0))
    return [
        {"params": groups[k], "lr": cfg.train.lr * k[0], "weight_decay": k[1], "lr_scale": k[0]}
        for k in order
    ]
