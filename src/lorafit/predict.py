"""Prediction: load a run's best checkpoint, merge LoRA, and label a file.

    lorafit predict runs/run-20261122-101500 --input test_unlabelled.pkl --output submission.csv

Writes the competition's submission CSV (`ID,Label`, ID = row order from 0) and the per-row
class probabilities to `RUN_DIR/predictions/<stem>-<sha12>-<key10>.csv`, which a later
`predict`, `evaluate` or `ensemble` reuses. `<sha12>` hashes the input file; `<key10>` hashes
everything else that changes the probabilities (see `prediction_key`): the checkpoint's
contents, the model settings (max length, head, pooling), the weights' dtype, the device
type and the text column. So `--dtype fp32` after a bf16 prediction, or a retrained
checkpoint, computes afresh instead of serving the old figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError

from lorafit.config import Config, load_config
from lorafit.cores import tick, use_threads
from lorafit.data import (
    Encoded,
    encode,
    file_digest,
    length_sorted_batches,
    load_table,
    resolve_source,
)
from lorafit.data.tokens import batch_inputs
from lorafit.errors import UserError
from lorafit.metrics import format_metrics, multilabel_metrics, sigmoid, softmax, task_metrics
from lorafit.rundir import require_run_dir, write_atomic, write_json

log = logging.getLogger("lorafit")


@torch.inference_mode()
def infer_logits(
    model,
    encoded: Encoded,
    batch_size: int,
    pad_id: int,
    device,
    autocast=nullcontext,
    forward=None,
) -> np.ndarray:
    """Logits for every row, in the input's order, from length-sorted batches.

    `forward(idx)` gives the logits of the rows `idx`; by default the whole model on their
    token ids padded to the batch's longest row (`fastpath.EvalPrefix` passes one that starts
    from stored states). Not to a multiple of 8 as in training: length-sorted batches come in
    widths that only shrink, which the heap reuses (flat over 66,191 rows), and the extra
    padding cost prediction 6% of its time.
    """
    if forward is None:

        def forward(idx):
            return model(**batch_inputs(encoded, idx, pad_id, device, multiple=1)).logits

    out = np.zeros((len(encoded.ids), model.config.num_labels), dtype=np.float32)
    for idx in length_sorted_batches(encoded.lengths, batch_size):
        tick()  # under auto threads: follow the cores other processes leave free
        with autocast():
            logits = forward(idx)
        out[idx] = logits.float().cpu().numpy()
    return out


def load_run_model(run_dir: str | Path, device: str = "cpu", dtype: str = "fp32"):
    """(merged model in eval mode, tokenizer, config) from a run's best checkpoint.

    `dtype` (fp32, bf16 or auto, see `inference_dtype`) is the weights' dtype after merging;
    int8 quantises the encoder's linear layers afterwards (see `quantize_int8`).
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    from lorafit.heads import install_head
    from lorafit.model import (
        TOKENIZER_FILES,
        _load_weights,
        load_model_config,
        load_plain_checkpoint,
    )

    run = require_run_dir(run_dir, "checkpoint-best")
    best = run / "checkpoint-best"
    if not any((best / name).is_file() for name in TOKENIZER_FILES):
        # transformers would build an empty tokenizer that reads every word as unknown
        raise UserError(
            f"{best}: incomplete checkpoint (no tokenizer files: {', '.join(TOKENIZER_FILES[:3])}, ...); "
            "train the run again (or copy the tokenizer of model.name into it)"
        )
    cfg = load_config(run / "config.yaml")
    model_config = load_model_config(cfg)
    base = _load_weights(cfg, model_config)
    install_head(
        base, cfg.model.head, cfg.model.head_rank, model_config, cfg.model.pooling
    )  # before the head's weights load
    try:
        if cfg.lora.mode == "lora":
            model = PeftModel.from_pretrained(base, run / "checkpoint-best").merge_and_unload()
        else:  # lora.mode full / bias_only: the whole model was saved
            model = load_plain_checkpoint(base, run / "checkpoint-best")
        tokenizer = AutoTokenizer.from_pretrained(run / "checkpoint-best")
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(
            f"{run / 'checkpoint-best'}: damaged or incomplete checkpoint ({type(e).__name__}: {first[:200]}); "
            "train the run again (or `lorafit train --resume` it if it was interrupted)"
        ) from None
    model = model.to(device=device, dtype=inference_dtype(dtype, device)).eval()
    if dtype == "int8":
        model = quantize_int8(model)
    elif cfg.task == "regression" and inference_dtype(dtype, device) != torch.float32:
        head_in_fp32(model)
    return model, tokenizer, cfg


