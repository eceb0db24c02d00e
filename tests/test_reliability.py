"""Reliability and security: full disks and read-only folders fail cleanly and keep earlier
results, run folders are never replaced, untrusted files never execute, the same seed gives
the same metrics, and long or odd texts are truncated and counted, never a crash.

Full disk: a real tmpfs of a few megabytes in a private mount namespace (`unshare -m`, as
root), and everywhere a per-process file size limit (RLIMIT_FSIZE: a write past it fails
with EFBIG, the way a full disk fails with ENOSPC). Read-only: a read-only bind mount in the
same namespace; root ignores `chmod 0o555`, so without a namespace the tests fall back to
places no one can write (`/proc`) and files where a folder is expected (test_bad_inputs).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lorafit.cli import main
from lorafit.config import DataConfig, load_config
from lorafit.data import load_table
from lorafit.errors import UserError
from lorafit.train import train

from .conftest import ROOT
from .test_resume import metric_rows, summary_core

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def overrides(tiny_model, data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"model.name={tiny_model}",
        f"data.train={data}",
        "data.test=null",
        "data.val_size=40",
        "model.max_length=64",
        "train.max_steps=8",
        "train.eval_every=4",
        "train.log_every=1",
        "train.checkpoint_every=2",
        "log.progress=false",
        f"run.dir={run_dir}",
        *extra,
    ]


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def lorafit(*args: str, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lorafit", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=preexec,
    )


def assert_clean_error(done, *fragments: str) -> str:
    """Exit 2, the last stderr line is the one-line error, no traceback anywhere."""
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and last.startswith("lorafit: error: "), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in last, last
    return last


# ------------------------------------------------------------------ full disk, read-only


@pytest.mark.slow
def test_file_size_limit_fails_cleanly_then_resumes(tiny_model, small_csv, tmp_path):
    """A write past RLIMIT_FSIZE fails like a full disk: clean error, old run intact, resumable."""
    runs = tmp_path / "runs"
    earlier = train(None, overrides(tiny_model, small_csv, runs, "run.name=earlier"))
    before = hashes(earlier)

    def limit():  # files may grow to 40 kB: the run starts, its checkpoints do not fit
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    done = lorafit("train", *overrides(tiny_model, small_csv, runs, "run.name=full"), preexec=limit)
    assert_clean_error(done, "cannot write", "free disk space")
    assert hashes(earlier) == before
    full = only_run_named(runs, "full")
    assert not (full / "summary.json").exists()
    for path in full.rglob("*.json"):
        json.loads(path.read_text())  # nothing half-written

    assert lorafit("train", "--resume", str(full)).returncode == 0
    assert_steps_once_no_test(full, 8, 4)
    assert json.loads((full / "summary.json").read_text())["final_step"] == 8


def only_run_named(parent: Path, name: str) -> Path:
    (run,) = parent.glob(f"{name}-*")
    return run


def assert_steps_once_no_test(run: Path, final: int, eval_every: int) -> None:
    rows = metric_rows(run)
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, final + 1))
    assert [r["step"] for r in rows if r["kind"] == "eval"] == list(
        range(eval_every, final + 1, eval_every)
    )


def _mount_namespace_works(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = f"mount -t tmpfs -o size=64k tmpfs {probe} && mount --bind {probe} {probe} && mount -o remount,bind,ro {probe}"
    ok = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True).returncode == 0
    probe.rmdir()
    return ok


# Runs inside the namespace: argv = disk (a 4 MB tmpfs), ro (read-only, holding a copy of the
# earlier run), the earlier run, a data file, and the train overrides as JSON.
NAMESPACE_SCRIPT = r"""
import hashlib, json, os, subprocess, sys, shutil
from pathlib import Path

disk, ro, earlier, data = map(Path, sys.argv[1:5])
train_args = json.loads(sys.argv[5])

def lorafit(*args):
    done = subprocess.run([sys.executable, "-m", "lorafit", *args], capture_output=True, text=True)
    return {"code": done.returncode, "err": done.stderr}

def hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}

report = {}
runs = disk / "runs"
run_a = Path(shutil.copytree(earlier, runs / earlier.name, symlinks=True))
keep = disk / "keep.csv"
keep.write_text("ID,Label\n0,1\n")
before = hashes(disk)

