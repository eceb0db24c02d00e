"""Ensembles: combine several runs' predictions into one submission.

    lorafit ensemble runs/a runs/b runs/c --input test_unlabelled.pkl --output submission.csv
    lorafit ensemble runs/a runs/b --input test.pkl --method weighted

Methods:
- `mean` (default): the average of the members' class probabilities.
- `weighted`: a weighted average whose weights (non-negative, summing to 1) maximise the
  log-likelihood of the true labels on the members' shared validation split. That objective
  is concave in the weights, so the optimum is global; it is found by EM iterations (the
  mixture-weight update). Log-likelihood rather than accuracy because it is smooth and uses
  every row, not only the ones near a decision boundary. The validation rows also chose each
  member's best checkpoint, so its score there is a little optimistic.
- `vote`: each member votes for its top class; ties go to the tied class with the highest
  mean probability.

A regression's members (`task: regression`) are averaged (`mean`: the mean of their predicted
values); `weighted` and `vote` combine class probabilities and refuse a regression. Members'
scores on a labelled input are then Pearson correlations instead of accuracies. A multi-label
run's members (`task: multi_label`) are averaged too (`mean` of each label's probability), and
the decision thresholds are tuned again on the averaged probabilities of the members' shared
validation split (the first member's train.threshold and metric); members' scores are their
macro-F1 at their own thresholds.

Members' probabilities come from `RUN_DIR/predictions/<stem>-<sha12>-<key10>.csv` when that
file was already predicted with the same checkpoint, settings and dtype (`lorafit predict`
writes it; `<key10>` is `lorafit.predict.prediction_key`), otherwise they are predicted and
saved there. Validation probabilities are saved the same way as
`predictions/validation-<sha12>-<key10>.csv`, where `<sha12>` hashes the validation rows
themselves, whole (both texts of a sentence pair, and the label), always predicted in fp32.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from lorafit.config import Config, load_config
from lorafit.errors import UserError
from lorafit.rundir import require_run_dir

log = logging.getLogger("lorafit")

METHODS = ("mean", "weighted", "vote")


# ---------------------------------------------------------------- combining


def mean_probabilities(probs: list[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
    """The (weighted) average of the members' probability matrices (rows x classes)."""
    stack = np.stack(probs)
    w = (
        np.full(len(probs), 1 / len(probs))
        if weights is None
        else np.asarray(weights, dtype=np.float64)
    )
    return np.tensordot(w, stack, axes=1)


def majority_vote(probs: list[np.ndarray]) -> np.ndarray:
    """Each member's top class gets a vote; a tie goes to the tied class with the highest mean probability."""
    n_classes = probs[0].shape[1]
    votes = sum(np.eye(n_classes, dtype=np.int64)[p.argmax(-1)] for p in probs)
    mean = mean_probabilities(probs)
    tied_best = votes == votes.max(axis=1, keepdims=True)
    return np.where(tied_best, mean, -np.inf).argmax(axis=1)


def log_likelihood(probs: list[np.ndarray], labels: np.ndarray, weights: np.ndarray) -> float:
    """Mean log-probability of the true labels under the weighted average of `probs`."""
    true = np.stack([p[np.arange(len(labels)), labels] for p in probs], axis=1)
    return float(np.mean(np.log(np.clip(true @ weights, 1e-12, None))))


def fit_weights(
    probs: list[np.ndarray], labels: np.ndarray, iterations: int = 2000, tol: float = 1e-9
) -> np.ndarray:
    """Non-negative weights summing to 1 that maximise `log_likelihood` (EM updates).

    Each update w_m <- mean_i(w_m p_m(y_i) / sum_k w_k p_k(y_i)) never lowers the
    log-likelihood, which is concave in w, so the iterations reach the global optimum.
    """
    true = np.stack([p[np.arange(len(labels)), labels] for p in probs], axis=1).astype(np.float64)
    true = np.clip(true, 1e-12, None)
    w = np.full(true.shape[1], 1 / true.shape[1])
    for _ in range(iterations):
        updated = (true * w / (true @ w)[:, None]).mean(axis=0)
        done = np.abs(updated - w).max() < tol
        w = updated
        if done:
            break
    return w / w.sum()


# ---------------------------------------------------------------- members


