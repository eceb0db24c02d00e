"""config.py's "did you mean" and loading paths, checked against what a user meant.

Used by the mutation run of config.py (`scripts/mutation.sh config`) with tests/test_config.py;
docs/project/mutation.md lists what survives and why.
"""

import pytest

from lorafit.config import known_keys, suggest_key


@pytest.mark.parametrize(
    "typed, meant",
    [
        ("lora.sections[2].rank", "lora.sections[2].r"),  # an alias inside a list item, index kept
        ("lora.sections[0].alpa", "lora.sections[0].alpha"),  # a typo inside a list item
        ("lora.sections[1].layer", "lora.sections[1].layers"),
        ("sections[0].r", "lora.r"),  # the section left out: the one key named r outside lists
        ("run.dropout", "lora.dropout"),  # the one key of that name, in another section
        ("train.r", "lora.r"),
        ("lr", "train.lr"),  # a top-level name that is a section's key
        ("Task", "task"),  # a top-level key in another case
        ("TASK", "task"),
        ("budgett", "budget"),
        ("train.lr_sched", "train.scheduler"),  # the closest key of the section typed
        ("train.warmup", "train.warmup_steps"),
        ("model.batchsize", "train.batch_size"),  # the closest name in any section
        ("evaluation.patience", "train.patience"),
        ("train.dropouts", "lora.dropout"),
        ("trainer.epochs", "train.epochs"),  # a typo in the section's name
        ("run.nme", "run.name"),  # two keys are called name: the section typed decides
        ("model.nam", "model.name"),
    ],
)
def test_a_mistyped_key_is_pointed_at_the_key_meant(typed, meant):
    assert suggest_key(typed) == meant


@pytest.mark.parametrize("typed", ["zzzz.qqqq", "train.zzz", "x.name"])
def test_a_key_nothing_resembles_gets_no_guess(typed):
    assert suggest_key(typed) is None


def test_a_known_key_is_never_corrected():
    keys = known_keys()
    assert len(keys) == len(set(keys)) > 70
    for key in keys:
        assert suggest_key(key) is None, key
    assert suggest_key("lora.sections[4].r") is None


# ------------------------------------------------------------ fields and the reference


def test_f_makes_fields_with_help_fresh_containers_and_options():
    from dataclasses import dataclass, fields

    from lorafit.config import _f

    @dataclass
    class Probe:
        items: list = _f([1, 2], "the items")
        names: dict = _f({"a": 1}, "the names")
        n: int = _f(3, "a number", repr=False)

    a, b = Probe(), Probe()
    assert a.items == [1, 2] and a.names == {"a": 1} and a.n == 3
    a.items.append(3)
    a.names["b"] = 2
    assert b.items == [1, 2] and b.names == {"a": 1}  # each instance its own copy
    assert [f.metadata["help"] for f in fields(Probe)] == ["the items", "the names", "a number"]
    assert "n=" not in repr(a)  # the keyword options reach the field


def test_config_reference_marks_a_required_key():
    from lorafit.config import LoraSection, config_reference

    assert config_reference(LoraSection, "lora.sections[].") == [
        (
            "lora.sections[].layers",
            "(required)",
            "layers of this section: '0-5', [0, 1, 2] or 'all'",
        ),
        ("lora.sections[].r", "8", "rank for this section"),
        ("lora.sections[].alpha", "16.0", "alpha for this section"),
        ("lora.sections[].dropout", "0.1", "dropout for this section"),
    ]


# ------------------------------------------------------------ loading and its messages


def _message(call, *args) -> str:
    from lorafit.errors import UserError

    with pytest.raises(UserError) as e:
        call(*args)
    return str(e.value)


