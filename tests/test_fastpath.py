"""The latent-LoRA fast path (frozen-prefix activation cache), bf16 prediction and `bench`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lorafit import fastpath
from lorafit.cli import main
from lorafit.config import load_config
from lorafit.data import Encoded, encode, load_table
from lorafit.fastpath import cache_key, find_trunk, make_forward, plan_prefix_cache
from lorafit.model import build_model, load_tokenizer

from .conftest import AG_HEAD, AG_LABELS


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
            AG_LABELS,
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


def _accelerator(precision="no"):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # as train.make_accelerator does
    return Accelerator(cpu=True, mixed_precision=precision)


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
def test_cached_forward_matches_the_whole_model(
    which, layers, head, still_model, small_csv, tmp_path
):
    model_dir = still_model if which == "roberta" else "all-MiniLM-L6-v2"
    cfg = _config(
        model_dir,
        small_csv,
        tmp_path,
        f"lora.layers={layers}",
        "train.cache_activations=true",
        *head,
    )
    encoded, tokenizer = _encoded(cfg)
    model = build_model(cfg)
    _randomise_lora(model)
    plan = plan_prefix_cache(cfg, model, encoded)
    assert plan.enabled and plan.prefix == int(layers.split("-")[0])
    forward = make_forward(plan, model, encoded, tokenizer.pad_token_id, _accelerator())
    assert forward.cached and forward.cache.meta["dtype"] == "fp32"  # an fp32 run
    assert_cached_logits_match(forward, model, encoded, tokenizer.pad_token_id)
    assert_eval_prefix_matches(forward, model, encoded, tokenizer.pad_token_id)


def assert_eval_prefix_matches(forward, model, encoded, pad_id, rtol=1e-5):
    """Evaluations on the stored validation prefix give the whole model's logits, twice."""
    from lorafit.predict import infer_logits

    prefix = fastpath.EvalPrefix(forward.trunk, forward.prefix, pad_id, _accelerator())
    model.eval()
    whole = infer_logits(model, encoded, 16, pad_id, "cpu")
    scale = float(np.abs(whole).max())
    for _ in range(2):  # computed, then read back
        ours = prefix.logits(model, encoded, 16)
        assert scale > 0 and float(np.abs(ours - whole).max()) <= rtol * scale
    # other rows, as many: their own prefix output, not the stored one
    other = Encoded(encoded.ids[1:] + encoded.ids[:1], None, 0)
    ours = prefix.logits(model, other, 16)
    assert float(np.abs(ours - infer_logits(model, other, 16, pad_id, "cpu")).max()) <= rtol * scale


def assert_cached_logits_match(forward, model, encoded, pad_id, rtol=1e-5):
    """The cached path's logits equal the whole model's; the embeddings never ran for them."""
    trunk = find_trunk(model)
    calls = []
    hook = trunk.transformer.embeddings.register_forward_hook(lambda *a: calls.append(1))
    model.eval()
    rows = np.argsort(encoded.lengths)[::15]  # short and long rows, padded together
    try:
        with torch.no_grad():
            cached, mask = forward(model, rows)
            assert not calls  # it really took the cached path
            full, full_mask = fastpath.Forward(encoded, pad_id, "cpu")(model, rows)
            assert calls
    finally:
        hook.remove()
    assert torch.equal(mask, full_mask)
    scale = float(full.abs().max())
    assert scale > 0 and float((cached - full).abs().max()) <= rtol * scale


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
    width = {"fp16": 2, "fp32": 4}[meta["dtype"]]  # mixed precision (auto): fp16; fp32 runs: fp32
    assert meta["dtype"] == ("fp32" if meta["precision"] == "no" else "fp16")
    assert meta["prefix_layers"] == 1 and meta["rows"] == 200 and meta["key"] == entry.name
    assert (
        offsets[-1] == meta["shape"][0] and meta["shape"][1] == 32
    )  # every real token, no padding
    assert (entry / "states.bin").stat().st_size == offsets[-1] * 32 * width
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


