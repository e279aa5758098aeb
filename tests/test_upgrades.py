"""Real processes: a session's runs in two processes wait for each other in order of arrival, and a
run parked on an approval is resumed by a process whose agent changed meanwhile."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from processes import process_env

pytestmark = pytest.mark.processes

WORKER = Path(__file__).with_name("session_worker.py")


def _spawn(db_url: str, log_dir: Path, *args: str, executor: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), args[0], db_url, str(log_dir), *args[1:]],
        env=process_env(TIMESTEP_EXECUTOR_ID=executor, TIMESTEP_HOME=str(log_dir / executor), **env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait(condition, what: str, procs: list[subprocess.Popen], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for proc in procs:
            if proc.poll() is not None and proc.returncode != 0:
                raise AssertionError(f"a worker exited ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def _lines(log_dir: Path) -> list[str]:
    path = log_dir / "log"
    return [line.rsplit(" pid=", 1)[0] for line in path.read_text().splitlines()] if path.exists() else []


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _turns(db_url: str, session: str) -> int:
    url = db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM timestep_session_turns WHERE session_id = :s"), {"s": session}).scalar()
    except sa.exc.SQLAlchemyError:
        return 0
    finally:
        engine.dispose()


def test_enqueue_across_two_processes_runs_in_order_of_arrival(fresh_db_url: str, tmp_path: Path) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    (tmp_path / "block-first").touch()
    first = _spawn(fresh_db_url, tmp_path, "chat", "first", session, executor="p1")
    _wait(lambda: "tool:first:start" in _lines(tmp_path), "the first run in its tool", [first])
    second = _spawn(fresh_db_url, tmp_path, "chat", "second", session, executor="p2")
    _wait(lambda: _turns(fresh_db_url, session) == 2, "the second run waiting for its turn", [first, second])
    time.sleep(0.5)
    assert not any(line.startswith("model:second") for line in _lines(tmp_path))
    (tmp_path / "block-first").unlink()
    assert _finish(first) == {"output": "done: worked on first"}
    assert _finish(second) == {"output": "done: worked on second"}

    lines = _lines(tmp_path)
    assert lines.index("tool:first:end") < lines.index("model:second:saw=5")  # it saw the whole first turn
    assert _turns(fresh_db_url, session) == 0


@pytest.mark.parametrize("policy", ["continue", "fail"])
def test_a_parked_run_resumed_by_a_process_with_a_changed_agent(fresh_db_url: str, tmp_path: Path, policy: str) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    parked = _finish(_spawn(fresh_db_url, tmp_path, "park", "v1", session, executor="p1"))
    assert parked["status"] == "interrupted"

    # A new process, with new code: instructions changed, send_email removed. Then the approval.
    outcome = _finish(_spawn(fresh_db_url, tmp_path, "approve", "v2", session, executor="p2", TIMESTEP_ON_AGENT_CHANGE=policy))
    kinds = [e["type"] for e in outcome["events"]]
    assert "send_email:ada@example.com" not in _lines(tmp_path)
    if policy == "continue":
        changed = next(e for e in outcome["events"] if e["type"] == "agent_changed")
        assert changed["agent"] == "mailer"
        assert "instructions changed" in changed["changes"] and "tool 'send_email' removed" in changed["changes"]
        assert kinds[:2] == ["started", "agent_changed"] and kinds[-1] == "completed"
        output = next(e for e in outcome["events"] if e["type"] == "tool_output")["output"]
        assert "'send_email' no longer exists" in output
        assert outcome["status"] == "completed"
    else:
        assert outcome["error"] == "AgentChangedError"
        assert "tool 'send_email' removed" in outcome["message"] and "instructions changed" in outcome["message"]
        assert kinds[-1] == "failed" and "agent_changed" not in kinds


@pytest.mark.parametrize("policy", ["continue", "fail"])
async def test_a_bus_run_parked_across_a_deploy_of_changed_code(tmp_path: Path, policy: str) -> None:
    """As a deploy does it: a run submitted over the bus waits for approval inside its workflow;
    `timestep up` is stopped with SIGTERM and started again with changed agent code; the
    approval then arrives over the bus. `continue`: the run finishes on the new code, after an
    `agent_changed` event naming the change. `fail`: it fails with AgentChangedError."""
    from processes import stop, up, wait_printed_async
    from timestep.bus.server import free_port
    from timestep.client import Client

    port = free_port()
    base = dict(TIMESTEP_HOME=str(tmp_path / "home"), TIMESTEP_NATS_PORT=str(port), TIMESTEP_ON_AGENT_CHANGE=policy)
    first_out = tmp_path / "v1.log"
    first = up(first_out, process_env(UPGRADE_VARIANT="v1", **base), "--agents", "upgrade_agents")
    try:
        await wait_printed_async([(first, first_out)])
        client = await Client.connect(f"nats://127.0.0.1:{port}")
        try:
            run = await client.submit("upgrading-mailer", "send_email to=ada@example.com")
            call_id = None
            async for event in run.events():
                if event.type == "interrupted":
                    call_id = event.approvals[0].call_id
                    break
        finally:
            await client.close()
    finally:
        stop([first])
    assert first.returncode == 0, first_out.read_text()[-3000:]

    second_out = tmp_path / "v2.log"
    second = up(second_out, process_env(UPGRADE_VARIANT="v2", **base), "--agents", "upgrade_agents")
    try:
        await wait_printed_async([(second, second_out)])
        client = await Client.connect(f"nats://127.0.0.1:{port}")
        try:
            await client.approve(run.run_id, call_id)
            events = []
            async for event in client.events(run.run_id):
                events.append(event)
                if event.type in ("completed", "failed", "cancelled"):
                    break
        finally:
            await client.close()
    finally:
        stop([second])
    kinds = [e.type for e in events]
    assert kinds.count("interrupted") == 1 and kinds.count("started") == 1, kinds
    if policy == "continue":
        changed = next(e for e in events if e.type == "agent_changed")
        assert "instructions changed" in changed.changes, changed.changes
        assert kinds.index("agent_changed") < kinds.index("tool_output") and kinds[-1] == "completed", kinds
        assert "(v2)" in next(e for e in events if e.type == "tool_output").output  # the new code ran the call
    else:
        assert kinds[-1] == "failed" and "agent_changed" not in kinds, kinds
        assert events[-1].error.type == "AgentChangedError" and "instructions changed" in events[-1].error.message
        assert not any(e.type == "tool_output" for e in events)
    assert second.returncode == 0, second_out.read_text()[-3000:]
