"""Agents SDK features, written as the SDK's docs write them, survive a SIGKILL mid-run: a second
process recovers the run, every call that had finished (model, tool, guardrail, handoff callback,
MCP call, a sub-agent's calls) ran exactly once, and the run's result (or the SDK's error) is right.

The agents live in tests/sdk_worker.py; each call appends a line to calls.log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.processes

WORKER = Path(__file__).with_name("sdk_worker.py")


def _spawn(mode: str, scenario: str, db_url: str, log_dir: Path, **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "TIMESTEP_EXECUTOR_ID": "local", "TIMESTEP_HOME": str(log_dir), **env_vars}
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, scenario, db_url, str(log_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,  # its own process group
    )


def _wait_for_line(path: Path, needle: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {path}")


def _finish(mode: str, scenario: str, db_url: str, log_dir: Path, **env_vars: str) -> dict[str, Any]:
    proc = _spawn(mode, scenario, db_url, log_dir, **env_vars)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _killed_at(needle: str, scenario: str, db_url: str, log_dir: Path) -> Counter:
    """Run `scenario` until `needle` is logged, SIGKILL it there; return what had run."""
    (log_dir / "block").touch()
    first = _spawn("run", scenario, db_url, log_dir)
    try:
        _wait_for_line(log_dir / "calls.log", needle, first)
    finally:
        # The worker and what it started die together, as in a crash of the machine: an MCP server left
        # running would finish its call once `block` is gone, and log it. The MCP SDK's stdio client starts
        # its server in a session of its own, out of the worker's group, so it is killed by its pid.
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(60)
        _kill_mcp_servers(log_dir)
    assert first.returncode == -signal.SIGKILL
    (log_dir / "block").unlink()
    return _calls(log_dir)


def _kill_mcp_servers(log_dir: Path) -> None:
    pids = log_dir / "mcp_servers.pid"
    for pid in map(int, pids.read_text().split() if pids.exists() else []):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 30  # dead once gone or a zombie (the orphan's reaper may be slow)
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
    pids.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _calls(log_dir: Path) -> Counter:
    return Counter(line.split(" pid=")[0] for line in (log_dir / "calls.log").read_text().splitlines())


def _pids(log_dir: Path) -> set[str]:
    return {line.split(" pid=")[1] for line in (log_dir / "calls.log").read_text().splitlines()}


def test_guardrails_that_finished_do_not_run_again_after_a_sigkill(fresh_db_url: str, tmp_path: Path) -> None:
    """An LLM input guardrail (its own Runner.run on a checker agent) and the first model call finish,
    the tool is cut off: after recovery only the tool runs again, then the model and the output
    guardrail run once each."""
    before = _killed_at("tool:slow:start", "guardrails", fresh_db_url, tmp_path)
    assert before == Counter({
        "guardrail:homework": 1, "model:guardrail-check:0": 1, "model:guarded:0": 1, "tool:slow:start": 1,
    })
    assert _finish("recover", "guardrails", fresh_db_url, tmp_path) == {"output": "tell me: slow(1)"}
    assert _calls(tmp_path) == Counter({
        "guardrail:homework": 1, "model:guardrail-check:0": 1, "model:guarded:0": 1,
        "tool:slow:start": 2, "tool:slow:end": 1, "model:guarded:1": 1, "guardrail:no_secrets": 1,
    })
    assert len(_pids(tmp_path)) == 2


def test_a_guardrail_tripped_after_recovery_is_the_sdks_error_in_every_process(fresh_db_url: str, tmp_path: Path) -> None:
    _killed_at("tool:slow:start", "guardrail-trip", fresh_db_url, tmp_path)
    tripped = {
        "error": "OutputGuardrailTripwireTriggered", "message": "Guardrail OutputGuardrail triggered tripwire",
        "detail": {"guardrail": "no_secrets", "output_info": {"length": len("the secret: slow(1)")}},
    }
    assert _finish("recover", "guardrail-trip", fresh_db_url, tmp_path) == tripped
    assert _finish("read", "guardrail-trip", fresh_db_url, tmp_path) == tripped  # read back from the database
    assert _calls(tmp_path)["guardrail:no_secrets"] == 1
    assert _calls(tmp_path)["guardrail:homework"] == 1


def test_an_on_handoff_callback_that_finished_does_not_run_again_after_a_sigkill(fresh_db_url: str, tmp_path: Path) -> None:
    before = _killed_at("tool:slow:start", "handoff", fresh_db_url, tmp_path)
    assert before == Counter({"model:triage:0": 1, "on_handoff:refund": 1, "model:refunds:1": 1, "tool:slow:start": 1})
    assert _finish("recover", "handoff", fresh_db_url, tmp_path) == {"output": "refund please: slow(1)"}
    assert _calls(tmp_path) == Counter({
        "model:triage:0": 1, "on_handoff:refund": 1, "model:refunds:1": 1,  # the handoff's output is one
        "tool:slow:start": 2, "tool:slow:end": 1, "model:refunds:2": 1,
    })


def test_mcp_calls_that_finished_do_not_run_again_and_the_run_keeps_the_tools_it_listed(fresh_db_url: str, tmp_path: Path) -> None:
    """MCPServerStdio: add(2, 3) finishes, slow_add(5, 7) is cut off. The recovering process's server
    offers one more tool; the run goes on with the tools it listed before the crash."""
    before = _killed_at("mcp:slow_add:5+7:start", "mcp", fresh_db_url, tmp_path)
    assert before == Counter({
        "tools:add,slow_add": 2, "model:calculator:0": 1, "mcp:add:2+3": 1, "model:calculator:1": 1, "mcp:slow_add:5+7:start": 1,
    })
    assert _finish("recover", "mcp", fresh_db_url, tmp_path, MCP_EXTRA_TOOL="1") == {"output": "2 + 3 + 7 = 12"}
    assert _calls(tmp_path) == Counter({
        "tools:add,slow_add": 3, "model:calculator:0": 1, "mcp:add:2+3": 1, "model:calculator:1": 1,
        "mcp:slow_add:5+7:start": 2, "mcp:slow_add:5+7:end": 1, "model:calculator:2": 1,
    })


def test_a_sub_agents_finished_calls_do_not_run_again_after_a_sigkill(fresh_db_url: str, tmp_path: Path) -> None:
    """agent.as_tool(...): the orchestrator's model call and the sub-agent's model call finish, the
    sub-agent's tool is cut off: after recovery only that tool runs again."""
    before = _killed_at("tool:slow:start", "as_tool", fresh_db_url, tmp_path)
    assert before == Counter({"model:orchestrator:0": 1, "model:spanish:0": 1, "tool:slow:start": 1})
    assert _finish("recover", "as_tool", fresh_db_url, tmp_path) == {"output": "translated: hola (slow(1))"}
    assert _calls(tmp_path) == Counter({
        "model:orchestrator:0": 1, "model:spanish:0": 1, "tool:slow:start": 2, "tool:slow:end": 1,
        "model:spanish:1": 1, "model:orchestrator:1": 1,
    })