def learning_overrides(csv, tmp_path) -> list[str]:
    """A cheap fp32 run of pretrained MiniLM that learns (its eval loss falls by ~0.3), with
    LoRA on layers 3-5, so layers 0-2 can be cached; dropout 0.1 stays on in the top layers."""
    return [
        "model.name=all-MiniLM-L6-v2",
        f"data.train={csv}",
        "data.val_size=40",
        "data.test=null",
        "model.max_length=32",
        "lora.layers=3-5",
        "train.batch_size=8",
        "train.max_steps=30",
        "train.lr=3e-3",
        "train.warmup_steps=0",
        "train.eval_every=10",
        "train.log_every=1",
        "train.metric=eval_loss",
        "train.patience=null",
        "train.checkpoint_every=5",
        "train.mixed_precision=no",
        "log.progress=false",
        f"train.cache_dir={tmp_path / 'cache'}",
    ]


def run_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_logits(run_dir: Path, csv) -> np.ndarray:
    """The run's saved model (its best = last checkpoint here) on every row of `csv`, fp32."""
    from lorafit.predict import infer_logits, load_run_model

    model, tokenizer, cfg = load_run_model(run_dir, "cpu", "fp32")
    encoded = encode(tokenizer, load_table(str(csv), cfg.data), cfg.model.max_length)
    return infer_logits(model, encoded, 64, tokenizer.pad_token_id, "cpu")


@pytest.fixture(scope="module")
def learning_runs(small_csv, tmp_path_factory) -> dict[str, Path]:
    """The same MiniLM run with the cache on and off (and "dir", the folder they share)."""
    from lorafit.train import train

    tmp = tmp_path_factory.mktemp("learning")
    return {
        "dir": tmp,
        **{
            setting: train(
                None,
                [
                    *learning_overrides(small_csv, tmp),
                    f"train.cache_activations={setting}",
                    f"run.dir={tmp / 'runs'}",
                    f"run.name=cache-{setting}",
                ],
            )
            for setting in ("true", "false")
        },
    }


@pytest.mark.slow
def test_cache_on_and_off_give_the_same_run(learning_runs, small_csv):
    """Pretrained MiniLM, fp32, 30 steps that move the eval loss: the same losses at every
    step and the same final logits (1e-4 relative), because the frozen layers run without
    dropout in both paths and an fp32 run stores fp32 states."""
    on, off = learning_runs["true"], learning_runs["false"]
    assert "activation cache: built" in (on / "train.log").read_text()
    assert (
        "activation cache: off (train.cache_activations=false)" in (off / "train.log").read_text()
    )
    rows = {k: run_rows(learning_runs[k]) for k in ("true", "false")}
    train_loss = {k: [r["train_loss"] for r in v if r["kind"] == "train"] for k, v in rows.items()}
    eval_loss = {k: [r["eval_loss"] for r in v if r["kind"] == "eval"] for k, v in rows.items()}
    assert len(train_loss["true"]) == len(train_loss["false"]) == 30
    assert eval_loss["false"][0] - eval_loss["false"][-1] >= 0.05  # it learns
    np.testing.assert_allclose(train_loss["true"], train_loss["false"], rtol=1e-4, atol=0)
    np.testing.assert_allclose(eval_loss["true"], eval_loss["false"], rtol=1e-4, atol=0)
    a, b = final_logits(on, small_csv), final_logits(off, small_csv)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))


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
        _accelerator("bf16"),  # mixed precision stores fp16, where the overflow can happen
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


# ---------------------------------------------------------------- resume with the cache on


