"""Plan: which LoRA configurations fit a trainable-parameter budget, and which spend it best.

    lorafit plan --budget 1000000 --config configs/agnews_best.yaml --top 15
    lorafit plan model.name=roberta-base --heads full,linear,lowrank:16 --json

Candidates vary the adapted layers (all, top half, top quarter, the config's own), the target
modules (named presets such as query+value or every linear layer), the rank, the head
(`model.head`) and the biases (`lora.bias` none / all); everything else comes from the config
(model, labels, DoRA...); a config with another `lora.mode` (full, bias_only) is planned as
LoRA, and its rows say `lora.mode=lora`. Every candidate is first counted from the model's real module
shapes (fast: one weightless model per head kind), then every row that is shown is counted
again by `params.describe_model`, the counting code that training's budget check uses, and
that exact count is what is printed.

"Spends the budget best" (marked `*`): the parameters put into the encoder (LoRA + biases,
i.e. everything but the head) are within `tolerance` (2%) of the most any fitting candidate
puts there. A fresh head starts from random; adapters change a pretrained encoder, which is
where the proxy experiments found the accuracy (see the README). The default order puts
marked rows first, then more adapted modules (coverage), then more encoder parameters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from lorafit.config import Config, as_config, parse_layers
from lorafit.errors import UserError

#: target-module presets per layer layout: BERT-style encoders (BERT, RoBERTa, MiniLM, ...)
#: and MPNet. A preset is offered when each of its names matches a linear layer in every
#: layer; for each preset name the first layout that matches is used. In PEFT a name matches
#: a module whose name ends with it, so BERT's `output.dense` covers both the attention output
#: and the feed-forward output (MPNet's attention output is `attn.o`).
TARGET_PRESET_LAYOUTS = {
    "bert": {
        "qv": ["query", "value"],
        "qkv": ["query", "key", "value"],
        "qkvo": ["query", "key", "value", "attention.output.dense"],
        "all-linear": ["query", "key", "value", "output.dense", "intermediate.dense"],
    },
    "mpnet": {
        "qv": ["attn.q", "attn.v"],
        "qkv": ["attn.q", "attn.k", "attn.v"],
        "qkvo": ["attn.q", "attn.k", "attn.v", "attn.o"],
        "all-linear": [
            "attn.q",
            "attn.k",
            "attn.v",
            "attn.o",
            "intermediate.dense",
            "output.dense",
        ],
    },
}
TARGET_PRESETS = TARGET_PRESET_LAYOUTS["bert"]
DEFAULT_HEADS = "full,linear,lowrank:16"
SORT_KEYS = ("spend", "trainable", "encoder", "coverage", "rank", "head")


@dataclass
class Candidate:
    """One configuration and its trainable-parameter counts."""

    layers: str
    targets_name: str
    targets: list[str]
    r: int
    head: str
    head_rank: int | None
    bias: str
    lora: int
    head_params: int
    bias_params: int
    coverage: int  # adapted (layer, module) pairs
    counted: str = "estimate"  # "exact" once describe_model has counted it
    best: bool = False
    overrides: list[str] = field(default_factory=list)

    @property
    def trainable(self) -> int:
        return self.lora + self.head_params + self.bias_params

    @property
    def encoder(self) -> int:
        return self.lora + self.bias_params


def _linear_shapes(model: nn.Module) -> list[tuple[int, str, int, int]]:
    """(layer, module name, in, out) of every linear layer inside the encoder's layers."""
    from lorafit.model import layer_index

    rows = []
    for name, module in model.named_modules():
        layer = layer_index(name + ".")
        if isinstance(module, nn.Linear) and layer is not None:
            rows.append((layer, name, module.in_features, module.out_features))
    return rows


