"""TypeScript agents run durably (clients/typescript-runtime): its Node tests, on a real PostgreSQL
(DBOS's TypeScript SDK has no SQLite), each program a Node process of its own, killed with SIGKILL
where a test says so. This file installs and builds the package when needed and gives the tests an
empty database."""

from __future__ import annotations

import json
import os

import pytest

from node_packages import NODE_MIN, ROOT, NodePackage, node_and_npm

pytestmark = pytest.mark.node

RUNTIME = NodePackage(ROOT / "clients" / "typescript-runtime")


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_typescript_agents_run_durably_and_resume_after_sigkill(databases) -> None:
    node = await RUNTIME.installed_and_built()
    url = databases.new()
    env = {**os.environ, "TIMESTEP_TEST_PG_URL": url}
    env.pop("PG_CONNECTION_URI", None)
    code, output = await RUNTIME.run(node, "--test", "--test-reporter=spec", "dist/test/", env=env, timeout=600)
    assert code == 0, f"the TypeScript runtime's Node tests failed (exit {code}):\n{output}"
    assert "ℹ fail 0" in output and "ℹ skipped 0" in output and "ℹ pass 0" not in output, output


async def test_the_runtime_declares_the_node_version_its_dependencies_need() -> None:
    """`engines` says Node NODE_MIN+, and no dependency asks for more on this machine's Node (the latest
    @openai/agents pulls openai 7, which asks for Node 22: the package stays on 0.14, which does not)."""
    _, npm = node_and_npm()
    assert json.loads((RUNTIME.path / "package.json").read_text())["engines"] == {"node": f">={NODE_MIN}"}
    code, output = await RUNTIME.run(npm, "ci", "--dry-run", "--no-audit", "--no-fund", timeout=120)
    assert code == 0 and "EBADENGINE" not in output, output