@pytest.mark.slow
def test_killed_cached_run_resumes_to_the_uninterrupted_run(learning_runs, small_csv):
    """SIGKILL a real `python -m lorafit train` with the cache on, mid-run; resume: the same run."""
    import os
    import signal
    import subprocess
    import sys

    from lorafit.hooks import wait_for
    from lorafit.train import train

    from .conftest import ROOT
    from .test_resume import assert_same_run, only_run

    tmp = learning_runs["dir"]
    parent = tmp / "killed"
    args = [
        *learning_overrides(small_csv, tmp),  # the same cache_dir: the killed run reuses it
        "train.cache_activations=true",
        f"run.dir={parent}",
    ]
    # as many threads as this process, so the killed steps compute as the reference's did;
    # held after step 12 (past the checkpoint at step 10) and killed there (lorafit/hooks.py)
    moments = tmp / "moments"
    moments.mkdir()
    (moments / "hold-step-12").write_text("")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
        "LORAFIT_TEST_HOOKS": str(moments),
    }
    with open(tmp / "killed.out", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lorafit", "train", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    wait_for(moments, "step-12", alive=lambda: proc.poll() is None)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, (tmp / "killed.out").read_text()[-3000:]
    run = only_run(parent)
    assert not (run / "summary.json").exists()
    assert train(resume=run) == run
    log = (run / "train.log").read_text()
    assert "activation cache: reusing" in log and "resuming at step 10" in log
    assert_same_run(run, learning_runs["true"])


# ---------------------------------------------------------------- the self-check reads the file


def _open_cache(cfg, model=None):
    encoded, tokenizer = _encoded(cfg)
    model = model if model is not None else build_model(cfg)
    plan = plan_prefix_cache(cfg, model, encoded)
    return make_forward(plan, model, encoded, tokenizer.pad_token_id, _accelerator())


def _scale_middle_third(path: Path, cfg) -> None:
    """Multiply a third of the stored values by 1.01: wrong, yet plausible states."""
    states = np.memmap(path / "states.bin", dtype=np.float32, mode="r+")
    third = len(states) // 3
    states[third : 2 * third] *= 1.01
    states.flush()


def _truncate(path: Path, cfg) -> None:
    with open(path / "states.bin", "r+b") as f:
        f.truncate((path / "states.bin").stat().st_size // 2)


def _other_models_cache(path: Path, cfg, keep_meta=False) -> None:
    """Put the cache of a model with other layer-0 weights (same shape, same rows) at `path`."""
    model = build_model(cfg)
    with torch.no_grad():
        find_trunk(model).layers[0].output.dense.weight.mul_(0.5)
    other = _open_cache(cfg, model).cache.path
    assert other != path
    meta = (path / "meta.json").read_text()
    shutil.rmtree(path)
    shutil.copytree(other, path)
    if keep_meta:  # only the states give it away
        (path / "meta.json").write_text(meta)


@pytest.mark.parametrize(
    "damage",
    [
        _scale_middle_third,
        _truncate,
        _other_models_cache,
        lambda path, cfg: _other_models_cache(path, cfg, keep_meta=True),
        lambda path, cfg: (path / "meta.json").write_text("{"),
    ],
    ids=["values", "truncated", "other-model", "other-model-states-only", "meta"],
)
def test_a_damaged_cache_is_rebuilt(damage, tiny_model, small_csv, tmp_path, caplog):
    cfg = _config(tiny_model, small_csv, tmp_path, "lora.layers=1", "train.cache_activations=true")
    path = _open_cache(cfg).cache.path
    good = (path / "states.bin").read_bytes()
    damage(path, cfg)
    caplog.set_level("INFO", logger="lorafit")
    caplog.clear()
    forward = _open_cache(cfg)
    assert "rebuilding it" in caplog.text and "activation cache: built" in caplog.text
    assert forward.cache.path == path and (path / "states.bin").read_bytes() == good
    assert not [p for p in path.parent.iterdir() if ".bad-" in p.name]


def test_a_cache_that_stays_wrong_is_refused(tiny_overrides, tmp_path, capsys, monkeypatch):
    """A build that writes wrong states every time: a one-line refusal, no training step."""
    real = fastpath._fill_share

    def wrong_fill(trunk, prefix, encoded, pad_id, partial, accelerator, storage):
        dtype = real(trunk, prefix, encoded, pad_id, partial, accelerator, storage)
        raw = fastpath.RAW[fastpath.STORAGE[dtype].itemsize]
        states = np.memmap(partial / "states.bin", dtype=raw, mode="r+")
        states[:] = 0
        states.flush()
        return dtype

    monkeypatch.setattr(fastpath, "_fill_share", wrong_fill)
    args = [*tiny_overrides, "lora.layers=1", f"train.cache_dir={tmp_path / 'c'}"]
    assert main(["train", *args, "train.cache_activations=true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.cache_activations: the cached path disagrees" in err
    assert "stored row" in err and "set train.cache_activations=false" in err
    assert "the full model on RobertaForSequenceClassification (" in err  # not PEFT's wrapper
    assert not (tmp_path / "runs").exists()  # refused before the run folder


# ---------------------------------------------------------------- one behaviour for the frozen layers


def test_frozen_layers_run_without_dropout_in_both_paths(tiny_model, small_csv, tmp_path):
    """Uncached, in train mode: the frozen prefix is in eval mode during the forward (and
    only then); the adapted layers keep their dropout."""
    cfg = _config(tiny_model, small_csv, tmp_path, "lora.layers=1", "train.cache_activations=false")
    encoded, tokenizer = _encoded(cfg)
    model = build_model(cfg)
    plan = plan_prefix_cache(cfg, model, encoded)
    assert not plan.enabled and plan.prefix == 1
    forward = make_forward(plan, model, encoded, tokenizer.pad_token_id, _accelerator())
    trunk = find_trunk(model)
    seen = {}

    def record(name):
        def hook(module, *_):
            seen.setdefault(name, module.training)

        return hook

    for name, module in [("embeddings", trunk.transformer.embeddings), *enumerate(trunk.layers)]:
        module.register_forward_hook(record(name))
    model.train()
    forward(model, [0, 1])
    assert seen == {"embeddings": False, 0: False, 1: True}
    assert trunk.layers[0].training  # restored after the forward
    all_layers = _config(tiny_model, small_csv, tmp_path, "lora.layers=all")
    assert plan_prefix_cache(all_layers, build_model(all_layers), encoded).prefix == 0


# ---------------------------------------------------------------- MPNet


@pytest.fixture(scope="module")
def tiny_mpnet(ag_subset, tmp_path_factory) -> Path:
    """A random 4-layer, 32-wide MPNet (dropout 0.1, a large relative-position bias) with a
    locally trained WordPiece tokenizer."""
    from transformers import AutoModelForSequenceClassification

    from lorafit.toy import save_toy_mpnet

    out = save_toy_mpnet(
        tmp_path_factory.mktemp("tiny-mpnet"), ag_subset.text.tolist()[:3000], layers=4, hidden=32
    )
    model = AutoModelForSequenceClassification.from_pretrained(out)
    torch.manual_seed(0)
    with torch.no_grad():  # a relative-position bias big enough that losing it shows
        model.mpnet.encoder.relative_attention_bias.weight.normal_(0, 2.0)
    model.save_pretrained(out)
    return out


MPNET_EAGER = ["model.attn_implementation=eager", "lora.target_modules=[attn.q,attn.v]"]


def test_mpnet_cached_forward_shares_the_position_bias(tiny_mpnet, small_csv, tmp_path):
    """MPNet's encoder computes one relative-position bias for all layers: the cached path
    (and the prefix run) get the same bias, and its table is part of the cache's key."""
    cfg = _config(
        tiny_mpnet,
        small_csv,
        tmp_path,
        "lora.layers=2-3",
        "train.cache_activations=true",
        *MPNET_EAGER,
    )
    encoded, tokenizer = _encoded(cfg)
    model = build_model(cfg)
    _randomise_lora(model)
    trunk = find_trunk(model)
    assert float(trunk.holder.relative_attention_bias.weight.std()) > 1  # the fixture's
    forward = make_forward(
        plan_prefix_cache(cfg, model, encoded),
        model,
        encoded,
        tokenizer.pad_token_id,
        _accelerator(),
    )
    assert forward.cached and forward.prefix == 2
    assert_cached_logits_match(forward, model, encoded, tokenizer.pad_token_id)
    key = cache_key(trunk, 2, encoded, "no")
    with torch.no_grad():
        trunk.holder.relative_attention_bias.weight.add_(1e-3)
    assert cache_key(trunk, 2, encoded, "no") != key


def test_mpnet_cache_on_and_off_give_the_same_losses(tiny_mpnet, small_csv, tmp_path):
    from lorafit.train import train

    losses = {}
    for setting in ("true", "false"):
        cfg = _config(
            tiny_mpnet,
            small_csv,
            tmp_path,
            "lora.layers=2-3",
            "train.max_steps=10",
            "train.eval_every=5",
            "train.log_every=1",
            "train.lr=5e-3",
            f"train.cache_activations={setting}",
            f"run.name=mpnet-{setting}",
            *MPNET_EAGER,
        )
        rows = run_rows(train(cfg))
        losses[setting] = [r["train_loss"] for r in rows if r["kind"] == "train"]
        losses[setting] += [r["eval_loss"] for r in rows if r["kind"] == "eval"]
    assert len(losses["true"]) == 12
    np.testing.assert_allclose(losses["true"], losses["false"], rtol=1e-5, atol=0)


def _real_mpnet() -> Path:
    import os

    folder = Path(
        os.environ.get("LORAFIT_MPNET") or Path.home() / ".cache/lorafit-models/all-mpnet-base-v2"
    )
    if not (folder / "config.json").is_file():
        pytest.skip(f"all-mpnet-base-v2 not at {folder} (make it with ../shared/tools/get-mpnet)")
    return folder


@pytest.mark.slow
def test_real_mpnet_cache_on_and_off_give_the_same_run(small_csv, tmp_path):
    """all-mpnet-base-v2 (12 layers, 768 wide), LoRA on layers 10-11, fp32: the same
    per-step losses (1e-4 relative) with the cache on and off."""
    from lorafit.train import train

    folder = _real_mpnet()
    rows = {}
    for setting in ("true", "false"):
        cfg = _config(
            folder,
            small_csv,
            tmp_path,
            "lora.layers=10-11",
            "model.max_length=24",
            "data.val_size=16",
            "data.max_train_rows=48",
            "train.batch_size=8",
            "train.max_steps=8",
            "train.eval_every=8",
            "train.log_every=1",
            "train.lr=3e-3",
            f"train.cache_activations={setting}",
            f"run.name=mpnet-{setting}",
            *MPNET_EAGER,
        )
        run_dir = train(cfg)
        assert ("activation cache: built" in (run_dir / "train.log").read_text()) == (
            setting == "true"
        )
        rows[setting] = run_rows(run_dir)
    on, off = (
        [r.get("train_loss", r.get("eval_loss")) for r in rows[k]] for k in ("true", "false")
    )
    assert len(on) == len(off) >= 9
    np.testing.assert_allclose(on, off, rtol=1e-4, atol=0)


def test_evaluations_reuse_the_validation_prefix(tiny_model, small_csv, tmp_path, monkeypatch):
    """With the cache on, the validation rows go through the frozen prefix once (the first
    evaluation), never through the whole model; the metrics are the whole model's (cache off)."""
    import importlib

    from lorafit.train import train

    train_module = importlib.import_module("lorafit.train")  # `lorafit.train` is also the function
    builds, whole = [], []
    real_build = fastpath.EvalPrefix._build
    monkeypatch.setattr(
        fastpath.EvalPrefix,
        "_build",
        lambda self, enc: builds.append(len(enc.ids)) or real_build(self, enc),
    )
    real_infer = train_module.infer_logits
    monkeypatch.setattr(
        train_module, "infer_logits", lambda *a, **k: whole.append(1) or real_infer(*a, **k)
    )
    evals = {}
    for setting in ("true", "false"):
        cfg = _config(
            tiny_model, small_csv, tmp_path, "lora.layers=1", "train.max_steps=9",
            "train.eval_every=3", f"train.cache_activations={setting}", f"run.name=eval-{setting}",
        )  # fmt: skip
        rows = run_rows(train(cfg))
        evals[setting] = [(r["eval_loss"], r["eval_accuracy"]) for r in rows if r["kind"] == "eval"]
        if setting == "true":
            assert builds == [40] and whole == []  # 40 validation rows, once for 3 evaluations
    assert len(whole) == 3 and builds == [40]
    assert len(evals["true"]) == 3
    np.testing.assert_allclose(evals["true"], evals["false"], rtol=1e-5)


def test_validation_prefix_too_big_for_memory_evaluates_whole(
    tiny_model, small_csv, tmp_path, monkeypatch, caplog
):
    from lorafit.train import train

    monkeypatch.setattr(fastpath, "EVAL_PREFIX_LIMIT", 1000)
    cfg = _config(
        tiny_model,
        small_csv,
        tmp_path,
        "lora.layers=1",
        "train.max_steps=2",
        "train.cache_activations=true",
    )
    with caplog.at_level("INFO", logger="lorafit"):
        train(cfg)
    assert (
        "validation: evaluating the whole model (its prefix output would not fit in" in caplog.text
    )
