"""The TypeScript client (clients/typescript) against the real actors and a real nats-server.

Its tests are Node tests (`node --test` on the compiled package); this file installs the package's
dependencies when needed (`npm ci`, when node_modules is missing or package-lock.json changed), builds
it with `tsc`, and runs them against the `system` fixture's actors. The actors run on this process's
event loop, so every child process is awaited with asyncio, never with a blocking call.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from node_packages import NODE_MIN, ROOT, NodePackage, node_and_npm
from timestep.bus.server import server_binary

pytestmark = pytest.mark.node

CLIENT = NodePackage(ROOT / "clients" / "typescript")
PACKAGE = CLIENT.path


async def _installed_and_built() -> str:
    return await CLIENT.installed_and_built()


async def _run(*cmd: str, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    return await CLIENT.run(*cmd, timeout=timeout, env=env)


async def test_generated_types_match_the_contract_schema() -> None:
    node = await _installed_and_built()
    code, output = await _run(node, "scripts/generate-types.mjs", "--check", timeout=120)
    assert code == 0, f"clients/typescript/src/contract.ts is stale:\n{output}"


async def test_dependencies_declare_the_node_version_the_package_needs() -> None:
    """`engines` of package.json says Node NODE_MIN+, and no dependency in package-lock.json asks
    for more on this machine's Node (npm would warn EBADENGINE on every install)."""
    _, npm = node_and_npm()
    assert json.loads((PACKAGE / "package.json").read_text())["engines"] == {"node": f">={NODE_MIN}"}
    code, output = await _run(npm, "ci", "--dry-run", "--no-audit", "--no-fund", timeout=120)
    assert code == 0 and "EBADENGINE" not in output, output


# The client does not see the database: one backend is enough.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_typescript_client_against_the_actors(system) -> None:
    node = await _installed_and_built()
    env = {**os.environ, "TIMESTEP_TEST_NATS_URL": system.url, "NATS_SERVER_BIN": server_binary()}
    code, output = await _run(node, "--test", "--test-reporter=spec", "dist/test/", env=env, timeout=300)
    assert code == 0, f"the TypeScript client's Node tests failed (exit {code}):\n{output}"
    assert "ℹ fail 0" in output and "ℹ pass 0" not in output, output


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_packed_client_installs_into_an_empty_project_and_runs_its_readme_example(system, tmp_path: Path) -> None:
    """As the client's README installs it: `npm pack`, then `npm install` of the tarball into an
    empty Node project (its NATS dependencies from the registry), then the README's example, run
    there with node (the test agent in place of the demo's)."""
    node = await _installed_and_built()
    _, npm = node_and_npm()
    async with CLIENT.lock():  # dist/ as built above, not rebuilt by `prepack` while another worker reads it
        code, output = await _run(npm, "pack", "--ignore-scripts", "--pack-destination", str(tmp_path), timeout=120)
    assert code == 0, output
    [tarball] = tmp_path.glob("timestep-client-*.tgz")
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "example-project", "private": True, "type": "module"}))
    install = await asyncio.create_subprocess_exec(
        npm, "install", "--no-audit", "--no-fund", str(tarball), cwd=project, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(install.communicate(), 300))[0].decode(errors="replace")
    assert install.returncode == 0, output
    readme = (PACKAGE / "README.md").read_text()
    example = readme.split("## Example", 1)[1].split("```js\n", 1)[1].split("```", 1)[0]
    (project / "example.mjs").write_text(example.replace('"demo-assistant"', '"bus-assistant"'))
    run = await asyncio.create_subprocess_exec(
        node, "example.mjs", cwd=project, env={**os.environ, "NATS_URL": system.url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, err.decode(errors="replace")
    assert out.decode().strip().split("\n") == [
        "1 accepted", "2 started", "3 tool_call", "4 tool_output", "5 completed",
        "get_weather returned: sunny in Paris", "send_email returned: sent to ada@example.com",
    ], out.decode()
