"""The latent-LoRA fast path (frozen-prefix activation cache), bf16 prediction and `bench`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lorafit import fastpath
from lorafit.cli import main
from lorafit.config import load_config
from lorafit.data import encode, load_table
from lorafit.fastpath import cache_key, find_trunk, make_forward, plan_prefix_cache
from lorafit.model import build_model, load_tokenizer

from .conftest import AG_HEAD


@pytest.fixture(scope="module")
def still_model(tiny_model, tmp_path_factory) -> Path:
    """A 3-layer, 32-wide random RoBERTa without dropout (so cached == uncached training)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lorafit.toy import roberta_config

    out = tmp_path_factory.mktemp("still-roberta")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.save_pretrained(out)
    config = roberta_config(
        layers=3,
        hidden=32,
        vocab_size=len(tokenizer),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    return out


def _config(model_dir, csv, tmp_path, *extra):
    return load_config(
        None,
        [
            f"model.name={model_dir}",
            f"data.train={csv}",
            "data.val_size=40",
            "data.test=null",
            "model.max_length=64",
            "train.batch_size=16",
            "train.epochs=2",
            "train.mixed_precision=no",
            "log.progress=false",
            f"run.dir={tmp_path / 'runs'}",
            f"train.cache_dir={tmp_path / 'cache'}",
            *extra,
        ],
    )


def _accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def _encoded(cfg):
    table = load_table(cfg.data.train, cfg.data)
    tokenizer = load_tokenizer(cfg)
    return encode(tokenizer, table, cfg.model.max_length), tokenizer


def _randomise_lora(model) -> None:
    """LoRA B starts at zero (a no-op); give it values so the adapters take part."""
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)


@pytest.mark.parametrize(
    "which, layers, head",
    [
        ("roberta", "2", []),
        ("minilm", "4-5", []),
        ("roberta", "2", ["model.head=linear", "model.pooling=mean"]),  # the mask reaches the head
        ("minilm", "4-5", ["model.head=linear", "model.pooling=mean"]),
    ],
)
def test_cached_forward_matches_the_whole_model(which, layers, head, still_model, small_csv, tmp_path):
    model_dir = still_model if which == "roberta" else "all-MiniLM-L6-v2"
    cfg = _config(
        model_dir, small_csv, tmp_path, f"lora.layers={layers}", "train.cache_activations=true", *head
    )
    encoded, tokenizer = _encoded(cfg)
    model = build_model(cfg)
    _randomise_lora(model)
    plan = plan_prefix_cache(cfg, model, encoded)
    assert plan.enabled and plan.prefix == int(layers.split("-")[0])
    forward = make_forward(plan, model, encoded, tokenizer.pad_token_id, _accelerator())
    assert forward.cached
    model.eval()
    rows = np.argsort(encoded.lengths)[::15]  # short and long rows, padded together
    with torch.no_grad():
        cached, mask = forward(model, rows)
        full, full_mask = fastpath.Forward(encoded, tokenizer.pad_token_id, "cpu")(model, rows)
    assert torch.equal(mask, full_mask)
    # the states were stored as fp16: agreement to its rounding, not bit for bit
    scale = float(full.abs().max())
    assert float((cached - full).abs().max()) <= 2e-3 * max(scale, 1.0)
    assert float((cached - full).abs().max()) > 0 or scale == 0  # it really took the cached path


def test_cache_files_reuse_and_key(tiny_overrides, tmp_path, capsys, caplog):
    cache = tmp_path / "cache"
    args = [
        *tiny_overrides,
        "lora.layers=1",
        "train.cache_activations=true",
        f"train.cache_dir={cache}",
    ]
    assert main(["train", *args]) == 0
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    meta = json.loads((entry / "meta.json").read_text())
    offsets = np.load(entry / "offsets.npy")
    assert meta["prefix_layers"] == 1 and meta["rows"] == 200 and meta["dtype"] == "fp16"
    assert (
        offsets[-1] == meta["shape"][0] and meta["shape"][1] == 32
    )  # every real token, no padding
    assert (entry / "states.bin").stat().st_size == offsets[-1] * 32 * 2
    assert "activation cache: built" in caplog.text

    caplog.clear()
    assert main(["train", *args]) == 0  # the same model, rows and max_length: reused
    assert "activation cache: reusing" in caplog.text
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1
    assert main(["train", *args, "model.max_length=48"]) == 0  # other token ids: a new cache
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2
    assert not [p for p in cache.iterdir() if ".partial" in p.name]


