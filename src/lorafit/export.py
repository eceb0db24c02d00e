"""Sharing a run: the model card of its best checkpoint, and a merged plain-transformers copy.

    lorafit export runs/latest --merged exported/agnews-roberta

`write_model_card(run_dir)` runs at the end of training and replaces the README.md that PEFT
writes into `checkpoint-best/` with one that says what the adapter is: base model, data,
LoRA settings, parameter counts, metrics and the command that made it. `export_merged` folds
the LoRA weights into the base model (`merge_and_unload`) and saves a folder that
`AutoModelForSequenceClassification.from_pretrained` loads without PEFT or lorafit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, cast

from lorafit.config import Config, load_config
from lorafit.errors import UserError
from lorafit.rundir import require_run_dir, usual_mode, write_atomic

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _hub_id(name: str) -> str | None:
    """A model or dataset's hub id for the card's metadata; None for local files and folders."""
    from lorafit.data import SAMPLES, TABULAR
    from lorafit.model import MINILM_NAMES

    if name.lower() in MINILM_NAMES:
        return MINILM_HUB_ID
    looks_like_id = re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name) is not None
    local = os.path.exists(name) or name in SAMPLES or Path(name).suffix.lower() in TABULAR
    return name if looks_like_id and not local else None


def _sections(layers: dict) -> list[tuple[str, dict]]:
    """Consecutive layers with the same settings grouped: [('0-5', {r, alpha, dropout}), ...]."""
    groups: list[tuple[list[int], dict]] = []
    for key, setting in sorted(layers.items(), key=lambda kv: int(kv[0])):
        if groups and groups[-1][1] == setting and groups[-1][0][-1] == int(key) - 1:
            groups[-1][0].append(int(key))
        else:
            groups.append(([int(key)], setting))
    return [(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]), s) for g, s in groups]


def _front_matter(cfg: Config, merged: bool) -> list[str]:
    """Hugging Face model-card metadata (YAML between --- lines)."""
    library = "transformers" if merged else "peft"
    lines = ["---", f"library_name: {library}", "pipeline_tag: text-classification"]
    base = _hub_id(cfg.model.name)
    if base:
        lines.append(f"base_model: {base}")
    data = _hub_id(cfg.data.train) if cfg.data.train else None
    if data:
        lines.append(f"datasets: [{data}]")
    return lines + ["tags: [lora, text-classification, lorafit]", "---", ""]


def _results_lines(summary: dict) -> list[str]:
    from lorafit.metrics import FIGURES

    best, test = summary.get("best_eval") or {}, summary.get("test")
    figures = FIGURES[summary.get("task", "classification")]
    lines = [
        "| split | rows | " + " | ".join(title for _, title, _ in figures) + " |",
        "|---|---:|" + "---:|" * len(figures),
    ]
    if best:
        where = f"validation (step {best['step']} of {summary.get('final_step')})"
        lines.append(
            f"| {where} | | " + " | ".join(f"{best[key]:.4f}" for _, _, key in figures) + " |"
        )
    if test:
        lines.append(
            f"| test (`{test.get('input')}`) | {test['rows']} | "
            + " | ".join(f"{test[k]:.4f}" for k, _, _ in figures)
            + " |"
        )
    return lines


def _lora_lines(description: dict) -> list[str]:
    lora = description.get("lora", {})
    lines = [
        f"Target modules: {', '.join(f'`{m}`' for m in lora.get('target_modules', []))}; bias: `{lora.get('bias')}`.",
        "",
        "| layers | r | alpha | dropout |",
        "|---|---:|---:|---:|",
    ]
    for layers, s in _sections(lora.get("layers", {})):
        lines.append(f"| {layers} | {s['r']} | {s['alpha']:g} | {s['dropout']:g} |")
    return lines


def _param_lines(description: dict, summary: dict) -> list[str]:
    p = summary.get("params") or description.get("params", {})
    b = description.get("breakdown", {})
    budget = description.get("budget")
    lines = [
        f"- trainable: **{p.get('trainable', 0):,}** of {p.get('total', 0):,} ({p.get('trainable_pct', 0):.3f}%)"
        + (f"; budget {budget:,}" if budget else ""),
    ]
    if b:
        lines.append("- trainable by kind: " + ", ".join(f"{k} {v:,}" for k, v in b.items()))
    if description.get("head"):
        rank = f", rank {description['head_rank']}" if description.get("head_rank") else ""
        lines.append(
            f"- head: `{description['head']}`{rank}, reading the"
            + (" mean of the tokens" if description.get("pooling") == "mean" else " first token")
        )
    return lines


def _usage_lines(run: Path, cfg: Config, base_path: str, merged: bool) -> list[str]:
    labels = list(cfg.data.label_names)
    if merged:
        return [
            "```python",
            "from transformers import pipeline",
            f'classify = pipeline("text-classification", model="{run}")',
            'print(classify("Stocks rallied after the central bank held rates."))',
            "```",
        ]
    if cfg.model.head != "full":  # PEFT alone cannot rebuild lorafit's own head
        return [
            f"The classification head is lorafit's own (`model.head={cfg.model.head}`, pooling"
            f" `{cfg.model.pooling}`), so load",
            "the adapter with lorafit, which rebuilds the head before its weights load:",
            "",
            "```python",
            "from lorafit.predict import load_run_model",
            "",
            f'model, tokenizer, cfg = load_run_model("{run}")  # LoRA merged in, eval mode',
            "```",
            "",
            f"Or `lorafit predict {run} --input FILE`."
            + (
                ""
                if cfg.model.head == "linear" or cfg.model.pooling != "first"
                else f" `lorafit export {run} --merged OUT` folds the head into the model's own"
                " head layout for plain transformers."
            ),
        ]
    return [
        "```python",
        "import torch",
        "from peft import PeftModel",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        f"labels = {labels!r}",
        "base = AutoModelForSequenceClassification.from_pretrained(",
        f'    "{base_path}", num_labels=len(labels),',
        "    id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})",
        f'model = PeftModel.from_pretrained(base, "{run / "checkpoint-best"}").eval()',
        f'tokenizer = AutoTokenizer.from_pretrained("{run / "checkpoint-best"}")',
        'batch = tokenizer(["Stocks rallied after the central bank held rates."],',
        f'                  truncation=True, max_length={cfg.model.max_length}, return_tensors="pt")',
        "with torch.no_grad():",
        "    predicted = model(**batch).logits.argmax(-1).tolist()",
        "print([labels[i] for i in predicted])",
        "```",
        "",
        f"Or with lorafit: `lorafit predict {run} --input FILE`; a plain transformers copy with",
        f"LoRA merged in: `lorafit export {run} --merged OUT`.",
    ]


def _training_lines(cfg: Config, summary: dict, base_path: str) -> list[str]:
    t, s = cfg.train, summary
    return [
        f"- base model: `{cfg.model.name}` (loaded from `{base_path}`), max length {cfg.model.max_length} tokens",
        f"- optimizer {t.optimizer}, lr {t.lr:g}, weight decay {t.weight_decay:g}, batch size {t.batch_size}"
        f" x {t.grad_accum} accumulation, {t.scheduler} schedule, seed {t.seed}",
        f"- steps: {s.get('final_step')} (best at {s.get('best_step')}; stopped early: {s.get('stopped_early')});"
        f" device {s.get('device')}; wall time {s.get('wall_time_s')} s",
        *(
            [
                f"- distilled from the teacher `{', '.join(s['teacher']['teacher'])}` ({s['teacher']['combine']}, files {s['teacher']['identity']}; w {s['teacher']['distill_weight']:g}, T {s['teacher']['distill_temperature']:g}); its parameters are not counted"
            ]
            if s.get("teacher")
            else []
        ),
        f"- versions: {', '.join(f'{k} {v}' for k, v in (s.get('versions') or {}).items())}",
        f"- git commit: {s.get('git_commit')}",
        "",
        "Command:",
        "",
        "```",
        str(s.get("command", "(unknown: the run has no summary.json)")),
        "```",
    ]


def model_card(
    run_dir: str | Path, merged: bool = False, location: str | Path | None = None
) -> str:
    """The README.md text for a run's best checkpoint (or, with `merged`, its export)."""
    run = require_run_dir(run_dir, "checkpoint-best/adapter_config.json")
    cfg = load_config(run / "config.yaml")
    summary = _read_json(run / "summary.json")
    description = _read_json(run / "model_description.json")
    adapter = _read_json(run / "checkpoint-best" / "adapter_config.json")
    base_path = adapter.get("base_model_name_or_path") or cfg.model.name
    what = "LoRA merged into" if merged else "LoRA adapter and classification head for"
    title = summary.get("run_name") or cfg.run.name
    t = cfg.train
    return "\n".join(
        [
            *_front_matter(cfg, merged),
            f"# {title}: {what} {cfg.model.name}",
            "",
            (
                f"Text regression of one number ({cfg.data.label_names[0]}),"
                if cfg.task == "regression"
                else f"Multi-label text classification: any of {len(cfg.data.label_names)} labels a text ({', '.join(cfg.data.label_names)}),"
                if cfg.task == "multi_label"
                else f"Text classification into {len(cfg.data.label_names)} classes ({', '.join(cfg.data.label_names)}),"
            )
            + f" trained with lorafit on `{cfg.data.train}` (validation: "
            + (
                f"`{cfg.data.validation}`"
                if cfg.data.validation
                else f"{cfg.data.val_size:g} rows held out, seed {t.seed}"
            )
            + ").",
            "",
            "## Results",
            "",
            *_results_lines(summary),
            "",
            "## Parameters",
            "",
            *_param_lines(description, summary),
            "",
            "## LoRA settings",
            "",
            *_lora_lines(description),
            "",
            "## Training",
            "",
            *_training_lines(cfg, summary, base_path),
            "",
            "## How to use",
            "",
            *_usage_lines(Path(location) if merged and location else run, cfg, base_path, merged),
            "",
        ]
    )


