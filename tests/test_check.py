"""`timestep check`, as an operator runs it after a deploy: a subprocess against a real
`timestep up --agents actors.cli.demo_agents` (embedded NATS, SQLite), judged by its lines and exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from processes import process_env, stop, up, wait_printed
from timestep.bus.server import free_port

AGENT = "demo-assistant"
CHECKS = [
    "jetstream-publish", "duplicate-publish", "core-request", "core-publish", "events-in-order",
    "late-replay", "control", "queues", "schedules", "dead-letter",
]


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "actors.cli.main", "check", *args], env=env, capture_output=True, text=True, timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("check-home")
    out = home / "up.out"
    proc = up(out, process_env(TIMESTEP_HOME=str(home)), "--agents", "actors.cli.demo_agents")
    try:
        wait_printed([(proc, out)])
        yield home
    finally:
        stop([proc])


@pytest.mark.processes
def test_every_check_passes_against_a_running_system(home: Path) -> None:
    url = (home / "nats.url").read_text().strip()
    done = check(process_env(TIMESTEP_HOME=str(home)), url, "--agent", AGENT)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line.split()[:2] for line in lines] == [["PASS", name] for name in CHECKS], done.stdout
    assert "duplicate: true" in lines[1] and "dead-lettered on timestep.dead.timestep.runs.submit" in lines[-1]
    assert done.stderr.strip() == f"timestep check: 10 of 10 passed against agent '{AGENT}'"

    # Cleaned up: no schedule left behind; the check's queue keeps a first-named queue's policy.
    env = process_env(TIMESTEP_HOME=str(home))
    schedules = subprocess.run([sys.executable, "-m", "actors.cli.main", "schedules", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert schedules.returncode == 0 and "timestep-check" not in schedules.stdout


@pytest.mark.processes
def test_an_agent_nobody_hosts_fails_the_checks_that_run_it(home: Path) -> None:
    # No URL: found in the nats.url of `timestep up`, as the other commands find it.
    done = check(process_env(TIMESTEP_HOME=str(home)), "--agent", "nosuch", "--timeout", "10", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    results = {r["check"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert list(results) == CHECKS
    for name in ("jetstream-publish", "core-request", "core-publish", "events-in-order", "queues", "schedules"):
        assert not results[name]["ok"], results[name]
        assert "no agent named 'nosuch'" in results[name]["detail"], results[name]
    assert results["dead-letter"]["ok"], results["dead-letter"]


def test_bad_usage_and_no_server_exit_2(tmp_path: Path) -> None:
    env = process_env(TIMESTEP_HOME=str(tmp_path))
    assert check(env, "nats://127.0.0.1:1").returncode == 2  # no --agent
    assert check(env, "--agent", "x", "--timeout", "0").returncode == 2
    nobody = check(env, f"nats://127.0.0.1:{free_port()}", "--agent", AGENT)
    assert nobody.returncode == 2 and nobody.stdout == ""
    assert nobody.stderr.startswith("error: no NATS server answers at nats://127.0.0.1:"), nobody.stderr
    no_up = check(env, "--agent", AGENT)
    assert no_up.returncode == 2
    assert no_up.stderr.strip().startswith("error: no NATS server: set NATS_URL, or start one with `timestep up`"), no_up.stderr