def test_key_covers_prefix_weights_rows_and_precision(tiny_model, small_csv, tmp_path):
    cfg = _config(tiny_model, small_csv, tmp_path, "lora.layers=1")
    encoded, _ = _encoded(cfg)
    model = build_model(cfg)
    trunk = find_trunk(model)
    key = cache_key(trunk, 1, encoded, "no")
    assert cache_key(trunk, 1, encoded, "no") == key
    assert cache_key(trunk, 1, encoded, "bf16") != key
    fewer = type(encoded)(encoded.ids[:-1], None, 0)
    assert cache_key(trunk, 1, fewer, "no") != key
    with torch.no_grad():
        trunk.layers[1].output.dense.weight.add_(1.0)  # above the prefix: the cache stays valid
        assert cache_key(trunk, 1, encoded, "no") == key
        trunk.layers[0].output.dense.weight.add_(1e-3)  # inside the prefix: invalid
        assert cache_key(trunk, 1, encoded, "no") != key


def test_auto_rules(tiny_model, small_csv, tmp_path):
    def plan(*extra):
        cfg = _config(tiny_model, small_csv, tmp_path, *extra)
        encoded, _ = _encoded(cfg)
        return plan_prefix_cache(cfg, build_model(cfg, weights=False), encoded)

    assert plan("lora.layers=1").enabled
    off = plan("lora.layers=all")
    assert not off.enabled and "layer 0" in off.reason
    off = plan("lora.layers=1", "lora.bias=all")
    assert not off.enabled and "below layer 1 train" in off.reason
    off = plan("lora.layers=1", "train.max_steps=2")  # 32 of 200 rows: not worth a cache
    assert not off.enabled and "fewer than" in off.reason
    assert not plan("lora.layers=1", "train.cache_activations=false").enabled
    assert plan("lora.layers=1", "train.max_steps=2", "train.cache_activations=true").enabled
    with pytest.raises(Exception, match="train.cache_activations=true: lora.layers adapts layer 0"):
        plan("lora.layers=all", "train.cache_activations=true")


def test_impossible_cache_request_is_a_one_line_error(tiny_overrides, tmp_path, capsys):
    assert main(["train", *tiny_overrides, "train.cache_activations=true"]) == 2
    err = capsys.readouterr().err
    assert "train.cache_activations=true" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_refused_before_any_output_when_the_disk_is_too_small(
    tiny_overrides, tmp_path, capsys, monkeypatch
):
    real = fastpath.shutil.disk_usage

    def nearly_full(path):
        return real(path)._replace(free=100_000)  # 0.1 MB free; the cache needs ~0.4 MB

    monkeypatch.setattr(fastpath.shutil, "disk_usage", nearly_full)
    args = [
        *tiny_overrides,
        "lora.layers=1",
        "train.epochs=2",
        "train.max_steps=null",
        f"train.cache_dir={tmp_path / 'c'}",
    ]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert (
        f"train.cache_dir {tmp_path / 'c'}" in err and "MB are free" in err and err.count("\n") == 1
    )
    assert not (tmp_path / "runs").exists() and not (tmp_path / "c").exists()


def test_training_on_cached_states_equals_training_the_whole_model(
    still_model, small_csv, tmp_path
):
    """Without dropout the cache changes nothing but fp16 rounding of the states."""
    from lorafit.train import train

    runs = {}
    for setting in ("true", "false"):
        cfg = _config(
            still_model,
            small_csv,
            tmp_path,
            "lora.layers=1-2",
            "train.lr=5e-3",
            "lora.dropout=0",
            "train.eval_every=13",
            f"train.cache_activations={setting}",
            f"run.name={setting}",
        )
        run_dir = train(cfg)
        runs[setting] = [
            json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]
    on, off = ([r["eval_loss"] for r in runs[k] if r["kind"] == "eval"] for k in ("true", "false"))
    assert len(on) == len(off) == 2
    assert off[0] != off[-1]  # it trained
    np.testing.assert_allclose(on, off, rtol=0, atol=2e-3)


def test_fp16_overflow_falls_back_to_bf16(still_model, small_csv, tmp_path):
    cfg = _config(still_model, small_csv, tmp_path, "lora.layers=1", "train.cache_activations=true")
    encoded, tokenizer = _encoded(cfg)
    model = build_model(cfg)
    with torch.no_grad():  # layer 0 ends in a LayerNorm: scale it past fp16's 65,504
        find_trunk(model).layers[0].output.LayerNorm.weight.fill_(1e5)
    forward = make_forward(
        plan_prefix_cache(cfg, model, encoded),
        model,
        encoded,
        tokenizer.pad_token_id,
        _accelerator(),
    )
    assert forward.cache.meta["dtype"] == "bf16"
    states, _ = forward.cache.batch([0], "cpu")
    assert float(states.abs().max()) > 65_504


