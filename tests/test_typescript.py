"""The TypeScript client (clients/typescript) against the real actors and a real nats-server.

Its tests are Node tests (`node --test` on the compiled package); this file installs the package's
dependencies when needed (`npm ci`, when node_modules is missing or package-lock.json changed), builds
it with `tsc`, and runs them against the `system` fixture's actors. The actors run on this process's
event loop, so every child process is awaited with asyncio, never with a blocking call.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from timestep.bus.server import server_binary

pytestmark = pytest.mark.node

PACKAGE = Path(__file__).resolve().parent.parent / "clients" / "typescript"
INSTALLED_MARK = PACKAGE / "node_modules" / ".package-lock.sha256"
BUILT_MARK = PACKAGE / "dist" / ".sources.sha256"
NODE_MIN = 20


def _node_and_npm() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail(
            f"the TypeScript client's tests need Node.js {NODE_MIN}+ and npm on PATH (found node={node}, npm={npm}); "
            "install them (Debian: apt-get install nodejs npm) and run the tests again"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major = int(version.lstrip("v").split(".")[0] or 0)
    if major < NODE_MIN:
        pytest.fail(f"the TypeScript client's tests need Node.js {NODE_MIN}+; {node} is {version}")
    return node, npm


async def _run(*cmd: str, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *cmd, cwd=PACKAGE, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        pytest.fail(f"`{' '.join(cmd)}` took longer than {timeout:g} s; its output:\n{output.decode(errors='replace')}")
    return process.returncode or 0, output.decode(errors="replace")


@contextlib.asynccontextmanager
async def _package_lock() -> AsyncIterator[None]:
    """One install or build at a time across pytest-xdist workers (waiting without blocking the loop)."""
    path = Path(tempfile.gettempdir()) / f"timestep-ts-{hashlib.sha256(str(PACKAGE).encode()).hexdigest()[:12]}.lock"
    with open(path, "w") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_built: list[str] = []


async def _installed_and_built() -> str:
    """node_modules matching package-lock.json, and dist/ compiled from the current sources; returns node's path."""
    node, npm = _node_and_npm()
    if _built:
        return node
    async with _package_lock():
        want = hashlib.sha256((PACKAGE / "package-lock.json").read_bytes()).hexdigest()
        have = INSTALLED_MARK.read_text().strip() if INSTALLED_MARK.exists() else ""
        if want != have:
            code, output = await _run(npm, "ci", "--no-audit", "--no-fund", timeout=600)
            assert code == 0, f"npm ci failed in {PACKAGE}:\n{output}"
            INSTALLED_MARK.write_text(want)
        # Only when a source changed: another worker's Node tests may be reading dist/ right now.
        sources = hashlib.sha256(want.encode())
        for path in sorted([*PACKAGE.glob("src/**/*.ts"), *PACKAGE.glob("test/**/*.ts"), PACKAGE / "tsconfig.json"]):
            sources.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes())
        if not BUILT_MARK.exists() or BUILT_MARK.read_text().strip() != sources.hexdigest():
            shutil.rmtree(PACKAGE / "dist", ignore_errors=True)  # no compiled leftovers of deleted sources
            code, output = await _run(npm, "run", "build", timeout=300)
            assert code == 0, f"the TypeScript package does not compile (npm run build):\n{output}"
            BUILT_MARK.write_text(sources.hexdigest())
    _built.append(node)
    return node


async def test_generated_types_match_the_contract_schema() -> None:
    node = await _installed_and_built()
    code, output = await _run(node, "scripts/generate-types.mjs", "--check", timeout=120)
    assert code == 0, f"clients/typescript/src/contract.ts is stale:\n{output}"


async def test_dependencies_declare_the_node_version_the_package_needs() -> None:
    """`engines` of package.json says Node NODE_MIN+, and no dependency in package-lock.json asks
    for more on this machine's Node (npm would warn EBADENGINE on every install)."""
    _, npm = _node_and_npm()
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
    _, npm = _node_and_npm()
    async with _package_lock():  # dist/ as built above, not rebuilt by `prepack` while another worker reads it
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
