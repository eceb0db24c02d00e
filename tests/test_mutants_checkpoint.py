"""Checkpoint pieces (lorafit.checkpoint) tested directly, without training: what mutation
testing (`scripts/mutation.sh checkpoint`) showed the end-to-end resume tests leave loose.

Each test writes real checkpoint folders with `save_training_state` and reads them back: file
set, exact round trip (weights, optimizer with tuple betas, scheduler, state, every RNG),
which folders count as complete and in which order, pruning, the refusal messages, and
`trim_metrics`. The resume-after-SIGKILL behaviour itself is in tests/test_resume.py.
"""

from __future__ import annotations

import json
import os
import random
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import lorafit.checkpoint as ckpt
from lorafit.checkpoint import (
    capture_rng,
    checkpoint_path,
    complete_checkpoints,
    latest_checkpoint,
    load_training_state,
    prune_checkpoints,
    restore_rng,
    save_training_state,
    trim_metrics,
)
from lorafit.errors import UserError

FILES = {
    "trainable.safetensors",
    "optimizer.safetensors",
    "optimizer.json",
    "scheduler.json",
    "rng.safetensors",
    "state.json",
}


def _optimizer() -> dict:
    """An AdamW state dict as torch writes one (built by hand: creating an optimizer costs
    seconds of imports in every mutant's worker)."""
    group = {
        "lr": 0.01,
        "betas": (0.8, 0.95),
        "eps": 1e-08,
        "weight_decay": 0.01,
        "amsgrad": False,
        "foreach": None,
        "maximize": False,
        "capturable": False,
        "differentiable": False,
        "fused": None,
    }
    torch.manual_seed(0)
    state = {
        i: {
            "step": torch.tensor(2.0),
            "exp_avg": torch.randn(*shape),
            "exp_avg_sq": torch.rand(*shape),
        }
        for i, shape in enumerate([(3, 4), (4,)])
    }
    return {
        "state": state,
        "param_groups": [{**group, "params": [0]}, {**group, "weight_decay": 0.0, "params": [1]}],
    }


def _parts(step: int = 7, best: bool = True) -> dict:
    weights = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    return {
        "trainable": {
            "lora_A": weights.t(),
            "head": torch.ones(2, requires_grad=True),
        },  # non-contiguous, grad
        "optimizer_state": _optimizer(),
        "scheduler_state": {"last_epoch": step, "_last_lr": [0.01, 0.005]},
        "state": {"step": step, "epoch": 1, "batch": 3, "bad_evals": 0, "window": [0, 240]},
        "best": {"lora_A": weights * 2} if best else None,
        "rng": [capture_rng(), capture_rng()],
    }


def _save(run, step: int, keep_last: int = 100, **over):
    return save_training_state(run, step, keep_last=keep_last, **{**_parts(step), **over})


def test_a_checkpoint_round_trips_exactly(tmp_path):
    parts = _parts()
    path = save_training_state(tmp_path, 7, keep_last=3, **parts)
    assert path == tmp_path / "checkpoints" / "step-000007" == checkpoint_path(tmp_path, 7)
    assert {p.name for p in path.iterdir()} == FILES | {"best.safetensors"}
    umask = os.umask(0)
    os.umask(umask)
    for p in path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name
    saved = load_training_state(path)
    assert saved["state"] == {"format": 1, **parts["state"]}
    assert saved["scheduler"] == parts["scheduler_state"]
    assert saved["trainable"].keys() == parts["trainable"].keys()
    for k, v in parts["trainable"].items():
        assert torch.equal(saved["trainable"][k], v.detach())
    assert torch.equal(saved["best"]["lora_A"], parts["best"]["lora_A"])
    want, got = parts["optimizer_state"], saved["optimizer"]
    assert got["param_groups"] == want["param_groups"] and got["param_groups"][0]["betas"] == (
        0.8,
        0.95,
    )
    assert got["state"].keys() == want["state"].keys()
    for i, entry in want["state"].items():
        assert got["state"][i].keys() == entry.keys()
        assert all(
            torch.equal(torch.as_tensor(got["state"][i][k]), torch.as_tensor(v))
            for k, v in entry.items()
        )
    assert len(saved["rng"]) == 2
    for a, b in zip(saved["rng"], parts["rng"]):
        assert torch.equal(a["torch"], b["torch"]) and a["cuda"] == b["cuda"] == []
        assert a["python"][0] == b["python"][0] and list(a["python"][1]) == list(b["python"][1])
        assert a["python"][2] == b["python"][2]
        assert a["numpy"] == json.loads(json.dumps(b["numpy"]))


def test_without_best_weights_there_is_no_best_file(tmp_path):
    path = save_training_state(tmp_path, 2, keep_last=1, **_parts(2, best=False))
    assert {p.name for p in path.iterdir()} == FILES
    assert load_training_state(path)["best"] is None