@pytest.mark.parametrize(
    "section, message",
    [
        ("{layers: 0-1, r: 0}", "lora.sections[].r: must be >= 1"),
        ("{layers: 0-1, alpha: 0}", "lora.sections[].alpha: must be > 0"),
        ("{layers: 0-1, dropout: 1.0}", "lora.sections[].dropout: must be in [0, 1)"),
        (
            "{layers: x-y}",
            "lora.sections[].layers: cannot read 'x-y'; write 'all', '9-11' or [9, 10, 11]",
        ),
    ],
)
def test_a_sections_values_are_checked_by_their_key(section, message):
    from lorafit.config import load_config

    assert _message(load_config, None, [f"lora.sections=[{section}]"]) == (
        f"config (the command-line overrides): {message}"
    )
    cfg = load_config(None, ["lora.sections=[{layers: 0-1, r: 2, alpha: 4, dropout: 0}]"])
    assert (cfg.lora.sections[0].r, cfg.lora.sections[0].alpha) == (2, 4)


def test_a_wrong_type_names_the_key_and_an_empty_key_is_not_an_override():
    from lorafit.config import load_config

    assert _message(load_config, None, ["train.lr=abc"]) == (
        "config (the command-line overrides): key 'train.lr': Value 'abc' of type 'str' could "
        "not be converted to Float"
    )
    assert _message(load_config, None, ["=3"]) == (
        "override '=3' is not key=value (e.g. train.lr=3e-4)"
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"train:\n  lr: 1\n  epochs: [1,\n",
            "not valid YAML (line 4: did not find expected node content); fix the syntax",
        ),
        (
            b"train:\n  lr: 1\n   epochs: 2\n",
            "not valid YAML (line 3: mapping values are not allowed in this context); fix the syntax",
        ),
        (b"train:\n  lr: \xff\n", "not UTF-8 text; re-save it as UTF-8"),
        (
            b"- a\n- b\n",
            "holds a list, not a mapping; write keys such as 'train:' at the top level",
        ),
    ],
)
def test_a_bad_config_file_is_named_with_the_line_and_what_to_do(tmp_path, content, message):
    from lorafit.config import load_config

    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert _message(load_config, path) == f"config file {path}: {message}"


def test_as_config_takes_a_config_a_path_or_nothing(tmp_path):
    from lorafit.config import as_config, config_to_yaml, load_config

    cfg = load_config(None, ["train.epochs=3", "lora.r=4"])
    assert as_config(cfg) is cfg
    changed = as_config(cfg, ["train.lr=0.5"])
    assert (changed.train.lr, changed.train.epochs, changed.lora.r) == (0.5, 3, 4)
    assert cfg.train.lr != 0.5  # the config given is not changed
    assert _message(as_config, cfg, ["train.lrr=1"]) == (
        "config (the overrides): unknown key 'train.lrr'; did you mean 'train.lr'? see "
        "`lorafit train --help` for the keys"
    )
    assert (
        _message(as_config, cfg, ["train.lr=-1"]) == "config (the overrides): train.lr: must be > 0"
    )
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(cfg))  # the YAML written reads back as the same config
    assert as_config(path) == cfg
    assert as_config(str(path), ["lora.r=2"]).lora.r == 2
    assert as_config(None) == load_config()


def test_the_task_reaches_the_data_settings():
    from lorafit.config import load_config

    for task in ("regression", "multi_label", "classification"):
        assert load_config(None, [f"task={task}"]).data._task == task


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.head=full", "model.pooling=mean"],
            "model.pooling: mean needs a lorafit head (model.head=linear, lowrank or dense_lora); "
            "the model's own head (full) reads the first token",
        ),
        (
            ["model.attn_implementation=flash"],
            "model.attn_implementation: must be auto, sdpa or eager",
        ),
        (
            ["data.augment=bogus"],
            "data.augment: unknown kind 'bogus'; use word_dropout, word_swap, typo, synonym, mixed",
        ),
        (
            ["train.class_weights=balanced", "train.teacher=/x"],
            "train.class_weights: balanced is not used with train.teacher yet (the distillation "
            "loss has its own cross-entropy); set train.class_weights=none or remove train.teacher",
        ),
    ],
)
def test_settings_that_cannot_go_together_are_refused_word_for_word(overrides, message):
    from lorafit.config import load_config

    assert _message(load_config, None, overrides) == (
        f"config (the command-line overrides): {message}"
    )


