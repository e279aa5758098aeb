"""configure_dbos() and ensure_dbos_launched(): idempotent, any order, with or without a running loop."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Each test launches Timestep in a fresh interpreter of its own.
pytestmark = pytest.mark.processes


def _run(code: str, home: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PG_CONNECTION_URI", "OPENAI_API_KEY", "TIMESTEP_SQLITE_WAL")}
    env.update(TIMESTEP_HOME=str(home), **extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120)


def test_launch_first_inside_a_loop_then_configure_is_a_no_op(tmp_path: Path) -> None:
    done = _run(
        """
        import asyncio
        from agents import Agent
        import timestep

        async def main():
            timestep.ensure_dbos_launched()          # plain call, inside a running loop
            await timestep.ensure_dbos_launched()    # awaited, again
            timestep.configure_dbos()                # same defaults: nothing to do
            result = await timestep.run_agent_workflow(Agent(name="a"), "hi", workflow_id="launch-1")
            print(result.output)
            try:
                timestep.configure_dbos(system_database_url="sqlite:////tmp/elsewhere.sqlite")
            except timestep.ConfigurationError as exc:
                print("refused:", str(exc).split(";")[1].strip())

        asyncio.run(main())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "You said: hi",
        "refused: call configure_dbos() with other settings only before ensure_dbos_launched()",
    ]
    assert (tmp_path / "timestep.sqlite").exists()


def test_configure_and_launch_before_any_loop_like_the_seed(tmp_path: Path) -> None:
    done = _run(
        f"""
        import asyncio
        from agents import Agent
        from timestep import configure_dbos, ensure_dbos_launched, run_agent_workflow

        configure_dbos(system_database_url="sqlite:///{tmp_path}/seed.sqlite")
        configure_dbos(system_database_url="sqlite:///{tmp_path}/seed.sqlite")
        ensure_dbos_launched()
        ensure_dbos_launched()
        print(asyncio.run(run_agent_workflow(Agent(name="a"), "hello")).output)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "You said: hello"
    assert (tmp_path / "seed.sqlite").exists()


def test_sqlite_runs_in_write_ahead_log_mode_unless_turned_off(tmp_path: Path) -> None:
    """WAL lets queue pollers read while a run writes; TIMESTEP_SQLITE_WAL=0 keeps the rollback
    journal for a file system without shared memory. Runs work either way."""
    import sqlite3

    code = """
        import asyncio
        from agents import Agent
        import timestep

        timestep.ensure_dbos_launched()
        print(asyncio.run(timestep.run_agent_workflow(Agent(name="a"), "hi")).output)
        """
    for setting, mode in [(None, "wal"), ("0", "delete")]:
        home = tmp_path / (setting or "default")
        done = _run(code, home, **({"TIMESTEP_SQLITE_WAL": setting} if setting else {}))
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == "You said: hi"
        connection = sqlite3.connect(home / "timestep.sqlite")
        try:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == mode
        finally:
            connection.close()


def test_the_loop_keeps_a_working_executor_after_shutdown(tmp_path: Path) -> None:
    """DBOS fronts the loop's default executor with its own pool and shuts that pool down on
    destroy; after Timestep's shutdown, `asyncio.to_thread` in the same loop still works."""
    done = _run(
        """
        import asyncio
        from agents import Agent
        import timestep
        from timestep.durable import engine

        async def main():
            await timestep.ensure_dbos_launched()
            print((await timestep.run_agent_workflow(Agent(name="a"), "hi")).output)
            engine.shutdown()
            print(await asyncio.to_thread(lambda: "to_thread works"))

        asyncio.run(main())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["You said: hi", "to_thread works"]


def test_a_launch_on_another_database_reads_that_database_not_the_last_ones(tmp_path: Path) -> None:
    """What a process learned of one database (a queue it registered, an agent definition it stored,
    a queue's statements) is that database's: after a shutdown, a launch on another database in the
    same process registers the queue and stores the definition there too. Before, the second launch
    took both for done: its queued run waited on a queue that database had no row for, and its runs'
    agent definitions were missing from it."""
    done = _run(
        f"""
        import asyncio, sqlite3
        from agents import Agent
        import timestep
        from timestep.durable import engine

        agent = Agent(name="relaunched")

        async def runs(url):
            timestep.configure_dbos(system_database_url=url)
            await timestep.ensure_dbos_launched()
            direct = await timestep.run_agent_workflow(agent, "direct")
            handle = await timestep.queue_agent_workflow(agent, "queued", queue_name="relaunch-q")
            queued = await asyncio.wait_for(handle.get_result(), 60)
            print(direct.output, "|", queued.output)

        async def main():
            await runs("sqlite:///{tmp_path}/first.sqlite")
            engine.shutdown()
            await runs("sqlite:///{tmp_path}/second.sqlite")
            for name in ("first", "second"):
                db = sqlite3.connect(f"{tmp_path}/" + name + ".sqlite")
                definitions = db.execute("select count(*) from timestep_agent_definitions").fetchone()[0]
                policies = db.execute("select count(*) from timestep_queue_policies where name = 'relaunch-q'").fetchone()[0]
                print(name, definitions, policies)
            engine.shutdown()

        asyncio.run(main())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "You said: direct | You said: queued", "You said: direct | You said: queued", "first 1 1", "second 1 1",
    ]
