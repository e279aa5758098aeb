"""The documentation site builds with every warning an error (a broken link or anchor, a page left out of the
navigation, a docstring mkdocstrings cannot read), and its generated pages hold what the code says today; every
Python block of its pages is a whole program that a test runs (tests/test_readme.py, tests/test_tutorial.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from subjects.names import Subjects

pytestmark = pytest.mark.processes  # a build imports the whole library in a fresh interpreter

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-5000:]
    assert "WARNING -" not in done.stderr, done.stderr[-5000:]
    return out


def _text(html: Path) -> str:
    return re.sub(r"<[^>]+>", "", html.read_text())


def test_the_site_builds_strictly_with_the_generated_reference(site: Path) -> None:
    cli = _text(site / "cli" / "index.html")
    assert "timestep up" in cli and "--workers N" in cli and "--from-step N" in cli  # the parser's own help
    contract = _text(site / "contract" / "index.html")
    for subject in (Subjects("timestep").submit, Subjects("timestep").runs_fork):
        assert subject in contract, subject
    api = _text(site / "api" / "index.html")
    assert all(name in api for name in ("run_agent_workflow", "queue_agent_workflow", "fork_run", "RunStateStore"))
    environment = _text(site / "environment" / "index.html")
    assert "TIMESTEP_WORKERS" in environment and "NATS_CREDS_FILE" in environment and "TIMESTEP_MODEL_MAX_ATTEMPTS" in environment
    home = _text(site / "index.html")
    assert "Quick start: the library" in home  # the README is the home page
    assert (site / "CHANGELOG" / "index.html").exists() and (site / "subjects" / "index.html").exists()


#: Each Python block of the docs' pages, by page and place, and the test that runs it as a reader would.
RUN_BY = {
    ("actors.md", 0): "test_readme.py::test_actor_system_example_runs",
    ("library.md", 0): "test_readme.py::test_the_context_and_run_config_example_runs",
    ("library.md", 1): "test_readme.py::test_the_mcp_example_runs",
    ("library.md", 2): "test_readme.py::test_the_fork_example_runs",
    ("library.md", 3): "test_readme.py::test_the_idempotency_key_example_runs",
    ("library.md", 4): "test_readme.py::test_the_live_text_example_runs",
    ("tutorial.md", 0): "test_tutorial.py::test_the_tutorial_runs_as_written",
}


def test_every_python_block_of_the_docs_is_a_whole_program_a_test_runs() -> None:
    """No fragment a reader cannot run: each block is a program (it runs itself, or is the tutorial's module),
    and each is run, with its output checked, by the test named for it in RUN_BY."""
    blocks = {
        (page.name, i): block
        for page in sorted(DOCS.glob("*.md"))
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
    }
    assert set(blocks) == set(RUN_BY), f"give each new block a test and a line in RUN_BY: {sorted(set(blocks) ^ set(RUN_BY))}"
    for where, block in blocks.items():
        assert "asyncio.run(" in block or block.startswith("# myapp/"), f"{where} is a fragment: make it a whole program"
        compile(block, str(where), "exec")
    tests = ROOT / "tests"
    for test in RUN_BY.values():
        module, name = test.split("::")
        assert f"def {name}(" in (tests / module).read_text(), test