def _members(run_dirs) -> list[tuple[Path, Config]]:
    """The member runs (finished, distinct, same classes) with their configs."""
    runs = [require_run_dir(r, "checkpoint-best/adapter_model.safetensors") for r in run_dirs]
    if len(runs) < 2:
        raise UserError("ensemble: give two or more run directories (e.g. runs/a runs/b)")
    seen: dict[Path, Path] = {}
    for run in runs:
        if run.resolve() in seen:
            raise UserError(
                f"ensemble: {run} is given twice (as {seen[run.resolve()]}); list each run once"
            )
        seen[run.resolve()] = run
    members = [(run, load_config(run / "config.yaml")) for run in runs]
    first, first_cfg = members[0]
    for run, cfg in members[1:]:
        if cfg.task != first_cfg.task:
            raise UserError(
                f"ensemble: {run} is a {cfg.task} run but {first} a {first_cfg.task} one; ensemble runs of one task"
            )
        if list(cfg.data.label_names) != list(first_cfg.data.label_names):
            raise UserError(
                f"ensemble: {run} predicts {list(cfg.data.label_names)} but {first} predicts "
                f"{list(first_cfg.data.label_names)}; ensemble runs trained on the same classes"
            )
    return members


def _validation_set(run: Path, cfg: Config):
    """The run's validation rows, rebuilt from its data config and seed, and their digest."""
    from lorafit.data import load_splits

    # the test file is not needed here; replaced through the Config, whose checks tell the
    # data layer the run's task (labels read as classes, numbers or label sets)
    data = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test=None)).data
    val = load_splits(data, cfg.train.seed)["validation"]
    return val, rows_digest(val)


def rows_digest(table) -> str:
    """12 hex digits of sha256 over a table's labelled rows; single texts as `label<TAB>text`
    lines (as ever), sentence pairs behind a tag, each pair as a JSON list, so a pair never
    matches a single text."""
    h = hashlib.sha256()
    if table.pairs is None:
        for text, label in zip(table.texts, table.labels):
            h.update(f"{label}\t{text}\n".encode())
    else:
        h.update(b"pairs\n")  # single-text lines start with a label id, never this
        for text, pair, label in zip(table.texts, table.pairs, table.labels):
            h.update(f"{label}\t{json.dumps([text, pair])}\n".encode())
    return h.hexdigest()[:12]


def _validation_probabilities(
    run: Path, cfg: Config, table, digest: str, batch_size: int, device: str
) -> np.ndarray:
    """A member's probabilities on its validation rows (saved once, reused afterwards)."""
    from lorafit.data import encode
    from lorafit.predict import (
        _save_probabilities,
        infer_logits,
        load_run_model,
        prediction_key,
        read_scores,
        scores_of,
    )

    key = prediction_key(run, cfg, "fp32", device)  # the checkpoint, settings, dtype, device
    path = run / "predictions" / f"validation-{digest}-{key}.csv"
    if path.exists():
        probs = read_scores(path)
        if len(probs) == len(table):
            return probs
    model, tokenizer, cfg = load_run_model(run, device, "fp32")
    encoded = encode(tokenizer, table, cfg.model.max_length)
    probs = scores_of(
        cfg.task, infer_logits(model, encoded, batch_size, tokenizer.pad_token_id, device)
    )
    _save_probabilities(path, probs, cfg.task)
    return probs


def shared_validation(
    members, batch_size: int, device: str, what: str = "ensemble --method weighted"
):
    """(each member's probabilities on the members' shared validation rows, those rows); a
    one-line error when the members' validation splits differ."""
    splits = [(run, *_validation_set(run, cfg)) for run, cfg in members]
    first_run, first_val, first_digest = splits[0]
    for run, val, digest in splits[1:]:
        if digest != first_digest:
            raise UserError(
                f"{what}: the validation split of {run} ({len(val)} rows, "
                f"{digest}) differs from {first_run}'s ({len(first_val)} rows, {first_digest}); "
                "ensemble runs trained on the same split: the same data.train, data.validation, "
                "data.val_size, data.test_size and data.split_seed (train.seed when it is unset)"
                + (", or use --method mean" if what.endswith("weighted") else "")
            )
    probs = [
        _validation_probabilities(run, cfg, first_val, first_digest, batch_size, device)
        for run, cfg in members
    ]
    return probs, first_val


def validation_weights(members, batch_size: int, device: str) -> tuple[np.ndarray, dict]:
    """Weights fitted on the members' shared validation split, and that split's scores."""
    probs, first_val = shared_validation(members, batch_size, device)
    weights = fit_weights(probs, first_val.labels)
    uniform = np.full(len(probs), 1 / len(probs))
    scores = {
        "rows": len(first_val),
        "log_likelihood": log_likelihood(probs, first_val.labels, weights),
        "log_likelihood_uniform": log_likelihood(probs, first_val.labels, uniform),
        "accuracy": float(
            (mean_probabilities(probs, weights).argmax(-1) == first_val.labels).mean()
        ),
    }
    return weights, scores


