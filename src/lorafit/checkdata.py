"""Check the data of a training run before training: read, split and count it as `train` would.

    lorafit check-data --config configs/agnews_roberta_latent.yaml
    lorafit check-data data.train=SMSSpamCollection data.quoting=none --json
    lorafit train --dry-run --config configs/agnews_roberta_latent.yaml   # the same, then stops

Reads the splits with the run's config (`lorafit.data.load_splits`: columns and classes settled
as training settles them) and reports each split's source and rows, the text and label columns
(and whether they were guessed), the classes in id order with their rows per split, the
imbalance and the checkpoint metric `train.metric` selects, and the text lengths: tokens by the
model's tokenizer when it loads offline (with the share longer than `model.max_length`, which
training truncates), else characters and words. Loads no model weights and writes nothing;
bad data is the same one-line `UserError` that `train` gives.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from lorafit.config import Config, load_config
from lorafit.errors import UserError


def check_data(
    config: Config | str | Path | None = None, overrides: list[str] | tuple = ()
) -> dict:
    """Read and check a training run's data without training; the report as a dict.

    `config` is a `Config` (not changed: a copy is settled), a YAML path or None (the
    defaults); `overrides` are `key=value` strings. Raises `UserError` for bad data or config.
    Keys: splits, columns, classes, imbalance_ratio, metric, lengths (see `check_text`).
    """
    from lorafit.data import load_splits

    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
        if overrides:
            raise UserError(
                "check_data: give overrides with a YAML path or None, not with a Config object"
            )
    else:
        cfg = load_config(config, list(overrides))
    data = cfg.data
    given = {
        "text_column": data.text_column,
        "label_column": data.label_column,
        "label_names": list(data.label_names),
    }
    splits = load_splits(data, cfg.train.seed)  # settles the columns and classes into cfg.data
    labels = {name: table.labels for name, table in splits.items() if table.labels is not None}
    if cfg.task == "regression":
        return _regression_report(cfg, given, splits, labels)
    # rows of each class; a multi-label run's: rows holding each label
    counts = {
        name: (
            y.sum(axis=0).astype(int)
            if y.ndim == 2
            else np.bincount(y, minlength=len(data.label_names))
        ).tolist()
        for name, y in labels.items()
    }
    train_counts = np.asarray(counts["train"])
    ratio = float(train_counts.max() / train_counts.min()) if train_counts.min() > 0 else None
    return {
        "task": cfg.task,
        "splits": {name: _split_source(name, table, data) for name, table in splits.items()},
        "columns": _columns_report(given, data),
        "classes_from": "data.label_names" if given["label_names"] else "the training file",
        "classes": [
            {"id": i, "name": n, "rows": {s: c[i] for s, c in counts.items()}}
            for i, n in enumerate(data.label_names)
        ],
        "imbalance_ratio": ratio,
        "metric": _metric(cfg, labels["train"]),
        "lengths": _lengths(cfg, splits),
    }


def _regression_report(cfg: Config, given: dict, splits: dict, labels: dict) -> dict:
    """check_data's report of a `task: regression` config: the values' spread per split
    instead of the classes."""
    data = cfg.data
    return {
        "task": "regression",
        "splits": {name: _split_source(name, table, data) for name, table in splits.items()},
        "columns": _columns_report(given, data),
        "values": {
            name: {
                "mean": float(y.mean()),
                "sd": float(y.std()),
                "min": float(y.min()),
                "max": float(y.max()),
            }
            for name, y in labels.items()
        },
        "metric": _metric(cfg, splits["train"].labels),
        "lengths": _lengths(cfg, splits),
    }


def _columns_report(given: dict, data) -> dict:
    """The text and label columns as settled, and which of them were guessed."""
    return {
        "text": data.text_column,
        "label": data.label_column,
        "label_columns": list(data.label_columns) if data.label_columns else None,
        "pairs": isinstance(data.text_column, list),
        "guessed": _guessed(given, data),
    }


def _guessed(given: dict, data) -> list[str]:
    """The column keys the config left open and that are not the default names (text, label)."""
    chosen = {"text_column": data.text_column, "label_column": data.label_column}
    default = {"text_column": "text", "label_column": "label"}
    if data.label_columns:  # one 0/1 column per label, named by the user: no label column
        del chosen["label_column"]
    return [k for k in chosen if given[k] in (None, "") and chosen[k] != default[k]]


def _split_source(name: str, table, data) -> dict:
    """Rows and where a split comes from: its own file, or held out of data.train."""
    own = {"train": data.train, "validation": data.validation, "test": data.test}[name]
    if own:
        how = f"data.{name}"
        if name == "train" and data.max_train_rows and len(table) == data.max_train_rows:
            how += f", a stratified subset (data.max_train_rows={data.max_train_rows})"
    elif name == "validation":
        how = f"split from data.train (data.val_size={data.val_size:g})"
    else:
        how = f"held out of data.train (data.test_size={data.test_size:g})"
    return {"rows": len(table), "source": table.source, "from": how}


def _metric(cfg: Config, train_labels: np.ndarray) -> dict | None:
    """What `train.metric` selects for these training labels (auto: by the imbalance)."""
    try:
        from lorafit.metrics import METRIC_NAMES, resolve_metric
    except ImportError:  # a lorafit without train.metric=auto: the ratio alone is reported
        return None
    setting = cfg.train.metric
    selected = resolve_metric(cfg, train_labels)
    return {"setting": setting, "selected": selected, "name": METRIC_NAMES.get(selected, selected)}


# ---------------------------------------------------------------- text lengths


def _lengths(cfg: Config, splits: dict) -> dict:
    """Token lengths per split with the model's tokenizer (if it loads offline), else characters."""
    tokenizer, note = _offline_tokenizer(cfg)
    max_length = cfg.model.max_length
    if tokenizer is None:
        stats = {name: _char_stats(table) for name, table in splits.items()}
        return {
            "unit": "characters",
            "max_length": max_length,
            "tokenizer": None,
            "note": note,
            "splits": stats,
        }
    stats = {name: _token_stats(tokenizer, table, max_length) for name, table in splits.items()}
    return {
        "unit": "tokens",
        "max_length": max_length,
        "tokenizer": cfg.model.name,
        "note": None,
        "splits": stats,
    }


