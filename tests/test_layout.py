"""The folders show the architecture, and a tool keeps them honest: `lint-imports` checks the
contracts in pyproject.toml (three packages in one direction, layers inside each, DBOS and NATS
each used in one module, no import cycles)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import timestep

ROOT = Path(__file__).parent.parent


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_public_api_imports_from_timestep() -> None:
    for name in timestep.__all__:
        assert getattr(timestep, name) is not None, name
    from timestep.client import Client

    assert timestep.Client is Client


def _grep(pattern: str, *paths: str) -> list[str]:
    done = subprocess.run(["git", "grep", "-nE", pattern, "--", *paths], cwd=ROOT, capture_output=True, text=True, timeout=60)
    return done.stdout.splitlines()


def test_private_dbos_names_are_used_only_in_the_engines_hooks() -> None:
    """A DBOS release that moves one of them fails at launch with a sentence (`hooks.check()`),
    not in a queue thread: that holds only while every one of them is listed there."""
    found = _grep(r"dbos\._|\._sys_db\b|_get_dbos_instance|\._registry\b|\._worker_concurrency|\._polling_interval_sec|_is_latest_version",
                  "timestep/*.py", "actors/*.py", ":!timestep/durable/engine/hooks.py")
    assert found == []


def test_dbos_status_words_are_translated_in_one_place() -> None:
    """Timestep's status words cross the boundary, DBOS's never: the one mapping is engine/records.py
    (the hooks' own reads of DBOS's tables say them too)."""
    found = _grep(r"\"(ENQUEUED|PENDING|SUCCESS|ERROR|CANCELLED|MAX_RECOVERY_ATTEMPTS_EXCEEDED|DELAYED)\"",
                  "timestep", "actors", ":!timestep/durable/engine/records.py", ":!timestep/durable/engine/hooks.py")
    assert found == []


def test_the_environment_is_read_at_the_edge_only() -> None:
    """Below the edge (the processes and the command line in `actors/`), settings come from
    `timestep.settings.current()`: a `System(settings=...)` then reaches every layer of the library,
    and a process reads its environment once."""
    found = _grep(r"\.from_env\(\)|os\.environ\.get|os\.environ\[|os\.getenv", "timestep/*.py", ":!timestep/settings.py")
    assert found == []