# ---------------------------------------------------------------- the command


def _output_path(input_path: Path, output: str | None, method: str, overwrite: bool) -> Path:
    """The explicit --output (refused if it exists, unless overwrite) or a new default name."""
    if output:
        out = Path(output)
        if out.exists() and not overwrite:
            raise UserError(f"{out}: already exists; choose another --output or pass --overwrite")
        if not out.parent.is_dir():
            raise UserError(
                f"{out}: folder {out.parent} does not exist; create it or choose another --output"
            )
        return out
    stem = f"ensemble-{method}-{input_path.stem}"
    out, n = Path(f"{stem}.csv"), 1
    while out.exists():  # a default name never replaces an earlier file
        n += 1
        out = Path(f"{stem}-{n}.csv")
    return out


def ensemble(
    run_dirs: list[str | Path],
    input: str,
    output: str | None = None,
    method: str = "mean",
    *,
    batch_size: int = 64,
    overwrite: bool = False,
    device: str | None = None,
    dtype: str = "auto",
    text_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    label_format: str | None = None,
    threads: int | str | None = None,
) -> dict:
    """Combine the members' predictions on `input` and write the submission CSV (`ID,Label`).

    Args:
        run_dirs: two or more run directories trained on the same classes.
        input: the file to label (as for `lorafit predict`).
        output: submission path; default `./ensemble-<method>-<input stem>.csv`, never
            overwritten. An existing explicit `output` needs `overwrite=True`.
        method: `mean`, `weighted` (weights fitted on the shared validation split) or `vote`.
        dtype: the members' weights' dtype on `input` (`auto`, `fp32`, `bf16`, as `lorafit
            predict --dtype`); the validation rows that fit `weighted` are always fp32.
        text_column: the input's text column when it differs from the members'
            `data.text_column` (CLI: `--text-column`).
        label_column: the input's label column when it differs from the members'
            `data.label_column` (CLI: `--label-column`).
        id_column: as for `lorafit.predict`: the input's id column, passed through.
        label_format: as for `lorafit.predict`: `names` or `ids` in the Label column (default:
            the first member's `data.label_format`, ids for runs made before lorafit knew
            label names).
        threads: CPU threads, `auto` by default (as `train.threads`; CLI `--threads`).

    Returns:
        `{"output", "rows", "method", "dtype", "members": [{"run_dir", "weight", "accuracy"}],
        "accuracy", "validation"}`; accuracies only when `input` has labels, `validation`
        (the fitted weights' validation scores) only for `weighted`.
    """
    from lorafit.predict import (
        _default_device,
        _existing_input,
        cpu_threads,
        inference_dtype,
        label_format_of,
        output_labels,
        predict_table,
        predicted_labels,
        write_submission,
    )

    if method not in METHODS:
        raise UserError(f"--method {method}: choose one of {', '.join(METHODS)}")
    inference_dtype(dtype)  # a bad --dtype fails before any member runs
    members = _members(run_dirs)
    task = members[0][1].task
    if task == "regression" and method != "mean":
        raise UserError(
            f"ensemble --method {method}: combines class probabilities; a regression ensemble "
            "averages its members' values: use --method mean"
        )
    if task == "multi_label" and method != "mean":
        raise UserError(
            f"ensemble --method {method}: combines one class a row; a multi-label ensemble "
            "averages each label's probability: use --method mean"
        )
    chosen_format = label_format_of(members[0][1], label_format)  # a bad --label-format fails first
    input = _existing_input(input)
    out = _output_path(Path(input), output, method, overwrite)
    device = device or _default_device()
    cpu_threads(threads, device, "the ensemble")
    probs, table = [], None
    for run, _ in members:
        p, table, _, _ = predict_table(
            run,
            input,
            batch_size,
            device,
            dtype=dtype,
            text_column=text_column,
            label_column=label_column,
            id_column=id_column,
        )
        probs.append(p)
    assert table is not None  # two or more members (_members)
    result: dict[str, Any] = {
        "output": str(out),
        "rows": len(table),
        "method": method,
        "dtype": dtype,
        "members": [{"run_dir": str(r)} for r, _ in members],
    }
    weights = None
    if method == "weighted":
        weights, result["validation"] = validation_weights(members, batch_size, device)
        for member, w in zip(result["members"], weights):
            member["weight"] = float(w)
    if task == "multi_label":
        return _multilabel_ensemble(
            result, members, probs, table, out, chosen_format, batch_size, device, id_column
        )
    if task == "regression":
        values = mean_probabilities(probs)
        write_submission(
            out,
            predicted_labels(values, members[0][1], chosen_format),
            table.ids,
            id_column or "ID",
        )
        if table.labels is not None:
            from lorafit.metrics import regression_metrics

            for member, p in zip(result["members"], probs):
                member["pearson"] = regression_metrics(p[:, 0], table.labels)["pearson"]
            result["pearson"] = regression_metrics(values[:, 0], table.labels)["pearson"]
        return result
    labels = (
        majority_vote(probs) if method == "vote" else mean_probabilities(probs, weights).argmax(-1)
    )
    write_submission(
        out, output_labels(labels, members[0][1], chosen_format), table.ids, id_column or "ID"
    )
    if table.labels is not None:
        for member, p in zip(result["members"], probs):
            member["accuracy"] = float((p.argmax(-1) == table.labels).mean())
        result["accuracy"] = float((labels == table.labels).mean())
    return result


