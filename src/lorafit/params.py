"""Parameter counting, the budget check, and the model description (JSON and text).

Counts are what training sees: a parameter is trainable if `requires_grad` is set. PEFT keeps
a frozen copy of the classification head beside the trainable one; the copy counts as frozen.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from torch import nn

from lorafit.config import Config, config_to_dict
from lorafit.errors import UserError
from lorafit.heads import is_head_parameter
from lorafit.model import build_model, layer_index, layer_settings, load_model_config, num_layers


def _category(name: str) -> str:
    if "lora_" in name:
        return "lora"
    if is_head_parameter(name):
        return "head"
    if name.endswith(".bias"):
        return "bias"
    return "other"


def _layer_order(item: tuple[str, dict]) -> tuple[int, int]:
    return (1, 0) if item[0] == "other" else (0, int(item[0]))


def count_parameters(model: nn.Module) -> dict:
    """Totals plus a breakdown of trainable parameters by kind and by layer and module."""
    total = trainable = 0
    by_kind: dict[str, int] = defaultdict(int)
    per_layer: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for name, p in model.named_parameters():
        total += p.numel()
        if not p.requires_grad:
            continue
        trainable += p.numel()
        kind = _category(name)
        by_kind[kind] += p.numel()
        if kind == "lora":
            module = name.split(".lora_")[0].rsplit(".", 1)[-1]
            index = layer_index(name)  # None: outside the layer stack (e.g. pooler.dense)
            per_layer["other" if index is None else str(index)][module] += p.numel()
    return {
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "trainable_pct": round(100 * trainable / total, 4),
        "frozen_pct": round(100 * (total - trainable) / total, 4),
        "breakdown": {k: by_kind.get(k, 0) for k in ("lora", "head", "bias", "other")},
        "lora_per_layer": {k: dict(v) for k, v in sorted(per_layer.items(), key=_layer_order)},
    }


def describe_model(cfg: Config, model: nn.Module | None = None) -> dict:
    """The model description: counts, breakdown and resolved LoRA settings (no weights needed)."""
    model_config = load_model_config(cfg)
    if model is None:
        model = build_model(cfg, weights=False, model_config=model_config)
    depth = num_layers(model_config)
    counts = count_parameters(model)
    peft_cfg = getattr(model, "peft_config", {}).get(
        "default"
    )  # None for lora.mode full / bias_only
    return {
        "model": cfg.model.name,
        "model_type": model_config.model_type,
        "num_layers": depth,
        "hidden_size": getattr(model_config, "hidden_size", None),
        "num_labels": model_config.num_labels,
        "head": cfg.model.head,
        "head_rank": cfg.model.head_rank if cfg.model.head in ("lowrank", "dense_lora") else None,
        "pooling": cfg.model.pooling,
        "mode": cfg.lora.mode,
        "budget": cfg.budget,
        "fits_budget": counts["trainable"] <= cfg.budget,
        "params": {
            k: counts[k] for k in ("total", "trainable", "frozen", "trainable_pct", "frozen_pct")
        },
        "breakdown": counts["breakdown"],
        "lora_per_layer": counts["lora_per_layer"],
        "lora": {
            "target_modules": sorted(peft_cfg.target_modules) if peft_cfg else [],
            "bias": cfg.lora.bias,
            "layers": {str(k): v for k, v in sorted(layer_settings(cfg, depth).items())},
            "config": config_to_dict(cfg)["lora"],
        },
    }


def check_budget(description: dict) -> None:
    """Refuse a run whose trainable count is over budget (exactly at the budget fits), with the
    breakdown and a pointer to `lorafit plan`."""
    n, budget, b = (
        description["params"]["trainable"],
        description["budget"],
        description["breakdown"],
    )
    if n <= budget:
        return
    raise UserError(
        f"budget: {n:,} trainable parameters exceed the budget of {budget:,} by {n - budget:,} "
        f"(LoRA {b['lora']:,}, head {b['head']:,}, biases {b['bias']:,}, other {b['other']:,}); "
        "lower lora.r, adapt fewer layers or modules, or raise budget; `lorafit plan "
        "[--config FILE] [key=value ...]` lists the configurations that fit"
    )


def description_text(d: dict) -> str:
    """A readable rendering of `describe_model`'s output."""
    p, b = d["params"], d["breakdown"]
    lines = [
        f"model        {d['model']} ({d['model_type']}, {d['num_layers']} layers, hidden {d['hidden_size']})",
        f"labels       {d['num_labels']}   head: {d['head']}   pooling: {d.get('pooling', 'first')}",
        f"total        {p['total']:>12,}",
        f"trainable    {p['trainable']:>12,}  ({p['trainable_pct']:.3f}%)",
        f"frozen       {p['frozen']:>12,}  ({p['frozen_pct']:.3f}%)",
        f"budget       {d['budget']:>12,}  -> {'fits' if d['fits_budget'] else 'OVER BUDGET'}"
        f" ({d['budget'] - p['trainable']:+,} left)",
        "",
        "trainable breakdown",
        *(f"  {k:<10} {v:>12,}" for k, v in b.items()),
        "",
        "LoRA per layer  (module: parameters; r / alpha / dropout)",
    ]
    for layer, modules in d["lora_per_layer"].items():
        s = d["lora"]["layers"].get(layer, {})
        mods = ", ".join(f"{m}: {n:,}" for m, n in modules.items())
        where = f"layer {layer:>3}" if layer != "other" else "outside layers"
        how = (
            f"r={s['r']}, alpha={s['alpha']}, dropout={s['dropout']}"
            if s
            else "lora.r, lora.alpha, lora.dropout"
        )
        lines.append(f"  {where}  {mods}   ({how})")
    lines += [
        "",
        f"target modules  {', '.join(d['lora']['target_modules'])}",
        f"bias            {d['lora']['bias']}",
    ]
    if d.get(
        "teacher"
    ):  # a distilled run: which teacher trained it (its parameters are not counted)
        t, u = d["teacher"], d["teacher"].get("unlabeled")
        lines += [
            f"teacher         {', '.join(t['teacher'])} ({t['combine']}; files {t['identity']}); not counted",
            f"distillation    w={t['distill_weight']:g}, "
            + (
                "MSE to the teacher's values"
                if t.get("task") == "regression"
                else f"T={t['distill_temperature']:g}"
            ),
        ]
        if u:
            lines.append(
                f"unlabelled      {u['file']}: {u['joined']:,} of {u['rows_read']:,} rows joined training"
            )
    return "\n".join(lines) + "\n"


def describe(config: Config | str | Path | None = None, overrides=(), output_dir=None) -> dict:
    """Parameter counts, breakdown and LoRA settings without training (and without weights).

    `config` is a `Config`, a YAML path or None (the defaults); `overrides` are `key=value`
    strings. With `output_dir`, also writes `model_description.json` and `.txt` there.
    """
    from lorafit.config import as_config

    d = describe_model(as_config(config, overrides))
    if output_dir:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        write_description(d, Path(output_dir))
    return d


def write_description(d: dict, out_dir: Path) -> None:
    from lorafit.rundir import write_atomic

    write_atomic(out_dir / "model_description.json", json.dumps(d, indent=2) + "\n")
    write_atomic(out_dir / "model_description.txt", description_text(d))
