"""Named moments a test can wait for and hold a process at, instead of racing it with sleeps.

Outside tests `LORAFIT_TEST_HOOKS` is unset and `reached` returns at once. Set to a folder:

- `reached("step-12")` records the moment as an empty file `FOLDER/step-12.<pid>.<n>`, which a
  test waits for (the process is then exactly there, whatever the machine's speed);
- if `FOLDER/hold-step-12` exists, the process waits there: until that file is removed, or,
  when it holds a number N, until N moments of that name are recorded (a barrier between
  processes: `hold-trial-start` with `2` holds each sweep worker's first trial until another
  worker has started one).

A signal ends the wait as it would end the computation (Ctrl-C raises KeyboardInterrupt in
the wait, SIGKILL kills), so "interrupted inside a trial" or "killed after step 12" is a fact,
not a likelihood. The moments: `step-N` after training step N (its evaluation and checkpoint
done) and `trial-start` when a sweep trial has its name and worker.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

_COUNT = itertools.count()


def reached(moment: str) -> None:
    """Record `moment` and wait while a test holds it (no-op unless LORAFIT_TEST_HOOKS is set)."""
    named = os.environ.get("LORAFIT_TEST_HOOKS")
    if not named:
        return
    folder = Path(named)
    (folder / f"{moment}.{os.getpid()}.{next(_COUNT)}").touch()
    hold = folder / f"hold-{moment}"
    while True:
        try:
            need = hold.read_text().strip()
        except FileNotFoundError:
            return
        if need and len(list(folder.glob(f"{moment}.*"))) >= int(need):
            return
        time.sleep(0.01)


def wait_for(folder: Path, moment: str, timeout: float = 600, alive=None) -> list[Path]:
    """(For tests.) The records of `moment` once there is one; fails after `timeout` s, or at
    once when `alive()` says the process that should reach it has ended."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = sorted(Path(folder).glob(f"{moment}.*"))
        if found:
            return found
        if alive is not None and not alive():
            raise AssertionError(f"the process ended before reaching {moment}")
        time.sleep(0.01)
    raise AssertionError(f"{moment} not reached within {timeout} s")