def write_model_card(run_dir: str | Path) -> Path:
    """Write `checkpoint-best/README.md` (replacing PEFT's placeholder card); return its path."""
    run = Path(run_dir)
    path = run / "checkpoint-best" / "README.md"
    if not (run / "checkpoint-best" / "adapter_config.json").is_file():
        return path  # lora.mode full / bias_only: a whole-model checkpoint, no adapter to describe
    write_atomic(path, model_card(run))
    return path


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--merged {out}: is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(
                f"--merged {out}: folder is not empty; choose another folder or pass --overwrite"
            )
        if not (out / "config.json").is_file():
            raise UserError(
                f"--merged {out}: not empty and not an exported model (no config.json); "
                "--overwrite only replaces an earlier export, choose another folder"
            )


def export_merged(run_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Save the run's best checkpoint with LoRA merged in as a plain transformers model.

    The folder holds the model (safetensors), its config with the label names, the tokenizer
    (its `model_max_length` set to the run's `model.max_length`, so `truncation=True`
    truncates as training did) and a model card. An existing non-empty `out` is refused
    unless `overwrite` and it holds an earlier export; the new folder is swapped in whole.
    A `lowrank` or `dense_lora` head is folded exactly into the model's own head layout
    (`heads.restore_own_head`); a `linear` head or `model.pooling=mean` cannot be, and is
    refused.
    """
    from lorafit.heads import check_exportable, restore_own_head
    from lorafit.predict import load_run_model

    run = require_run_dir(run_dir, "checkpoint-best/adapter_model.safetensors")
    out = Path(out)
    _check_output(out, overwrite)
    saved = load_config(run / "config.yaml").model
    check_exportable(saved.head, saved.pooling)  # before any work
    model, tokenizer, cfg = load_run_model(run, "cpu")
    # a transformers model still (restore_own_head's nn.Module hides its save_pretrained)
    model = cast(Any, restore_own_head(model, cfg.model.head, cfg.model.pooling))
    tokenizer.model_max_length = cfg.model.max_length
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = out.with_name(f".{out.name}.tmp"), out.with_name(f".{out.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    usual_mode(tmp)  # the weights: the umask's mode, not the writer's 0600
    write_atomic(tmp / "README.md", model_card(run, merged=True, location=out))
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out
