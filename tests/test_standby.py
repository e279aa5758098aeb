"""One live process per executor id (timestep/lease.py): a second process with a held id stops
with the reason; a standby waits, imported and connected, and takes the runs over when the
holder is SIGKILLed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from subjects.events import Completed, ToolCall
from timestep.client import Client
from timestep.natsserver import EmbeddedNats, free_port

TESTS = Path(__file__).parent


def up(tmp: Path, db_url: str, nats_url: str, name: str, *extra: str) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("PG_CONNECTION_URI", "OPENAI_API_KEY", "NATS_URL")}
    env.update(
        NATS_URL=nats_url, TIMESTEP_HOME=str(tmp / "home"), TIMESTEP_EXECUTOR_ID="node-1", TIMESTEP_TEST_LOG=str(tmp / "calls.log"),
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
    )
    if not db_url.startswith("sqlite"):
        env["PG_CONNECTION_URI"] = db_url
    out = tmp / f"{name}.out"
    args = [sys.executable, "-m", "timestep.cli", "up", "--agents", "bus_agents", "--role", "agent", "--role", "governor", *extra]
    return subprocess.Popen(args, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT), out


def wait_for(out: Path, text: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while text not in out.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{out.name}: no {text!r}: {out.read_text()[-3000:]}")
        time.sleep(0.05)


async def test_a_standby_takes_over_the_runs_of_a_killed_process(fresh_db_url: str, tmp_path: Path) -> None:
    nats = EmbeddedNats(tmp_path / "nats", port=free_port())
    nats.start()
    procs = []
    try:
        primary, out = up(tmp_path, fresh_db_url, nats.url, "primary")
        procs.append(primary)
        wait_for(out, "timestep up:", primary)

        # The same id again: refused at once, with the reason and the way out.
        twin, twin_out = up(tmp_path, fresh_db_url, nats.url, "twin")
        procs.append(twin)
        assert twin.wait(60) != 0
        said = twin_out.read_text()
        assert "TIMESTEP_EXECUTOR_ID='node-1' is held by another live process" in said and "--standby" in said, said[-2000:]

        standby, standby_out = up(tmp_path, fresh_db_url, nats.url, "standby", "--standby")
        procs.append(standby)
        wait_for(standby_out, "standby for executor id 'node-1'", standby)

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
            wait_for(standby_out, "timestep up:", standby)  # took over: launched, recovering
            results = await asyncio.gather(*(run.result(timeout=120) for run in runs))
        assert [r.output for r in results] == [f"think returned: thought {s}" for s in seconds]
        calls = Counter(line.split(" pid=")[0] for line in (tmp_path / "calls.log").read_text().splitlines())
        # Each tool call was cut off by the SIGKILL and ran once more in the standby; no more than that.
        assert all(calls[f"think:{s}"] == 2 for s in seconds), calls
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        nats.stop()