def test_optimizer_values_that_are_not_tensors_survive(tmp_path):
    opt = {
        "state": {
            0: {"step": 3, "exp_avg": torch.ones(2), "ema.slow": torch.zeros(1)},
            1: {"step": 4},
        },
        "param_groups": [{"params": [0, 1], "lr": 0.1, "betas": (0.9, 0.99), "eps": 1e-8}],
    }
    saved = load_training_state(_save(tmp_path, 1, optimizer_state=opt))["optimizer"]
    assert saved["state"][0]["step"] == 3 and torch.equal(
        saved["state"][0]["exp_avg"], torch.ones(2)
    )
    assert torch.equal(saved["state"][0]["ema.slow"], torch.zeros(1))  # a dotted key stays whole
    assert saved["state"][1] == {"step": 4}
    assert saved["param_groups"] == [
        {"params": [0, 1], "lr": 0.1, "betas": (0.9, 0.99), "eps": 1e-8}
    ]


def test_restored_generators_repeat_their_draws():
    saved = capture_rng()
    first = (torch.rand(3), random.random(), np.random.rand(3), random.gauss(0, 1))
    restore_rng(
        json.loads(json.dumps({k: v for k, v in saved.items() if k != "torch"}))
        | {"torch": saved["torch"]}
    )
    again = (torch.rand(3), random.random(), np.random.rand(3), random.gauss(0, 1))
    assert torch.equal(first[0], again[0]) and first[1] == again[1] and first[3] == again[3]
    assert np.array_equal(first[2], again[2])


def test_saved_generators_restore_through_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    parts = _parts(3)
    first = (torch.rand(2), random.random(), np.random.rand(2))
    path = save_training_state(tmp_path, 3, keep_last=1, **parts)
    restore_rng(load_training_state(path)["rng"][1])
    assert torch.equal(torch.rand(2), first[0]) and random.random() == first[1]
    assert np.array_equal(np.random.rand(2), first[2])


def test_which_folders_are_complete_and_in_what_order(tmp_path):
    for step in (999_999, 1_000_000, 20, 3):
        _save(tmp_path, step)
    root = tmp_path / "checkpoints"
    (root / "step-000050").mkdir()  # no state.json: a crash before the marker
    (root / "step-000060").mkdir()
    (root / "step-000060" / "state.json").write_text("{not json")
    (root / "step-000070").mkdir()
    (root / "step-000070" / "state.json").write_text(json.dumps({"format": 2, "step": 70}))
    (root / "step-000080").mkdir()
    (root / "step-000080" / "state.json").write_text(json.dumps([1, 2]))
    (root / "step-000090.tmp").mkdir()
    (root / "step-000090.tmp" / "state.json").write_text(json.dumps({"format": 1}))
    (root / "step-000095").write_text("a file, not a folder")
    (root / "step-abc").mkdir()
    (root / "step-000001-copy").mkdir()
    (root / "step-000001-copy" / "state.json").write_text(json.dumps({"format": 1}))
    names = [p.name for p in complete_checkpoints(tmp_path)]
    assert names == ["step-000003", "step-000020", "step-999999", "step-1000000"]
    assert latest_checkpoint(tmp_path) == root / "step-1000000"
    assert (
        latest_checkpoint(tmp_path / "elsewhere") is None
        and complete_checkpoints(tmp_path / "elsewhere") == []
    )