def _unit(shapes, layers: list[int], targets: list[str], dora: bool) -> tuple[int, int, int]:
    """(parameters per unit of rank, fixed DoRA parameters, adapted modules) for a choice."""
    from lorafit.model import _module_matches  # PEFT's matching rule, as training applies it

    per_rank = fixed = count = 0
    for layer, name, fan_in, fan_out in shapes:
        if layer in layers and any(_module_matches(name, t) for t in targets):
            per_rank += fan_in + fan_out
            fixed += fan_out if dora else 0
            count += 1
    return per_rank, fixed, count


def _head_costs(cfg: Config, model_config, heads: list[tuple[str, int | None]]) -> dict:
    """{(head, k): (head parameters, parameters of biases outside the head)} on meta models."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from lorafit.heads import install_head, is_head_parameter

    costs = {}
    for kind, k in heads:
        with torch.device("meta"):
            base = AutoModelForSequenceClassification.from_config(model_config)
        try:
            install_head(base, kind, k or cfg.model.head_rank, model_config)
        except UserError:
            continue  # this architecture has no such head
        params = list(base.named_parameters())
        head = sum(p.numel() for n, p in params if is_head_parameter(n))
        biases = sum(p.numel() for n, p in params if "bias" in n and not is_head_parameter(n))
        costs[(kind, k)] = (head, biases)
    return costs


def layer_choices(depth: int, configured) -> dict[str, list[int]]:
    """'all', the top half, the top quarter (rounded up) and the config's own layers."""
    choices = {"all": list(range(depth))}
    for share in (2, 4):
        top = list(range(depth - math.ceil(depth / share), depth))
        if top not in choices.values():  # a one-layer model's top half is "all"
            choices[f"{top[0]}-{top[-1]}" if len(top) > 1 else str(top[0])] = top
    try:
        own = parse_layers(configured, depth)
    except ValueError as e:  # e.g. layer 7 of a 6-layer model: the config's key, in one line
        raise UserError(str(e)) from None
    if own is not None and own not in choices.values():
        choices[",".join(map(str, own))] = own
    return choices


def target_choices(cfg: Config, model_config, shapes) -> dict[str, list[str]]:
    """Presets that match every layer, plus the config's (or the architecture's) targets."""
    from lorafit.model import default_target_modules

    depth = max(layer for layer, *_ in shapes) + 1
    choices = {}
    for presets in TARGET_PRESET_LAYOUTS.values():
        for name, targets in presets.items():
            fits = all(_unit(shapes, [i], [t], False)[2] for i in range(depth) for t in targets)
            if fits and name not in choices:
                choices[name] = targets
    own = list(cfg.lora.target_modules or default_target_modules(model_config.model_type))
    if own not in choices.values():
        choices["config"] = own
    return choices


def parse_heads(spec: str, default_rank: int) -> list[tuple[str, int | None]]:
    """'full,linear,lowrank:16' -> [('full', None), ('linear', None), ('lowrank', 16)]."""
    from lorafit.config import HEADS

    out: list[tuple[str, int | None]] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        kind, _, k = item.partition(":")
        if kind not in HEADS:
            raise UserError(
                f"--heads: unknown head {kind!r}; use {', '.join(HEADS)} (lowrank:K for a rank)"
            )
        if kind in ("lowrank", "dense_lora"):
            out.append((kind, int(k) if k.isdigit() else default_rank))
        else:
            out.append((kind, None))
    if not out:
        raise UserError("--heads: give at least one head, e.g. full,linear,lowrank:16")
    return out


def parse_ranks(spec: str) -> list[int]:
    """'1-64' or '4,8,16' -> the ranks to try."""
    try:
        ranks = parse_layers(spec, None, "--ranks")
    except ValueError as e:
        raise UserError(str(e)) from None
    if not ranks or ranks[0] < 1:
        raise UserError("--ranks: ranks start at 1, e.g. 1-64 or 4,8,16")
    return ranks