def head_in_fp32(model: torch.nn.Module) -> None:
    """The head of a bf16 model back in fp32, its inputs cast up: a regression's values to
    fp32's precision (bf16 keeps 3 significant digits: 4.0 to 8.0 in steps of 0.03)."""
    from lorafit.heads import HEAD_MODULES

    def upcast(_module, args):
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    for name in HEAD_MODULES:
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            head.float().register_forward_pre_hook(upcast)


#: `predict --dtype` choices; auto = bf16 where the processor computes it natively; int8 only
#: when asked (its labels differ from fp32's on a few rows in a hundred: measure them first)
DTYPES = ("auto", "fp32", "bf16", "int8")


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """The encoder's linear layers as dynamic int8 (weights int8 per output channel, each
    batch's activations quantised on the fly), through torch's own dynamic quantisation; the
    classification head stays fp32. CPU only.

    torch marks `torch.ao.quantization` deprecated in favour of torchao, whose int8 path is
    slower than fp32 on a CPU without `torch.compile` (measured: README, "Prediction"); its
    warnings are silenced here, and a torch without it gets a clear error.
    """
    import warnings

    from lorafit.heads import is_head_parameter

    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError:
        raise UserError(
            f"--dtype int8: torch {torch.__version__} no longer has torch.ao.quantization; use --dtype bf16 or fp32"
        ) from None
    names = {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not is_head_parameter(name + ".weight")
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            model, dict.fromkeys(names, per_channel_dynamic_qconfig), inplace=True
        )


def inference_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """The weights' dtype for prediction: 'fp32', 'bf16', 'auto' or 'int8'.

    auto is bf16 on a GPU that supports it and on a CPU with native bf16 (AVX512-BF16 or
    AMX), else fp32; int8 loads fp32 weights, which `quantize_int8` then quantises (CPU
    only). Measured (README, "Speed"): on 7,600 AG News rows a trained MiniLM in bf16 changed
    7 labels (0.09%) and no probability by more than 0.008, accuracy 0.7324 vs 0.7325, at
    2.9x the rows per second of fp32 on this AVX512-BF16 CPU.
    """
    from lorafit.flops import cpu_supports_bf16

    if name not in DTYPES:
        raise UserError(f"--dtype {name}: must be one of {', '.join(DTYPES)}")
    if name == "int8" and torch.device(device).type != "cpu":
        raise UserError(
            "--dtype int8: runs on the CPU only (torch's dynamic quantisation); use bf16 or fp32 on a GPU"
        )
    if name in ("fp32", "int8"):
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def _output_path(run: Path, input_path: Path, output: str | None, overwrite: bool) -> Path:
    if output:
        out = Path(output)
        if out.is_dir():
            raise UserError(
                f"{out}: is a folder; give a file path to --output, e.g. {out / 'submission.csv'}"
            )
        if out.exists() and not out.is_file():  # e.g. /dev/full: never replaced by a rename
            raise UserError(f"{out}: is not a regular file; give a file path to --output")
        if out.exists() and not overwrite:
            raise UserError(f"{out}: already exists; choose another --output or pass --overwrite")
        if out.parent.exists() and not out.parent.is_dir():
            raise UserError(f"{out}: {out.parent} is a file, not a folder; choose another --output")
        if not out.parent.is_dir():
            raise UserError(
                f"{out}: folder {out.parent} does not exist; create it or choose another --output"
            )
        return out
    stem = f"submission-{input_path.stem}"
    out, n = run / f"{stem}.csv", 1
    while out.exists():  # a default name never replaces an earlier file
        n += 1
        out = run / f"{stem}-{n}.csv"
    return out


