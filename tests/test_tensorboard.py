"""`log.tensorboard=true`: event files with the metrics.jsonl scalars, or a clear error."""

from __future__ import annotations

import json
import sys

import pytest

from lorafit.cli import main


def test_tensorboard_events_hold_the_metrics(tiny_overrides, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["train", *tiny_overrides, "log.tensorboard=true", "data.test=sample-test"]) == 0
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for kind, key in [
        ("train", "train_loss"),
        ("train", "lr"),
        ("train", "samples_per_s"),
        ("eval", "eval_accuracy"),
        ("eval", "eval_loss"),
        ("test", "test_accuracy"),
    ]:
        want = [(r["step"], r[key]) for r in rows if r["kind"] == kind]
        got = [(e.step, e.value) for e in events.Scalars(f"{kind}/{key}")]
        assert [s for s, _ in got] == [s for s, _ in want], key
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), key
    assert [s for s, _ in want] and [e.step for e in events.Scalars("train/train_loss")] == [
        2,
        4,
        6,
        8,
        10,
        12,
    ]


def test_missing_tensorboard_is_a_user_error_before_any_output(
    tiny_overrides, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails
    assert main(["train", *tiny_overrides, "log.tensorboard=true"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'lorafit[tensorboard]'" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