def test_saving_keeps_the_newest_and_removes_leftovers(tmp_path):
    for step in range(1, 6):
        _save(tmp_path, step, keep_last=2)
    root = tmp_path / "checkpoints"
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000004", "step-000005"]
    (root / "step-000009.tmp").mkdir()
    (root / "step-000006").mkdir()  # a stale, incomplete copy of the step about to be saved
    (root / "step-000006" / "junk").write_text("x")
    path = _save(tmp_path, 6, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["step-000005", "step-000006"]
    assert "junk" not in {p.name for p in path.iterdir()}
    prune_checkpoints(tmp_path, 1)
    assert [p.name for p in root.iterdir()] == ["step-000006"]
    prune_checkpoints(tmp_path / "no-run-here", 1)  # nothing to prune: no error


def test_a_failed_save_says_why_and_leaves_the_earlier_checkpoints(tmp_path, monkeypatch):
    _save(tmp_path, 1)
    final = checkpoint_path(tmp_path, 2)
    for error, reason in [
        (OSError(28, "No space left on device"), "No space left on device"),
        (RuntimeError("Io error: disk full"), "Io error: disk full"),
    ]:

        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(ckpt, "save_file", fail)
        with pytest.raises(UserError) as e:
            _save(tmp_path, 2)
        assert str(e.value) == (
            f"{final}: cannot write the checkpoint ({reason}); free disk space or choose a writable "
            "run.dir, then `lorafit train --resume` (earlier checkpoints are intact)"
        )
        assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001"]
    monkeypatch.undo()
    assert load_training_state(latest_checkpoint(tmp_path))["state"]["step"] == 1


def test_a_missing_or_damaged_part_is_named(tmp_path):
    path = _save(tmp_path, 4)
    (path / "optimizer.json").unlink()
    with pytest.raises(UserError) as e:
        load_training_state(path)
    message = str(e.value)
    assert message.startswith(f"{path}: damaged checkpoint (FileNotFoundError: ")
    assert (
        message.endswith(f"); delete {path} to resume from the one before") and "\n" not in message
    )
    path = _save(tmp_path, 5)
    data = (path / "trainable.safetensors").read_bytes()
    (path / "trainable.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"damaged checkpoint \(\w+Error: .+\); delete "):
        load_training_state(path)
    path = _save(tmp_path, 6)
    (path / "state.json").write_text(json.dumps({"format": 1, "step": 6, "rng": [{"cuda": 0}]}))
    with pytest.raises(UserError, match=r"damaged checkpoint \(KeyError: 'python'\)"):
        load_training_state(path)
    (path / "state.json").unlink()
    with pytest.raises(UserError) as e:
        load_training_state(path)
    assert (
        str(e.value)
        == f"{path / 'state.json'}: missing or damaged; delete {path} to resume from the one before"
    )


def test_tensors_are_saved_as_they_are(tmp_path):
    path = _save(tmp_path, 8)
    loaded = load_file(str(path / "trainable.safetensors"))
    assert torch.equal(loaded["lora_A"], torch.arange(12, dtype=torch.float32).reshape(3, 4).t())
    assert loaded["lora_A"].is_contiguous() and not loaded["head"].requires_grad


def test_trim_metrics_keeps_train_and_eval_rows_up_to_the_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert trim_metrics(path, 3) == 0 and not path.exists()
    rows = [
        {"kind": "train", "step": 1},
        {"kind": "eval", "step": 2},
        {"kind": "train", "step": 3},
        {"kind": "train", "step": 4},
        {"kind": "eval", "step": 4},
        {"kind": "test", "step": 1},
        {"kind": "note"},
        {"kind": "train"},
        [1, 2],
    ]
    lines = [json.dumps(r) for r in rows]
    path.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n" + '{"kind": "tr')
    assert trim_metrics(path, 3) == 3  # a bad line is skipped, not the end of the file
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in rows[:3])


def test_a_damaged_checkpoint_message_is_one_line_even_for_odd_errors(tmp_path, monkeypatch):
    path = _save(tmp_path, 9)
    for error, shown in [
        (RuntimeError(), "RuntimeError: "),
        (RuntimeError("first\nsecond"), "RuntimeError: first"),
    ]:

        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(ckpt, "load_file", fail)
        with pytest.raises(UserError) as e:
            load_training_state(path)
        assert (
            str(e.value)
            == f"{path}: damaged checkpoint ({shown}); delete {path} to resume from the one before"
        )


class _Killed(BaseException):
    """Stands for SIGKILL in the middle of a save (not an Exception: nothing cleans up)."""


def test_a_save_killed_midway_leaves_a_tmp_folder_that_is_ignored_then_removed(
    tmp_path, monkeypatch
):
    _save(tmp_path, 1)
    write = ckpt._write_parts

    def killed(tmp, *args):
        write(tmp, *args)
        raise _Killed

    monkeypatch.setattr(ckpt, "_write_parts", killed)
    with pytest.raises(_Killed):
        _save(tmp_path, 2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-000001", "step-000002.tmp"]
    assert latest_checkpoint(tmp_path) == root / "step-000001"  # complete files, but never renamed
    monkeypatch.undo()
    _save(tmp_path, 2)  # the same step again: the leftover is replaced
    assert sorted(p.name for p in root.iterdir()) == ["step-000001", "step-000002"]


def test_an_unwritable_run_folder_is_a_user_error(tmp_path):
    run = tmp_path / "run"
    run.write_text("a file where the run folder should be")
    with pytest.raises(UserError, match=r"cannot write the checkpoint \(.+\); free disk space"):
        _save(run, 1)


def test_pruning_tolerates_checkpoints_another_process_removed(tmp_path, monkeypatch):
    kept = _save(tmp_path, 3)
    gone = [tmp_path / "checkpoints" / "step-000001", tmp_path / "checkpoints" / "step-000002"]
    monkeypatch.setattr(ckpt, "complete_checkpoints", lambda run_dir: [*gone, kept])
    prune_checkpoints(tmp_path, 1)  # no error for the vanished ones
    assert kept.is_dir()
