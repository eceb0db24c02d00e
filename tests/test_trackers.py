"""`log.trackers` through Accelerate: TensorBoard event files and an MLflow file store hold
the metrics.jsonl scalars; a missing tracker package is a one-line error before any output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from lorafit.cli import main
from lorafit.config import load_config
from lorafit.errors import UserError

KINDS = [
    ("train", "train_loss"),
    ("train", "lr"),
    ("train", "samples_per_s"),
    ("eval", "eval_accuracy"),
    ("eval", "eval_loss"),
    ("test", "test_accuracy"),
]


def _run(tmp_path: Path) -> Path:
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    return run


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("setting", ["log.trackers=[tensorboard]", "log.tensorboard=true"])
def test_tensorboard_events_hold_the_metrics(setting, tiny_overrides, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["train", *tiny_overrides, setting, "data.test=sample-test"]) == 0
    run = _run(tmp_path)
    name = yaml.safe_load((run / "config.yaml").read_text())["run"]["name"]
    events = EventAccumulator(str(run / "trackers" / name))
    events.Reload()
    rows = _rows(run)
    for kind, key in KINDS:
        want = [(r["step"], r[key]) for r in rows if r["kind"] == kind]
        got = [(e.step, e.value) for e in events.Scalars(f"{kind}/{key}")]
        assert [s for s, _ in got] == [s for s, _ in want], key
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), key
    assert [e.step for e in events.Scalars("train/train_loss")] == [2, 4, 6, 8, 10, 12]


def test_mlflow_file_store_holds_the_metrics(tiny_overrides, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is optional: pip install 'lorafit[mlflow]'")
    from mlflow.tracking import MlflowClient

    store = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # offline: a local file store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants the opt-in
    assert main(["train", *tiny_overrides, "log.trackers=[mlflow]", "run.name=mlf"]) == 0
    run = _run(tmp_path)
    client = MlflowClient(tracking_uri=store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "mlf"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_name == run.name and mlrun.info.status == "FINISHED"
    assert mlrun.data.params["lora.r"] == "8"
    rows = _rows(run)
    for kind, key in KINDS[:5]:
        history = client.get_metric_history(mlrun.info.run_id, f"{kind}/{key}")
        want = [(r["step"], r[key]) for r in rows if r["kind"] == kind]
        assert [(m.step, m.value) for m in history] == pytest.approx(want, rel=1e-6), key


def test_missing_tracker_package_is_a_user_error_before_any_output(
    tiny_overrides, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails
    assert main(["train", *tiny_overrides, "log.tensorboard=true"]) == 2
    err = capsys.readouterr().err
    assert "log.trackers: tensorboard needs the tensorboard package" in err
    assert "pip install 'lorafit[tensorboard]'" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_unknown_tracker_names_the_key():
    with pytest.raises(UserError) as e:
        load_config(None, ["log.trackers=[tensorboard,neptune]"])
    assert "log.trackers: 'neptune' is not one of tensorboard, mlflow" in str(e.value)
