"""The README's quick start runs as written, twice (the second time its fixed workflow id returns the stored run),
and so does every whole program of the docs' pages (docs/actors.md, docs/library.md): each with the output it
prints. tests/test_docs.py checks that no page holds a fragment that is not one of them."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def example(heading: str, index: int = 0, page: Path = README) -> str:
    """The Python block number `index` (from 0) after `heading` in `page` (the README by default)."""
    section = page.read_text().split(heading, 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)[index]


def run_example(heading: str, tmp_path: Path, *unset: str, index: int = 0, page: Path = README) -> subprocess.CompletedProcess:
    script = tmp_path / "example.py"
    script.write_text(example(heading, index, page))
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PG_CONNECTION_URI", "TIMESTEP_HOME", *unset)}
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.processes
def test_quick_start_runs(tmp_path: Path) -> None:
    for _ in range(2):
        done = run_example("## Quick start: the library", tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.splitlines() == ["get_weather returned: sunny in Paris", "send_email returned: sent to ada@example.com"]
    assert (tmp_path / ".timestep" / "timestep.sqlite").exists()


@pytest.mark.processes
def test_actor_system_example_runs(tmp_path: Path) -> None:
    done = run_example("# The actor system", tmp_path, "NATS_URL", page=DOCS / "actors.md")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["1 Accepted", "2 Started", "3 Completed"]


def test_every_setting_is_in_the_docs() -> None:
    """Each environment variable `timestep/settings.py` reads has a row in the table docs/environment.md is
    built with (written from the settings' docstrings by docs/hooks.py)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    table = hooks.environment()
    settings = (ROOT / "timestep" / "settings.py").read_text()
    names = set(re.findall(r'"((?:TIMESTEP|NATS|PG|OPENAI)_[A-Z_]+)"', settings))
    missing = sorted(name for name in names if f"`{name}`" not in table)
    assert names and not missing, f"document these in timestep/settings.py as `NAME (default: VALUE): meaning`: {missing}"
    assert "<!-- generated: environment -->" in (DOCS / "environment.md").read_text()


@pytest.mark.processes
def test_the_context_and_run_config_example_runs(tmp_path: Path) -> None:
    done = run_example("## Agents SDK features", tmp_path, page=DOCS / "library.md")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["add_item returned: ada has 1 item(s)", "['pears']"]


@pytest.mark.processes
def test_the_mcp_example_runs(tmp_path: Path) -> None:
    done = run_example("## Agents SDK features", tmp_path, index=1, page=DOCS / "library.md")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["add returned: 5"]


@pytest.mark.processes
def test_the_fork_example_runs(tmp_path: Path) -> None:
    done = run_example("## Inspect, fork and replay runs", tmp_path, page=DOCS / "library.md")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["1 model, 2 tool:get_weather, 3 model", "get_weather returned: sunny in Oslo"]


@pytest.mark.processes
def test_the_idempotency_key_example_runs(tmp_path: Path) -> None:
    done = run_example("**Side effects that must happen once.**", tmp_path, page=DOCS / "library.md")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["refund returned: refunded 500 cents: re_1", "True re_1"]


@pytest.mark.processes
def test_the_live_text_example_runs(tmp_path: Path) -> None:
    done = run_example("Text as it is yielded, without waiting on storage", tmp_path, "NATS_URL", page=DOCS / "library.md")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["You said: Tell me a story"]
