"""The README's quick start runs as written, twice (the second time its fixed workflow id returns the stored run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start() -> str:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.processes
def test_quick_start_runs(tmp_path: Path) -> None:
    script = tmp_path / "quick_start.py"
    script.write_text(quick_start())
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PG_CONNECTION_URI", "TIMESTEP_HOME")}
    for _ in range(2):
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.splitlines() == ["get_weather returned: sunny in Paris", "send_email returned: sent to ada@example.com"]
    assert (tmp_path / ".timestep" / "timestep.sqlite").exists()


def actor_system_example() -> str:
    section = README.read_text().split("## The actor system", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.processes
def test_actor_system_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "bus_example.py"
    script.write_text(actor_system_example())
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PG_CONNECTION_URI", "TIMESTEP_HOME", "NATS_URL")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["1 Accepted", "2 Started", "3 Completed"]


def test_every_setting_is_in_the_readme() -> None:
    """Each environment variable `timestep/settings.py` reads has a row in the README's table."""
    settings = (README.parent / "timestep" / "settings.py").read_text()
    names = set(re.findall(r'"((?:TIMESTEP|NATS|PG)_[A-Z_]+)"', settings))
    table = README.read_text().split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    missing = sorted(name for name in names if f"`{name}`" not in table)
    assert names and not missing, f"add these to the README's Environment variables table: {missing}"


def sdk_example() -> str:
    section = README.read_text().split("### Agents SDK features", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.processes
def test_the_context_and_run_config_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "sdk_example.py"
    script.write_text(sdk_example())
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PG_CONNECTION_URI", "TIMESTEP_HOME")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["add_item returned: ada has 1 item(s)", "['pears']"]