def enumerate_candidates(cfg: Config, budget: int, heads, ranks) -> list[Candidate]:
    """Every combination that fits `budget`, counted from the model's module shapes."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from lorafit.model import load_model_config, num_layers

    model_config = load_model_config(cfg)
    with torch.device("meta"):
        shapes = _linear_shapes(AutoModelForSequenceClassification.from_config(model_config))
    costs = _head_costs(cfg, model_config, heads)
    layer_opts = layer_choices(num_layers(model_config), cfg.lora.layers)
    out = []
    for tname, targets in target_choices(cfg, model_config, shapes).items():
        for lname, layers in layer_opts.items():
            per_rank, fixed, count = _unit(shapes, layers, targets, cfg.lora.use_dora)
            for (kind, k), (head, biases) in costs.items():
                for bias in ("none", "all"):
                    bias_params = biases if bias == "all" else 0
                    for r in ranks:
                        lora = r * per_rank + fixed
                        if lora + head + bias_params <= budget:
                            out.append(
                                Candidate(
                                    lname,
                                    tname,
                                    targets,
                                    r,
                                    kind,
                                    k,
                                    bias,
                                    lora,
                                    head,
                                    bias_params,
                                    count,
                                )
                            )
    return out


def mark_best(cands: list[Candidate], tolerance: float) -> None:
    """Mark the candidates whose encoder parameters are within `tolerance` of the most."""
    most = max((c.encoder for c in cands), default=0)
    for c in cands:
        c.best = c.encoder >= (1 - tolerance) * most


def sort_candidates(cands: list[Candidate], key: str) -> list[Candidate]:
    orders = {
        "spend": lambda c: (not c.best, -c.coverage, -c.encoder, c.head_params),
        "trainable": lambda c: (-c.trainable, -c.coverage),
        "encoder": lambda c: (-c.encoder, -c.coverage),
        "coverage": lambda c: (-c.coverage, -c.encoder),
        "rank": lambda c: (-c.r, -c.encoder),
        "head": lambda c: (c.head_params, -c.encoder),
    }
    if key not in orders:
        raise UserError(f"--sort {key}: use one of {', '.join(SORT_KEYS)}")
    return sorted(cands, key=orders[key])


def candidate_overrides(c: Candidate, cfg: Config) -> list[str]:
    """The `key=value` overrides that turn the base config into this candidate."""
    alpha = c.r * cfg.lora.alpha / cfg.lora.r  # keep the config's alpha / r scaling
    out = [
        f"lora.layers={c.layers if c.layers == 'all' or ',' not in c.layers else '[' + c.layers + ']'}",
        f"lora.target_modules=[{','.join(c.targets)}]",
        f"lora.r={c.r}",
        f"lora.alpha={alpha:g}",
        f"lora.bias={c.bias}",
        "lora.sections=[]",
        f"model.head={c.head}",
    ]
    if c.head == "full" and cfg.model.pooling != "first":
        out.append("model.pooling=first")  # the model's own head reads the first token
    if cfg.lora.mode != "lora":
        out.append("lora.mode=lora")  # the rows are LoRA configurations, whatever the base trains
    return out + ([f"model.head_rank={c.head_rank}"] if c.head_rank else [])


def count_exactly(c: Candidate, cfg: Config, budget: int) -> Candidate:
    """Recount with `describe_model` (the budget check's code) and keep its figures."""
    from lorafit.params import describe_model

    c.overrides = candidate_overrides(c, cfg)
    d = describe_model(as_config(cfg, [*c.overrides, f"budget={budget}"]))
    b = d["breakdown"]
    c.lora, c.head_params, c.bias_params = b["lora"] + b["other"], b["head"], b["bias"]
    c.counted = "exact"
    return c


def plan(
    config: Config | str | Path | None = None,
    overrides=(),
    *,
    budget: int | None = None,
    top: int = 15,
    sort: str = "spend",
    heads: str = DEFAULT_HEADS,
    ranks: str = "1-64",
    tolerance: float = 0.02,
) -> dict:
    """The configurations that fit `budget` (default: the config's), best spenders marked.

    Returns `{"command", "model", "budget", "fitting", "shown", "candidates": [...]}`
    (`command`: the first row's `lorafit train` command, with `--config` and `model.name`
    when given, so it trains the planned model when pasted); each candidate
    has its layers, target modules, rank, head, bias, exact counts (LoRA, head, biases,
    trainable), budget share, `best` and the overrides that select it. `top` = 0 shows all
    (each shown row is counted exactly, about 0.3 s a row).
    """
    cfg = as_config(config, overrides)
    budget = budget or cfg.budget
    if budget < 1:
        raise UserError(f"--budget {budget}: must be a positive number of parameters")
    if sort not in SORT_KEYS:  # the options first: before the training file is read for its classes
        raise UserError(f"--sort {sort}: use one of {', '.join(SORT_KEYS)}")
    head_choices, rank_choices = parse_heads(heads, cfg.model.head_rank), parse_ranks(ranks)
    cands = enumerate_candidates(cfg, budget, head_choices, rank_choices)
    mark_best(cands, tolerance)
    ordered = sort_candidates(cands, sort)
    shown = [count_exactly(c, cfg, budget) for c in (ordered[:top] if top else ordered)]
    shown = [c for c in shown if c.trainable <= budget]  # an estimate never outranks the count
    return {
        "command": train_command(config, overrides, cfg, budget, shown[0].overrides)
        if shown
        else None,
        "model": cfg.model.name,
        "budget": budget,
        "sort": sort,
        "fitting": len(cands),
        "best": sum(c.best for c in cands),
        "shown": len(shown),
        "candidates": [_row(c, budget) for c in shown],
    }


def train_command(config, overrides, cfg: Config, budget: int, row_overrides: list[str]) -> str:
    """The `lorafit train` command for a row, to paste as it is: the config file (if one was
    given), the model, the caller's other overrides, the budget if it is not the config's, and
    the row's overrides."""
    import shlex

    args = ["lorafit", "train"]
    if isinstance(config, (str, Path)):
        args += ["--config", str(config)]
    replaced = {o.split("=", 1)[0].strip() for o in row_overrides} | {"model.name", "budget"}
    kept = [o for o in overrides if o.split("=", 1)[0].strip() not in replaced]
    args += [f"model.name={cfg.model.name}", *kept]
    if budget != cfg.budget:
        args.append(f"budget={budget}")
    return shlex.join(args + list(row_overrides))


def _row(c: Candidate, budget: int) -> dict:
    row = asdict(c)
    row.update(trainable=c.trainable, encoder=c.encoder, budget_used=round(c.trainable / budget, 6))
    return row


def plan_text(p: dict) -> str:
    """A table of the plan, with the overrides of the first row."""
    lines = [
        f"{p['model']}: {p['fitting']:,} configurations fit a budget of {p['budget']:,}; "
        f"{p['best']:,} spend it best (*); showing {p['shown']} by {p['sort']}",
        "",
        f"  {'layers':<8}{'modules':<12}{'r':>4}  {'head':<12}{'bias':<6}{'trainable':>11}{'used':>8}"
        f"{'lora':>11}{'head':>9}{'biases':>9}",
    ]
    for c in p["candidates"]:
        head = c["head"] + (f":{c['head_rank']}" if c["head_rank"] else "")
        lines.append(
            f"{'*' if c['best'] else ' '} {c['layers']:<8}{c['targets_name']:<12}{c['r']:>4}  {head:<12}{c['bias']:<6}"
            f"{c['trainable']:>11,}{c['budget_used']:>8.1%}{c['lora']:>11,}{c['head_params']:>9,}{c['bias_params']:>9,}"
        )
    presets = {c["targets_name"]: c["targets"] for c in p["candidates"]}
    lines += ["", "modules: " + "; ".join(f"{k} = {', '.join(v)}" for k, v in presets.items())]
    if p.get("command"):
        lines += ["first row: " + p["command"]]
    return "\n".join(lines)
