"""Config loading: every shipped file loads, overrides apply, bad keys and values name the key."""

from __future__ import annotations

import pytest

from lorafit.config import config_reference, load_config, parse_layers
from lorafit.errors import UserError

from .conftest import ROOT

SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.budget == 1_000_000


def test_seed_recipe_values():
    cfg = load_config(ROOT / "configs" / "agnews_roberta_latent.yaml")
    assert (cfg.model.name, cfg.data.train, cfg.data.val_size) == (
        "roberta-base",
        "fancyzhx/ag_news",
        640,
    )
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 16, 0.1)
    assert cfg.lora.target_modules == ["query", "value"] and parse_layers(cfg.lora.layers, 12) == [
        9,
        10,
        11,
    ]
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size) == ("adamw", 2e-4, 32)
    assert (cfg.train.warmup_ratio, cfg.train.eval_every, cfg.train.patience) == (0.1, 500, 3)


def test_overrides_apply_with_types():
    cfg = load_config(
        None, ["train.lr=3e-4", "lora.layers=[9, 11]", "train.max_steps=7", "data.test=null"]
    )
    assert cfg.train.lr == 3e-4 and cfg.train.max_steps == 7 and cfg.data.test is None
    assert parse_layers(cfg.lora.layers, 12) == [9, 11]