def _multilabel_ensemble(
    result, members, probs, table, out, label_format, batch_size, device, id_column
) -> dict:
    """The mean of the members' label probabilities, decided at thresholds tuned again on the
    members' shared validation split; members' and ensemble's macro-F1 on a labelled input."""
    from lorafit.metrics import multilabel_metrics, tune_thresholds
    from lorafit.predict import predicted_labels, run_thresholds, write_submission

    cfg = members[0][1]
    val_probs, val = shared_validation(
        members, batch_size, device, "a multi-label ensemble's thresholds"
    )
    average = "micro" if cfg.train.metric == "eval_micro_f1" else "macro"
    thresholds = tune_thresholds(
        mean_probabilities(val_probs), val.labels, cfg.train.threshold, average
    )
    mean = mean_probabilities(probs)
    write_submission(
        out, predicted_labels(mean, cfg, label_format, thresholds), table.ids, id_column or "ID"
    )
    result["thresholds"] = [float(t) for t in thresholds]
    result["validation"] = {
        "rows": len(val),
        "macro_f1": multilabel_metrics(
            mean_probabilities(val_probs), val.labels, cfg.data.label_names, thresholds
        )["macro_f1"],
    }
    if table.labels is not None:
        names = cfg.data.label_names
        for member, (run, member_cfg), p in zip(result["members"], members, probs):
            member["macro_f1"] = multilabel_metrics(
                p, table.labels, names, run_thresholds(run, member_cfg)
            )["macro_f1"]
        result["macro_f1"] = multilabel_metrics(mean, table.labels, names, thresholds)["macro_f1"]
    return result


def format_result(result: dict) -> str:
    """The members (weight, accuracy) and the ensemble, as printed by the CLI."""
    label = f"ensemble ({result['method']})"
    width = max(len(label), *(len(m["run_dir"]) for m in result["members"]))  # the columns line up
    # a regression's members: Pearson; a multi-label run's: macro-F1
    score = next(
        (k for k in ("pearson", "macro_f1") if k in result or k in result["members"][0]), "accuracy"
    )
    lines = [f"{'member':<{width}}  {'weight':>7}  {score:>8}"]
    for m in result["members"]:
        weight = f"{m['weight']:.4f}" if "weight" in m else "-"
        acc = f"{m[score]:.4f}" if score in m else "-"
        lines.append(f"{m['run_dir']:<{width}}  {weight:>7}  {acc:>8}")
    acc = f"{result[score]:.4f}" if score in result else "-"
    lines.append(f"{label:<{width}}  {'':>7}  {acc:>8}")
    if "thresholds" in result:
        shown = sorted(set(result["thresholds"]))
        v = result["validation"]
        lines.append(
            f"thresholds tuned on {v['rows']} validation rows (macro-F1 {v['macro_f1']:.4f}): "
            + (f"{shown[0]:g}" if len(shown) == 1 else f"{shown[0]:g}-{shown[-1]:g}, one per label")
        )
    elif "validation" in result:
        v = result["validation"]
        lines.append(
            f"weights fitted on {v['rows']} validation rows: mean log-likelihood "
            f"{v['log_likelihood']:.4f} (equal weights {v['log_likelihood_uniform']:.4f}), "
            f"accuracy {v['accuracy']:.4f}"
        )
    lines.append(f"wrote {result['rows']} labels to {result['output']}")
    return "\n".join(lines)
