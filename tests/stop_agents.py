"""Agents with one long tool each, for the graceful-stop tests of tests/test_faults.py
(`timestep up --agents stop_agents`, tests/ on PYTHONPATH).

`stop-sync` calls `nap_sync`, a plain `def` tool (the Agents SDK runs it in a thread, as it runs
every tool that calls `requests` or a blocking SDK); `stop-async` calls `nap_async`, an `async def`
tool. Each call appends `start PID` and, when it returns, `end PID` to $TIMESTEP_TOOL_CALLS: the
side effect a test counts. The first call of all takes TIMESTEP_TOOL_SECONDS (longer than the
stop's grace), later ones return at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from agents import Agent, function_tool
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

from timestep import register_agent

CALLS = Path(os.environ.get("TIMESTEP_TOOL_CALLS", os.devnull))
SECONDS = float(os.environ.get("TIMESTEP_TOOL_SECONDS", "20"))


def _record(phase: str) -> None:
    fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{phase} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def _seconds() -> float:
    """The first call takes long; the ones after it, none."""
    first = not CALLS.exists() or "start" not in CALLS.read_text()
    _record("start")
    return SECONDS if first else 0.0


@function_tool
def nap_sync() -> str:
    time.sleep(_seconds())
    _record("end")
    return "rested"


@function_tool
async def nap_async() -> str:
    await asyncio.sleep(_seconds())
    _record("end")
    return "rested"


def _agent(name: str, tool) -> Agent:
    def respond(call) -> object:
        if not any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in call.input):
            return [function_call(tool.name, {}, call_id="n1")]
        return [assistant_message("done")]

    return Agent(name=name, model=ScriptedModel([ModelStep.respond(respond) for _ in range(100)]), tools=[tool])


register_agent(_agent("stop-sync", nap_sync))
register_agent(_agent("stop-async", nap_async))
