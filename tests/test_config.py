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
    assert (cfg.model.name, cfg.data.train, cfg.data.val_size) == ("roberta-base", "fancyzhx/ag_news", 640)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 16, 0.1)
    assert cfg.lora.target_modules == ["query", "value"] and parse_layers(cfg.lora.layers, 12) == [9, 10, 11]
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size) == ("adamw", 2e-4, 32)
    assert (cfg.train.warmup_ratio, cfg.train.eval_every, cfg.train.patience) == (0.1, 500, 3)


def test_overrides_apply_with_types():
    cfg = load_config(None, ["train.lr=3e-4", "lora.layers=[9, 11]", "train.max_steps=7", "data.test=null"])
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
    with pytest.raises(UserError, match=r"bad.yaml.*unknown key 'lora.rank'; did you mean 'lora.r'\?"):
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

    off = ["train.teacher=null", "data.unlabeled=null", "data.unlabeled_min_confidence=0", "run.name=x"]
    taught = load_config(ROOT / "configs" / distill)
    assert taught.train.teacher and taught.data.unlabeled
    student = config_to_dict(load_config(ROOT / "configs" / distill, off))
    assert student == config_to_dict(load_config(ROOT / "configs" / alone, [*off, *documented]))
    if documented:  # the difference is real: without it the two differ
        assert student != config_to_dict(load_config(ROOT / "configs" / alone, off))
