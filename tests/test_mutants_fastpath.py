"""The activation cache's small decisions (lorafit.fastpath), pinned directly: where the cache
lives, when `auto` builds one, the disk check and its message, batching by tokens, and which
half-built folders are removed. What mutation testing (`scripts/mutation.sh fastpath`) checks
for this module; the cached forward itself is tested by training in tests/test_fastpath.py.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lorafit import fastpath
from lorafit.caches import default_cache_dir
from lorafit.config import load_config
from lorafit.errors import UserError
from lorafit.fastpath import (
    _agree_on_dtype,
    _alive,
    _gb,
    _is_complete,
    _not_worth_it,
    _remove_dead_partials,
    _token_batches,
    check_disk,
    first_adapted_layer,
    storage_for,
)


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LORAFIT_CACHE_DIR", "~/my-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == Path("~/my-cache").expanduser()
    monkeypatch.setenv("LORAFIT_CACHE_DIR", "")
    assert default_cache_dir() == tmp_path / "xdg" / "lorafit" / "activations"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "lorafit" / "activations"


def test_storage_and_the_first_adapted_layer():
    assert (
        storage_for("no") == "fp32"
        and storage_for("bf16") == "fp16"
        and storage_for("fp16") == "fp16"
    )
    cfg = load_config(None, ["model.name=roberta-base", "lora.layers=[4,9,11]"])
    assert first_adapted_layer(cfg, 12) == 4
    assert (
        first_adapted_layer(load_config(None, ["model.name=roberta-base", "lora.layers=all"]), 12)
        == 0
    )


def _train(**kw):
    t = {"max_steps": 0, "batch_size": 16, "grad_accum": 1, "epochs": 1.0, **kw}
    return SimpleNamespace(train=SimpleNamespace(**t))


def test_auto_caches_only_when_every_row_is_read():
    assert _not_worth_it(_train(epochs=1.0), 1000, 1) is None
    assert (
        _not_worth_it(_train(epochs=0.5), 1000, 1)
        == "the run reads 500 rows, fewer than the 1000 a cache would hold"
    )
    assert _not_worth_it(_train(max_steps=10, batch_size=10), 100, 1) is None  # exactly every row
    assert _not_worth_it(_train(max_steps=9, batch_size=10), 100, 1) == (
        "the run reads 90 rows, fewer than the 100 a cache would hold"
    )
    assert _not_worth_it(_train(max_steps=5, batch_size=10), 100, 2) is None  # 5 x 10 x 2 processes
    assert _not_worth_it(_train(max_steps=5, batch_size=5, grad_accum=2), 100, 2) is None
    assert _not_worth_it(_train(max_steps=5, batch_size=5, grad_accum=2), 101, 2) is not None


Usage = namedtuple("Usage", "total used free")


def test_the_disk_check_keeps_ten_percent_headroom(monkeypatch, tmp_path):
    seen = []

    def usage(path):
        seen.append(Path(path))
        return Usage(0, 0, 1_100)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    target = tmp_path / "not" / "made" / "yet"
    check_disk(target, 1_000)  # 1,000 x 1.1 = 1,100: fits exactly
    assert seen == [tmp_path]  # the nearest folder that exists
    with pytest.raises(UserError) as e:
        check_disk(target, 1_001)
    assert str(e.value).startswith(
        f"train.cache_dir {target}: the activation cache needs about 0.0 MB"
    )
    assert not target.exists()


def test_sizes_read_in_megabytes_then_gigabytes():
    assert _gb(2**20) == "1.0 MB"
    assert _gb(2**27 - 1) == "128.0 MB"
    assert _gb(2**27) == "0.12 GB"
    assert _gb(3 * 2**30) == "3.00 GB"


def test_the_disk_message_names_both_sizes(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(0, 0, 2**30))
    with pytest.raises(UserError) as e:
        check_disk(tmp_path, 2**31)
    assert str(e.value) == (
        f"train.cache_dir {tmp_path}: the activation cache needs about 2.20 GB but only 1.00 GB "
        "are free there; free some space, point train.cache_dir at a bigger disk, or set "
        "train.cache_activations=false"
    )


def test_batches_hold_at_most_the_token_budget():
    """Rows x the batch's width padded to a multiple of 8 (the width the model computes on)."""
    lengths = np.array([10, 50, 20, 0, 30])  # padded: 16, 56, 24, 8, 32
    order = np.array([1, 4, 2, 0, 3])  # longest first
    got = [b.tolist() for b in _token_batches(order, lengths, 100)]
    assert got == [[1], [4, 2, 0], [3]]  # 56 wide: one row; 32 wide: three; 8 wide: the rest
    assert [b.tolist() for b in _token_batches(order, lengths, 40)] == [[1], [4], [2], [0, 3]]
    assert [b.tolist() for b in _token_batches(np.array([3]), lengths, 1)] == [
        [3]
    ]  # at least a row
    assert _token_batches(np.array([], dtype=int), lengths, 100) == []
    empty = np.zeros(5, dtype=int)  # empty texts are padded to 8 tokens like any other
    assert [b.tolist() for b in _token_batches(np.arange(5), empty, 16)] == [[0, 1], [2, 3], [4]]
    assert [b.tolist() for b in _token_batches(np.arange(5), np.full(5, 8), 16)] == [
        [0, 1],
        [2, 3],
        [4],
    ]


