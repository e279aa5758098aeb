"""Cron schedules: created before or after launch, listed, deleted, each tick run once across processes."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from agents import Agent
from agents.testing import ModelStep, ScriptedModel, assistant_message

import timestep
from timestep.durable import engine
from subjects.messages import RunRequest, Schedule
from timestep.durable.runs import RunSpec

WORKER = Path(__file__).with_name("worker.py")


def ticking_agent(prefix: str) -> tuple[Agent, list[str]]:
    """An agent that answers "tock" to each tick, and the input of each tick it was given, in order."""
    seen: list[str] = []

    def respond(call) -> object:
        seen.append(call.input[0]["content"])
        return [assistant_message("tock")]

    return Agent(name=f"{prefix}-{uuid.uuid4().hex[:8]}", model=ScriptedModel([ModelStep.respond(respond) for _ in range(100)])), seen


async def test_schedule_created_after_launch_fires_and_can_be_deleted(db: str) -> None:
    agent, seen = ticking_agent("ticker")
    name = await timestep.create_scheduled_agent_workflow("* * * * * *", agent, "tick", name=f"s-{uuid.uuid4().hex[:8]}")
    listed = {s.name: s for s in await timestep.list_schedules()}
    assert listed[name].crontab == "* * * * * *" and listed[name].agent == agent.name

    deadline = time.monotonic() + 20
    while not seen and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert seen and seen[0] == "tick"
    runs = await engine.list_workflows(name="timestep.agent_run")
    assert any(w.id.startswith(f"{name}-") for w in runs)

    assert await timestep.delete_schedule(name) is True
    assert await timestep.delete_schedule(name) is False
    assert name not in {s.name for s in await timestep.list_schedules()}
    await asyncio.sleep(2)  # a tick due just before the delete still starts a run: not in the next test's time


async def test_invalid_cron_is_refused_naming_the_field(db: str) -> None:
    agent = Agent(name="cron-check")
    for bad in ["every minute", "* * *", "61 * * * *", "* * * * * * *"]:
        with pytest.raises(timestep.ValidationError, match="^crontab: "):
            await timestep.create_scheduled_agent_workflow(bad, agent, "x")
    with pytest.raises(timestep.ValidationError, match="^name: "):
        await timestep.create_scheduled_agent_workflow("* * * * *", agent, "x", name="a.b")


async def test_a_cron_that_never_fires_is_refused_and_nothing_is_stored(db: str) -> None:
    agent = Agent(name="cron-never")
    for never in ["0 0 31 2 *", "0 0 30 2 *", "0 0 0 31 2 *", "* * 31 4,6,9,11 *"]:
        name = f"never-{uuid.uuid4().hex[:8]}"
        with pytest.raises(timestep.ValidationError, match="^crontab: .* never fires: no time in the next 50 years .*; use days every chosen month has") as refused:
            await timestep.create_scheduled_agent_workflow(never, agent, "x", name=name)
        assert refused.value.field == "crontab"
        assert name not in {s.name for s in await timestep.list_schedules()}
    # Rare is not never: 29 February comes in leap years, and a weekday makes it OR (every Monday of February).
    for rare in ["0 0 29 2 *", "0 0 31 2 1"]:
        name = await timestep.create_scheduled_agent_workflow(rare, agent, "x", name=f"rare-{uuid.uuid4().hex[:8]}")
        assert await timestep.delete_schedule(name)


async def test_a_schedule_that_never_fires_does_not_stop_the_others(db: str, caplog: pytest.LogCaptureFixture) -> None:
    """A never-firing schedule stored as a version without the check at creation did: it is logged
    once and skipped, and the every-second one still fires."""
    from timestep.durable import store, ticks

    caplog.set_level(logging.INFO, logger="timestep.durable.runs")
    agent, seen = ticking_agent("beside")
    timestep.register_agent(agent)
    bad = f"0-never-{uuid.uuid4().hex[:8]}"  # sorts before the good one
    never = Schedule(name=bad, cron="0 0 31 2 *", request=RunRequest(agent=agent.name, input="never"), created_at=time.time(), origin="library")
    await store.run(lambda conn: ticks.save(conn, ticks.Row(never)))
    good = await timestep.create_scheduled_agent_workflow("* * * * * *", agent, "tick", name=f"s-{uuid.uuid4().hex[:8]}")
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert seen[:2] == ["tick", "tick"]
    finally:
        assert await timestep.delete_schedule(good) and await timestep.delete_schedule(bad)
        await asyncio.sleep(2)  # a tick due just before the delete still starts a run: not in the next test's time
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.getMessage().startswith(f"schedule {bad}:")]
    assert logged == [
        f"schedule {bad}: skipped: its cron '0 0 31 2 *' cannot fire (failed to find next date); "
        f"delete it (timestep schedules delete {bad}) and create it again with a cron that fires"
    ]


async def test_a_schedule_made_with_dbos_by_an_earlier_version_moves_to_the_table_and_fires(db: str) -> None:
    """Earlier versions kept the library's schedules in DBOS's scheduler: at launch they move to
    Timestep's table, listed once with the rest, and their ticks keep their run ids."""
    from timestep.durable import runs

    agent, seen = ticking_agent("older")
    timestep.register_agent(agent)
    name = f"old-{uuid.uuid4().hex[:8]}"
    spec = msgspec.to_builtins(RunSpec(agent=agent.name, input="from before", session_id="old-session"))
    await engine.blocking(engine.apply_schedule, name, runs.scheduled_run, "* * * * * *", {"name": name, "spec": spec})
    engine.shutdown()
    timestep.configure_dbos(system_database_url=db)
    timestep.ensure_dbos_launched()
    try:
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert seen and seen[0] == "from before"
        [listed] = [s for s in await timestep.list_schedules() if s.name == name]
        assert (listed.crontab, listed.agent, listed.origin) == ("* * * * * *", agent.name, "library")
        assert await engine.blocking(engine.list_schedules, runs.SCHEDULED_WORKFLOW) == []
        ran = [w for w in await engine.list_workflows(name="timestep.agent_run") if w.id.startswith(f"{name}-")]
        assert ran and all(len(w.id) == len(name) + 16 for w in ran)  # <name>-YYYYmmddTHHMMSS, as before
    finally:
        assert await timestep.delete_schedule(name)
        await asyncio.sleep(2)


@pytest.mark.processes
def test_each_tick_runs_once_with_two_processes(fresh_db_url: str, tmp_path: Path) -> None:
    seconds = 6.0
    procs = []
    for index in range(2):
        env = {**os.environ, "TIMESTEP_EXECUTOR_ID": f"scheduler-{index}", "TIMESTEP_HOME": str(tmp_path)}
        if index == 1:
            env["SCHEDULE_AFTER_LAUNCH"] = "1"
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), "schedule", fresh_db_url, str(tmp_path), str(seconds)],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]

    lines = (tmp_path / "calls.log").read_text().splitlines()
    assert sum(1 for line in lines if line.startswith("ready")) == 2
    model_calls = Counter(line.split(" pid=")[0] for line in lines if line.startswith("model:"))
    tick_runs = {key.split(" run=")[1] for key in model_calls}
    # Every tick's run id is derived from the schedule and the tick, and each of its
    # model calls happened once, in one process, though both processes ran the schedule.
    assert len(tick_runs) >= 3, lines
    assert all(run.startswith("every-second-") for run in tick_runs)
    doubled = {key: n for key, n in model_calls.items() if n > 1}
    assert doubled == {}
    pids = {line.split(" pid=")[1] for line in lines if line.startswith("model:")}
    assert len(pids) >= 1
