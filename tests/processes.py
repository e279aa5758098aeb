"""Real `timestep up` processes for the multi-process tests: one way to give them an
environment, see them come up and stop them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

TESTS = Path(__file__).parent
#: Settings a test process must never inherit from the test run's own environment.
PRIVATE = ("PG_CONNECTION_URI", "OPENAI_API_KEY", "NATS_URL")


def process_env(*drop: str, **values: str) -> dict[str, str]:
    """This environment without PRIVATE (and `drop`), plus `values`; tests/ on PYTHONPATH
    so `--agents bus_agents` and the other test agents import."""
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE + drop}
    env.update(values)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


def up(out: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    """Start `timestep up ARGS`, its output (both streams) in `out`."""
    command = [sys.executable, "-m", "actors.cli.main", "up", *args]
    return subprocess.Popen(command, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)


def _check(proc: subprocess.Popen, out: Path, text: str, deadline: float) -> bool:
    if text in out.read_text():
        return True
    if proc.poll() is not None or time.monotonic() > deadline:
        raise AssertionError(f"{out.stem}: no {text!r} (exit code {proc.poll()}): {out.read_text()[-3000:]}")
    return False


def wait_printed(started: Iterable[tuple[subprocess.Popen, Path]], text: str = "timestep up:", timeout: float = 90) -> None:
    """Return once every process printed `text`; fail at once if one exits first."""
    deadline = time.monotonic() + timeout
    for proc, out in started:
        while not _check(proc, out, text, deadline):
            time.sleep(0.05)


async def wait_printed_async(started: Iterable[tuple[subprocess.Popen, Path]], text: str = "timestep up:", timeout: float = 90) -> None:
    """`wait_printed` for a test whose event loop has other work meanwhile."""
    deadline = time.monotonic() + timeout
    for proc, out in started:
        while not _check(proc, out, text, deadline):
            await asyncio.sleep(0.05)


def stop(procs: Iterable[subprocess.Popen], wait: float = 30) -> None:
    """SIGTERM every process still running, then wait for each; kill one that does not stop."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_program(program: str, folder: Path, *unset: str) -> subprocess.CompletedProcess:
    """A Python program of the docs, run as a reader runs it: a file in a folder of its own, without the
    settings a reader would not have set (and `unset`)."""
    script = folder / "example.py"
    script.write_text(program)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PG_CONNECTION_URI", "TIMESTEP_HOME", *unset)}
    return subprocess.run([sys.executable, str(script)], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