def test_one_process_keeps_its_own_dtype():
    one = SimpleNamespace(num_processes=1)
    assert _agree_on_dtype("fp16", one) == "fp16" and _agree_on_dtype("bf16", one) == "bf16"


class _TwoProcesses:
    """An accelerator whose other process stored `other`; reduce adds that process's flag."""

    num_processes = 2

    def __init__(self, other: str, device: str = "cpu"):
        self.other, self.device = other, torch.device(device)

    def reduce(self, flag, reduction):
        assert flag.device == self.device and flag.shape == (1,) and reduction == "sum"
        if flag.is_meta:  # only where the flag was made is checked
            return torch.zeros(1)
        self.sent = float(flag)  # what the other process learns from this one
        return flag + (1.0 if self.other == "bf16" else 0.0)


def test_any_process_overflowing_makes_every_process_bf16():
    for mine, other, want in [
        ("fp16", "fp16", "fp16"),
        ("fp16", "bf16", "bf16"),
        ("bf16", "fp16", "bf16"),
        ("fp32", "fp32", "fp32"),
    ]:
        accelerator = _TwoProcesses(other)
        assert _agree_on_dtype(mine, accelerator) == want, (mine, other)
        assert (accelerator.sent > 0) == (mine == "bf16"), (
            mine,
            accelerator.sent,
        )  # tells the others
    assert _agree_on_dtype("fp16", _TwoProcesses("fp16", device="meta")) == "fp16"


def test_only_dead_processes_half_built_folders_are_removed(tmp_path):
    """Only processes this test started are looked at (a mutant may signal them)."""
    path = tmp_path / "abc123"
    host = socket.gethostname()
    dead, other_dead = (subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(2))
    dead.wait()
    other_dead.wait()
    # SIGHUP's default action restored: under nohup the child would inherit "ignore" and a
    # signal sent by mistake would go unseen; it says when it has, before it is looked at
    child = "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); print('ready', flush=True); time.sleep(60)"
    alive = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert alive.stdout is not None and alive.stdout.readline() == "ready\n"
    try:
        folders = {
            "mine": tmp_path / f".abc123.partial-{host}-{other_dead.pid}",  # this run's own: kept
            "dead": tmp_path / f".abc123.partial-{host}-{dead.pid}",
            "alive": tmp_path / f".abc123.partial-{host}-{alive.pid}",
            "other host": tmp_path / f".abc123.partial-elsewhere-{dead.pid}",
            "other key": tmp_path / f".abc999.partial-{host}-{dead.pid}",
            "odd": tmp_path / f".abc123.partial-{host}-12x",
        }
        for folder in folders.values():
            folder.mkdir()
        assert _alive(alive.pid) and not _alive(dead.pid)
        _remove_dead_partials(path, folders["mine"])
        assert {k for k, f in folders.items() if f.exists()} == {
            "mine",
            "alive",
            "other host",
            "other key",
            "odd",
        }
        # looked at, not signalled: a signal (os.kill(pid, 1) for 0) ends it within the second
        with pytest.raises(subprocess.TimeoutExpired):
            alive.wait(timeout=1)
    finally:
        alive.kill()
        alive.wait()


