"""Shared fixtures: real AG News rows from ../shared and a tiny RoBERTa built in seconds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The suite computes with a fixed thread count (torch's own default here): lorafit's auto
# threads follow the machine's load, and tests that compare two runs bit for bit must not see
# the count change between them. tests/test_cores.py removes it to test the auto choice.
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
# LORAFIT_SHARED_DATA: the shared folder when the tests run from a copy (scripts/mutation.sh)
SHARED = Path(os.environ.get("LORAFIT_SHARED_DATA") or ROOT.parent / "shared")
AG_DIR = SHARED / "data" / "ag_news"
FOREIGN = SHARED / "data" / "foreign"  # published non-AG-News files (see its README)
AG_SUBSET = AG_DIR / "train_subset.csv"
AG_HEAD = AG_DIR / "train_head2000.csv"
# AG News' classes, for tests that count or build a head without reading a training file
AG_LABELS = "data.label_names=[World,Sports,Business,Sci/Tech]"


@pytest.fixture(scope="session")
def ag_subset() -> pd.DataFrame:
    """The real AG News rows (text, label, source)."""
    if not AG_SUBSET.exists():
        pytest.fail(f"{AG_SUBSET} is missing: the tests need ../shared beside the checkout")
    return pd.read_csv(AG_SUBSET)


@pytest.fixture(scope="session")
def small_csv(ag_subset, tmp_path_factory) -> Path:
    """A `text,label` CSV of 240 real rows (60 per class)."""
    rows = ag_subset.groupby("label").head(60)
    path = tmp_path_factory.mktemp("data") / "small.csv"
    rows[["text", "label"]].sample(frac=1, random_state=0).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def tiny_model(ag_subset, tmp_path_factory) -> Path:
    """A random 2-layer, 32-wide RoBERTa classifier with a locally trained tokenizer."""
    from lorafit.toy import save_toy_roberta

    texts = ag_subset.text.tolist()[:3000]
    kept = os.environ.get("LORAFIT_TEST_TOY_DIR")
    if kept:  # scripts/mutation.sh: one build for all the mutants' test sessions (5 s each)
        out = Path(kept) / "tiny-roberta"
        if not (out / "model.safetensors").is_file():
            building = Path(kept) / f".tiny-roberta-{os.getpid()}"
            save_toy_roberta(building, texts, layers=2, hidden=32)
            shutil.rmtree(out, ignore_errors=True)
            building.rename(out)
        return out
    out = tmp_path_factory.mktemp("tiny-roberta")
    return save_toy_roberta(out, texts, layers=2, hidden=32)


@pytest.fixture
def tiny_overrides(tiny_model, small_csv, tmp_path) -> list[str]:
    """Overrides for a few-second training run of the tiny model on real rows."""
    return [
        f"model.name={tiny_model}",
        f"data.train={small_csv}",
        "data.val_size=40",
        "model.max_length=64",
        "train.max_steps=12",
        "train.eval_every=4",
        "train.log_every=2",
        "train.batch_size=16",
        "log.progress=false",
        f"run.dir={tmp_path / 'runs'}",
    ]


# ------------------------------------------------------------ no silent skips in CI


def _skipped(config) -> list:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return list(reporter.stats.get("skipped", [])) if reporter else []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The count of skipped tests and the reason of each, on every run."""
    skipped = _skipped(config)
    terminalreporter.write_line(f"skipped tests: {len(skipped)}")
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        terminalreporter.write_line(f"  {report.nodeid}: {reason}")
    if skipped and os.environ.get("LORAFIT_FORBID_SKIPS"):
        terminalreporter.write_line(
            "LORAFIT_FORBID_SKIPS is set (CI): a skipped test fails the run; install what it needs"
        )


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("LORAFIT_FORBID_SKIPS") and _skipped(session.config) and exitstatus == 0:
        session.exitstatus = 1
