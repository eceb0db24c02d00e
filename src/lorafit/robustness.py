"""Robustness: score a run on perturbed copies of a labelled file (`evaluate --perturb`).

    lorafit evaluate runs/latest --input val.csv --perturb typo,synonym --rate 0.1 --seed 0

The competition's hidden file is half official test rows and half noisy, garbled or modern
news texts, so accuracy on clean validation rows alone overstates what a model will score.
The perturbations are those of `lorafit.perturb` (word dropout, swaps, typos, synonyms from
the Moby thesaurus, or a mix). The same (file, kind, rate, seed) always gives the same
perturbed texts, so two runs are scored on identical inputs. For sentence pairs both texts
are perturbed, each column as a list of texts with the same seed, and the pair is scored.

Training-time augmentation (`data.augment`, off by default) uses the same perturbations:
once, before tokenising, a seeded `data.augment_share` of the training rows is replaced by
perturbed copies (kinds taken in turn). Replacing rather than appending keeps the number of
rows, and so the steps and compute, the same as without augmentation; validation and test
rows are never perturbed. It lives in `lorafit.augment` (`training_splits`, which training
calls), a stage that must not import prediction (this module does).
"""

from __future__ import annotations

from pathlib import Path

from lorafit.config import load_config, split_kinds
from lorafit.data import TextTable, encode, file_digest
from lorafit.errors import UserError
from lorafit.metrics import FIGURES, task_metrics
from lorafit.perturb import PERTURBATIONS, perturb_texts
from lorafit.rundir import require_run_dir, write_json


def perturbed_texts(texts: list[str], kind: str, rate: float, seed: int) -> list[str]:
    """`perturb_texts` with a `UserError` naming the option for a bad kind or rate."""
    if kind not in PERTURBATIONS:
        raise UserError(f"--perturb: unknown kind {kind!r}; use {', '.join(PERTURBATIONS)}")
    if not 0 < rate <= 1:
        raise UserError(f"--rate {rate}: must be in (0, 1]")
    try:
        return perturb_texts(texts, kind, rate, seed)
    except ImportError as e:
        raise UserError(f"--perturb {kind}: {e}") from None


def perturbed_rows(table: TextTable, kind: str, rate: float, seed: int) -> TextTable:
    """`table` with its texts perturbed (`perturbed_texts`); for pairs, the second texts too,
    with the same seed."""
    texts = perturbed_texts(table.texts, kind, rate, seed)
    pairs = None if table.pairs is None else perturbed_texts(table.pairs, kind, rate, seed)
    return table.with_texts(texts, pairs)


def evaluate_perturbed(
    run_dir: str | Path,
    input: str,
    kinds: list[str] | str,
    *,
    rate: float = 0.1,
    seed: int = 0,
    batch_size: int = 64,
    device: str | None = None,
    dtype: str = "auto",
    text_column: str | None = None,
    label_column: str | None = None,
    threads: int | str | None = None,
) -> dict:
    """Score a run on `input` as is and on one perturbed copy per kind.

    Returns `{"input", "rows", "rate", "seed", "clean": metrics, "perturbed": {kind: metrics}}`
    (metrics as `lorafit evaluate`, plus `accuracy_change` (a regression: `pearson_change`)
    against clean) and saves it to
    `RUN_DIR/evaluations/<stem>-<sha12>-perturb-r<rate>-s<seed>.json`. `text_column` /
    `label_column` / `threads` as for `lorafit.evaluate`.
    """
    from lorafit.predict import (
        _default_device,
        _existing_input,
        cpu_threads,
        infer_logits,
        load_run_model,
        read_input,
        with_columns,
    )

    run = require_run_dir(run_dir, "checkpoint-best")
    kinds = split_kinds(kinds) if isinstance(kinds, str) else list(kinds)
    if not kinds:
        raise UserError(f"--perturb: give at least one kind ({', '.join(PERTURBATIONS)})")
    input = _existing_input(input)
    cfg = with_columns(load_config(run / "config.yaml"), text_column, label_column)
    table = read_input(input, cfg, need_labels=True)
    copies = {kind: perturbed_rows(table, kind, rate, seed) for kind in kinds}  # fail early
    device = device or _default_device()
    cpu_threads(threads, device, "evaluation")
    model, tokenizer, _ = load_run_model(run, device, dtype)  # dtype as `lorafit evaluate --dtype`

    def score(rows: TextTable) -> dict:
        encoded = encode(tokenizer, rows, cfg.model.max_length)
        logits = infer_logits(model, encoded, batch_size, tokenizer.pad_token_id, device)
        return task_metrics(cfg.task, logits, table.labels, cfg.data.label_names)

    clean = score(table)
    perturbed = {}
    first = FIGURES[cfg.task][0][
        0
    ]  # accuracy, a regression's pearson, a multi-label run's macro_f1
    for kind, rows in copies.items():
        perturbed[kind] = score(rows)
        perturbed[kind][f"{first}_change"] = perturbed[kind][first] - clean[first]
    result = {
        "input": str(input),
        "rows": len(table),
        "rate": rate,
        "seed": seed,
        "clean": clean,
        "perturbed": perturbed,
    }
    (run / "evaluations").mkdir(exist_ok=True)
    write_json(
        run
        / "evaluations"
        / f"{Path(input).stem}-{file_digest(input)[:12]}-perturb-r{rate:g}-s{seed}.json",
        result,
    )
    return result


def format_robustness(result: dict) -> str:
    """A small table: accuracy and macro-F1 (a regression: Pearson and Spearman) clean and per
    perturbation."""
    (a, a_name, _), (b, b_name, _), _ = FIGURES[result["clean"].get("task", "classification")]
    lines = [
        f"{result['input']}: {result['rows']} rows, rate {result['rate']:g}, seed {result['seed']}",
        f"{'texts':<14}{a_name:>10}{b_name:>10}{'change':>10}",
        f"{'clean':<14}{result['clean'][a]:>10.4f}{result['clean'][b]:>10.4f}{'':>10}",
    ]
    for kind, m in result["perturbed"].items():
        lines.append(f"{kind:<14}{m[a]:>10.4f}{m[b]:>10.4f}{m[f'{a}_change']:>+10.4f}")
    return "\n".join(lines)