def test_every_attention_kernel_named_is_accepted_and_a_missing_file_is_named(tmp_path):
    from lorafit.config import load_config

    for kernel in ("auto", "sdpa", "eager"):
        assert (
            load_config(None, [f"model.attn_implementation={kernel}"]).model.attn_implementation
            == kernel
        )
    path = tmp_path / "nope.yaml"
    assert _message(load_config, path) == (
        f"config file {path} not found; pass an existing YAML file to --config"
    )


def test_values_each_rule_accepts_load():
    from lorafit.config import load_config

    cfg = load_config(
        None,
        [
            "data.augment=word_dropout, typo",  # a comma list, spaces allowed
            "lora.bias=all",
            "train.optimizer=lion",
        ],
    )
    assert (cfg.data.augment, cfg.lora.bias, cfg.train.optimizer) == (
        "word_dropout, typo",
        "all",
        "lion",
    )
    assert load_config(None, ["lora.bias=lora_only"]).lora.bias == "lora_only"
    assert _message(load_config, None, ["lora.layers=x-y"]) == (
        "config (the command-line overrides): lora.layers: cannot read 'x-y'; write 'all', '9-11' "
        "or [9, 10, 11]"
    )


def test_text_columns_reads_a_name_a_pair_or_nothing():
    from lorafit.config import split_kinds, text_columns

    assert text_columns(None) == [] and text_columns("") == []
    assert text_columns("body") == ["body"] and text_columns(("a", "b")) == ["a", "b"]
    for bad in (5, ["a", "a"], ["a", "b", "c"], []):
        with pytest.raises(ValueError) as e:
            text_columns(bad)
        assert str(e.value) == (
            "data.text_column: must be a column name or a list of two (a sentence pair: "
            "[sentence1, sentence2])"
        )
    assert split_kinds(" word_dropout,typo ,, ") == ["word_dropout", "typo"]
    assert split_kinds(None) == [] and split_kinds("") == []


@pytest.mark.parametrize(
    "override, read",
    [
        ("train.scheduler=linear", ("train", "scheduler", "linear")),
        ("train.scheduler=constant", ("train", "scheduler", "constant")),
        ("train.mixed_precision=false", ("train", "mixed_precision", "no")),  # YAML's bare no
        ("train.mixed_precision=no", ("train", "mixed_precision", "no")),
        ("train.mixed_precision=bf16", ("train", "mixed_precision", "bf16")),
        ("train.mixed_precision=fp16", ("train", "mixed_precision", "fp16")),
        ("train.cache_activations=true", ("train", "cache_activations", "true")),
        ("train.cache_activations=false", ("train", "cache_activations", "false")),
        ("log.tensorboard=true", ("log", "trackers", ["tensorboard"])),
        ("run.name=My.Run-1+x_y", ("run", "name", "My.Run-1+x_y")),
        ("data.val_size=1", ("data", "val_size", 1)),
        ("data.split_seed=3", ("data", "split_seed", 3)),
        ("train.teacher= a , b ", ("train", "teacher", ["a", "b"])),
        ("train.teacher=[x, y]", ("train", "teacher", ["x", "y"])),
        ("train.teacher=", ("train", "teacher", None)),
        ("train.teacher=[]", ("train", "teacher", None)),
    ],
)
def test_each_value_a_rule_allows_is_read_as_meant(override, read):
    from lorafit.config import load_config

    section, key, value = read
    assert getattr(getattr(load_config(None, [override]), section), key) == value