def test_a_run_recovered_after_a_sigkill_goes_on_with_the_context_its_finished_tools_left(fresh_db_url: str, tmp_path: Path) -> None:
    """Two tools put items in the run's context (the SDK's `context=`), the third is cut off: the
    recovered run does not run the first two again, yet the third sees their items, because each
    step recorded the context as it left it."""
    before = _killed_at("tool:checkout:start", "context", fresh_db_url, tmp_path)
    assert before == Counter({
        "model:shopper:0": 1, "tool:add_item:apple": 1, "model:shopper:1": 1, "tool:add_item:pear": 1, "model:shopper:2": 1,
        "tool:checkout:start": 1,
    })
    done = {"output": "ada bought apple, pear", "context": {"user": "ada", "items": ["apple", "pear"]}}
    assert _finish("recover", "context", fresh_db_url, tmp_path) == done
    assert _finish("read", "context", fresh_db_url, tmp_path) == done
    assert _calls(tmp_path) == before + Counter({"tool:checkout:start": 1, "tool:checkout:end": 1, "model:shopper:3": 1})
    assert len(_pids(tmp_path)) == 2


def test_a_runs_own_run_config_holds_after_a_sigkill_and_its_guardrail_does_not_run_again(fresh_db_url: str, tmp_path: Path) -> None:
    """run_config=RunConfig(model_settings=..., input_guardrails=[...]) given to the run, not
    registered: the recovering process uses the stored one (the model answers at the temperature it
    set), and the run-level guardrail that finished before the kill did not run again."""
    before = _killed_at("tool:slow:start", "run_config", fresh_db_url, tmp_path)
    assert before == Counter({"guardrail:run_level_check": 1, "model:configured:0": 1, "tool:slow:start": 1})
    assert _finish("recover", "run_config", fresh_db_url, tmp_path) == {"output": "slow(2) at 0.3"}
    assert _calls(tmp_path) == before + Counter({"tool:slow:start": 1, "tool:slow:end": 1, "model:configured:1": 1})
    assert len(_pids(tmp_path)) == 2