def _offline_tokenizer(cfg: Config):
    """(the model's tokenizer, None), or (None, why not): from a local folder, or a hub id's
    copy in the local cache; never a download."""
    from lorafit.model import load_tokenizer, resolve_model_name

    try:
        name = resolve_model_name(cfg.model.name)
        if os.path.isdir(name):
            return load_tokenizer(cfg), None
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, local_files_only=True), None
    except UserError as e:
        return None, f"the tokenizer did not load ({e})"
    except (OSError, ValueError):
        return (
            None,
            f"model.name {cfg.model.name!r}: no local folder or cached tokenizer (a check downloads nothing)",
        )


def _summary(values: list[int]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(v.mean()), 1),
        "median": float(np.median(v)),
        "p95": round(float(np.percentile(v, 95)), 1),
        "max": int(v.max()),
    }


def _token_stats(tokenizer, table, max_length: int) -> dict:
    """Tokens per row with the special tokens (a pair as the tokenizer joins it), untruncated."""
    args = (table.texts,) if table.pairs is None else (table.texts, table.pairs)
    lengths = [len(x) for x in tokenizer(*args, truncation=False, verbose=False)["input_ids"]]
    longer = sum(n > max_length for n in lengths)
    return {
        **_summary(lengths),
        "truncated": longer,
        "truncated_share": round(longer / len(lengths), 4),
    }


def _char_stats(table) -> dict:
    """Characters and words per row; a pair counts both texts."""
    rows = (
        table.texts
        if table.pairs is None
        else [a + " " + b for a, b in zip(table.texts, table.pairs)]
    )
    return {
        **_summary([len(t) for t in rows]),
        "words_mean": round(float(np.mean([len(t.split()) for t in rows])), 1),
    }


# ---------------------------------------------------------------- the report as text