def test_a_process_of_another_user_counts_as_alive(monkeypatch):
    """os.kill(pid, 0) on another user's process raises PermissionError: it exists."""
    asked = []

    def kill(pid, sig):
        asked.append((pid, sig))
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(fastpath.os, "kill", kill)
    assert _alive(4242) is True and asked == [(4242, 0)]


def test_a_cache_is_complete_when_its_meta_file_is_there(tmp_path):
    assert not _is_complete(tmp_path)
    (tmp_path / "meta.json").mkdir()
    assert not _is_complete(tmp_path)  # a folder of that name is not the file
    (tmp_path / "meta.json").rmdir()
    (tmp_path / "meta.json").write_text("{}")
    assert _is_complete(tmp_path)
    assert fastpath.DISK_HEADROOM == 0.10


# ------------------------------------------------------------ the cache key and the ids digest


@pytest.fixture(scope="module")
def tiny_trunk():
    from transformers import BertConfig, BertForSequenceClassification

    from lorafit.fastpath import find_trunk

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
        num_labels=2,
    )
    return find_trunk(BertForSequenceClassification(config).eval())


def _rows(*rows):
    from lorafit.data.tokens import Encoded

    return Encoded([list(r) for r in rows], None, 0)


def test_the_cache_key_changes_with_each_token_and_each_row_boundary(tiny_trunk):
    from lorafit.fastpath import cache_key

    key = cache_key(tiny_trunk, 2, _rows([1, 2, 3], [4, 5]), "no")
    assert len(key) == 32 and int(key, 16) >= 0
    assert cache_key(tiny_trunk, 2, _rows([1, 2, 3], [4, 5]), "no") == key
    assert cache_key(tiny_trunk, 2, _rows([1, 2, 3], [4, 6]), "no") != key  # same lengths
    assert cache_key(tiny_trunk, 2, _rows([1, 2], [3, 4, 5]), "no") != key  # same tokens
    assert cache_key(tiny_trunk, 2, _rows([4, 5], [1, 2, 3]), "no") != key  # row order
    assert cache_key(tiny_trunk, 1, _rows([1, 2, 3], [4, 5]), "no") != key  # the prefix
    assert cache_key(tiny_trunk, 2, _rows([1, 2, 3], [4, 5]), "bf16") != key  # the storage
    assert cache_key(tiny_trunk, 2, _rows(), "no") != cache_key(tiny_trunk, 1, _rows(), "no")


def test_the_cache_key_reads_the_prefix_weights_config_and_format_only(tiny_trunk, monkeypatch):
    from lorafit import fastpath
    from lorafit.fastpath import cache_key

    rows = _rows([1, 2, 3], [4, 5])
    key = cache_key(tiny_trunk, 2, rows, "no")
    config = tiny_trunk.transformer.config
    for name, value in (("id2label", {0: "a", 1: "b"}), ("label2id", {"a": 0, "b": 1})):
        monkeypatch.setattr(config, name, value)
    monkeypatch.setattr(config, "_name_or_path", "/elsewhere")
    monkeypatch.setattr(config, "architectures", ["Other"])
    monkeypatch.setattr(config, "problem_type", "regression")
    assert cache_key(tiny_trunk, 2, rows, "no") == key  # names of the classes, not the states
    monkeypatch.setattr(config, "layer_norm_eps", 1e-5)
    assert cache_key(tiny_trunk, 2, rows, "no") != key  # what the states depend on
    monkeypatch.undo()
    monkeypatch.setattr(fastpath, "CACHE_FORMAT", fastpath.CACHE_FORMAT + 1)
    assert cache_key(tiny_trunk, 2, rows, "no") != key
    monkeypatch.undo()
    weights = [
        tiny_trunk.transformer.embeddings.word_embeddings.weight,
        tiny_trunk.layers[1].attention.self.query.bias,
    ]
    for weight in weights:
        with torch.no_grad():
            weight[0] += 1e-3
            assert cache_key(tiny_trunk, 2, rows, "no") != key, weight.shape
            weight[0] -= 1e-3
        assert cache_key(tiny_trunk, 2, rows, "no") == key
    with torch.no_grad():
        tiny_trunk.layers[2].output.dense.weight.add_(1.0)  # above the prefix
        assert cache_key(tiny_trunk, 2, rows, "no") == key
        tiny_trunk.layers[2].output.dense.weight.sub_(1.0)


