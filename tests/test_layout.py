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