def check_text(r: dict) -> str:
    """A readable rendering of `check_data`'s report."""
    lines = ["splits:"]
    width = max(len(n) for n in r["splits"])
    for name, s in r["splits"].items():
        where = s["source"] if s["from"] == f"data.{name}" else f"{s['from']}: {s['source']}"
        lines.append(f"  {name:<{width}}  {s['rows']:>8,} rows  {where}")
    lines += _columns_lines(r["columns"])
    lines += _value_lines(r) if r.get("task") == "regression" else _class_lines(r)
    lines += _length_lines(r["lengths"])
    lines.append("nothing written, no model weights loaded")
    return "\n".join(lines)


def _columns_lines(c: dict) -> list[str]:
    guessed = lambda key: " (guessed)" if key in c["guessed"] else ""  # noqa: E731
    text = f"pair {c['text'][0]!r} + {c['text'][1]!r}" if c["pairs"] else repr(c["text"])
    if c.get("label_columns"):  # data.label_columns: one 0/1 column per label
        names = c["label_columns"]
        shown = ", ".join(map(repr, names[:4])) + (
            f", ... ({len(names)} in all)" if len(names) > 4 else ""
        )
        return [
            f"columns: text {text}{guessed('text_column')}, labels one 0/1 column each: {shown}"
        ]
    return [
        f"columns: text {text}{guessed('text_column')}, label {c['label']!r}{guessed('label_column')}"
    ]


def _class_lines(r: dict) -> list[str]:
    names = list(r["splits"])
    shown = [n for n in names if r["classes"] and n in r["classes"][0]["rows"]]
    width = max(len(c["name"]) for c in r["classes"])
    kind = (
        "labels (multi-label: rows holding each)" if r.get("task") == "multi_label" else "classes"
    )
    lines = [
        f"{kind} (from {r['classes_from']}), rows per split:",
        f"  {'id':>3}  {'class':<{width}}  " + "  ".join(f"{n:>10}" for n in shown),
    ]
    for c in r["classes"]:
        lines.append(
            f"  {c['id']:>3}  {c['name']:<{width}}  "
            + "  ".join(f"{c['rows'][n]:>10,}" for n in shown)
        )
    ratio = r["imbalance_ratio"]
    line = "imbalance: " + (
        "a class has no training rows"
        if ratio is None
        else f"largest/smallest class {ratio:.2f} in train"
    )
    m = r["metric"]
    if m is not None:
        how = "train.metric=auto selects" if m["setting"] == "auto" else "train.metric is set to"
        line += f"; {how} {m['selected']} ({m['name']})"
    return [*lines, line]


def _value_lines(r: dict) -> list[str]:
    """A regression's label values per split, and the checkpoint metric."""
    lines = ["regression values (task: regression), per split:"]
    width = max(len(n) for n in r["values"])
    for name, v in r["values"].items():
        lines.append(
            f"  {name:<{width}}  mean {v['mean']:.4g}  sd {v['sd']:.4g}  min {v['min']:.4g}  max {v['max']:.4g}"
        )
    m = r["metric"]
    if m is not None:
        how = "train.metric=auto selects" if m["setting"] == "auto" else "train.metric is set to"
        lines.append(f"{how} {m['selected']} ({m['name']})")
    return lines


def _length_lines(d: dict) -> list[str]:
    if d["unit"] == "tokens":
        head = f"text lengths in tokens (tokenizer of {d['tokenizer']}; longer than model.max_length={d['max_length']} is truncated):"
    else:
        head = f"text lengths in characters ({d['note']}):"
    lines = [head]
    width = max(len(n) for n in d["splits"])
    for name, s in d["splits"].items():
        row = f"  {name:<{width}}  mean {s['mean']:g}  median {s['median']:g}  p95 {s['p95']:g}  max {s['max']:,}"
        if d["unit"] == "tokens":
            row += f"  truncated {s['truncated']:,} ({100 * s['truncated_share']:.1f}%)"
        else:
            row += f"  words mean {s['words_mean']:g}"
        lines.append(row)
    return lines
