"""lorafit/hooks.py: the moments tests wait for and hold processes at (issue 30, part 4)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lorafit.hooks import reached, wait_for


def _waiter(moments, moment: str) -> subprocess.Popen:
    code = f"from lorafit.hooks import reached; reached({moment!r}); print('past')"
    env = {**os.environ, "LORAFIT_TEST_HOOKS": str(moments)}
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
    )


def test_without_the_variable_nothing_is_recorded_or_held(tmp_path, monkeypatch):
    monkeypatch.delenv("LORAFIT_TEST_HOOKS", raising=False)
    (tmp_path / "hold-step-3").write_text("")
    reached("step-3")  # returns at once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hold-step-3"]


def test_a_held_moment_waits_until_released_and_is_recorded_first(tmp_path):
    (tmp_path / "hold-step-3").write_text("")
    proc = _waiter(tmp_path, "step-3")
    try:
        (record,) = wait_for(tmp_path, "step-3", timeout=120, alive=lambda: proc.poll() is None)
        assert record.name.startswith(f"step-3.{proc.pid}.")
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1)  # held
        (tmp_path / "hold-step-3").unlink()
        assert proc.communicate(timeout=120)[0].strip() == "past"
    finally:
        proc.kill()
    assert not list(tmp_path.glob("step-30.*"))  # names are exact, step-3 is not step-30


def test_a_counted_hold_is_a_barrier_between_processes(tmp_path):
    (tmp_path / "hold-trial-start").write_text("2")
    first = _waiter(tmp_path, "trial-start")
    try:
        wait_for(tmp_path, "trial-start", timeout=120, alive=lambda: first.poll() is None)
        with pytest.raises(subprocess.TimeoutExpired):
            first.wait(timeout=1)  # one of two arrived: still held
        second = _waiter(tmp_path, "trial-start")
        assert second.communicate(timeout=120)[0].strip() == "past"
        assert first.communicate(timeout=120)[0].strip() == "past"
    finally:
        first.kill()
    assert len(list(tmp_path.glob("trial-start.*"))) == 2


def test_wait_for_fails_at_once_when_the_process_ended(tmp_path):
    with pytest.raises(AssertionError, match="ended before reaching step-9"):
        wait_for(tmp_path, "step-9", timeout=600, alive=lambda: False)
    with pytest.raises(AssertionError, match="not reached within"):
        wait_for(tmp_path, "step-9", timeout=0.05)
