"""Run directories: creation, atomic writes, provenance, and reading a run back.

The files a run directory holds are documented in docs/get-started/run-directory.md and the README.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lorafit.errors import UserError

VERSIONED = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "lorafit")


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; read once, at import, before any threads
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A full disk or an unwritable folder raises `UserError` naming `path`; whatever was at
    `path` before is left as it was (the rename is the only step that touches it).
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise UserError(
                f"{path}: cannot write ({e.strerror or e}); free disk space or choose a writable folder"
                " (any earlier version of the file is intact)"
            ) from None
        raise


def usual_mode(path: Path) -> None:
    """Give a file, or every `.safetensors` file under a folder, the mode the umask gives others.

    The safetensors writer (ours, PEFT's, transformers') creates files 0600 where every other
    output is 0644 (umask 022): a shared run folder would hold weights others cannot read.
    """
    path = Path(path)
    for p in path.rglob("*.safetensors") if path.is_dir() else [path]:
        os.chmod(p, 0o666 & ~_UMASK)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def create_run_dir(parent: str, name: str) -> Path:
    """A new `<parent>/<name>-<YYYYmmdd-HHMMSS>[-N]` folder; never reuses an existing one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(parent) / f"{name}-{stamp}"
    try:
        Path(parent).mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            path = base if n == 1 else base.with_name(f"{base.name}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as e:
        raise UserError(
            f"run.dir {parent}: cannot create a run directory ({e.strerror}); choose a writable run.dir"
        ) from None
    raise UserError(f"run.dir {parent}: too many runs named {name} this second")


def require_run_dir(run_dir: str | Path, *files: str) -> Path:
    """Check that `run_dir` is a lorafit run directory holding `files`."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path}: no such run directory; give a folder made by `lorafit train`")
    for f in ("config.yaml", *files):
        interrupted = (path / "checkpoints").is_dir() and not (path / "summary.json").exists()
        if not (path / f).exists() and interrupted and f != "config.yaml":
            raise UserError(
                f"{path}: missing {f}; the run was interrupted: `lorafit train --resume {path}` finishes it"
            )
        if not (path / f).exists():
            raise UserError(
                f"{path}: missing {f}; is the run finished? (train it again or pick another run)"
            )
    return path


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{path}: line {n} is not valid JSON") from None
    return rows


def git_commit(cwd: str | None = None) -> str | None:
    """The commit of the git checkout holding `cwd` (with '+dirty' if modified), or None."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def command_line() -> str:
    return (
        " ".join(["lorafit", *sys.argv[1:]])
        if sys.argv and "lorafit" in sys.argv[0]
        else " ".join(sys.argv)
    )
