"""FLOPs and model FLOPs utilisation (MFU): what this machine can do, and what a model needs.

    peak = measure_matmul_flops(torch.float32)                 # FLOP/s of a big matmul here
    per_token = encoder_flops_per_token(config, seq_len=64, trainable_layers=[9, 10, 11])
    mfu = model_flops_utilisation(per_token * tokens / seconds, peak)

The peak is *measured* (a warm n x n matmul), not read from a spec sheet: on a laptop or a
shared 2-core VM the datasheet number says little about what PyTorch actually gets. Only
`torch` is imported here, so the training code can use this module without pulling in the
benchmark machinery.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import torch

CPUINFO = "/proc/cpuinfo"
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


# ---------------------------------------------------------------- what the machine can do


def measure_matmul_flops(
    dtype: torch.dtype = torch.float32,
    n: int = 2048,
    seconds: float = 1.0,
    device: str | torch.device = "cpu",
) -> float:
    """FLOP/s of repeated n x n @ n x n matmuls in `dtype` on `device` (2*n^3 FLOPs each).

    A few warm-up matmuls run first (thread pools, allocator, oneDNN kernel selection), then
    matmuls are timed until at least `seconds` have passed.
    """
    if n < 1 or seconds <= 0:
        raise ValueError(f"need n >= 1 and seconds > 0, got n={n}, seconds={seconds}")
    device = torch.device(device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        for _ in range(3):
            torch.matmul(a, b, out=out)
        sync()
        iterations, start = 0, time.perf_counter()
        while True:
            torch.matmul(a, b, out=out)
            iterations += 1
            # only sync (and read the clock) every few calls on a GPU so launches can queue
            if device.type != "cuda" or iterations % 8 == 0:
                sync()
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
    return 2.0 * n**3 * iterations / elapsed


def cpu_supports_bf16(cpuinfo: str = CPUINFO) -> bool:
    """True if the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX-BF16).

    Without them PyTorch still runs bf16 on the CPU, but by converting to fp32, which is
    usually slower than plain fp32. Reads the `flags` lines of /proc/cpuinfo (Linux); any
    other system, or an unreadable file, gives False.
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in BF16_CPU_FLAGS)
    except OSError:
        pass
    return False


# ---------------------------------------------------------------- what the model needs


def encoder_flops_per_token(
    config,
    seq_len: int,
    layers: int | None = None,
    trainable_layers: Iterable[int] | None = None,
    backward: bool = True,
) -> float:
    """Analytic FLOPs per token of a BERT/RoBERTa-style encoder classifier.

    With h = hidden_size, I = intermediate_size, s = seq_len (the length attention runs
    over), C = num_labels and a multiply-add counted as 2 FLOPs, the forward pass per token:

        layer  = 4 * 2*h*h          Q, K, V and output projections
               + 2 * 2*s*h          attention scores Q.K^T, and the weighted sum of V
               + 2 * 2*h*I          feed-forward up and down projections
        head   = (2*h*h + 2*h*C) / s    dense + out_proj on the first token only, so one
                                       sequence's head cost is shared by its s tokens
        forward = layers * layer + head

    Embedding look-ups, layer norms, softmax, GELU and biases are elementwise and left out.

    The backward pass (`backward=True`) adds, per layer i, with L = min(trainable_layers):

        i in trainable_layers     2 * layer   gradients for the activations and the weights
        L < i, frozen             1 * layer   only the activation gradient flows through
        i < L                     0           nothing below L needs a gradient
        head (always trained)     2 * head

    so a training step costs forward + backward, i.e. 3x forward when every layer trains.
    `trainable_layers=None` means every layer is trained (full fine-tuning); an empty list
    means only the head trains. Two approximations to keep in mind: a LoRA layer's weight
    gradient is far smaller than the 1x forward counted above (an adapter is tiny), and the
    weight-free attention matmuls need gradients for both operands even in a frozen layer.

    Args:
        config: a Hugging Face config (or anything with `hidden_size`,
            `intermediate_size`, `num_hidden_layers` and optionally `num_labels`).
        seq_len: tokens per sequence that attention runs over (padded length if padded).
        layers: how many encoder layers to count; default `config.num_hidden_layers`.
        trainable_layers: 0-based indices of layers whose weights get gradients.
        backward: add the backward pass (a training step) or count the forward only.

    Returns:
        FLOPs per token.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    h = config.hidden_size
    inter = config.intermediate_size
    depth = config.num_hidden_layers if layers is None else layers
    labels = getattr(config, "num_labels", 2)

    layer = 4 * 2 * h * h + 2 * 2 * seq_len * h + 2 * 2 * h * inter
    head = (2 * h * h + 2 * h * labels) / seq_len
    forward = depth * layer + head
    if not backward:
        return float(forward)

    trained = set(range(depth)) if trainable_layers is None else set(trainable_layers)
    bad = sorted(i for i in trained if not 0 <= i < depth)
    if bad:
        raise ValueError(f"trainable_layers {bad} outside 0..{depth - 1}")
    lowest = min(trained, default=depth)
    backward_layers = sum(2 if i in trained else 1 for i in range(lowest, depth))
    return float(forward + backward_layers * layer + 2 * head)


def encoder_flops(
    config,
    lengths: Iterable[int],
    layers: int | None = None,
    trainable_layers: Iterable[int] | None = None,
    backward: bool = True,
) -> float:
    """Total FLOPs for sequences of the given token `lengths`, each attending over itself.

    Pass the real (unpadded) lengths to count the useful work; pass the padded lengths to
    count what the hardware actually computed.
    """
    counts: dict[int, int] = {}
    for n in lengths:
        counts[int(n)] = counts.get(int(n), 0) + 1
    trained = None if trainable_layers is None else list(trainable_layers)
    return sum(
        n * times * encoder_flops_per_token(config, n, layers, trained, backward)
        for n, times in counts.items()
        if n > 0
    )


def model_flops_utilisation(achieved_flops_per_s: float, peak_flops_per_s: float) -> float:
    """Achieved model FLOP/s as a share of the peak (0.25 = 25%)."""
    if not peak_flops_per_s > 0 or not math.isfinite(peak_flops_per_s):
        raise ValueError(f"peak_flops_per_s must be positive and finite, got {peak_flops_per_s}")
    return achieved_flops_per_s / peak_flops_per_s


def resolve_precision(setting: str) -> str:
    """`train.mixed_precision` as Accelerate takes it: auto becomes bf16, fp16 or no."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # bf16 autocast where the CPU computes bf16 natively (AVX512-BF16, AMX): measured
    # 1.5-1.9x per step on roberta-base's layers, same accuracy (README, "Speed")
    return "bf16" if cpu_supports_bf16() else "no"
