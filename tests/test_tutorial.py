"""docs/tutorial.md, run as a reader runs it: its module written to `myapp/agents.py` in an empty folder, then
every `timestep` command of its shell blocks in order, from that folder, `timestep up` in the background and
`kill -9` of it where the page says so; each command's exit code is the one the page promises, and the run
approved after the crash completes with `send_email` run once."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from processes import process_env, wait_printed
from subjects.events import Completed
from timestep.client import Client, Submission

pytestmark = pytest.mark.processes

PAGE = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
TIMESTEP = [sys.executable, "-m", "actors.cli.main"]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


async def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    text = PAGE.read_text()
    [module] = _blocks(text, "python")
    target = tmp_path / module.splitlines()[0].removeprefix("# ")
    target.parent.mkdir(parents=True)
    target.write_text(module)
    env = process_env("TIMESTEP_HOME")  # the default: ./.timestep in the folder
    lines = [line.strip() for block in _blocks(text, "bash") for line in block.splitlines() if line.strip()]
    assert lines[0].startswith("timestep up") and any(line.startswith("kill -9") for line in lines)
    up: subprocess.Popen | None = None
    ups, approve = [], None
    try:
        for line in lines:
            if line.startswith("kill -9"):
                up.kill()
                up.wait()
                continue
            args = shlex.split(line)
            assert args[0] == "timestep", line
            if args[1] == "up":
                out = tmp_path / f"up-{len(ups)}.out"
                up = subprocess.Popen([*TIMESTEP, *args[1:]], cwd=tmp_path, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)
                ups.append(up)
                wait_printed([(up, out)], timeout=120)
                assert "agents: assistant" in out.read_text() and "console: http://127.0.0.1:" in out.read_text()
                continue
            if args[1] == "approve":
                args[2:4] = approve
            done = subprocess.run([*TIMESTEP, *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            expected = 3 if "send_email" in line else 0  # 3: stopped at an interruption, as the page says
            assert done.returncode == expected, f"{line}: exit {done.returncode}\n{done.stdout}\n{done.stderr[-2000:]}"
            if expected == 3:
                approve = list(re.search(r"timestep approve (\S+) (\S+)", done.stdout).groups())
            if args[1] == "approvals":
                assert approve[0] in done.stdout and "send_email" in done.stdout
        assert approve is not None
        url = (tmp_path / ".timestep" / "nats.url").read_text().strip()
        async with await Client.connect(url) as client:
            completed = await Submission(client, approve[0], None).result(timeout=60)
            assert isinstance(completed, Completed) and completed.output == "send_email returned: sent to ada@example.com"
            steps = await client.steps(approve[0])
        tools = [s for s in steps if s.kind == "tool"]
        assert [s.name for s in tools] == ["tool:send_email"] and len([s for s in steps if s.kind == "model"]) == 2
    finally:
        for proc in ups:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