@pytest.mark.parametrize(
    "override, message",
    [
        ("lora.rank=4", "unknown key 'lora.rank'"),
        ("nope=1", "unknown key 'nope'"),
        ("train.batch_size=big", "key 'train.batch_size'"),
        ("train.optimizer=sgd", "train.optimizer: must be adamw or lion"),
        ("lora.dropout=1.5", "lora.dropout: must be in [0, 1)"),
        ("lora.layers=11-9", "runs backwards"),
        ("data.val_size=0", "data.val_size"),
        ("run.name=a/b", "run.name"),
        ("train.lr", "is not key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(")", r"\)")):
        load_config(None, [override])


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: 1e-3\n  epochz: 2\n")
    with pytest.raises(UserError, match=r"bad.yaml.*unknown key 'train.epochz'"):
        load_config(path)


@pytest.mark.parametrize(
    "override, guess",
    [
        ("lora.rank=8", "lora.r"),  # an alias: the word other tools use
        ("train.learning_rate=1e-3", "train.lr"),
        ("train.num_train_epochs=2", "train.epochs"),
        ("epochs=2", "train.epochs"),  # the section left out
        ("train.max_length=64", "model.max_length"),  # the wrong section
        ("train.lrr=1", "train.lr"),  # a typo
        ("log.tensorbord=true", "log.tensorboard"),
        ("lora.sections=[{layers: 0-1, rank: 4}]", "lora.sections[].r"),  # inside a list item
    ],
)
def test_unknown_keys_suggest_the_known_one(override, guess):
    with pytest.raises(UserError) as e:
        load_config(None, [override])
    message = str(e.value)
    assert f"did you mean '{guess}'?" in message and "lorafit train --help" in message
    assert message.count("\n") == 0


def test_unknown_key_without_a_near_one_gets_no_guess(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(None, ["zzzz.qqqq=1"])
    assert "unknown key 'zzzz'; see `lorafit train --help`" in str(e.value)
    path = tmp_path / "bad.yaml"
    path.write_text("lora:\n  rank: 4\n")  # the same suggestions for a config file
    with pytest.raises(
        UserError, match=r"bad.yaml.*unknown key 'lora.rank'; did you mean 'lora.r'\?"
    ):
        load_config(path)


def test_parse_layers():
    assert parse_layers("all", 12) is None
    assert parse_layers("9-11", 12) == [9, 10, 11]
    assert parse_layers("0-1,10", 12) == [0, 1, 10]
    assert parse_layers([3, 1], 12) == [1, 3]
    with pytest.raises(ValueError, match="out of range"):
        parse_layers("10-12", 12)


def test_every_key_has_help():
    for key, _default, help_text in config_reference():
        assert help_text, key


@pytest.mark.parametrize(
    "distill, alone, documented",
    [
        ("agnews_distill.yaml", "agnews_best.yaml", ["train.epochs=2"]),
        ("agnews_mpnet_distill.yaml", "agnews_mpnet_best.yaml", []),
    ],
)
def test_a_distillation_recipe_is_its_student_recipe_plus_a_teacher(distill, alone, documented):
    """The gain a distillation recipe reports is over the recipe it names: without the teacher
    and the unlabelled texts, the two configs train the same model the same way, but for the
    differences its comment and the README state (agnews_distill.yaml trains two epochs)."""
    from lorafit.config import config_to_dict

    off = [
        "train.teacher=null",
        "data.unlabeled=null",
        "data.unlabeled_min_confidence=0",
        "run.name=x",
    ]
    taught = load_config(ROOT / "configs" / distill)
    assert taught.train.teacher and taught.data.unlabeled
    student = config_to_dict(load_config(ROOT / "configs" / distill, off))
    assert student == config_to_dict(load_config(ROOT / "configs" / alone, [*off, *documented]))
    if documented:  # the difference is real: without it the two differ
        assert student != config_to_dict(load_config(ROOT / "configs" / alone, off))


# ---------------------------------------------------------------- every rule, at its boundary
# (mutation survivors of config.py): each rule's one-line message as a user reads it, the first
# refused value and the last accepted one, so a `>=` turned `>` or a message changed fails here.

IN = "must be in"
RULES = [
    # (overrides refused, the message after "config (the command-line overrides): ", overrides accepted)
    (["model.max_length=7"], "model.max_length: must be at least 8", ["model.max_length=8"]),
    (
        ["model.head=big"],
        "model.head: must be one of full, linear, lowrank, dense_lora",
        ["model.head=lowrank"],
    ),
    (["model.head_rank=0"], "model.head_rank: must be >= 1", ["model.head_rank=1"]),
    (
        ["model.pooling=max"],
        "model.pooling: must be first or mean",
        ["model.pooling=mean", "model.head=linear"],
    ),
    (
        ["model.pooling=mean"],
        "model.pooling: mean needs a lorafit head (model.head=linear, lowrank or dense_lora); the ",
        ["model.pooling=first"],
    ),
    (
        ["model.attn_implementation=flash"],
        "model.attn_implementation: must be auto, sdpa or eager",
        ["model.attn_implementation=eager"],
    ),
    (
        ["data.unlabeled_min_confidence=1.0"],
        f"data.unlabeled_min_confidence: {IN} [0, 1)",
        ["data.unlabeled_min_confidence=0.0"],
    ),
    (
        ["data.unlabeled_min_confidence=-0.1"],
        f"data.unlabeled_min_confidence: {IN} [0, 1)",
        ["data.unlabeled_min_confidence=0.99"],
    ),
    (
        ["data.unlabeled_share=1.0"],
        "data.unlabeled_share: must be in (0, 1) or null (every kept row)",
        ["data.unlabeled_share=0.99"],
    ),
    (
        ["data.unlabeled_share=0.0"],
        "data.unlabeled_share: must be in (0, 1) or null (every kept row)",
        ["data.unlabeled_share=0.01"],
    ),
    (
        ["data.val_size=0"],
        "data.val_size: must be > 0 (rows, or a fraction < 1)",
        ["data.val_size=1"],
    ),
    (["data.val_size=2.5"], "data.val_size: a count must be a whole number", ["data.val_size=0.5"]),
    (
        ["data.label_names=[a]"],
        "data.label_names: needs at least 2 classes (or [] for the training file's labels)",
        ["data.label_names=[a,b]"],
    ),
    (
        ["data.label_format=words"],
        "data.label_format: must be one of auto, names, ids",
        ["data.label_format=names"],
    ),
    (["data.quoting=all"], "data.quoting: must be auto or none", ["data.quoting=none"]),
    (
        ["data.test_size=0"],
        "data.test_size: must be > 0 (rows, or a fraction < 1)",
        ["data.test_size=1"],
    ),
    (
        ["data.test_size=10", "data.test=t.csv"],
        "data.test_size: holds out a test split from data.train; set either it or data.test, not both",
        ["data.test_size=10", "data.test=null"],
    ),
    (["data.columns=[]"], "data.columns: must name at least one column", ["data.columns=[a]"]),
    (["data.columns=[a,a]"], "data.columns: names a column twice", ["data.columns=[a,b]"]),
    (["data.max_train_rows=0"], "data.max_train_rows: must be positive", ["data.max_train_rows=1"]),
    (
        ["data.text_column=[a,b,c]"],
        "data.text_column: must be a column name or a list of two (a sentence pair: [sentence1, sentence2])",
        ["data.text_column=[a,b]"],
    ),
    (
        ["data.text_column=[a,a]"],
        "data.text_column: must be a column name or a list of two (a sentence pair: [sentence1, sentence2])",
        ["data.text_column=[a]"],
    ),
    (["data.augment_rate=0"], f"data.augment_rate: {IN} (0, 1]", ["data.augment_rate=1.0"]),
    (["data.augment_rate=1.01"], f"data.augment_rate: {IN} (0, 1]", ["data.augment_rate=0.01"]),
    (["data.augment_share=0"], f"data.augment_share: {IN} (0, 1]", ["data.augment_share=1.0"]),
    (["data.augment_share=1.5"], f"data.augment_share: {IN} (0, 1]", ["data.augment_share=0.5"]),
    (["lora.r=0"], "lora.r: must be >= 1", ["lora.r=1"]),
    (["lora.alpha=0"], "lora.alpha: must be > 0", ["lora.alpha=0.01"]),
    (["lora.dropout=1.0"], f"lora.dropout: {IN} [0, 1)", ["lora.dropout=0.0"]),
    (["lora.dropout=-0.1"], f"lora.dropout: {IN} [0, 1)", ["lora.dropout=0.99"]),
    (["lora.mode=half"], "lora.mode: must be one of lora, bias_only, full", ["lora.mode=full"]),
    (["lora.bias=some"], "lora.bias: must be none, all or lora_only", ["lora.bias=lora_only"]),
    (
        ["lora.target_modules=[]"],
        "lora.target_modules: must name at least one module (or be null for the default)",
        ["lora.target_modules=[query]"],
    ),
    (["train.lr=0"], "train.lr: must be > 0", ["train.lr=1e-9"]),
    (
        ["train.lora_plus_ratio=0"],
        "train.lora_plus_ratio: must be > 0",
        ["train.lora_plus_ratio=0.5"],
    ),
    (["train.layer_decay=0"], f"train.layer_decay: {IN} (0, 1]", ["train.layer_decay=1.0"]),
    (["train.layer_decay=1.1"], f"train.layer_decay: {IN} (0, 1]", ["train.layer_decay=0.01"]),
    (
        ["train.label_smoothing=1.0"],
        f"train.label_smoothing: {IN} [0, 1)",
        ["train.label_smoothing=0.0"],
    ),
    (
        ["train.label_smoothing=-0.1"],
        f"train.label_smoothing: {IN} [0, 1)",
        ["train.label_smoothing=0.5"],
    ),
    (["train.ema_decay=1.0"], f"train.ema_decay: {IN} [0, 1)", ["train.ema_decay=0.9999"]),
    (["train.ema_decay=-0.001"], f"train.ema_decay: {IN} [0, 1)", ["train.ema_decay=0"]),
    (
        ["train.distill_weight=1.1"],
        f"train.distill_weight: {IN} [0, 1]",
        ["train.distill_weight=1.0"],
    ),
    (
        ["train.distill_weight=-0.1"],
        f"train.distill_weight: {IN} [0, 1]",
        ["train.distill_weight=0.0"],
    ),
    (
        ["train.distill_temperature=0"],
        "train.distill_temperature: must be > 0",
        ["train.distill_temperature=0.1"],
    ),
    (["train.weight_decay=-0.1"], "train.weight_decay: must be >= 0", ["train.weight_decay=0"]),
    *[
        ([f"train.{k}=0"], f"train.{k}: must be >= 1", [f"train.{k}=1"])
        for k in ("batch_size", "eval_batch_size", "grad_accum", "eval_every", "log_every")
    ],
    (["train.max_grad_norm=-1"], "train.max_grad_norm: must be >= 0", ["train.max_grad_norm=0"]),
    (["train.threads=0"], "train.threads: must be auto or a positive integer", ["train.threads=1"]),
    (["train.max_steps=0"], "train.max_steps: must be >= 1", ["train.max_steps=1"]),
    (["train.epochs=0"], "train.epochs: must be > 0", ["train.epochs=0.5"]),
    (
        ["train.scheduler=step"],
        "train.scheduler: must be cosine, linear or constant",
        ["train.scheduler=constant"],
    ),
    (["train.warmup_ratio=1.0"], f"train.warmup_ratio: {IN} [0, 1)", ["train.warmup_ratio=0.0"]),
    (["train.warmup_ratio=-0.1"], f"train.warmup_ratio: {IN} [0, 1)", ["train.warmup_ratio=0.9"]),
    (["train.warmup_steps=-1"], "train.warmup_steps: >= 0", ["train.warmup_steps=0"]),
    (
        ["train.metric=eval_auc"],
        "train.metric: must be one of auto, eval_accuracy, eval_f1, eval_mcc, eval_precision, eval_recall, eval_loss, eval_pearson, eval_spearman, eval_macro_f1, eval_micro_f1",
        ["train.metric=eval_mcc"],
    ),
    (
        ["train.class_weights=inverse"],
        "train.class_weights: must be none or balanced",
        ["train.class_weights=balanced"],
    ),
    (["train.patience=0"], "train.patience: must be >= 1", ["train.patience=1"]),
    (
        ["train.checkpoint_every=-1"],
        "train.checkpoint_every: must be >= 0 (0 = only at the end)",
        ["train.checkpoint_every=0"],
    ),
    (["train.keep_last=0"], "train.keep_last: must be >= 1", ["train.keep_last=1"]),
    (
        ["train.mixed_precision=fp8"],
        "train.mixed_precision: must be auto, no, bf16 or fp16",
        ["train.mixed_precision=fp16"],
    ),
    (
        ["train.cache_activations=maybe"],
        "train.cache_activations: must be auto, true or false",
        ["train.cache_activations=false"],
    ),
    (["run.name=a/b"], "run.name: use letters, digits and . _ + - only", ["run.name=a.b_c+d-1"]),
    (
        ["log.trackers=[neptune]"],
        "log.trackers: 'neptune' is not one of tensorboard, mlflow, wandb, trackio, aim",
        ["log.trackers=[aim]"],
    ),
    (["budget=0"], "budget: must be >= 1", ["budget=1"]),
    (
        ["task=triage"],
        "task: must be one of classification, regression, multi_label",
        ["task=multi_label"],
    ),
    (
        ["train.metric=eval_spearman"],
        "train.metric: eval_spearman scores a regression; a classification selects by one of auto, eval_accuracy, eval_f1, eval_mcc, eval_precision, eval_recall, eval_loss",
        ["train.metric=eval_loss"],
    ),
    (
        ["task=regression", "train.metric=eval_f1"],
        "train.metric: eval_f1 scores classes; a regression selects by one of auto, eval_pearson, eval_spearman, eval_loss",
        ["task=regression", "train.metric=eval_spearman"],
    ),
    (
        ["task=regression", "data.label_names=[a,b]"],
        "data.label_names: a regression has one output: give at most one name for it (e.g. [similarity]), or [] for the label column's name",
        ["task=regression", "data.label_names=[a]"],
    ),
    (
        ["task=regression", "train.class_weights=balanced"],
        "train.class_weights: weighs classes; a regression has none: set it to none",
        ["task=regression", "train.class_weights=none"],
    ),
    (
        ["task=regression", "train.label_smoothing=0.01"],
        "train.label_smoothing: smooths class targets; a regression has none: set it to 0",
        ["task=regression", "train.label_smoothing=0"],
    ),
    (
        [
            "task=regression",
            "train.teacher=t",
            "data.unlabeled=u.csv",
            "data.unlabeled_min_confidence=0.01",
        ],
        "data.unlabeled_min_confidence: a regression teacher gives values, not confidences: set it to 0 (data.unlabeled_share chooses how many unlabelled rows join)",
        [
            "task=regression",
            "train.teacher=t",
            "data.unlabeled=u.csv",
            "data.unlabeled_min_confidence=0",
        ],
    ),
    (
        ["task=regression", "data.label_columns=[a,b]"],
        "data.label_columns: is for task: multi_label; a regression reads one label column",
        ["task=regression", "data.label_columns=null"],
    ),
    (
        ["data.label_columns=[a,b]"],
        "data.label_columns: is for task: multi_label (one 0/1 column per label); set task: multi_label or use data.label_column",
        ["data.label_columns=null"],
    ),
    (
        ["task=multi_label", "train.metric=eval_accuracy"],
        "train.metric: eval_accuracy is not a multi-label figure; a multi-label run selects by one of auto, eval_macro_f1, eval_micro_f1, eval_loss",
        ["task=multi_label", "train.metric=eval_micro_f1"],
    ),
    (
        ["task=multi_label", "data.label_names=[a]"],
        "data.label_names: needs at least 2 labels (or [] for the labels the training file holds)",
        ["task=multi_label", "data.label_names=[a,b]"],
    ),
    (
        ["task=multi_label", "train.class_weights=balanced"],
        "train.class_weights: is not used by a multi-label run yet: set it to none",
        ["task=multi_label", "train.class_weights=none"],
    ),
    (
        ["task=multi_label", "train.label_smoothing=0.1"],
        "train.label_smoothing: is not used by a multi-label run: set it to 0",
        ["task=multi_label", "train.label_smoothing=0"],
    ),
    (
        ["task=multi_label", "data.label_columns=[a]"],
        "data.label_columns: must name 2 or more different columns",
        ["task=multi_label", "data.label_columns=[a,b]"],
    ),
    (
        ["task=multi_label", "data.label_columns=[a,a]"],
        "data.label_columns: must name 2 or more different columns",
        ["task=multi_label", "data.label_columns=[a,b]"],
    ),
    (
        ["task=multi_label", "data.label_columns=[a,b]", "data.label_column=c"],
        "data.label_columns: replaces data.label_column: set one of them, not both",
        ["task=multi_label", "data.label_columns=[a,b]", "data.label_column=null"],
    ),
    (
        ["task=multi_label", "data.label_columns=[a,b]", "data.label_names=[b,a]"],
        "data.label_names: with data.label_columns the labels are those columns' names: leave data.label_names empty",
        ["task=multi_label", "data.label_columns=[a,b]", "data.label_names=[a,b]"],
    ),
    (
        ["train.threshold=0"],
        "train.threshold: must be global, per_label or a number in (0, 1)",
        ["train.threshold=per_label"],
    ),
    (
        ["train.threshold=1"],
        "train.threshold: must be global, per_label or a number in (0, 1)",
        ["train.threshold=0.99"],
    ),
    (
        ["train.threshold=half"],
        "train.threshold: must be global, per_label or a number in (0, 1)",
        ["train.threshold=0.01"],
    ),
    (
        ["data.unlabeled=u.csv"],
        "data.unlabeled: needs train.teacher (the teacher labels the unlabelled texts); set it or remove data.unlabeled",
        ["data.unlabeled=u.csv", "train.teacher=t"],
    ),
]


@pytest.mark.parametrize(("bad", "message", "good"), RULES, ids=[" ".join(r[0]) for r in RULES])
def test_each_rule_refuses_its_first_bad_value_in_one_line_and_takes_the_last_good_one(
    bad, message, good
):
    with pytest.raises(UserError) as e:
        load_config(None, bad)
    text = str(e.value)
    assert "\n" not in text
    prefix = "config (the command-line overrides): "
    assert text.startswith(prefix + message) and (
        message.endswith("the ") or text == prefix + message
    ), text
    load_config(None, good)