# ---------------------------------------------------------------- prediction dtype


@pytest.fixture
def trained(tiny_overrides, tmp_path):
    assert main(["train", *tiny_overrides]) == 0
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    return run_dir


def test_predict_dtype_bf16_close_to_fp32(trained, tmp_path):
    from lorafit.bench import agreement
    from lorafit.predict import infer_logits, inference_dtype, load_run_model

    assert inference_dtype("fp32") == torch.float32 and inference_dtype("bf16") == torch.bfloat16
    logits = {}
    for name in ("fp32", "bf16"):
        model, tokenizer, cfg = load_run_model(trained, "cpu", name)
        assert next(model.parameters()).dtype == inference_dtype(name)
        table = load_table(str(AG_HEAD), cfg.data, split="test")
        encoded = encode(tokenizer, table, cfg.model.max_length)
        logits[name] = infer_logits(model, encoded, 64, tokenizer.pad_token_id, "cpu")
    a = agreement(logits["bf16"], logits["fp32"])
    assert a["max_prob_diff"] < 0.05 and a["label_agreement"] > 0.9
    assert not np.array_equal(logits["bf16"], logits["fp32"])


def test_predict_cli_dtype(trained, tmp_path):
    out = tmp_path / "sub.csv"
    assert (
        main(
            [
                "predict",
                str(trained),
                "--input",
                str(AG_HEAD),
                "--output",
                str(out),
                "--dtype",
                "fp32",
            ]
        )
        == 0
    )
    assert out.exists()
    with pytest.raises(SystemExit):
        main(["predict", str(trained), "--input", str(AG_HEAD), "--dtype", "fp8"])


# ---------------------------------------------------------------- lorafit bench


def test_bench_prints_the_table_and_json(tiny_overrides, small_csv, capsys, monkeypatch):
    from lorafit import bench

    monkeypatch.setattr(
        bench, "matmul_peak", lambda dtype, device="cpu": 1e11
    )  # no 2 s measurement
    args = [
        "bench",
        *tiny_overrides,
        "lora.layers=1",
        "train.max_steps=null",
        "train.epochs=1",
        "--predict-input",
        str(small_csv),
    ]
    assert main([*args, "--dtype", "fp32", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    for column in ("recipe", "samples/s", "tokens/s", "padding", "MFU", "peak MB", "accuracy"):
        assert column in out
    from lorafit.flops import cpu_supports_bf16

    precision = "bf16" if cpu_supports_bf16() else "fp32"  # train.mixed_precision=auto
    assert (
        f"lorafit train (cache, {precision})" in out and "lorafit predict (bf16, batch 64)" in out
    )
    assert "vs fp32: labels agree on" in out

    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    train_row, predict_row = result["rows"]
    assert train_row["rows"] == 200 and train_row["activation_cache"] is True
    assert 0 <= train_row["padding_share"] < 0.5 and train_row["samples_per_s"] > 0
    assert (
        predict_row["rows"] == 240 and 0 < predict_row["mfu"] and 0 <= predict_row["accuracy"] <= 1
    )
    # the FLOPs follow the cache: layer 0 once per row, layer 1 + head forward and backward per step
    assert train_row["model_flops"] > 0 and train_row["peak_memory_mb"] > 0


def test_half_built_caches_of_dead_processes_are_removed(tmp_path):
    import os
    import socket

    stem = f".abc.partial-{socket.gethostname()}-"
    dead, live = tmp_path / f"{stem}999999999", tmp_path / f"{stem}{os.getpid()}"
    dead.mkdir()
    live.mkdir()
    fastpath._remove_dead_partials(tmp_path / "abc", tmp_path / "mine")
    assert not dead.exists() and live.exists()


def test_bench_help(capsys):
    from lorafit.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["bench", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert (
        "usage: lorafit bench" in out
        and "--predict-input" in out
        and "train.cache_activations" in out
    )


def test_an_existing_cache_needs_no_free_space(tiny_overrides, tmp_path, monkeypatch):
    args = [
        *tiny_overrides,
        "lora.layers=1",
        "train.cache_activations=true",
        f"train.cache_dir={tmp_path / 'c'}",
    ]
    assert main(["train", *args]) == 0  # builds it
    real = fastpath.shutil.disk_usage
    monkeypatch.setattr(fastpath.shutil, "disk_usage", lambda path: real(path)._replace(free=0))
    assert main(["train", *args]) == 0  # reuses it: no space needed
    assert main(["train", *args, "model.max_length=40"]) == 2  # a new one would not fit