def test_a_weight_of_another_shape_or_dtype_with_the_same_bytes_changes_the_key(tiny_trunk):
    from lorafit.fastpath import cache_key

    rows = _rows([1, 2])
    key = cache_key(tiny_trunk, 1, rows, "no")
    layer_norm = tiny_trunk.layers[0].output.LayerNorm
    saved = layer_norm.weight
    try:
        layer_norm.weight = torch.nn.Parameter(saved.detach().reshape(2, 4).clone())
        assert cache_key(tiny_trunk, 1, rows, "no") != key
        bits = saved.detach().view(torch.int32).clone()
        layer_norm.weight = torch.nn.Parameter(bits, requires_grad=False)
        assert cache_key(tiny_trunk, 1, rows, "no") != key
    finally:
        layer_norm.weight = saved
    assert cache_key(tiny_trunk, 1, rows, "no") == key


def test_the_ids_digest_changes_with_each_token_and_each_row_boundary():
    from lorafit.fastpath import _ids_digest

    digest = _ids_digest(_rows([1, 2, 3], [4, 5]))
    assert len(digest) == 32 and _ids_digest(_rows([1, 2, 3], [4, 5])) == digest
    for other in (_rows([1, 2, 3], [4, 6]), _rows([1, 2], [3, 4, 5]), _rows([1, 2, 3]), _rows()):
        assert _ids_digest(other) != digest


def test_the_cache_key_is_the_documented_recipe(tiny_trunk):
    """The key names the folder of every cache users have built (gigabytes, tens of minutes
    each): a change to how it is computed silently rebuilds them all, so the recipe is written
    out here a second time, from the module docstring, and the two must agree: sha256 of the
    header (CACHE_FORMAT, prefix, storage, the model config without its class names) as sorted
    JSON, then each prefix module's tensors by name (name, dtype, shape, bytes), then the rows'
    lengths and token ids as int64; the first 32 hex digits."""
    import hashlib
    import json

    from lorafit.fastpath import CACHE_FORMAT, cache_key

    rows = _rows([1, 2, 3], [4, 5])
    config = tiny_trunk.transformer.config.to_dict()
    for name in ("id2label", "label2id", "_name_or_path", "architectures", "problem_type"):
        del config[name]
    h = hashlib.sha256()
    header = {"format": CACHE_FORMAT, "prefix": 2, "precision": "bf16", "config": config}
    h.update(json.dumps(header, sort_keys=True, default=str).encode())
    modules = [tiny_trunk.transformer.embeddings, *tiny_trunk.layers[:2]]  # BERT: no shared parts
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            h.update(tensor.detach().contiguous().numpy().tobytes())
    h.update(np.array([3, 2], dtype=np.int64).tobytes())
    h.update(np.array([1, 2, 3, 4, 5], dtype=np.int64).tobytes())
    assert cache_key(tiny_trunk, 2, rows, "bf16") == h.hexdigest()[:32]


def test_the_ids_digest_is_blake2b_of_int64_lengths_and_tokens():
    import hashlib

    from lorafit.fastpath import _ids_digest

    h = hashlib.blake2b(digest_size=16)
    h.update(np.array([3, 2], dtype=np.int64).tobytes())
    h.update(np.array([1, 2, 3, 4, 5], dtype=np.int64).tobytes())
    assert _ids_digest(_rows([1, 2, 3], [4, 5])) == h.hexdigest()


def test_a_model_without_a_trunk_is_named_by_its_own_class_not_its_wrapper():
    """`_cannot_cache`'s reason names the model the user chose (PEFT's wrapper unwrapped)."""

    class PlainClassifier(torch.nn.Module):  # no embeddings + layer list
        config = SimpleNamespace(num_hidden_layers=2)

    class Wrapper(torch.nn.Module):  # as PEFT's PeftModel
        def __init__(self):
            super().__init__()
            self.inner = PlainClassifier()

        def get_base_model(self):
            return self.inner

    cfg = load_config(None, ["data.label_names=[a,b]", "lora.layers=1"])
    for model in (PlainClassifier(), Wrapper()):
        assert fastpath._cannot_cache(cfg, model) == (
            "PlainClassifier has no embeddings + layer list to split"
        )
