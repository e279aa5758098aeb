"""The main job, as the README's first command runs it: `timestep demo` (the whole system over the
bus) and `timestep demo --library`, each in a fresh home, must finish with exit code 0 and show
what they promise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from processes import process_env
from timestep.bus.server import free_port

pytestmark = pytest.mark.processes


def _demo(tmp_path: Path, *args: str) -> str:
    env = process_env(TIMESTEP_HOME=str(tmp_path / "home"), TIMESTEP_NATS_PORT=str(free_port()))
    done = subprocess.run(
        [sys.executable, "-m", "actors.cli.main", "demo", *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def test_the_demo_runs_the_whole_system(tmp_path: Path) -> None:
    out = _demo(tmp_path)
    for promised in (
        "tool_call    tool='get_weather'",  # a direct run with a tool call
        "start order:",  # queued runs by priority
        "deleted",  # a schedule that ran
        "audit trail: approved by demo",  # the approvals inbox, with edited arguments
        "Report (reviewed)",
        "rejected: agent: no agent named 'no-such-agent'",  # a bad request, refused with the field
    ):
        assert promised in out, f"{promised!r} not in the demo's output:\n{out[-4000:]}"
    # "Try it yourself": the command it names runs from where the demo ran, as the shell finds it
    # (`./tasks.sh demo` does not put .venv/bin on PATH).
    try_it = out[out.index("Try it yourself"):]
    command = try_it.split("`")[1].split()[0]
    found = str(tmp_path / command) if "/" in command else shutil.which(command)
    assert found and os.access(found, os.X_OK), try_it
    done = subprocess.run([found, "up", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and "--agents" in done.stdout, done.stderr


def test_the_library_demo(tmp_path: Path) -> None:
    out = _demo(tmp_path, "--library")
    assert "completed" in out, out[-4000:]