def test_tensorboard_is_added_to_the_trackers_once():
    from lorafit.config import load_config

    cfg = load_config(None, ["log.tensorboard=true", "log.trackers=[mlflow, tensorboard]"])
    assert cfg.log.trackers == ["mlflow", "tensorboard"]
    assert load_config(None, ["log.trackers=[mlflow]"]).log.trackers == ["mlflow"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.val_size=1.5", "data.val_size: a count must be a whole number"),
        (
            "train.teacher=5",
            "train.teacher: must be a folder path, a comma list of them or a YAML list of them",
        ),
        (
            "train.teacher=[a,5]",
            "train.teacher: must be a folder path, a comma list of them or a YAML list of them",
        ),
        (
            "train.teacher={a: 1}",
            "train.teacher: must be a folder path, a comma list of them or a YAML list of them",
        ),
        (
            "train.teacher=a,,b",
            "train.teacher: must be a folder path, a comma list of them or a YAML list of them",
        ),
        (
            "train.teacher=['']",
            "train.teacher: must be a folder path, a comma list of them or a YAML list of them",
        ),
        ("run.name=a/b", "run.name: use letters, digits and . _ + - only"),
    ],
)
def test_a_value_a_rule_refuses_is_named_with_the_rule(override, message):
    from lorafit.config import load_config

    assert (
        _message(load_config, None, [override]) == f"config (the command-line overrides): {message}"
    )


def test_a_split_seed_of_another_type_is_refused_by_its_key():
    from lorafit.config import DataConfig

    for bad in (True, 1.5, "3"):
        with pytest.raises(ValueError) as e:
            DataConfig(split_seed=bad)
        assert str(e.value) == "data.split_seed: must be a whole number, or null for train.seed"
    assert DataConfig(split_seed=0).split_seed == 0


@pytest.mark.parametrize(
    "spec, layers",
    [("9, 10", [9, 10]), (5, [5]), ("0-2,11", [0, 1, 2, 11]), ([11, 3], [3, 11]), ("all", None)],
)
def test_parse_layers_reads_the_forms_users_write(spec, layers):
    from lorafit.config import parse_layers

    assert parse_layers(spec, 12) == layers


@pytest.mark.parametrize(
    "spec, message",
    [
        ("9-x", "lora.layers: cannot read '9-x'; write 'all', '9-11' or [9, 10, 11]"),
        ([1, "a"], "lora.layers: cannot read [1, 'a']; write 'all', '9-11' or [9, 10, 11]"),
        ([], "lora.layers: no layers given"),
        ([12], "lora.layers: layer 12 is out of range; the model has layers 0-11"),
        ("0-12", "lora.layers: layer 12 is out of range; the model has layers 0-11"),
        ([-1, 3], "lora.layers: layer -1 is out of range; the model has layers 0-11"),
        ([-1, 12], "lora.layers: layer 12 is out of range; the model has layers 0-11"),
    ],
)
def test_parse_layers_names_what_it_cannot_read(spec, message):
    from lorafit.config import parse_layers

    with pytest.raises(ValueError) as e:
        parse_layers(spec, 12)
    assert str(e.value) == message


def test_a_yaml_error_without_a_line_is_still_one_line(tmp_path):
    from lorafit.config import load_config

    path = tmp_path / "nul.yaml"
    path.write_bytes(b"train:\n  lr: 1\x00\n")  # a reader error: a position, no line mark
    assert _message(load_config, path) == (
        f"config file {path}: not valid YAML (unacceptable character #x0000: control characters "
        f'are not allowed in "{path}", position 14); fix the syntax'
    )


def test_guesses_across_sections_need_a_close_name_and_empty_is_no_teacher():
    from lorafit.config import _teacher_list, load_config

    assert suggest_key("foo.warmups") is None  # warmup_steps is only 0.74 alike: no guess
    assert _teacher_list("") is None and _teacher_list([]) is None and _teacher_list(None) is None
    assert _message(load_config, None, ["=3=4"]) == (
        "override '=3=4' is not key=value (e.g. train.lr=3e-4)"
    )
