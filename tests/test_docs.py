"""The documentation site builds with every warning an error (a broken link or anchor, a page left out of the
navigation, a docstring mkdocstrings cannot read), and its generated pages hold what the code says today; every
Python block of its pages is a whole program, run here with its output checked (the tutorial's by
tests/test_tutorial.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from processes import run_program
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


#: Each Python block of the docs' pages, by page and place on it (from 0): the settings unset for it and what it
#: prints. The tutorial's module (tutorial.md, 0) is run by tests/test_tutorial.py, command by command.
PROGRAMS = {
    ("actors.md", 0): (("NATS_URL",), ["1 Accepted", "2 Started", "3 Completed"]),
    ("library.md", 0): ((), ["add_item returned: ada has 1 item(s)", "['pears']"]),  # context= and run_config=
    ("library.md", 1): ((), ["add returned: 5"]),  # an MCP server over stdio
    ("library.md", 2): ((), ["1 model, 2 tool:get_weather, 3 model", "get_weather returned: sunny in Oslo"]),  # fork_run
    ("library.md", 3): ((), ["refund returned: refunded 500 cents: re_1", "True re_1"]),  # idempotency_key
    ("library.md", 4): (("NATS_URL",), ["You said: Tell me a story"]),  # client.live
}
TUTORIAL = ("tutorial.md", 0)


def _blocks() -> dict[tuple[str, int], str]:
    return {
        (page.name, i): block
        for page in sorted(DOCS.glob("*.md"))
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
    }


def test_every_python_block_of_the_docs_is_a_whole_program_a_test_runs() -> None:
    """No fragment a reader cannot run: each block is a program (it runs itself, or is the tutorial's module),
    and each is run, with its output checked, here (PROGRAMS) or by tests/test_tutorial.py."""
    blocks = _blocks()
    assert set(blocks) == set(PROGRAMS) | {TUTORIAL}, f"give each new block a line in PROGRAMS: {sorted(set(blocks) ^ (set(PROGRAMS) | {TUTORIAL}))}"
    for where, block in blocks.items():
        assert "asyncio.run(" in block or where == TUTORIAL, f"{where} is a fragment: make it a whole program"


@pytest.mark.parametrize("where", sorted(PROGRAMS), ids=lambda where: f"{where[0]}-{where[1]}")
def test_each_program_of_the_docs_runs_and_prints_what_it_says(where: tuple[str, int], tmp_path: Path) -> None:
    unset, prints = PROGRAMS[where]
    done = run_program(_blocks()[where], tmp_path, *unset)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == prints