def fill(name, leave):
    fd = os.open(disk / name, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        report["filled"] = e.strerror
    os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    os.close(fd)

fill("filler", 150_000)  # leave ~150 kB: the run starts, then fills it
report["train_full"] = lorafit("train", *train_args, f"run.dir={runs}", "run.name=full")
fill("filler2", 0)  # what the failed run freed again
report["predict_full"] = lorafit("predict", str(run_a), "--input", str(data), "--output", str(keep), "--overwrite")
report["intact"] = {k: v for k, v in hashes(disk).items() if k in before} == before
(full,) = runs.glob("full-*")
report["full_summary"] = (full / "summary.json").exists()
os.unlink(disk / "filler")
os.unlink(disk / "filler2")
report["resume"] = lorafit("train", "--resume", str(full))
report["resumed_summary"] = (full / "summary.json").exists()

ro_before = hashes(ro)
report["predict_ro"] = lorafit("predict", str(ro / earlier.name), "--input", str(data))
report["train_ro"] = lorafit("train", *train_args, f"run.dir={ro / 'runs'}")
report["ro_intact"] = hashes(ro) == ro_before
print(json.dumps(report))
"""


@pytest.mark.slow
def test_full_tmpfs_and_read_only_mount(tiny_model, small_csv, tmp_path):
    if not _mount_namespace_works(tmp_path):
        pytest.skip("no private mount namespace here (needs root and unshare -m)")
    earlier = train(
        None, overrides(tiny_model, small_csv, tmp_path / "outside", "run.name=earlier")
    )
    disk, ro = tmp_path / "disk", tmp_path / "ro"
    disk.mkdir()
    ro.mkdir()
    shutil.copytree(earlier, ro / earlier.name, symlinks=True)
    script = tmp_path / "scenario.py"
    script.write_text(NAMESPACE_SCRIPT)
    args = json.dumps(
        [a for a in overrides(tiny_model, small_csv, tmp_path) if not a.startswith("run.dir")]
    )
    inner = " ".join(
        shlex.quote(str(a)) for a in [sys.executable, script, disk, ro, earlier, small_csv, args]
    )
    shell = f"mount -t tmpfs -o size=4m tmpfs {disk} && mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec {inner}"
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", shell],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert report["filled"] == "No space left on device"
    for key in ("train_full", "predict_full"):
        assert report[key]["code"] == 2 and "Traceback" not in report[key]["err"], report[key][
            "err"
        ][-2000:]
        last = report[key]["err"].strip().splitlines()[-1]
        assert last.startswith("lorafit: error: ") and "No space left on device" in last, last
    assert report["intact"] and not report["full_summary"]
    assert report["resume"]["code"] == 0 and report["resumed_summary"], report["resume"]["err"][
        -2000:
    ]
    for key in ("predict_ro", "train_ro"):
        err = report[key]["err"]
        assert report[key]["code"] == 2 and "Traceback" not in err, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("lorafit: error: ") and "Read-only file system" in last, err
    assert report["ro_intact"]


def test_run_directories_are_never_replaced(tiny_model, small_csv, tmp_path, monkeypatch):
    """Folders already named like the next runs keep their files; the runs go elsewhere."""
    import time

    # the clock stands still for the run folders' names: the runs below get this very stamp
    # however long they take to start (no race with the wall clock)
    real = time.strftime
    frozen = real("%Y%m%d-%H%M%S")
    monkeypatch.setattr(
        time,
        "strftime",
        lambda fmt, *a: frozen if fmt == "%Y%m%d-%H%M%S" and not a else real(fmt, *a),
    )
    runs = tmp_path / "runs"
    taken = []
    for suffix in ("", "-2"):
        path = runs / f"taken-{frozen}{suffix}"
        path.mkdir(parents=True, exist_ok=True)
        (path / "mine.txt").write_text("keep me")
        taken.append(path)
    first = train(
        None, overrides(tiny_model, small_csv, runs, "run.name=taken", "train.max_steps=2")
    )
    second = train(
        None, overrides(tiny_model, small_csv, runs, "run.name=taken", "train.max_steps=2")
    )
    assert first != second and first not in taken and second not in taken
    assert (first.name, second.name) == (f"taken-{frozen}-3", f"taken-{frozen}-4")
    for path in taken:
        assert [p.name for p in path.iterdir()] == ["mine.txt"] and (
            path / "mine.txt"
        ).read_text() == "keep me"


# ------------------------------------------------------------------ untrusted files


# The attack pickles (77, every protocol) are in tests/test_pickles.py.


def test_no_unsafe_loading_in_the_source():
    """torch.load only with weights_only=True; pickles only through the allow-list unpickler."""
    src = ROOT / "src" / "lorafit"
    problems = []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                problems.append(f"{path.name}: {m.group(0)}")
        for pattern in (
            r"pickle\.loads?\(",
            r"read_pickle\(",
            r"allow_pickle\s*=\s*True",
            r"\bdill\b",
            r"joblib\.load",
        ):
            for m in re.finditer(pattern, text):
                problems.append(f"{path.name}: {m.group(0)}")
    assert problems == []
    assert (
        "from lorafit.pickles import read_pickle_frame" in (src / "data" / "readers.py").read_text()
    )
    assert "unpickler = SafeUnpickler(io.BytesIO(data))" in (src / "pickles.py").read_text()


# ------------------------------------------------------------------ determinism


def test_same_config_and_seed_give_the_same_metrics(tiny_model, small_csv, tmp_path):
    args = overrides(
        tiny_model, small_csv, tmp_path / "runs", "train.lr=5e-3", f"data.test={small_csv}"
    )
    first, second = train(None, args), train(None, args)
    assert metric_rows(first) == metric_rows(second)
    assert summary_core(first) == summary_core(second)
    summary = json.loads((first / "summary.json").read_text())
    assert summary["seed"] == 42 == load_config(first / "config.yaml").train.seed
    for package in ("python", "torch", "transformers", "peft", "accelerate", "datasets", "lorafit"):
        assert summary["versions"][package], package
    other = train(None, [*args, "train.seed=7"])
    assert metric_rows(other) != metric_rows(first)


# ------------------------------------------------------------------ long and odd text

MEGABYTE_TEXT = ("Stocks rallied on Wall Street as oil prices fell. " * 21000)[:1_000_000]
ODD = 'Quoted "twice"; a line break\ninside, a comma, and unicode: Zürich ✓'


def test_long_and_odd_texts_are_truncated_counted_and_predicted(
    tiny_model, small_csv, tmp_path, recwarn, caplog
):
    from transformers import AutoTokenizer

    rows = pd.read_csv(small_csv)
    rows.loc[len(rows)] = [MEGABYTE_TEXT, 2]
    rows.loc[len(rows)] = [ODD, 1]
    data = tmp_path / "odd.csv"
    rows.to_csv(data, index=False)  # pandas quotes the newline and doubles the quotes
    table = load_table(str(data), DataConfig())
    assert table.texts[-2:] == [MEGABYTE_TEXT, ODD] and len(table) == 242

    run = train(
        None, overrides(tiny_model, data, tmp_path / "runs", "data.val_size=8", f"data.test={data}")
    )
    tok = AutoTokenizer.from_pretrained(tiny_model)
    long_rows = sum(len(tok(t, add_special_tokens=False)["input_ids"]) > 62 for t in table.texts)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["truncated_rows"]["test"] == long_rows and summary["max_length"] == 64
    assert sum(summary["truncated_rows"][k] for k in ("train", "validation")) == long_rows
    (line,) = [x for x in (run / "train.log").read_text().splitlines() if " test: 242 rows" in x]
    assert line.endswith(f"; {long_rows} truncated to 64 tokens")

    inputs = pd.DataFrame({"text": ["", MEGABYTE_TEXT, "   ", ODD, "short news"]})
    path = tmp_path / "to_label.csv"
    inputs.to_csv(path, index=False)
    out = tmp_path / "submission.csv"
    assert main(["predict", str(run), "--input", str(path), "--output", str(out)]) == 0
    assert pd.read_csv(out).ID.tolist() == [0, 1, 2, 3, 4]
    # a log line (no warnings.warn: that prints a line of lorafit's source beside the message)
    assert "2 rows have empty text; they still get a prediction" in caplog.text
    assert not [w for w in recwarn if "empty text" in str(w.message)]


def test_empty_texts_in_training_data_are_still_refused(tmp_path):
    """Training and evaluation need real texts; only prediction accepts empty ones."""
    path = tmp_path / "train.csv"
    path.write_text("text,label\nnews,1\n,2\n")
    with pytest.raises(UserError, match="row 2: the text is empty"):
        load_table(str(path), DataConfig())
    assert load_table(str(path), DataConfig(), need_labels=False, allow_empty_text=True).texts == [
        "news",
        "",
    ]


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    """mkstemp creates 0600 files; outputs (report, submission, JSON) must be readable as usual."""
    from lorafit.rundir import write_atomic

    umask = os.umask(0)
    os.umask(umask)
    write_atomic(tmp_path / "report.html", "<html></html>")
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o666 & ~umask
