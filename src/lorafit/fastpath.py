"""The fast path for latent LoRA: run the frozen layers once, cache their output, train the top.

With LoRA on layers 9-11 of a 12-layer encoder, layers 0-8 and the embeddings never change
during training, yet the usual recipe recomputes them for every row in every epoch. Here
they run once per training row (under the run's autocast), and their output, the hidden
states entering the first adapted layer, is stored on disk:

    <train.cache_dir>/<key>/states.bin    every row's states, concatenated, no padding: fp32
                                          in an fp32 run; fp16 under mixed precision (bf16
                                          if fp16 would overflow)
    <train.cache_dir>/<key>/offsets.npy   row i is states[offsets[i]:offsets[i + 1]]
    <train.cache_dir>/<key>/meta.json     dtype, shape, key, what went into it (written last)

`key` is a sha256 over the frozen prefix's weights and config, the token ids of every row
(so the data, the tokenizer and max_length), the number of cached layers and the compute
precision: any change builds a new cache, an unchanged rerun (a sweep over the learning
rate, a resumed run) reuses it. Training then memory-maps the states and runs only the top
layers and the head, through the model's own `forward` (the embeddings and the lower
layers are swapped out for the duration of the call), so the model's masks, pooler, head,
MPNet's relative-position bias (computed by the encoder from the states' shape, once, for
every layer) and a DistributedDataParallel wrapper all work unchanged.

The cache is a pure speed-up: the frozen prefix (the embeddings and the layers below the
first adapted layer, when none of their weights train) runs in eval mode, without dropout,
in every training forward, cached or not (`Forward`). Their output is then a fixed feature
of each row, so in fp32 `cache on` and `cache off` give the same run (to float rounding;
`tests/test_fastpath.py` checks per-step losses and final logits).

Before training on a cache, `make_forward` reads a sample of the stored rows back and
compares them with a fresh forward of the prefix; a cache that disagrees (changed values,
a truncated file, another model's states under the key) is rebuilt once, and a fresh one
that still disagrees is refused.

Evaluations reuse the prefix too (`EvalPrefix`): at the first evaluation the validation
rows' prefix output is computed once and kept in memory in fp32 (the very values the whole
model hands to its first adapted layer, so the metrics are those of the whole model), and
every evaluation then runs only the top layers and the head.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from lorafit.caches import cache_root, mark_used
from lorafit.config import Config
from lorafit.cores import tick
from lorafit.data import Encoded, pad_batch, padded_width
from lorafit.data.tokens import batch_inputs
from lorafit.errors import UserError
from lorafit.model import layer_settings, num_layers

log = logging.getLogger("lorafit")

CACHE_FORMAT = 2
#: storage dtypes: fp32 for fp32 runs (exactly what the layers computed); under mixed
#: precision fp16, which keeps 3 more mantissa bits than bf16 where the values fit
STORAGE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: the integer type of the same width that the file is memory-mapped as
RAW = {2: np.int16, 4: np.int32}
FP16_LIMIT = 60_000.0
#: padded tokens per batch while building the cache. Measured on all-mpnet-base-v2's layers 0-8,
#: 640 AG News rows, bf16, 2 cores: 4,096 tokens 38.6-39.7 rows/s, 2,048 40.5, 1,024 37.8,
#: 8,192 32.2, 16,384 23.8-26.8 (eager attention's [batch, heads, T, T] scores leave the caches)
#: (`benchmarks/cache_batch.py` measures it)
BUILD_TOKENS = 4_096
#: keep a validation split's prefix output in memory up to this size (fp32), else evaluate whole
EVAL_PREFIX_LIMIT = 2 * 1024**3
#: free disk to keep beyond the estimate, as a share of it
DISK_HEADROOM = 0.10


# ---------------------------------------------------------------- the model's pieces


@dataclass
class Trunk:
    """The parts of an encoder the cache needs: embeddings and the list of layers."""

    transformer: nn.Module  # e.g. RobertaModel (holds `embeddings`)
    holder: nn.Module  # the module whose attribute `attr` is the layer list
    attr: str
    layers: nn.ModuleList


def find_trunk(model: nn.Module) -> Trunk | None:
    """The embeddings + layer list of a (PEFT-wrapped) encoder classifier, or None."""
    base = cast(Any, model).get_base_model() if hasattr(model, "get_base_model") else model
    transformer = getattr(base, "base_model", base)
    if not isinstance(getattr(transformer, "embeddings", None), nn.Module):
        return None
    for holder_name in ("encoder", "transformer"):
        holder = getattr(transformer, holder_name, None)
        for attr in ("layer", "layers"):
            layers = getattr(holder, attr, None) if holder is not None else None
            if holder is not None and isinstance(layers, nn.ModuleList):
                return Trunk(transformer, holder, attr, layers)
    return None


def _model_name(model: nn.Module) -> str:
    base = cast(Any, model).get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__


def prefix_modules(trunk: Trunk, prefix: int) -> list[nn.Module]:
    """What the first `prefix` layers' output depends on: the embeddings, the encoder's own
    modules beside its layer list (MPNet's relative-position bias table) and the layers."""
    layers = getattr(trunk.holder, trunk.attr)
    shared = [m for m in trunk.holder.children() if m is not layers]
    return [trunk.transformer.embeddings, *shared, *trunk.layers[:prefix]]


@contextmanager
def frozen_in_eval(trunk: Trunk | None, prefix: int):
    """Run the frozen prefix without dropout (eval mode) inside; restore the modes after.

    The one behaviour of both paths: cached states are computed once, without dropout, so
    the uncached path runs the same layers the same way (and draws no random numbers there,
    so the top layers' dropout masks are the same draws in both paths).
    """
    if trunk is None or prefix == 0:
        yield
        return
    modules = [m for top in prefix_modules(trunk, prefix) for m in top.modules()]
    modes = [m.training for m in modules]
    for m in modules:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode


class _CachedEmbeddings(nn.Module):
    """Stands in for the embeddings: the cached states arrive as `inputs_embeds`.

    It holds one tiny buffer because DistributedDataParallel broadcasts the buffers of the
    module tree it sees at each forward and fails on an empty list (the real embeddings'
    buffers leave with them while the stand-in is in place).
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("placeholder", torch.zeros(1), persistent=False)

    def forward(self, *args, **kwargs):
        for key in ("inputs_embeds", "input_embeds"):
            if kwargs.get(key) is not None:
                return kwargs[key]
        raise RuntimeError("the cached path needs the states passed as inputs_embeds")


@contextmanager
def _swapped(trunk: Trunk, embeddings: nn.Module, layers: nn.ModuleList):
    """Temporarily replace the embeddings and the layer list (restored on any exit)."""
    old_embeddings = trunk.transformer.embeddings
    trunk.transformer.embeddings = embeddings
    setattr(trunk.holder, trunk.attr, layers)
    try:
        yield
    finally:
        trunk.transformer.embeddings = old_embeddings
        setattr(trunk.holder, trunk.attr, trunk.layers)


def run_prefix(
    trunk: Trunk,
    prefix: int,
    ids: torch.Tensor,
    mask: torch.Tensor,
    types: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hidden states after the embeddings and the first `prefix` layers (`types`: the token
    type ids of sentence pairs on a model with segment embeddings, else None)."""
    extra = {} if types is None else {"token_type_ids": types}
    embeddings = cast(nn.Module, trunk.transformer.embeddings)
    with _swapped(trunk, embeddings, nn.ModuleList(trunk.layers[:prefix])):
        return trunk.transformer(input_ids=ids, attention_mask=mask, **extra).last_hidden_state


# ---------------------------------------------------------------- the plan


@dataclass
class CachePlan:
    """Whether this run caches, how many layers, where, and how big the cache will be.

    `prefix` is the number of frozen layers below the first adapted one, set whether or not
    they are cached: they run in eval mode either way (0: none, nothing changes).
    """

    enabled: bool
    reason: str
    prefix: int = 0
    cache_dir: Path | None = None
    estimate_bytes: int = 0
    key: str | None = None


def first_adapted_layer(cfg: Config, depth: int) -> int:
    return min(layer_settings(cfg, depth))


def plan_prefix_cache(
    cfg: Config, model: nn.Module, train_set: Encoded, world: int = 1, precision: str | None = None
) -> CachePlan:
    """Decide whether to cache (see `train.cache_activations`) and check the disk.

    Runs before the run directory exists, so a refusal leaves nothing behind. Raises
    `UserError` when caching was asked for (`true`) but cannot work, and when the disk
    cannot hold a cache that is not built yet. With the run's `precision` (and real weights)
    the cache's key is computed here, so a cache already on disk needs no free space.
    """
    setting = cfg.train.cache_activations
    reason = _cannot_cache(cfg, model)
    prefix = 0 if reason else first_adapted_layer(cfg, num_layers(model.config))
    if setting == "false":
        return CachePlan(False, "train.cache_activations=false", prefix)
    if reason is None and setting == "auto":
        reason = _not_worth_it(cfg, len(train_set.ids), world)
    if reason is not None:
        if setting == "true":
            raise UserError(f"train.cache_activations=true: {reason}; set it to auto or false")
        return CachePlan(False, reason, prefix)
    trunk = find_trunk(model)
    hidden = int(cast(Any, model).config.hidden_size)
    width = STORAGE[storage_for(precision)].itemsize if precision else 4
    estimate = int(train_set.lengths.sum()) * hidden * width + 8 * (len(train_set.ids) + 1)
    cache_dir = cache_root(cfg.train.cache_dir)
    key = None
    if precision is not None and not any(p.is_meta for p in model.parameters()):
        assert trunk is not None  # _cannot_cache found it
        key = cache_key(trunk, prefix, train_set, precision)
    if key is None or not _is_complete(cache_dir / key):
        check_disk(cache_dir, estimate)
    return CachePlan(True, f"layers 0-{prefix - 1} frozen", prefix, cache_dir, estimate, key)


def storage_for(precision: str) -> str:
    """fp32 states for an fp32 run (`no`), fp16 under mixed precision (bf16 on overflow)."""
    return "fp32" if precision == "no" else "fp16"


def _cannot_cache(cfg: Config, model: nn.Module) -> str | None:
    """Why the frozen-prefix cache cannot apply to this model and config (None if it can)."""
    trunk = find_trunk(model)
    if trunk is None:
        return f"{_model_name(model)} has no embeddings + layer list to split"
    prefix = first_adapted_layer(cfg, num_layers(model.config))
    if prefix == 0:
        return "lora.layers adapts layer 0, so no frozen layers come before the adapters"
    trainable = [
        name
        for module in prefix_modules(trunk, prefix)
        for name, p in module.named_parameters()
        if p.requires_grad
    ]
    if trainable:
        return (
            f"{len(trainable)} parameters below layer {prefix} train (e.g. {trainable[0]}; "
            f"lora.bias={cfg.lora.bias})"
        )
    return None


def _not_worth_it(cfg: Config, rows: int, world: int) -> str | None:
    """`auto` caches only when training reads every row at least once (the build's cost)."""
    t = cfg.train
    seen = t.max_steps * t.batch_size * world * t.grad_accum if t.max_steps else t.epochs * rows
    if seen < rows:
        return f"the run reads {int(seen)} rows, fewer than the {rows} a cache would hold"
    return None


def check_disk(cache_dir: Path, estimate: int) -> None:
    """Refuse, before building, a cache the disk holding `cache_dir` cannot take."""
    probe = cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = int(estimate * (1 + DISK_HEADROOM))
    if free < need:
        raise UserError(
            f"train.cache_dir {cache_dir}: the activation cache needs about {_gb(need)} "
            f"but only {_gb(free)} are free there; free some space, point train.cache_dir at a "
            "bigger disk, or set train.cache_activations=false"
        )


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**27 else f"{n / 2**20:.1f} MB"


# ---------------------------------------------------------------- the key


def cache_key(trunk: Trunk, prefix: int, encoded: Encoded, precision: str) -> str:
    """sha256 of everything the cached states depend on (see the module docstring)."""
    h = hashlib.sha256()
    config = cast(Any, trunk.transformer).config.to_dict()
    for drop in ("id2label", "label2id", "_name_or_path", "architectures", "problem_type"):
        config.pop(drop, None)
    head = {"format": CACHE_FORMAT, "prefix": prefix, "precision": precision, "config": config}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for module in prefix_modules(trunk, prefix):
        for name, tensor in sorted(module.state_dict().items()):
            h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)
    h.update(encoded.lengths.astype(np.int64).tobytes())
    if encoded.ids:
        h.update(np.concatenate([np.asarray(r, dtype=np.int64) for r in encoded.ids]).tobytes())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------- the cache on disk


