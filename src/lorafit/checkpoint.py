"""Resumable training checkpoints: everything needed to continue a killed run exactly.

    save_training_state(run_dir, step, trainable=..., optimizer_state=..., ...)
    path = latest_checkpoint(run_dir)          # newest complete one, or None
    saved = load_training_state(path)          # tensors and JSON, nothing executed

A checkpoint is a folder `RUN_DIR/checkpoints/step-000200/`:

| file | contents |
|---|---|
| `trainable.safetensors` | the trainable weights (LoRA, head, trained biases) |
| `best.safetensors` | the best weights so far (kept in memory by the loop; absent before the first eval) |
| `optimizer.safetensors` + `optimizer.json` | the optimizer's tensors (flattened) and the rest (param groups) |
| `scheduler.json` | the learning-rate scheduler's state dict |
| `rng.safetensors` | torch CPU (and CUDA) generator states, one set per process |
| `state.json` | written last: step, epoch, batch position, early stopping, train-row window, Python/NumPy RNG |

Only safetensors and JSON are read back: a checkpoint cannot run code. The folder is
written as `step-000200.tmp/` and renamed when complete, and `state.json` is its last file,
so a crash at any moment leaves either a complete checkpoint or a `.tmp` leftover that
`latest_checkpoint` ignores and the next save removes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lorafit.errors import UserError
from lorafit.rundir import usual_mode, write_atomic, write_json

CHECKPOINTS = "checkpoints"
MARKER = "state.json"
FORMAT = 1
_NAME = re.compile(r"step-(\d+)")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"


# ------------------------------------------------------------------ saving


def save_training_state(
    run_dir: Path,
    step: int,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    state: dict,
    best: dict[str, torch.Tensor] | None,
    rng: list[dict],
    keep_last: int,
    ema: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `checkpoints/step-N/` through a temporary folder; keep the newest `keep_last`.

    Raises `UserError` if the disk is full or the folder unwritable; the earlier
    checkpoints are left as they were.
    """
    final = checkpoint_path(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    try:
        final.parent.mkdir(exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write_parts(tmp, trainable, optimizer_state, scheduler_state, state, best, rng, ema)
        if final.exists():  # a stale copy of this step from before a crash
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
    except Exception as e:  # noqa: BLE001 - safetensors' Rust writer raises its own error type on a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise UserError(
            f"{final}: cannot write the checkpoint ({reason}); free disk space or choose a writable "
            "run.dir, then `lorafit train --resume` (earlier checkpoints are intact)"
        ) from None
    prune_checkpoints(run_dir, keep_last)
    return final


def _write_parts(
    tmp, trainable, optimizer_state, scheduler_state, state, best, rng, ema=None
) -> None:
    """The checkpoint's files, `state.json` last: its presence means the rest is complete."""
    _save_tensors(tmp / "trainable.safetensors", trainable)
    if best is not None:
        _save_tensors(tmp / "best.safetensors", best)
    if ema is not None:  # train.ema_decay: the moving average of the trainable weights
        _save_tensors(tmp / "ema.safetensors", ema)
    tensors, meta = flatten_optimizer(optimizer_state)
    _save_tensors(tmp / "optimizer.safetensors", tensors)
    write_json(tmp / "optimizer.json", meta)
    write_atomic(tmp / "scheduler.json", json.dumps(scheduler_state, indent=2) + "\n")
    rng_tensors, rng_meta = _split_rng(rng)
    _save_tensors(tmp / "rng.safetensors", rng_tensors)
    write_json(tmp / MARKER, {"format": FORMAT, **state, "rng": rng_meta})
    _fsync_dir(tmp)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    usual_mode(path)
    with open(path, "rb") as f:  # on disk before the folder is renamed into place
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints, and stray `.tmp` folders."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return
    for path in root.glob("*.tmp"):
        shutil.rmtree(path, ignore_errors=True)
    for path in complete_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict as safetensors tensors (`state.<param>.<key>`) plus JSON."""
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value
            else:
                other.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": other}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The inverse of `flatten_optimizer`; lists that JSON made of tuples become tuples again."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entry in meta["state"].items():
        state.setdefault(int(index), {}).update(entry)
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------ RNG


def capture_rng() -> dict:
    """This process's generator states: torch CPU/CUDA (tensors), Python and NumPy (JSON)."""
    # legacy=True (the default) gives the tuple; numpy's stubs pick the dict overload for a bare call
    np_state = cast("tuple[Any, ...]", np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def restore_rng(saved: dict) -> None:
    torch.set_rng_state(saved["torch"])
    if saved["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = saved["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


def _split_rng(per_process: list[dict]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors, meta = {}, []
    for rank, s in enumerate(per_process):
        tensors[f"{rank}.torch"] = s["torch"]
        for i, state in enumerate(s["cuda"]):
            tensors[f"{rank}.cuda.{i}"] = state
        meta.append({"cuda": len(s["cuda"]), "python": s["python"], "numpy": s["numpy"]})
    return tensors, meta


def _join_rng(tensors: dict[str, torch.Tensor], meta: list[dict]) -> list[dict]:
    return [
        {
            "torch": tensors[f"{rank}.torch"],
            "cuda": [tensors[f"{rank}.cuda.{i}"] for i in range(m["cuda"])],
            "python": m["python"],
            "numpy": m["numpy"],
        }
        for rank, m in enumerate(meta)
    ]


# ------------------------------------------------------------------ loading


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (their `state.json` parses), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    found = []
    for path in root.glob("step-*"):
        m = _NAME.fullmatch(path.name)
        if m and path.is_dir() and _read_marker(path) is not None:
            found.append((int(m[1]), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def _read_marker(path: Path) -> dict | None:
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == FORMAT else None


def load_training_state(path: Path) -> dict:
    """`{state, trainable, best, ema, optimizer, scheduler, rng}` from a checkpoint folder
    (`best` and `ema` are None when the checkpoint has none).

    Raises `UserError` naming the file if a part is missing or damaged.
    """
    path = Path(path)
    state = _read_marker(path)
    if state is None:
        raise UserError(
            f"{path / MARKER}: missing or damaged; delete {path} to resume from the one before"
        )
    rng_meta = state.pop("rng")
    try:
        optimizer_meta = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
        scheduler = json.loads((path / "scheduler.json").read_text(encoding="utf-8"))
        best = (
            load_file(str(path / "best.safetensors"))
            if (path / "best.safetensors").exists()
            else None
        )
        ema = (
            load_file(str(path / "ema.safetensors"))
            if (path / "ema.safetensors").exists()
            else None
        )
        return {
            "state": state,
            "trainable": load_file(str(path / "trainable.safetensors")),
            "best": best,
            "ema": ema,
            "optimizer": unflatten_optimizer(
                load_file(str(path / "optimizer.safetensors")), optimizer_meta
            ),
            "scheduler": scheduler,
            "rng": _join_rng(load_file(str(path / "rng.safetensors")), rng_meta),
        }
    except Exception as e:  # noqa: BLE001 - safetensors, JSON and OS errors alike mean a damaged file
        raise UserError(
            f"{path}: damaged checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"delete {path} to resume from the one before"
        ) from None


# ------------------------------------------------------------------ metrics.jsonl


def trim_metrics(path: Path, step: int) -> int:
    """Keep the train/eval rows up to `step` (a resumed run rewrites the rest); return the count.

    A half-written last line from a crash is dropped too. Rewritten atomically.
    """
    path = Path(path)
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(row, dict)
            and row.get("kind") in ("train", "eval")
            and row.get("step", step + 1) <= step
        ):
            kept.append(line + "\n")
    write_atomic(path, "".join(kept))
    return len(kept)
