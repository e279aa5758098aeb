"""A run killed with SIGKILL, or stopped by Ctrl-C (SIGINT), mid-tool resumes in a new process,
and nothing that finished runs again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes

WORKER = Path(__file__).with_name("worker.py")


def _spawn(mode: str, db_url: str, log_dir: Path, executor: str = "local") -> subprocess.Popen:
    env = {**os.environ, "TIMESTEP_EXECUTOR_ID": executor, "TIMESTEP_HOME": str(log_dir)}
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, db_url, str(log_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # pytest-xdist's workers ignore SIGINT, and an ignored signal stays ignored in a child: give it
        # back the default, as a program started from a shell has (Ctrl-C raises KeyboardInterrupt).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_line(path: Path, needle: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {path}")


def _calls(path: Path) -> list[str]:
    return [line.split(" ")[0] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_stopped_mid_tool_resumes_without_repeating_finished_steps(fresh_db_url: str, tmp_path: Path, sig: signal.Signals) -> None:
    """Ctrl-C of a program that awaits `run_agent_workflow`: asyncio cancels the workflow's task,
    which must record nothing on its way out (a status read recorded as a step once failed the
    recovered run with DBOSUnexpectedStepError)."""
    log = tmp_path / "calls.log"
    (tmp_path / "block").touch()
    first = _spawn("run", fresh_db_url, tmp_path)
    try:
        _wait_for_line(log, "tool:two:start", first)
    finally:
        first.send_signal(sig)
        first.wait(60)
    assert first.returncode != 0
    assert _calls(log) == ["model:0", "tool:one", "model:1", "tool:two:start"]

    (tmp_path / "block").unlink()
    second = _spawn("recover", fresh_db_url, tmp_path)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"output": "done: go"}

    # Only the step in flight (tool two) ran again; model 1, tool 1 and model 2 were replayed.
    assert _calls(log) == [
        "model:0", "tool:one", "model:1", "tool:two:start",
        "tool:two:start", "tool:two:end", "model:2",
    ]
    pids = {line.split(" pid=")[1] for line in log.read_text().splitlines()}
    assert len(pids) == 2


def _events(path: Path) -> list[dict]:
    return [json.loads(line.split(" ", 1)[1].rsplit(" pid=", 1)[0]) for line in path.read_text().splitlines() if line.startswith("event ")]


def test_an_approval_deadline_survives_a_sigkill(fresh_db_url: str, tmp_path: Path) -> None:
    """The deadline is recorded with the interruption and the wait is DBOS's durable recv: a
    process SIGKILLed while it waits, and restarted, rejects the call at the first deadline,
    not a full timeout after the restart."""
    seconds = 10.0
    log = tmp_path / "calls.log"
    first = _spawn_with("wait", fresh_db_url, tmp_path, str(seconds))
    try:
        _wait_for_line(log, '"type": "interrupted"', first)
        [interrupted] = [e for e in _events(log) if e["type"] == "interrupted"]
        while time.time() < interrupted["time"] + 4:  # a good part of the wait has passed
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(60)
    second = _spawn("recover-waiting", fresh_db_url, tmp_path)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-3000:]
    assert "deadline" in json.loads(out.strip().splitlines()[-1])["output"]
    [rejected] = [e for e in _events(log) if e["type"] == "tool_rejected"]
    assert rejected["expired"] is True
    deadline = interrupted["deadline"]
    assert deadline >= interrupted["time"] + seconds - 1
    assert rejected["time"] >= deadline
    # A clock reset by the restart would have waited `seconds` again from the recovery, which starts after
    # the second process logs that it launches DBOS (measured from there, not from the spawn: an interpreter's
    # start-up on a loaded machine is not part of the wait).
    [launching] = [float(line.split("at=")[1].split()[0]) for line in log.read_text().splitlines() if line.startswith("launching ")]
    assert rejected["time"] < launching + seconds
    assert "pay:start" not in log.read_text()


def test_an_approved_tool_cut_off_by_a_sigkill_runs_again_with_the_same_idempotency_key(fresh_db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    (tmp_path / "block").touch()
    first = _spawn("pay", fresh_db_url, tmp_path)
    try:
        _wait_for_line(log, "pay:start", first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(60)
    (tmp_path / "block").unlink()
    second = _spawn("recover-waiting", fresh_db_url, tmp_path)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"output": "done: paid 5"}
    starts = [line.split(" pid=")[0] for line in log.read_text().splitlines() if line.startswith("pay:start")]
    assert len(starts) == 2 and starts[0] == starts[1]  # ran again, with the same key
    assert starts[0].startswith("pay:start key=wait-run-1:") and ":p1 " in starts[0]
    assert sum(line.startswith("pay:end") for line in log.read_text().splitlines()) == 1


def _spawn_with(mode: str, db_url: str, log_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "TIMESTEP_EXECUTOR_ID": "local", "TIMESTEP_HOME": str(log_dir)}
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, db_url, str(log_dir), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