class PrefixCache:
    """The cached states of every row, memory-mapped; `batch(rows)` pads a batch of them."""

    def __init__(self, path: Path):
        """Open the cache at `path`; raises (OSError, ValueError, KeyError) if it is damaged."""
        meta = json.loads((path / "meta.json").read_text())
        self.path, self.meta = path, meta
        self.dtype = STORAGE[meta["dtype"]]
        self.offsets = np.load(path / "offsets.npy")
        shape = tuple(int(n) for n in meta["shape"])
        width = self.dtype.itemsize
        if (path / "states.bin").stat().st_size != shape[0] * shape[1] * width:
            raise ValueError(f"states.bin does not hold {shape[0]} x {shape[1]} {meta['dtype']}")
        if len(self.offsets) < 1 or int(self.offsets[-1]) != shape[0]:
            raise ValueError("offsets.npy does not match states.bin")
        self.states = np.memmap(path / "states.bin", dtype=RAW[width], mode="r", shape=shape)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, rows, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [B, T, H] float32, attention mask [B, T]) for `rows`, right-padded."""
        lengths = [int(self.offsets[i + 1] - self.offsets[i]) for i in rows]
        width = padded_width(max(lengths))
        states = torch.zeros(len(rows), width, self.states.shape[1], dtype=self.dtype)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for j, (i, n) in enumerate(zip(rows, lengths)):
            chunk = np.array(self.states[self.offsets[i] : self.offsets[i] + n])  # a writable copy
            states[j, :n] = torch.from_numpy(chunk).view(self.dtype)
            mask[j, :n] = 1
        # copy the half-precision states to the device, widen them there (half the traffic)
        return states.to(device).float(), mask.to(device)


def _is_complete(path: Path) -> bool:
    return (path / "meta.json").is_file()


class _Overflow(Exception):
    pass


def build_prefix_cache(
    trunk: Trunk, prefix: int, encoded: Encoded, pad_id: int, path: Path, accelerator
) -> PrefixCache:
    """Open the cache at `path`, building it first if needed, on every process alike.

    Each machine's local main process allocates the file; every local process computes an
    interleaved share of the rows (in length-sorted batches) and writes them in place; the
    local main then writes meta.json and renames the folder into place. The same sequence
    of barriers runs on every process, built or not.
    """
    local_main = accelerator.is_local_main_process
    partial = _partial_path(path, accelerator)
    dtype = storage_for(accelerator.mixed_precision)
    if local_main:
        _remove_dead_partials(path, partial)
        if not _is_complete(path):
            _allocate(partial, encoded, cast(Any, trunk.transformer).config.hidden_size, dtype)
    accelerator.wait_for_everyone()
    building = partial.is_dir()
    if building:
        dtype = _fill_share(trunk, prefix, encoded, pad_id, partial, accelerator, dtype)
    accelerator.wait_for_everyone()
    dtype = _agree_on_dtype(dtype, accelerator)
    if dtype == "bf16":  # fp16 overflowed somewhere: rewrite everything as bf16
        if building:
            _fill_share(trunk, prefix, encoded, pad_id, partial, accelerator, storage="bf16")
        accelerator.wait_for_everyone()
    if local_main and building:
        model = str(getattr(trunk.transformer.config, "_name_or_path", "") or "")
        _finish(partial, path, dtype, encoded, prefix, accelerator.mixed_precision, model)
    accelerator.wait_for_everyone()
    return PrefixCache(path)


def _partial_path(path: Path, accelerator) -> Path:
    """Where this group of processes builds: named by host and the main process's pid, so
    independent runs (a sweep's workers) building the same key never share a folder."""
    pid = [os.getpid()]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(pid)
    return path.with_name(f".{path.name}.partial-{socket.gethostname()}-{pid[0]}")


def _remove_dead_partials(path: Path, mine: Path) -> None:
    """Delete this key's half-built folders left on this host by processes that died."""
    stem = f".{path.name}.partial-{socket.gethostname()}-"
    for old in path.parent.glob(stem + "*"):
        pid = old.name[len(stem) :]
        if old != mine and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _allocate(partial: Path, encoded: Encoded, hidden: int, storage: str) -> None:
    partial.mkdir(parents=True)
    offsets = np.concatenate([[0], np.cumsum(encoded.lengths)]).astype(np.int64)
    np.save(partial / "offsets.npy", offsets)
    raw = RAW[STORAGE[storage].itemsize]
    states = np.memmap(
        partial / "states.bin", dtype=raw, mode="w+", shape=(int(offsets[-1]), hidden)
    )
    states.flush()
    del states


def _fill_share(trunk, prefix, encoded, pad_id, partial, accelerator, storage) -> str:
    """Compute this process's share of the rows into the shared file; 'bf16' on fp16 overflow."""
    offsets = np.load(partial / "offsets.npy")
    hidden = trunk.transformer.config.hidden_size
    width = STORAGE[storage].itemsize
    states = np.memmap(
        partial / "states.bin", dtype=RAW[width], mode="r+", shape=(int(offsets[-1]), hidden)
    )
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    lengths = encoded.lengths
    mine = np.argsort(-lengths, kind="stable")[
        accelerator.local_process_index :: max(local_world, 1)
    ]
    try:
        for rows in _token_batches(mine, lengths, BUILD_TOKENS):
            tick()  # a build runs for minutes: follow the cores other processes leave free
            out = compute_prefix(
                trunk,
                prefix,
                [encoded.ids[i] for i in rows],
                pad_id,
                accelerator,
                encoded.type_rows(rows),
            )
            if storage == "fp16" and float(out.abs().max()) > FP16_LIMIT:
                raise _Overflow
            raw = out.to(STORAGE[storage]).view(_RAW_TORCH[width]).cpu().numpy()
            for j, i in enumerate(rows):
                states[offsets[i] : offsets[i + 1]] = raw[j, : lengths[i]]
    except _Overflow:
        return "bf16"
    finally:
        states.flush()
    return storage


@torch.inference_mode()
def compute_prefix(
    trunk: Trunk,
    prefix: int,
    rows: list[list[int]],
    pad_id: int,
    accelerator,
    types: list[list[int]] | None = None,
) -> torch.Tensor:
    """The prefix's output for token id lists (and their token type ids, for pairs on BERT),
    in eval mode (no dropout), under autocast."""
    modules = prefix_modules(trunk, prefix)
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        ids, mask = pad_batch(rows, pad_id)
        type_ids = None if types is None else pad_batch(types, 0)[0].to(accelerator.device)
        with accelerator.autocast():
            out = run_prefix(
                trunk, prefix, ids.to(accelerator.device), mask.to(accelerator.device), type_ids
            )
        return out.float()
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


_RAW_TORCH = {2: torch.int16, 4: torch.int32}


def _token_batches(order: np.ndarray, lengths: np.ndarray, tokens: int) -> list[np.ndarray]:
    """Consecutive runs of `order` (longest first) holding at most `tokens` padded tokens
    (rows x `padded_width`: one batch shape per eight-token band, which the allocator reuses)."""
    batches, start = [], 0
    while start < len(order):
        width = padded_width(int(lengths[order[start]]))
        stop = start + max(1, tokens // width)
        batches.append(order[start:stop])
        start = stop
    return batches


def _agree_on_dtype(dtype: str, accelerator) -> str:
    """bf16 everywhere if any process saw an fp16 overflow, else the storage they all chose."""
    if accelerator.num_processes == 1:
        return dtype
    flag = torch.tensor([1.0 if dtype == "bf16" else 0.0], device=accelerator.device)
    return "bf16" if float(accelerator.reduce(flag, reduction="sum")) > 0 else dtype


def _finish(
    partial: Path,
    path: Path,
    dtype: str,
    encoded: Encoded,
    prefix: int,
    precision: str,
    model: str = "",
) -> None:
    offsets = np.load(partial / "offsets.npy")
    width = STORAGE[dtype].itemsize
    hidden = (partial / "states.bin").stat().st_size // max(int(offsets[-1]), 1) // width
    meta = {
        "format": CACHE_FORMAT,
        "key": path.name,
        "dtype": dtype,
        "shape": [int(offsets[-1]), int(hidden)],
        "rows": len(encoded.ids),
        "prefix_layers": prefix,
        "precision": precision,
        "model": model,  # for `lorafit cache`'s listing only; the key identifies the weights
    }
    (partial / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    try:
        os.replace(partial, path)
    except OSError:  # another machine finished the same cache first (shared file system)
        if not _is_complete(path):
            raise
        shutil.rmtree(partial, ignore_errors=True)


# ---------------------------------------------------------------- the training forward


class Forward:
    """What the training loop calls: `logits, mask = forward(model, rows)`.

    Without a cache: pad the rows' token ids and run the whole model. With one: read the
    rows' cached states and run the model with its embeddings and lower layers swapped out,
    so only the top layers and the head compute (and get gradients). Either way the frozen
    prefix (`prefix` layers, 0 = none) runs in eval mode, so both paths compute the same.
    """

    def __init__(self, encoded: Encoded, pad_id: int, device, cache=None, trunk=None, prefix=0):
        self.encoded, self.pad_id, self.device = encoded, pad_id, device
        self.cache, self.trunk, self.prefix = cache, trunk, prefix
        if cache is not None:
            self.top = nn.ModuleList(trunk.layers[prefix:])
            self.stand_in = _CachedEmbeddings()

    @property
    def cached(self) -> bool:
        return self.cache is not None

    def __call__(self, model, rows) -> tuple[torch.Tensor, torch.Tensor]:
        with frozen_in_eval(self.trunk, self.prefix):
            if self.cache is None:
                inputs = batch_inputs(self.encoded, rows, self.pad_id, self.device)
                return model(**inputs).logits, inputs["attention_mask"]
            states, mask = self.cache.batch(rows, self.device)
            with self.top_only():
                return model(inputs_embeds=states, attention_mask=mask).logits, mask

    def top_only(self):
        return (
            _swapped(self.trunk, self.stand_in, self.top)
            if self.cache is not None
            else nullcontext()
        )


def make_forward(plan: CachePlan, model, encoded: Encoded, pad_id: int, accelerator) -> Forward:
    """The loop's forward: builds (or reuses) the cache when `plan` says so.

    Before training on a cache it reads a sample of the stored rows back and compares them,
    and the logits they give, with a fresh forward of the whole model (`check_cache`). A
    cache that was on disk and disagrees (corrupted, truncated, another model's) is rebuilt
    once; one just built that disagrees (a model whose layers read more than the hidden
    states) is refused with a one-line `UserError`.
    """
    device = accelerator.device
    unwrapped = accelerator.unwrap_model(model)
    trunk = find_trunk(unwrapped) if plan.prefix else None
    if not plan.enabled:
        log.info("activation cache: off (%s)", plan.reason)
        return Forward(encoded, pad_id, device, trunk=trunk, prefix=plan.prefix)
    assert trunk is not None and plan.cache_dir is not None  # an enabled plan found both
    key = plan.key or cache_key(trunk, plan.prefix, encoded, accelerator.mixed_precision)
    path = plan.cache_dir / key
    reused = _is_complete(path)
    if not reused:
        log.info(
            "activation cache: building %s (about %s) for layers 0-%d",
            path,
            _gb(plan.estimate_bytes),
            plan.prefix - 1,
        )
    plan.cache_dir.mkdir(parents=True, exist_ok=True)
    forward, mismatch = _open_and_check(
        trunk, plan.prefix, encoded, pad_id, path, unwrapped, accelerator
    )
    if mismatch is not None and reused:
        log.warning(
            "activation cache: %s does not hold layers 0-%d's output for these rows (%s); "
            "rebuilding it",
            path,
            plan.prefix - 1,
            mismatch,
        )
        if accelerator.is_local_main_process:
            _discard(path)
        accelerator.wait_for_everyone()
        reused = False
        forward, mismatch = _open_and_check(
            trunk, plan.prefix, encoded, pad_id, path, unwrapped, accelerator
        )
    if mismatch is not None:
        raise UserError(
            f"train.cache_activations: the cached path disagrees with the full model on "
            f"{_model_name(unwrapped)} ({mismatch}); set train.cache_activations=false"
        )
    if reused:
        mark_used(path)  # `lorafit cache` shows the last use
    log.info(
        "activation cache: %s %s (%s, %d rows, layers 0-%d run once)",
        "reusing" if reused else "built",
        path,
        _gb((path / "states.bin").stat().st_size),
        len(forward.cache),
        plan.prefix - 1,
    )
    return forward


def _open_and_check(trunk, prefix, encoded, pad_id, path, model, accelerator):
    """(Forward on the cache at `path`, built if missing; None or why it cannot be trusted),
    the verdict agreed by every process (any one's doubt is everyone's)."""
    forward, mismatch = None, None
    try:
        cache = build_prefix_cache(trunk, prefix, encoded, pad_id, path, accelerator)
    except (OSError, ValueError, KeyError) as e:  # meta.json, offsets.npy or states.bin damaged
        mismatch = f"unreadable: {type(e).__name__}: {e}"
    else:
        forward = Forward(encoded, pad_id, accelerator.device, cache, trunk, prefix)
        mismatch = check_cache(model, forward, accelerator)
    if accelerator.num_processes > 1:
        flag = torch.tensor([0.0 if mismatch is None else 1.0], device=accelerator.device)
        if float(accelerator.reduce(flag, reduction="sum")) > 0 and mismatch is None:
            mismatch = "another process found the cache wrong"
    return forward, mismatch


def _discard(path: Path) -> None:
    """Move a bad cache out of the way (atomically), then delete it."""
    trash = path.with_name(f".{path.name}.bad-{socket.gethostname()}-{os.getpid()}")
    try:
        os.replace(path, trash)
    except OSError:  # gone already (another machine on a shared file system moved it)
        return
    shutil.rmtree(trash, ignore_errors=True)


#: per row, ||stored - fresh|| / ||fresh|| allowed: the storage's rounding plus the small
#: differences a fresh forward with other padding makes (larger under bf16 autocast)
STATE_TOLERANCE = {"no": 1e-4, "mixed": 2e-2}


@torch.inference_mode()
def check_cache(
    model, forward: Forward, accelerator, rows: int = 16, tol: float = 1e-3
) -> str | None:
    """None if the cache can be trusted, else why not. Reads the stored file:

    1. its rows match the training rows (count and every row's length);
    2. a sample of `rows` rows spread evenly through the file (so a damaged stretch longer
       than the gap between two of them, about 1/`rows` of the file, is seen) agrees, token
       by token, with a fresh forward of the prefix;
    3. the top layers on those stored states give the whole model's logits.
    """
    cache, encoded = forward.cache, forward.encoded
    meta_key = cache.meta.get("key")
    if meta_key is not None and meta_key != cache.path.name:
        return f"meta.json names key {meta_key}, not {cache.path.name}"
    if len(cache) != len(encoded.ids) or not np.array_equal(
        np.diff(cache.offsets), encoded.lengths
    ):
        return (
            f"it holds {len(cache)} rows of other lengths than the {len(encoded.ids)} training rows"
        )
    if cache.meta.get("prefix_layers", forward.prefix) != forward.prefix:
        return f"it holds layer {cache.meta['prefix_layers'] - 1}'s output, not layer {forward.prefix - 1}'s"
    pick = np.unique(np.linspace(0, len(cache) - 1, min(rows, len(cache))).astype(int))
    stored, mask = cache.batch(pick, accelerator.device)
    fresh = compute_prefix(
        forward.trunk,
        forward.prefix,
        [encoded.ids[i] for i in pick],
        forward.pad_id,
        accelerator,
        encoded.type_rows(pick),
    )
    limit = STATE_TOLERANCE["no" if accelerator.mixed_precision == "no" else "mixed"]
    for j, i in enumerate(pick):
        n = int(mask[j].sum())
        err = float(torch.linalg.vector_norm(stored[j, :n] - fresh[j, :n]))
        scale = float(torch.linalg.vector_norm(fresh[j, :n])) + 1e-12
        if not err <= limit * scale:  # NaN fails too
            return f"stored row {i} differs from a fresh forward by {err / scale:.3g} (relative)"
    inputs = batch_inputs(encoded, pick, forward.pad_id, accelerator.device)
    was_training = model.training
    model.eval()
    try:
        full = model(**{**inputs, "attention_mask": mask}).logits.float()
        with forward.top_only():
            top = model(inputs_embeds=stored, attention_mask=mask).logits.float()
    finally:
        model.train(was_training)
    diff = float((full - top).abs().max())
    scale = float(full.abs().max()) + 1e-6
    return None if diff <= tol * max(scale, 1.0) else f"max logit difference {diff:.3g}"


# ---------------------------------------------------------------- evaluations on the prefix


class MemoryStates:
    """Rows' prefix states held in memory (fp32); `batch(rows)` pads them like `PrefixCache`."""

    def __init__(self, rows: list[torch.Tensor]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, rows, device) -> tuple[torch.Tensor, torch.Tensor]:
        picked = [self.rows[i] for i in rows]
        width = padded_width(max(len(r) for r in picked))
        states = torch.zeros(len(picked), width, picked[0].shape[-1])
        mask = torch.zeros(len(picked), width, dtype=torch.long)
        for j, r in enumerate(picked):
            states[j, : len(r)] = r
            mask[j, : len(r)] = 1
        return states.to(device), mask.to(device)


class EvalPrefix:
    """Evaluations that run only the layers above the frozen prefix.

    The first call computes the prefix's output (eval mode, the run's autocast) for the
    split's rows and keeps it; later calls (the same rows: the run's validation shard) read
    it. The prefix never trains, so this changes no metric, only the time: with layers 9-11
    adapted on a 12-layer model an evaluation costs a quarter of a whole-model one.
    """

    def __init__(self, trunk: Trunk, prefix: int, pad_id: int, accelerator):
        self.trunk, self.prefix, self.pad_id, self.accelerator = trunk, prefix, pad_id, accelerator
        self.forward: Forward | None = None
        self.rows_key: str | None = None  # the token ids the stored output belongs to

    @staticmethod
    def fits(encoded: Encoded, hidden: int) -> bool:
        return int(encoded.lengths.sum()) * hidden * 4 <= EVAL_PREFIX_LIMIT

    def _build(self, encoded: Encoded) -> Forward:
        rows: list[torch.Tensor | None] = [None] * len(encoded.ids)
        order = np.argsort(-encoded.lengths, kind="stable")
        for batch in _token_batches(order, encoded.lengths, BUILD_TOKENS):
            tick()
            out = compute_prefix(
                self.trunk,
                self.prefix,
                [encoded.ids[i] for i in batch],
                self.pad_id,
                self.accelerator,
                encoded.type_rows(batch),
            )
            for j, i in enumerate(batch):
                rows[i] = out[j, : encoded.lengths[i]].cpu().clone()
        memory = MemoryStates(cast("list[torch.Tensor]", rows))  # every row is filled now
        return Forward(
            encoded, self.pad_id, self.accelerator.device, memory, self.trunk, self.prefix
        )

    @torch.inference_mode()
    def logits(self, model, encoded: Encoded, batch_size: int) -> np.ndarray:
        """Logits of every row of `encoded` (in its order), `model` in eval mode."""
        from lorafit.predict import infer_logits

        key = _ids_digest(encoded)  # other rows (even as many) get their own prefix output
        if self.forward is None or key != self.rows_key:
            self.forward, self.rows_key = self._build(encoded), key
        top = self.forward
        return infer_logits(
            model,
            encoded,
            batch_size,
            self.pad_id,
            self.accelerator.device,
            self.accelerator.autocast,
            forward=lambda idx: top(model, idx)[0],
        )


def _ids_digest(encoded: Encoded) -> str:
    """A digest of the rows' token ids, row boundaries included (a few ms for 2,000 rows)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(encoded.lengths.tobytes())
    h.update(np.fromiter((t for row in encoded.ids for t in row), dtype=np.int64).tobytes())
    return h.hexdigest()


def eval_prefix_for(forward: Forward, validation: Encoded, accelerator) -> EvalPrefix | None:
    """Evaluations on the prefix when training runs on the cache and the split fits in memory."""
    if not forward.cached:
        return None
    hidden = int(forward.trunk.transformer.config.hidden_size)
    if not EvalPrefix.fits(validation, hidden):
        log.info(
            "validation: evaluating the whole model (its prefix output would not fit in %s)",
            _gb(EVAL_PREFIX_LIMIT),
        )
        return None
    return EvalPrefix(forward.trunk, forward.prefix, forward.pad_id, accelerator)
