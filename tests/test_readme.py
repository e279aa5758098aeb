"""The README's quick start runs as written, twice (the second time its fixed workflow id returns the stored run),
and every environment variable is documented (the docs' own examples are run by tests/test_docs.py)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

from processes import run_program

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def run_example(heading: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """The README's first Python block after `heading`, run as a reader runs it."""
    section = README.read_text().split(heading, 1)[1]
    return run_program(re.findall(r"```python\n(.*?)```", section, re.S)[0], tmp_path)


@pytest.mark.processes
def test_quick_start_runs(tmp_path: Path) -> None:
    for _ in range(2):
        done = run_example("## Quick start: the library", tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.splitlines() == ["get_weather returned: sunny in Paris", "send_email returned: sent to ada@example.com"]
    assert (tmp_path / ".timestep" / "timestep.sqlite").exists()



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