def predict_table(
    run_dir: str | Path,
    input_path: str,
    batch_size: int = 64,
    device: str = "cpu",
    need_labels: bool = False,
    dtype: str = "auto",
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
):
    """(probabilities, table, config, probabilities file) for a file; a regression's
    "probabilities" are its predicted values [rows, 1] (see `scores_of`).

    Saved probabilities are reused only when their key (`prediction_key`) matches, i.e. the
    same input bytes, checkpoint, model settings, dtype, device type and text column.
    `text_column` / `label_column` name the input's columns when they differ from the run's
    `data.text_column` / `data.label_column` (the returned config carries them).
    """
    run = Path(run_dir)
    cfg = with_columns(load_config(require_run_dir(run) / "config.yaml"), text_column, label_column)
    table = read_input(input_path, cfg, need_labels=need_labels, id_column=id_column)
    empty = sum(not t.strip() for t in table.texts)
    if empty:
        log.warning("%s: %d rows have empty text; they still get a prediction", input_path, empty)
    saved = probabilities_path(run, Path(input_path), prediction_key(run, cfg, dtype, device))
    if saved.exists():
        probs = read_scores(saved)
        if len(probs) == len(table):
            return probs, table, cfg, saved
    probs = table_probabilities(run, table, batch_size, device, dtype)
    _save_probabilities(saved, probs, cfg.task)
    return probs, table, cfg, saved


def table_probabilities(run: Path, table, batch_size: int, device: str, dtype: str) -> np.ndarray:
    """Class probabilities [rows, classes] (a regression: values [rows, 1]) of a `TextTable`
    from a run's best checkpoint."""
    model, tokenizer, cfg = load_run_model(run, device, dtype)
    encoded = encode(tokenizer, table, cfg.model.max_length)
    if encoded.truncated:
        log.info(
            "%s: %d of %d texts truncated to %d tokens",
            table.source,
            encoded.truncated,
            len(table),
            cfg.model.max_length,
        )
    return scores_of(
        cfg.task, infer_logits(model, encoded, batch_size, tokenizer.pad_token_id, device)
    )


def scores_of(task: str, logits: np.ndarray) -> np.ndarray:
    """What a run's outputs mean: class probabilities (softmax), each label's probability
    (multi-label: sigmoid), or a regression's values as they are."""
    if task == "regression":
        return logits.astype(np.float32)
    return sigmoid(logits) if task == "multi_label" else softmax(logits)


def run_thresholds(run: Path, cfg: Config) -> np.ndarray | None:
    """A multi-label run's decision thresholds (checkpoint-best/thresholds.json), in label
    order; None for the other tasks."""
    if cfg.task != "multi_label":
        return None
    path = Path(run) / "checkpoint-best" / "thresholds.json"
    try:
        saved = json.loads(path.read_text())
        return np.array([float(saved[n]) for n in cfg.data.label_names])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{path}: missing or damaged (a multi-label run decides at the thresholds saved there); "
            "train the run again"
        ) from None


def scores_metrics(cfg: Config, scores: np.ndarray, labels: np.ndarray, thresholds=None) -> dict:
    """The metrics of a run's task on `scores` (from `scores_of`) against the labels; a
    multi-label run's at `thresholds` (`run_thresholds`)."""
    if cfg.task == "multi_label":
        return multilabel_metrics(scores, labels, cfg.data.label_names, thresholds)
    outputs = scores if cfg.task == "regression" else np.log(scores + 1e-12)
    return task_metrics(cfg.task, outputs, labels, cfg.data.label_names)


