"""lorafit.flops, plus the usual-recipe baseline benchmark on a tiny random RoBERTa."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from lorafit.flops import (
    cpu_supports_bf16,
    encoder_flops,
    encoder_flops_per_token,
    measure_matmul_flops,
    model_flops_utilisation,
)
from lorafit.toy import roberta_config

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
DATA = REPO.parent / "shared" / "data" / "ag_news" / "train_subset.csv"


@pytest.fixture(scope="module")
def tiny_config():
    # hidden 32, 2 layers, intermediate 4 * 32 = 128, 4 labels
    config = roberta_config(layers=2, hidden=32)
    assert (config.hidden_size, config.num_hidden_layers) == (32, 2)
    assert (config.intermediate_size, config.num_labels) == (128, 4)
    return config


# ---------------------------------------------------------------- the machine


def test_measure_matmul_flops_fp32_is_positive_and_finite():
    flops = measure_matmul_flops(torch.float32, n=256, seconds=0.05)
    assert flops > 0 and math.isfinite(flops)


def test_measure_matmul_flops_bf16_runs_whatever_the_cpu():
    # bf16 is only *fast* where cpu_supports_bf16(); it must run everywhere
    flops = measure_matmul_flops(torch.bfloat16, n=256, seconds=0.05)
    assert flops > 0 and math.isfinite(flops)


def test_measure_matmul_flops_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seconds"):
        measure_matmul_flops(n=16, seconds=0)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("fpu sse avx2 avx512f avx512_bf16", True),
        ("fpu sse avx2 amx_tile amx_bf16", True),
        ("fpu sse avx2 avx512f", False),
    ],
)
def test_cpu_supports_bf16_reads_the_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    assert cpu_supports_bf16(str(cpuinfo)) is expected


def test_cpu_supports_bf16_is_false_without_cpuinfo(tmp_path):
    assert cpu_supports_bf16(str(tmp_path / "missing")) is False
    assert isinstance(cpu_supports_bf16(), bool)


# ---------------------------------------------------------------- the model


def test_forward_flops_match_a_hand_computation(tiny_config):
    # h = 32, I = 128, s = 10, C = 4, 2 layers
    # projections 4 * 2*32*32 = 8192; attention 2 * 2*10*32 = 1280; FFN 2 * 2*32*128 = 16384
    # layer = 8192 + 1280 + 16384 = 25856; 2 layers = 51712
    # head = (2*32*32 + 2*32*4) / 10 = (2048 + 256) / 10 = 230.4
    forward = encoder_flops_per_token(tiny_config, seq_len=10, backward=False)
    assert forward == pytest.approx(51712 + 230.4)


def test_training_flops_match_a_hand_computation(tiny_config):
    layer, head = 25856, 230.4
    forward = 2 * layer + head
    # every layer trained: backward is 2x forward everywhere, so 3x forward in all
    full = encoder_flops_per_token(tiny_config, seq_len=10)
    assert full == pytest.approx(3 * forward) == pytest.approx(155827.2)
    # only layer 1 trained: layer 0 needs no gradient, layer 1 2x, head 2x
    top = encoder_flops_per_token(tiny_config, seq_len=10, trainable_layers=[1])
    assert top == pytest.approx(forward + 2 * layer + 2 * head) == pytest.approx(104115.2)
    # only layer 0 trained: layer 0 2x, frozen layer 1 above it 1x (activation gradient)
    bottom = encoder_flops_per_token(tiny_config, seq_len=10, trainable_layers=[0])
    assert bottom == pytest.approx(forward + 3 * layer + 2 * head) == pytest.approx(129971.2)
    # only the head trained
    head_only = encoder_flops_per_token(tiny_config, seq_len=10, trainable_layers=[])
    assert head_only == pytest.approx(forward + 2 * head)


def test_top_three_lora_layers_cost_much_less_than_full_training():
    config = roberta_config()  # roberta-base's shape: 12 layers, hidden 768
    forward = encoder_flops_per_token(config, seq_len=128, backward=False)
    full = encoder_flops_per_token(config, seq_len=128)
    lora = encoder_flops_per_token(config, seq_len=128, trainable_layers=[9, 10, 11])
    assert full == pytest.approx(3 * forward)
    # forward 12 layers + backward 3 x 2 layers = 18 layer-passes against 36
    assert forward < lora < 0.55 * full
    # ... and about 85M multiply-adds a token forward: 2 * 85M FLOPs, give or take attention
    assert 1.5e8 < forward < 2.0e8


def test_trainable_layers_outside_the_model_are_an_error(tiny_config):
    with pytest.raises(ValueError, match="outside"):
        encoder_flops_per_token(tiny_config, seq_len=10, trainable_layers=[9, 10, 11])


def test_encoder_flops_sums_sequences_of_each_length(tiny_config):
    lengths = [10, 10, 7]
    expected = 2 * 10 * encoder_flops_per_token(tiny_config, 10) + 7 * encoder_flops_per_token(
        tiny_config, 7
    )
    assert encoder_flops(tiny_config, lengths) == pytest.approx(expected)
    assert encoder_flops(tiny_config, []) == 0


def test_model_flops_utilisation():
    assert model_flops_utilisation(50e9, 200e9) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="peak"):
        model_flops_utilisation(1.0, 0.0)


# ---------------------------------------------------------------- the usual-recipe benchmark


@pytest.fixture(scope="module")
def benchmarks():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import common
        import usual_recipe

        yield common, usual_recipe
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_results_table_formats_figures_and_gaps(benchmarks):
    common, _ = benchmarks
    table = common.format_results(
        [{"recipe": "usual", "samples_per_s": 12.345, "padding_share": 0.5, "mfu": None}]
    )
    header, rule, row = table.splitlines()
    assert header.split()[:3] == ["recipe", "samples/s", "tokens/s"]
    assert "12.35" in row and "50.0%" in row and row.split().count("-") == 4


def test_timer_measures_time_and_memory(benchmarks):
    import time

    import lorafit.bench

    common, usual = benchmarks
    # one timer: `lorafit bench` and both benchmark recipes are measured by the same code
    assert common.Timer is lorafit.bench.Timer and usual.Timer is lorafit.bench.Timer
    with common.Timer() as t:
        time.sleep(0.05)
        big = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
        big += 1
    assert 0.05 <= t.seconds < 5
    assert t.peak_memory_mb >= 64 and t.peak_is_local


@pytest.mark.slow
def test_benchmark_data_slices_are_disjoint_and_stratified(benchmarks):
    common, _ = benchmarks
    if not DATA.is_file():
        pytest.skip(f"{DATA} not found")
    data = common.load_benchmark_data(DATA)
    assert (len(data.train_texts), len(data.predict_texts), len(data.val_texts)) == (
        4000,
        7600,
        640,
    )
    train, predict, val = set(data.train_texts), set(data.predict_texts), set(data.val_texts)
    assert not train & predict and not train & val and not predict & val
    counts = [data.train_labels.count(c) for c in range(4)]
    # the file's shares are 6740 / 5054 / 5047 / 6855 of 23,696
    assert counts == pytest.approx([1138, 853, 852, 1157], abs=1)
    assert common.load_benchmark_data(DATA).train_texts == data.train_texts  # seeded


@pytest.mark.slow
def test_usual_train_and_predict_run_on_a_tiny_roberta(tmp_path, benchmarks):
    import pandas as pd

    from lorafit.toy import save_toy_roberta

    _, usual_recipe = benchmarks
    if not DATA.is_file():
        pytest.skip(f"{DATA} not found")
    rows = pd.read_csv(DATA).sample(64, random_state=0)
    texts, labels = rows["text"].tolist(), rows["label"].tolist()
    model_dir = save_toy_roberta(tmp_path / "tiny", texts, layers=2, hidden=32)

    result = usual_recipe.run_usual_train(
        model_dir, texts[:48], labels[:48], texts[48:], labels[48:], 2, peak_flops_per_s=1e11
    )
    expected = {
        "recipe",
        "samples_per_s",
        "tokens_per_s",
        "padding_share",
        "mfu",
        "peak_memory_mb",
        "accuracy",
        "seconds",
    }
    assert expected <= result.keys()
    assert result["rows"] == 2 * 16
    assert 0 < result["padding_share"] < 1
    assert result["samples_per_s"] > 0 and result["tokens_per_s"] > 0
    assert 0 < result["mfu"] < result["mfu_as_computed"]
    assert 0 <= result["accuracy"] <= 1
    assert result["lora_layers"] == [0, 1]  # the top three of a 2-layer model

    predicted = usual_recipe.run_usual_predict(model_dir, texts[48:], labels[48:])
    assert predicted["rows"] == 16 and predicted["samples_per_s"] > 0
    assert 0 <= predicted["accuracy"] <= 1 and predicted["mfu"] is None
