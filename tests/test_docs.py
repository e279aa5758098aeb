"""The documentation site builds with every warning an error (a broken link or anchor, a page left out of the
navigation, a docstring mkdocstrings cannot read), and its generated pages hold what the code says today; the
code fragments of its pages compile and name only what Timestep exports. (Its complete examples are run by
tests/test_readme.py and tests/test_tutorial.py.)"""

from __future__ import annotations

import ast
import builtins
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import timestep
from timestep.client import Client
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


def _fragments() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            if "asyncio.run(" not in block and not block.startswith("# myapp/"):
                found.append((page.name, block))
    return found


@pytest.mark.parametrize(("page", "block"), _fragments(), ids=lambda v: v if v.endswith(".md") else "")
def test_every_fragment_compiles_and_names_what_timestep_exports(page: str, block: str) -> None:
    """A fragment's bare calls are Python's builtins, its own names or Timestep's exports; what it reads from
    `timestep.` is exported, and what it calls on a `client` is a method of timestep's Client."""
    tree = compile(block, page, "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    nodes = list(ast.walk(tree))
    bound = {a.asname or a.name for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    bound |= {n.name for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    bound |= {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    called = {n.func.id for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    unknown = sorted(name for name in called - bound - set(dir(builtins)) if name not in timestep._EXPORTS)
    assert not unknown, f"{page}: calls {unknown}, which timestep does not export"
    from_timestep = {n.attr for n in nodes if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "timestep"}
    from_timestep |= {a.name for n in nodes if isinstance(n, ast.ImportFrom) and n.module == "timestep" for a in n.names}
    assert from_timestep <= set(timestep._EXPORTS), f"{page}: {sorted(from_timestep - set(timestep._EXPORTS))} are not exported"
    on_client = {n.attr for n in nodes if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in ("client", "Client")}
    assert all(hasattr(Client, name) for name in on_client), f"{page}: Client has no {sorted(n for n in on_client if not hasattr(Client, n))}"