def predicted_labels(scores: np.ndarray, cfg: Config, label_format: str, thresholds=None) -> list:
    """What `predict` writes: class names or ids (see `output_labels`), a regression's values
    (6 significant digits), or a multi-label row's labels at `thresholds`, comma-separated
    (empty for none)."""
    if cfg.task == "regression":
        return [float(f"{v:.6g}") for v in scores[:, 0]]
    if cfg.task == "multi_label":
        chosen = scores >= np.asarray(thresholds)[None, :]
        show = (lambda i: str(i)) if label_format == "ids" else (lambda i: cfg.data.label_names[i])
        return [",".join(show(i) for i in np.flatnonzero(row)) for row in chosen]
    return output_labels(scores.argmax(-1), cfg, label_format)


def read_scores(path: Path) -> np.ndarray:
    """The probabilities (`prob_0`..) or regression values (`value`) of a saved predictions file."""
    return pd.read_csv(path).filter(regex=r"^(prob_\d+|value)$").to_numpy(dtype=np.float32)


def with_columns(
    cfg: Config, text_column: str | list[str] | None, label_column: str | None
) -> Config:
    """`cfg` with the input's column names (`--text-column`, `--label-column`) where given; a
    pair's two text columns as a list or as 'first,second'."""
    if isinstance(text_column, str) and "," in text_column:
        text_column = [c.strip() for c in text_column.split(",")]
    changes: dict[str, Any] = {
        k: v for k, v in (("text_column", text_column), ("label_column", label_column)) if v
    }
    return (
        dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **changes)) if changes else cfg
    )


# the data layer's advice names config keys, which predict / evaluate / ensemble do not take
_COLUMN_ADVICE = {
    "set data.text_column / data.label_column": "pass --text-column NAME --label-column NAME (Python: text_column=, label_column=)",
    "set data.text_column": "pass --text-column NAME (Python: text_column=)",
    "set data.label_column": "pass --label-column NAME (Python: label_column=)",
}


def read_input(
    input_path: str, cfg: Config, *, need_labels: bool = False, id_column: str | None = None
):
    """The input file as a `TextTable`; a missing column's message names the option that works."""
    try:
        return load_table(
            input_path,
            cfg.data,
            split="test",
            need_labels=need_labels,
            allow_empty_text=True,
            id_column=id_column,
        )
    except UserError as e:
        message = str(e)
        for key_advice, option_advice in _COLUMN_ADVICE.items():  # longest first
            if message.endswith(key_advice):
                raise UserError(message[: -len(key_advice)] + option_advice) from None
        raise


def prediction_key(run: Path, cfg: Config, dtype: str, device: str | torch.device) -> str:
    """10 hex digits naming what the probabilities depend on besides the input's bytes.

    The checkpoint's contents (every file but the model card), the model settings (name,
    max length, head, pooling...), the weights' dtype as resolved (`auto` -> bf16 or fp32),
    the device type and the text column.
    """
    parts = {
        "checkpoint": checkpoint_digest(run / "checkpoint-best"),
        "model": dataclasses.asdict(cfg.model),
        "dtype": "int8" if dtype == "int8" else str(inference_dtype(dtype, device)),
        "device": torch.device(device).type,
        "text_column": cfg.data.text_column,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


_DIGESTS: dict[tuple, str] = {}


def checkpoint_digest(folder: Path) -> str:
    """sha256 of a checkpoint folder's files (names and bytes; README.md, the card, left out).

    Remembered in this process per (name, size, mtime) of the files, so an ensemble of many
    inputs hashes each checkpoint once.
    """
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != "README.md")
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp not in _DIGESTS:
        h = hashlib.sha256()
        for p in files:
            h.update(f"{p.relative_to(folder)}\0{p.stat().st_size}\0".encode())
            h.update(file_digest(p).encode())
        _DIGESTS[stamp] = h.hexdigest()
    return _DIGESTS[stamp]


