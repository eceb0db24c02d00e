"""`lorafit cache`: the stores lorafit keeps between runs, listed and removed on request.

    <cache_dir>/<key>/            activation caches (`lorafit.fastpath`): the frozen layers'
                                  output per training row, one per model, rows, max_length
                                  and precision; the largest (hundreds of MB for a 12-layer
                                  model on AG News)
    <cache_dir>/teacher/<key>/    a teacher's log-probabilities per text (`lorafit.teacher`)
    .<key>.partial-* / .bad-*     a build that was interrupted, or a cache set aside as damaged

`cache_dir` is `train.cache_dir`, default `$LORAFIT_CACHE_DIR` or
`~/.cache/lorafit/activations`. A store's last use is its `meta.json`'s modification time:
written when the store is built, touched whenever a run reuses it. Nothing is ever removed
without being asked: `remove_caches` takes the keys to remove, or an age.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lorafit.errors import UserError


@dataclass
class Store:
    kind: (
        str  # activations, teacher, or incomplete (an interrupted build, a damaged cache set aside)
    )
    path: Path
    size: int  # bytes on disk
    last_used: float  # seconds since the epoch
    rows: int | None
    what: str  # the model, or the teacher

    @property
    def key(self) -> str:
        return self.path.name

    def row(self) -> dict:
        return {
            "kind": self.kind,
            "key": self.key,
            "size_bytes": self.size,
            "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(self.last_used)),
            "rows": self.rows,
            "what": self.what,
            "path": str(self.path),
        }


def default_cache_dir() -> Path:
    """`$LORAFIT_CACHE_DIR`, else `$XDG_CACHE_HOME/lorafit/activations` (~/.cache/...)."""
    if os.environ.get("LORAFIT_CACHE_DIR"):
        return Path(os.environ["LORAFIT_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lorafit" / "activations"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: `cache_dir` (`train.cache_dir`, `--dir`) if given, else the default."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def mark_used(path: Path) -> None:
    """Record a reuse of the store at `path` (its meta.json's time); a read-only store is fine."""
    try:
        os.utime(path / "meta.json")
    except OSError:
        pass


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:  # removed meanwhile
                pass
    return total


def _store(path: Path, kind: str) -> Store:
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        last_used = meta_path.stat().st_mtime
    except (OSError, ValueError):
        meta, last_used = None, path.stat().st_mtime
    if path.name.startswith(".") or meta is None:
        return Store(
            "incomplete",
            path,
            _size(path),
            last_used,
            None,
            "an interrupted build or a damaged store",
        )
    if kind == "teacher":
        what = ", ".join(meta.get("teacher") or []) or "?"
    else:
        layers = meta.get("prefix_layers")
        what = f"{meta.get('model') or '?'}, layers 0-{layers - 1 if isinstance(layers, int) else '?'}, {meta.get('dtype', '?')}"
    return Store(kind, path, _size(path), last_used, meta.get("rows"), what)


def list_caches(cache_dir: str | Path | None = None) -> list[Store]:
    """Every store under `cache_dir` (default: as `train.cache_dir`), newest use first."""
    root = cache_root(cache_dir)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: not a folder; give the cache folder (train.cache_dir)")
    stores = []
    for parent, kind in ((root, "activations"), (root / "teacher", "teacher")):
        if not parent.is_dir():
            continue
        for path in parent.iterdir():
            if path.is_dir() and not (parent == root and path.name == "teacher"):
                stores.append(_store(path, kind))
    return sorted(stores, key=lambda s: -s.last_used)


def remove_caches(
    cache_dir: str | Path | None = None,
    keys: list[str] | tuple[str, ...] = (),
    older_than_days: float | None = None,
    dry_run: bool = False,
) -> list[Store]:
    """Remove the stores named by `keys` (folder names, as `lorafit cache` lists them) and/or
    every store not used for `older_than_days` days; returns what was (or, with `dry_run`,
    would be) removed. A key that names no store is refused before anything is removed.
    """
    if not keys and older_than_days is None:
        raise UserError(
            "lorafit cache: say what to remove: KEY... (from the listing) or --older-than DAYS"
        )
    if older_than_days is not None and older_than_days < 0:
        raise UserError(f"--older-than {older_than_days}: give a number of days >= 0")
    stores = list_caches(cache_dir)
    by_key: dict[str, list[Store]] = {}
    for s in stores:
        by_key.setdefault(s.key, []).append(s)
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise UserError(
            f"lorafit cache: no store named {missing[0]} in {cache_root(cache_dir)}; `lorafit cache` lists them"
        )
    chosen = [s for k in keys for s in by_key[k]]
    if older_than_days is not None:
        limit = time.time() - older_than_days * 86400
        chosen += [s for s in stores if s.last_used < limit and s not in chosen]
    if not dry_run:
        for s in chosen:
            # renamed first (atomic), so a run starting meanwhile never reads half a store
            trash = s.path.with_name(f".{s.key}.removing-{os.getpid()}")
            try:
                os.replace(s.path, trash)
            except FileNotFoundError:  # removed meanwhile
                continue
            except OSError as e:
                raise UserError(
                    f"{s.path}: cannot remove ({e.strerror}); check the folder's permissions"
                ) from None
            shutil.rmtree(trash, ignore_errors=True)
    return chosen


def format_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_table(stores: list[Store]) -> str:
    """The listing `lorafit cache` prints."""
    if not stores:
        return "no stores"
    lines = [f"{'kind':<12} {'size':>9} {'last used':<16} {'rows':>7}  key: what"]
    for s in stores:
        rows = "" if s.rows is None else str(s.rows)
        lines.append(
            f"{s.kind:<12} {format_size(s.size):>9} {s.row()['last_used']:<16} {rows:>7}  {s.key}: {s.what}"
        )
    lines.append(f"{len(stores)} stores, {format_size(sum(s.size for s in stores))}")
    return "\n".join(lines)
