"""lorafit.runlog: training_log.txt regenerated from config.yaml, metrics.jsonl, summary.json."""

from __future__ import annotations

import json

import pytest

from lorafit.runlog import read_metrics, write_training_log

from .rundir_factory import make_run_dir, write_metrics


@pytest.fixture
def run(tmp_path):
    return make_run_dir(tmp_path, "agnews-r8", r=8, lr=2e-4)


def _section(text: str, title: str) -> list[str]:
    """The lines of one section (between its underline and the next blank line pair)."""
    lines = text.splitlines()
    start = lines.index(title) + 2
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def test_log_has_header_config_and_parameters(run):
    path = write_training_log(run)
    assert path == run / "training_log.txt"
    text = path.read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert text.startswith("lorafit training log: agnews-r8\n")
    for value in [
        "roberta-base",
        summary["started_at"],
        summary["finished_at"],
        summary["git_commit"],
    ]:
        assert value in text
    assert "device         cpu (mixed precision: no)" in text
    config = _section(text, "Configuration")
    assert "lora.r: 8" in config and "train.lr: 0.0002" in config
    assert 'lora.target_modules: ["query", "value"]' in config
    assert "data.validation: null" in config
    params = " ".join(_section(text, "Parameters"))
    assert f"{summary['params']['trainable']:,}" in params
    assert f"{summary['params']['total']:,}" in params


def test_progress_table_lists_every_row_in_step_order(run):
    text = write_training_log(run).read_text()
    table = _section(text, "Progress")
    header, rule, body = table[0], table[1], table[2:]
    assert header.split() == [
        "step",
        "epoch",
        "time_s",
        "kind",
        "lr",
        "train_loss",
        "loss",
        "accuracy",
        "macro_f1",
        "samples/s",
        "tokens/s",
        "best",
    ]
    assert set(rule) == {"-"} and all(len(line) <= len(header) for line in body)
    rows = read_metrics(run)
    assert len(body) == len(rows)
    parsed = [(int(line.split()[0]), line.split()[3]) for line in body]
    assert parsed == sorted(parsed, key=lambda p: (p[0], ["train", "eval", "test"].index(p[1])))
    for row in rows:
        if row["kind"] == "eval":
            line = next(b for b in body if b.split()[:1] == [str(row["step"])] and " eval " in b)
            assert f"{row['eval_accuracy']:.4f}" in line and f"{row['eval_f1']:.4f}" in line


def test_final_results_show_best_metric_test_and_wall_time(run):
    text = write_training_log(run).read_text()
    summary = json.loads((run / "summary.json").read_text())
    results = "\n".join(_section(text, "Final results"))
    best, step = summary["best_value"], summary["best_step"]
    assert f"best           {best:.4f} at step {step} (of {summary['final_step']})" in results
    assert f"accuracy {summary['test']['accuracy']:.4f}" in results
    assert "wall time" in results and f"({summary['wall_time_s']:.1f} s)" in results
    assert "summary.json is missing" not in text


def test_interrupted_run_says_so_and_uses_metrics(tmp_path):
    run = make_run_dir(tmp_path, "cut-short", summary=False, evaluation=False)
    rows = [r for r in read_metrics(run) if r["step"] <= 150]
    write_metrics(run, rows)
    text = write_training_log(run).read_text()
    assert "not finished: summary.json is missing" in text
    assert "up to step 150" in text
    flagged = [r for r in rows if r.get("is_best")][-1]
    assert f"{flagged['eval_accuracy']:.4f} at step {flagged['step']}" in text
    assert "trainable" in "\n".join(_section(text, "Parameters"))  # from model_description.json
    assert "wall time" not in text and "elapsed" in text


def test_run_without_rows_or_config_still_gets_a_log(tmp_path):
    run = make_run_dir(tmp_path, "bare", summary=False, evaluation=False)
    write_metrics(run, [])
    (run / "config.yaml").unlink()
    (run / "model_description.json").unlink()
    text = write_training_log(run).read_text()
    assert "(no rows in metrics.jsonl yet)" in text
    assert "(config.yaml is missing)" in text
    assert "no evaluation yet" in text


def test_log_is_regenerated_identically(run):
    first = write_training_log(run).read_text()
    (run / "training_log.txt").write_text("stale")
    assert write_training_log(run).read_text() == first


def test_malformed_metrics_line_is_a_value_error(run):
    with open(run / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    n = len((run / "metrics.jsonl").read_text().splitlines())
    with pytest.raises(ValueError, match=rf"metrics\.jsonl: line {n} is not valid JSON"):
        write_training_log(run)