def probabilities_path(run: Path, input_path: Path, key: str) -> Path:
    """`RUN_DIR/predictions/<input stem>-<input sha12>-<key>.csv`."""
    return run / "predictions" / f"{input_path.stem}-{file_digest(input_path)[:12]}-{key}.csv"


def _save_probabilities(path: Path, probs: np.ndarray, task: str = "classification") -> None:
    path.parent.mkdir(exist_ok=True)
    if task == "regression":  # ID, value
        frame = pd.DataFrame({"value": probs[:, 0]})
    else:
        frame = pd.DataFrame(probs, columns=[f"prob_{i}" for i in range(probs.shape[1])])
        if task == "classification":  # a multi-label row's labels depend on the run's thresholds
            frame.insert(0, "Label", probs.argmax(-1))
    frame.insert(0, "ID", np.arange(len(probs)))
    write_atomic(path, frame.to_csv(index=False, float_format="%.6g"))


#: `predict --label-format` choices (None: the run's data.label_format)
LABEL_FORMATS = ("names", "ids")


def label_format_of(cfg: Config, label_format: str | None) -> str:
    """names or ids: the one asked for, else the run's data.label_format. A run made before
    lorafit learned label names (its config says auto) wrote ids."""
    if label_format is not None and label_format not in LABEL_FORMATS:
        raise UserError(f"--label-format {label_format}: must be names or ids")
    chosen = label_format or cfg.data.label_format
    return "ids" if chosen == "auto" else chosen


def output_labels(pred: np.ndarray, cfg: Config, label_format: str) -> list:
    """Predicted class ids as the run's label names, or as the ids themselves."""
    if label_format == "ids":
        return [int(i) for i in pred]
    return [cfg.data.label_names[int(i)] for i in pred]


def write_submission(path: Path, labels, ids=None, id_name: str = "ID") -> None:
    """`ID,Label` (ID = row order from 0), or the input's id column and Label."""
    frame = pd.DataFrame(
        {id_name: np.arange(len(labels)) if ids is None else ids, "Label": list(labels)}
    )
    write_atomic(path, frame.to_csv(index=False))


def predict(
    run_dir: str | Path,
    input: str | None = None,
    output: str | None = None,
    *,
    batch_size: int = 64,
    overwrite: bool = False,
    device: str | None = None,
    dtype: str = "auto",
    text_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    label_format: str | None = None,
    texts: list[str] | None = None,
    pairs: list[str] | None = None,
    threads: int | str | None = None,
) -> dict:
    """Label `input` with a run's best checkpoint and write the submission CSV.

    Returns `{"output", "probabilities", "rows", "metrics"}` (metrics only when the input has
    labels). A default output (`RUN_DIR/submission-<stem>.csv`) never replaces a file.
    `text_column` / `label_column` name the input's columns when they differ from the run's
    `data.text_column` / `data.label_column` (CLI: `--text-column`, `--label-column`).
    The output holds `ID,Label`: ID is the row number from 0, or the values of `id_column`
    (under its own name); Label is the class name, or its id with `label_format="ids"`
    (default: the run's data.label_format, see the README); a `task: regression` run's Label
    is the predicted number (and its "probabilities" the values, one column).

    `texts=[...]` (and `pairs=[...]` for a pair task) classifies strings in memory instead of
    a file: nothing is written, and the result is `{"labels", "probabilities", "rows"}`.
    `threads`: CPU threads, `auto` by default (see `train.threads`; CLI `--threads`).
    """
    run = require_run_dir(run_dir, "checkpoint-best")
    cpu_threads(threads, device, "prediction")
    if texts is not None:
        return _predict_texts(
            run, texts, pairs, batch_size, device or _default_device(), dtype, label_format
        )
    if input is None:
        raise UserError("predict: give an input file (--input), or texts=[...] in Python")
    input = _existing_input(input)
    out = _output_path(run, Path(input), output, overwrite)
    probs, table, cfg, saved = predict_table(
        run,
        input,
        batch_size,
        device or _default_device(),
        dtype=dtype,
        text_column=text_column,
        label_column=label_column,
        id_column=id_column,
    )
    thresholds = run_thresholds(run, cfg)
    labels = predicted_labels(probs, cfg, label_format_of(cfg, label_format), thresholds)
    write_submission(out, labels, table.ids, id_column or "ID")
    result = {"output": str(out), "probabilities": str(saved), "rows": len(table)}
    if table.labels is not None:
        result["metrics"] = scores_metrics(cfg, probs, table.labels, thresholds)
    return result


