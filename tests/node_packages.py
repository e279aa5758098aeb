"""Node packages of this repository (clients/typescript, clients/typescript-runtime) as their tests use them:
`npm ci` when node_modules is missing or package-lock.json changed, `tsc` when a source changed, one
install or build at a time across pytest-xdist workers, and child processes awaited with asyncio
(the tests that use them run actors on their event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_MIN = 20


def node_and_npm() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail(
            f"the TypeScript packages' tests need Node.js {NODE_MIN}+ and npm on PATH (found node={node}, npm={npm}); "
            "install them (Debian: apt-get install nodejs npm) and run the tests again"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major = int(version.lstrip("v").split(".")[0] or 0)
    if major < NODE_MIN:
        pytest.fail(f"the TypeScript packages' tests need Node.js {NODE_MIN}+; {node} is {version}")
    return node, npm


class NodePackage:
    """One package directory: install, build and run its commands."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.installed_mark = path / "node_modules" / ".package-lock.sha256"
        self.built_mark = path / "dist" / ".sources.sha256"
        self._built = False

    async def run(self, *cmd: str, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            *cmd, cwd=self.path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout)
        except asyncio.TimeoutError:
            process.kill()
            output, _ = await process.communicate()
            pytest.fail(f"`{' '.join(cmd)}` took longer than {timeout:g} s; its output:\n{output.decode(errors='replace')}")
        return process.returncode or 0, output.decode(errors="replace")

    @contextlib.asynccontextmanager
    async def lock(self) -> AsyncIterator[None]:
        """One install or build at a time across pytest-xdist workers (waiting without blocking the loop)."""
        path = Path(tempfile.gettempdir()) / f"timestep-ts-{hashlib.sha256(str(self.path).encode()).hexdigest()[:12]}.lock"
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

    async def installed_and_built(self) -> str:
        """node_modules matching package-lock.json, and dist/ compiled from the current sources; returns node's path."""
        node, npm = node_and_npm()
        if self._built:
            return node
        async with self.lock():
            want = hashlib.sha256((self.path / "package-lock.json").read_bytes()).hexdigest()
            have = self.installed_mark.read_text().strip() if self.installed_mark.exists() else ""
            if want != have:
                code, output = await self.run(npm, "ci", "--no-audit", "--no-fund", timeout=600)
                assert code == 0, f"npm ci failed in {self.path}:\n{output}"
                self.installed_mark.write_text(want)
            # Only when a source changed: another worker's Node tests may be reading dist/ right now.
            sources = hashlib.sha256(want.encode())
            for path in sorted([*self.path.glob("*/**/*.ts"), self.path / "tsconfig.json"]):
                if "node_modules" in path.parts or "dist" in path.parts:
                    continue
                sources.update(str(path.relative_to(self.path)).encode() + b"\0" + path.read_bytes())
            if not self.built_mark.exists() or self.built_mark.read_text().strip() != sources.hexdigest():
                shutil.rmtree(self.path / "dist", ignore_errors=True)  # no compiled leftovers of deleted sources
                code, output = await self.run(npm, "run", "build", timeout=300)
                assert code == 0, f"the TypeScript package in {self.path} does not compile (npm run build):\n{output}"
                self.built_mark.write_text(sources.hexdigest())
        self._built = True
        return node
