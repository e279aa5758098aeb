"""One live process per executor id (timestep/ops/lease.py): a second process with a held id stops
with the reason; a standby waits, imported and connected, and takes the runs over when the
holder is SIGKILLed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from processes import process_env, stop, up, wait_printed
from subjects.events import ToolCall
from timestep.client import Client
from timestep.bus.server import EmbeddedNats, free_port

pytestmark = pytest.mark.processes


def node(tmp: Path, db_url: str, nats_url: str, name: str, *extra: str) -> tuple[subprocess.Popen, Path]:
    """Agent and governor under executor id node-1 (every one of them: that is the point)."""
    env = process_env(NATS_URL=nats_url, TIMESTEP_HOME=str(tmp / "home"), TIMESTEP_EXECUTOR_ID="node-1", TIMESTEP_TEST_LOG=str(tmp / "calls.log"))
    if not db_url.startswith("sqlite"):
        env["PG_CONNECTION_URI"] = db_url
    out = tmp / f"{name}.out"
    return up(out, env, "--agents", "bus_agents", "--role", "agent", "--role", "governor", *extra), out


async def test_a_standby_takes_over_the_runs_of_a_killed_process(fresh_db_url: str, tmp_path: Path) -> None:
    nats = EmbeddedNats(tmp_path / "nats", port=free_port())
    nats.start()
    procs = []
    try:
        primary, out = node(tmp_path, fresh_db_url, nats.url, "primary")
        procs.append(primary)
        wait_printed([(primary, out)])

        # The same id again: refused at once, with the reason and the way out.
        twin, twin_out = node(tmp_path, fresh_db_url, nats.url, "twin")
        procs.append(twin)
        assert twin.wait(60) != 0
        said = twin_out.read_text()
        assert "TIMESTEP_EXECUTOR_ID='node-1' is held by another live process" in said and "--standby" in said, said[-2000:]

        standby, standby_out = node(tmp_path, fresh_db_url, nats.url, "standby", "--standby")
        procs.append(standby)
        wait_printed([(standby, standby_out)], "standby for executor id 'node-1'")

        async with await Client.connect(nats.url) as client:
            seconds = [float(f"2.{uuid.uuid4().int % 10**6:06d}{i + 1}") for i in range(4)]
            runs = [await client.submit("bus-assistant", f"think seconds={s}") for s in seconds]
            in_tool: set[str] = set()
            async for event in client.events(from_start=True):
                if isinstance(event, ToolCall) and event.run_id in {r.run_id for r in runs}:
                    in_tool.add(event.run_id)
                    if len(in_tool) == len(runs):
                        break
            primary.send_signal(signal.SIGKILL)
            primary.wait()
            wait_printed([(standby, standby_out)])  # took over: launched, recovering
            results = await asyncio.gather(*(run.result(timeout=120) for run in runs))
        assert [r.output for r in results] == [f"think returned: thought {s}" for s in seconds]
        calls = Counter(line.split(" pid=")[0] for line in (tmp_path / "calls.log").read_text().splitlines())
        # Each tool call was cut off by the SIGKILL and ran once more in the standby; no more than that.
        assert all(calls[f"think:{s}"] == 2 for s in seconds), calls
    finally:
        stop(procs)
        nats.stop()