def evaluate(
    run_dir: str | Path,
    input: str,
    *,
    batch_size: int = 64,
    device: str | None = None,
    dtype: str = "auto",
    text_column: str | None = None,
    label_column: str | None = None,
    threads: int | str | None = None,
) -> dict:
    """Score a run on a labelled file; also saved to `RUN_DIR/evaluations/<stem>-<sha12>.json`.

    `text_column` / `label_column` / `threads` as for `predict` (CLI: `--text-column`, ...).
    """
    run = require_run_dir(run_dir, "checkpoint-best")
    cpu_threads(threads, device, "evaluation")
    input = _existing_input(input)
    # need_labels: an unlabelled file fails before anything is computed or saved
    probs, table, cfg, _ = predict_table(
        run,
        input,
        batch_size,
        device or _default_device(),
        need_labels=True,
        dtype=dtype,
        text_column=text_column,
        label_column=label_column,
    )
    metrics = scores_metrics(cfg, probs, table.labels, run_thresholds(run, cfg))
    metrics["input"] = str(input)
    (run / "evaluations").mkdir(exist_ok=True)
    write_json(run / "evaluations" / f"{Path(input).stem}-{file_digest(input)[:12]}.json", metrics)
    return metrics


def _predict_texts(
    run: Path, texts, pairs, batch_size: int, device: str, dtype: str, label_format: str | None
) -> dict:
    from lorafit.config import text_columns
    from lorafit.data import TextTable

    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise UserError("predict: texts must be a list of strings")
    cfg = load_config(run / "config.yaml")
    is_pair = len(text_columns(cfg.data.text_column)) == 2
    if is_pair != (pairs is not None):
        raise UserError(
            "predict: this run reads sentence pairs; give pairs=[...] beside texts=[...]"
            if is_pair
            else "predict: this run reads single texts; leave out pairs="
        )
    if pairs is not None and len(pairs) != len(texts):
        raise UserError(
            f"predict: {len(texts)} texts but {len(pairs)} pairs; give one pair per text"
        )
    if not texts:
        raise UserError("predict: texts is empty; give at least one text")
    table = TextTable(list(texts), None, "texts", None if pairs is None else list(pairs))
    probs = table_probabilities(run, table, batch_size, device, dtype)
    labels = predicted_labels(
        probs, cfg, label_format_of(cfg, label_format or "names"), run_thresholds(run, cfg)
    )
    return {"labels": labels, "probabilities": probs, "rows": len(table)}


def cpu_threads(threads: int | str | None, device: str | None, what: str) -> None:
    """Choose the CPU thread count for a command that computes on `device` (see lorafit.cores)."""
    if torch.device(device or _default_device()).type == "cpu":
        use_threads(threads, what)


def _existing_input(input: str) -> str:
    path = resolve_source(str(input))
    if not Path(path).exists():
        raise UserError(
            f"--input {input}: file not found; give a .csv, .tsv, .parquet, .jsonl or .pkl file"
        )
    return path


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = ["predict", "evaluate", "infer_logits", "load_run_model", "format_metrics", "Config"]