@pytest.mark.parametrize("scenario", ["sqlite-session", "own-session"])
def test_the_callers_own_session_keeps_the_whole_turn_after_a_sigkill(scenario: str, fresh_db_url: str, tmp_path: Path) -> None:
    """run_agent_workflow(agent, input, SQLiteSession("conv-1", "conversations.db")), or a session
    class of the caller's own registered with register_session_factory: the run is killed in its
    tool, and the process that recovers it (which never saw the object) writes the rest of the turn
    to the same session: the session holds the input, the call, its output and the answer once
    each, and Timestep's database session of that id holds nothing."""
    before = _killed_at("tool:slow:start", scenario, fresh_db_url, tmp_path)
    assert before["model:remembering:0"] == 1 and before["tool:slow:start"] == 1
    done = _finish("recover", scenario, fresh_db_url, tmp_path)
    assert done == {
        "output": "remember: slow(1)", "session": ["message", "function_call", "function_call_output", "message"], "database_session": 0,
    }
    after = _calls(tmp_path)
    calls = Counter({k: v for k, v in (after - before).items() if not k.startswith("session:")})
    assert calls == Counter({"tool:slow:start": 1, "tool:slow:end": 1, "model:remembering:1": 1})
    if scenario == "own-session":  # each write of the turn made once, across both processes
        writes = [k for k in after.elements() if k.startswith("session:add")]
        assert sorted(writes) == sorted(set(writes)), writes
    assert len(_pids(tmp_path)) == 2


def test_tool_guardrails_that_finished_do_not_run_again_after_a_sigkill(fresh_db_url: str, tmp_path: Path) -> None:
    """@function_tool(tool_input_guardrails=[...], tool_output_guardrails=[...]), two calls at once:
    the input guardrail lets one through (its output guardrail checks the output) and rejects the
    other (the model is told why; that tool never runs); then `slow` is cut off. After recovery only
    `slow` runs again: no guardrail and no classify_text call runs twice."""
    before = _killed_at("tool:slow:start", "tool_guardrails", fresh_db_url, tmp_path)
    assert before == Counter({
        "model:classifier:0": 1, "guardrail:block_secrets:hello": 1, "tool:classify_text:hello": 1,
        "guardrail:redact_output:length:5": 1, "guardrail:block_secrets:sk-123": 1, "model:classifier:2": 1, "tool:slow:start": 1,
    })
    done = _finish("recover", "tool_guardrails", fresh_db_url, tmp_path)
    assert done == {"output": "length:5 | Remove secrets before calling this tool. | slow(3)"}
    assert _calls(tmp_path) == before + Counter({"tool:slow:start": 1, "tool:slow:end": 1, "model:classifier:3": 1})
    assert len(_pids(tmp_path)) == 2


def test_a_fork_runs_nothing_before_its_step_again_also_across_a_sigkill(fresh_db_url: str, tmp_path: Path) -> None:
    """A run (model, note, model, slow, model) ends; the agent's instructions change; a fork from the
    second model call makes that call with the new instructions and is SIGKILLed in `slow`; the
    process that recovers the fork finishes it. The note tool and the first model call never ran
    again, and the fork's answer is in the new instructions' words."""
    done = _finish("run", "fork", fresh_db_url, tmp_path)
    assert done == {"output": "Be brief. noted 1 | slow(2)"}
    original = _calls(tmp_path)
    assert original == Counter({"model:planner:0": 1, "tool:note:1": 1, "model:planner:1": 1, "tool:slow:start": 1, "tool:slow:end": 1,
                                "model:planner:2": 1})
    listed = _finish("steps", "fork", fresh_db_url, tmp_path)
    assert [name for _, name in listed] == ["model", "tool:note", "model", "tool:slow", "model"]
    second_model = listed[2][0]

    changed = {"FORKED_INSTRUCTIONS": "Be loud!", "FORK_FROM": str(second_model)}
    (tmp_path / "block").touch()
    fork = _spawn("fork", "fork", fresh_db_url, tmp_path, **changed)
    try:
        deadline = time.monotonic() + 60
        while _calls(tmp_path)["tool:slow:start"] < 2:
            assert fork.poll() is None and time.monotonic() < deadline, fork.stderr.read()[-3000:] if fork.poll() is not None else "no fork"
            time.sleep(0.05)
    finally:
        fork.send_signal(signal.SIGKILL)
        fork.wait(60)
    (tmp_path / "block").unlink()
    assert _finish("recover", "fork", fresh_db_url, tmp_path, RESULT_OF="sdk-fork-fork", **changed) == {"output": "Be loud! noted 1 | slow(2)"}
    assert _calls(tmp_path) - original == Counter({"model:planner:1": 1, "tool:slow:start": 2, "tool:slow:end": 1, "model:planner:2": 1})
