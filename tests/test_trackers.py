"""`log.trackers` through Accelerate: TensorBoard event files, an MLflow file store, an offline
W&B run, trackio's local database and an Aim repository hold the metrics.jsonl scalars, each
read back with the tracker's own reader; a missing tracker package is a one-line error before
any output. The optional trackers' tests skip when their package is missing (`.ci/run`
installs them all)."""

from __future__ import annotations

import json
import os
import subprocess
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


def _assert_series(got, want, key: str) -> None:
    """(step, value) pairs: the steps equal, the values within 1e-6 (a tracker may store float32).
    pytest.approx takes flat sequences only (pytest 9.2 refuses nested ones)."""
    got, want = list(got), list(want)
    assert [s for s, _ in got] == [s for s, _ in want], key
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), key


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
        _assert_series(got, want, key)
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
        _assert_series([(m.step, m.value) for m in history], want, key)


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


def _wandb_records(path: Path):
    """The records of a W&B run file (`run-<id>.wandb`): W&B's protobuf records in LevelDB's
    log format (32 KiB blocks, each chunk behind a 7-byte header), after a 7-byte file header."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, chunk_type = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if chunk_type in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_holds_every_row_in_the_run_folder(tiny_overrides, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is optional: pip install 'lorafit[wandb]'")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # W&B's default folder would be ./wandb
    assert (
        main(
            [
                "train",
                *tiny_overrides,
                "log.trackers=[wandb]",
                "run.name=wb",
                "data.test=sample-test",
            ]
        )
        == 0
    )
    run = _run(tmp_path)
    assert not (tmp_path / "wandb").exists()
    (path,) = (run / "trackers" / "wandb").glob("offline-run-*/run-*.wandb")
    history, config = [], {}
    for record in _wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            assert (record.run.project, record.run.display_name) == ("wb", run.name)
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            # a key with "/" may come as its parts (nested_key)
            history.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    assert config["lora.r"] == 8 and config["run.name"] == "wb"
    rows = _rows(run)
    for kind, key in KINDS:  # the test row too: logged at the best step, after the last step
        want = [(r["step"], r[key]) for r in rows if r["kind"] == kind]
        got = [(h[f"{kind}/step"], h[f"{kind}/{key}"]) for h in history if f"{kind}/{key}" in h]
        _assert_series(got, want, key)


def test_trackio_local_store_holds_every_row(tiny_overrides, tmp_path):
    pytest.importorskip("trackio", reason="trackio is optional: pip install 'lorafit[trackio]'")
    # trackio reads TRACKIO_DIR when imported: the run and the reading get their own process
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio")}
    args = [
        "train",
        *tiny_overrides,
        "log.trackers=[trackio]",
        "run.name=tio",
        "data.test=sample-test",
    ]
    subprocess.run(
        [sys.executable, "-m", "lorafit", *args], env=env, check=True, capture_output=True
    )
    run = _run(tmp_path)
    read = (
        "import json, sys, trackio; p, r = sys.argv[1:]; "
        "print(json.dumps([trackio.SQLiteStorage.get_logs(p, r), trackio.SQLiteStorage.get_run_config(p, r)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", read, "tio", run.name],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    logs, config = json.loads(out.stdout.splitlines()[-1])
    assert config["lora.r"] == 8
    rows = _rows(run)
    for kind, key in KINDS:
        want = [(r["step"], r[key]) for r in rows if r["kind"] == kind]
        got = [(log["step"], log[f"{kind}/{key}"]) for log in logs if f"{kind}/{key}" in log]
        _assert_series(got, want, key)


def test_aim_repo_in_the_run_folder_holds_every_row(tiny_overrides, tmp_path):
    pytest.importorskip("aim", reason="aim is optional: pip install 'lorafit[aim]'")
    from aim import Repo, Run

    assert (
        main(
            [
                "train",
                *tiny_overrides,
                "log.trackers=[aim]",
                "run.name=aimr",
                "data.test=sample-test",
            ]
        )
        == 0
    )
    run = _run(tmp_path)
    (run_hash,) = Repo(str(run / "trackers")).list_all_runs()
    aim_run = Run(run_hash=run_hash, repo=str(run / "trackers"))  # read-only opening sees nothing
    try:
        assert (aim_run.name, aim_run.experiment) == (run.name, "aimr")
        assert aim_run["hparams"]["lora.r"] == 8
        series = {m.name: m.data.numpy() for m in aim_run.metrics()}
    finally:
        aim_run.close()
    rows = _rows(run)
    for kind, key in KINDS:
        want = [(r["step"], r[key]) for r in rows if r["kind"] == kind]
        steps, (values, *_) = series[f"{kind}/{key}"]
        _assert_series(zip(steps.tolist(), values.tolist()), want, key)
