"""The `timestep` command as people use it: subprocesses against a real `timestep up` (embedded
NATS, SQLite in its TIMESTEP_HOME, found through the nats.url it writes), judged by exit codes
and output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from processes import process_env, stop, up, wait_printed
from timestep.bus.server import free_port

AGENT = "bus-assistant"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Up:
    home: Path
    out: Path

    def env(self) -> dict[str, str]:
        return process_env(TIMESTEP_HOME=str(self.home))


def cli(env: dict[str, str], *args: str, code: int | None = 0, timeout: float = 60) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "actors.cli.main", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if code is not None:
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, (args, done.stderr)
    return done


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    home = tmp_path_factory.mktemp("cli-home")
    out = home / "up.out"
    env = process_env(TIMESTEP_HOME=str(home), TIMESTEP_LOG_LEVEL="INFO", TIMESTEP_QUEUE_POLL_SECONDS="0.05")
    proc = up(out, env, "--agents", "bus_agents")
    try:
        wait_printed([(proc, out)])
        yield Up(home, out)
    finally:
        stop([proc])


@pytest.mark.processes
def test_approve_reject_and_cancel_say_what_happened(running: Up) -> None:
    env = running.env()
    run_id = uid("mail")
    assert "waiting for approval" in cli(env, "run", AGENT, "send_email to=ada", "--id", run_id, code=3).stdout

    refused = cli(env, "approve", run_id, "call_9", code=1)
    assert refused.stdout == ""
    assert refused.stderr.strip() == f"error: call_id: run '{run_id}' is not waiting for approval of 'call_9'; it waits on 'call_1'"
    assert cli(env, "reject", run_id, "call_1", "--message", "not today").stdout.strip() == (
        f"rejected call_1 of run {run_id}; the model is told why"
    )
    events = cli(env, "events", run_id).stdout.splitlines()
    assert [line.split()[1] for line in events] == ["accepted", "started", "interrupted", "tool_rejected", "completed"]
    assert "message='not today'" in events[3]

    finished = cli(env, "cancel", run_id, code=1)
    assert finished.stderr.strip() == f"error: run '{run_id}' already finished (completed); there is nothing to cancel"
    ghost = uid("ghost")
    assert cli(env, "cancel", ghost, code=1).stderr.startswith(f"error: run_id: no run '{ghost}'")
    malformed = cli(env, "approve", "a.b", "call_1", code=2)
    assert malformed.stderr.strip().startswith("error: run_id: 'a.b' contains '.'; use only letters, digits")

    # The fire-and-forget way still stores it; its refusal is a dead letter, listed with its reason.
    assert "stored" in cli(env, "approve", ghost, "call_1", "--no-wait").stdout
    for _ in range(100):
        dead = cli(env, "dead").stdout
        if f"timestep.runs.control.{ghost}.approve" in dead:
            break
        time.sleep(0.1)
    [line] = [line for line in dead.splitlines() if f"runs.control.{ghost}.approve" in line]
    assert "UnknownRun" in line and f"no run '{ghost}'" in line
    assert any(f"runs.command.{ghost}.cancel" in line for line in dead.splitlines())


@pytest.mark.processes
def test_run_takes_a_context_its_tools_see_and_json_shows_it_as_the_run_left_it(running: Up) -> None:
    done = cli(running.env(), "run", "bus-context", "remember fact=tea", "--context", '{"user": "ada"}', "--json")
    completed = json.loads(done.stdout.splitlines()[-1])
    assert completed["type"] == "completed"
    assert completed["output"] == "remember returned: ada remembers tea"
    assert completed["context"] == {"user": "ada", "facts": ["tea"]}


def test_steps_lists_what_each_call_recorded_and_shows_one_whole(running: Up) -> None:
    """`timestep steps RUN_ID`: one line per step (number, kind, name, status, duration, what it
    recorded); `--step N` that step's whole value as JSON; exit 1 for a run or step there is not."""
    env = running.env()
    run_id = uid("steps")
    cli(env, "run", AGENT, "get_weather city=Lima", "--id", run_id)
    lines = cli(env, "steps", run_id).stdout.splitlines()
    assert lines[0].split() == ["#", "KIND", "NAME", "STATUS", "TOOK", "RECORDED"]
    [tool] = [line for line in lines if "tool:get_weather" in line]
    assert tool.split()[1:4] == ["tool", "tool:get_weather", "completed"] and "sunny in Lima" in tool
    number = tool.split()[0]
    whole = json.loads(cli(env, "steps", run_id, "--step", number).stdout)
    assert (whole["kind"], whole["value"]["output"]) == ("tool", "sunny in Lima")
    assert [s["kind"] for s in json.loads(cli(env, "steps", run_id, "--json").stdout)].count("model") == 2
    assert cli(env, "steps", uid("nothing"), code=1).stderr.startswith("error: ")
    assert "step" in cli(env, "steps", run_id, "--step", "999", code=1).stderr


def test_fork_runs_a_finished_run_again_from_a_step_in_the_deployment(running: Up) -> None:
    """`timestep fork RUN_ID --from-step N`: the deployment's agent process runs the fork from the
    last model call; the tool call before it is not made again (the fork publishes no tool event,
    and its tool step holds the recorded value), and the fork completes with the same answer;
    refusals exit 2 naming the flag or argument."""
    env = running.env()
    run_id = uid("forked")
    cli(env, "run", AGENT, "get_weather city=Quito", "--id", run_id)
    steps = json.loads(cli(env, "steps", run_id, "--json").stdout)
    last_model = [s["number"] for s in steps if s["kind"] == "model"][-1]
    fork_id = uid("fork")
    done = cli(env, "fork", run_id, "--from-step", str(last_model), "--id", fork_id, "--json")
    assert f"run {fork_id}: a fork of run {run_id} from its step {last_model}" in done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert {k: events[0][k] for k in ("type", "seq", "from_run", "from_step", "agent")} == {
        "type": "forked", "seq": 0, "from_run": run_id, "from_step": last_model, "agent": AGENT,
    }
    assert events[-1]["type"] == "completed" and events[-1]["output"] == "get_weather returned: sunny in Quito"
    assert not any(e["type"] in ("tool_call", "tool_output") for e in events)  # the tool call came from the record
    forked = json.loads(cli(env, "steps", fork_id, "--json").stdout)
    assert [s["name"] for s in forked] == [s["name"] for s in steps]
    assert [s["value"] for s in forked if s["kind"] == "tool"] == [s["value"] for s in steps if s["kind"] == "tool"]
    assert cli(env, "fork", run_id, "--from-step", "99", code=2).stderr.startswith("error: --from-step: ")
    assert cli(env, "fork", uid("nothing"), "--from-step", "1", code=2).stderr.startswith("error: run_id: no run")


CHANGED_AGENTS = """
from agents import Agent, function_tool
from timestep import register_agent
from bus_agents import record, send_email, think

@function_tool
def get_weather(city: str, units: str) -> str:
    record(f"get_weather:{city}")
    return f"sunny in {city}, in {units}"

register_agent(Agent(name="bus-assistant", tools=[get_weather, think, send_email]))
"""


def test_replay_checks_recorded_runs_against_the_agent_as_its_modules_register_it_now(running: Up, tmp_path: Path) -> None:
    """`timestep replay`: against the agent unchanged, every run is the same (exit 0); against a
    module whose tool now takes another argument, exactly the run that calls it changed (exit 1,
    or 0 with `--allow`), and no tool ran in the replays (the test log counts every call)."""
    log = tmp_path / "calls.log"
    env = {**running.env(), "TIMESTEP_TEST_LOG": str(log)}
    weather, hello = uid("weather"), uid("hello")
    cli(env, "run", AGENT, "get_weather city=Quito units=celsius", "--id", weather)
    cli(env, "run", AGENT, "hello there", "--id", hello)

    same = cli(env, "replay", "--agent", AGENT, "--agents", "bus_agents", "--ids", weather, hello, "--json")
    report = json.loads(same.stdout)
    assert [(r["run_id"], r["status"]) for r in report["runs"]] == [(weather, "same"), (hello, "same")] and report["changed"] == []

    (tmp_path / "changed_agents.py").write_text(CHANGED_AGENTS)
    changed_env = {**env, "PYTHONPATH": os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])}
    changed = cli(changed_env, "replay", "--agent", AGENT, "--agents", "changed_agents", "--ids", weather, hello, code=1)
    lines = changed.stdout.splitlines()
    assert lines[0].split() == ["RUN", "ID", "RESULT", "OUTPUT", "TOOL", "CALLS", "TOKENS"]
    assert lines[1].split()[:3] == [weather, "changed", "changed"] and lines[1].split()[3:6] == ["+0", "-0", "~1"], lines
    assert '~ get_weather: recorded {"city": "Quito"}, now {"city": "Quito", "units": "celsius"}' in changed.stdout
    assert any(line.split()[:3] == [hello, "same", "same"] for line in lines), lines
    assert lines[-1] == "2 runs replayed against agent 'bus-assistant': 1 same, 1 changed, 0 failed, 0 skipped"
    assert f"1 changed beyond --allow (nothing): {weather}" in changed.stderr
    cli(changed_env, "replay", "--agent", AGENT, "--agents", "changed_agents", "--ids", weather, "--allow", "output", "tools")
    assert not log.exists()  # no replay ran a tool (the replaying process logs every call; the deployment has no log)

    assert "--live-tools: agent 'bus-assistant' has no tool 'nope'" in cli(
        env, "replay", "--agent", AGENT, "--agents", "bus_agents", "--live-tools", "nope", code=2).stderr
    assert "--since: 'yesterday' is not a date" in cli(env, "replay", "--agent", AGENT, "--agents", "bus_agents", "--since", "yesterday", code=2).stderr


def test_run_prints_its_id_says_when_it_was_reused_and_fails_when_cancelled(running: Up) -> None:
    env = running.env()
    run_id = uid("hello")
    first = cli(env, "run", AGENT, "hello", "--id", run_id)
    assert first.stderr.splitlines()[0] == f"run {run_id}"
    again = cli(env, "run", AGENT, "something else", "--id", run_id)
    assert again.stderr.splitlines()[0] == f"run {run_id}: this id was used before; showing that run (the text and options given now were not used)"
    assert again.stdout == first.stdout

    slow = cli(env, "run", AGENT, "think seconds=30", "--timeout", "0.5", code=1)
    assert slow.stdout.splitlines()[-1].split()[1] == "cancelled"
    run_line, cancelled_line = slow.stderr.splitlines()
    assert cancelled_line == f"{run_line} was cancelled (by request or by its timeout)"

    # A cancel by request: one line in the log of `timestep up`, not DBOS's traceback.
    slow_id = uid("slow")
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli.main", "run", AGENT, "think seconds=30", "--id", slow_id],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _reaches_tool_call(env, slow_id)
    assert cli(env, "cancel", slow_id).stdout.strip() == f"cancelled run {slow_id}"
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, (out, err)
    assert out.splitlines()[-1].split()[1] == "cancelled"
    outcome = f"workflow {slow_id} was cancelled (by request or by its timeout)"
    for _ in range(100):  # DBOS logs the outcome once the workflow has wound down
        log = running.out.read_text()
        if outcome in log:
            break
        time.sleep(0.1)
    assert "Traceback" not in log and "DBOSAwaitedWorkflowCancelledError" not in log, log
    dbos_lines = [line for line in log.splitlines() if slow_id in line and "(dbos:" in line]
    assert sum(outcome in line for line in dbos_lines) == 1, dbos_lines
    assert all("[    INFO]" in line for line in dbos_lines), dbos_lines  # a cancel is no warning, no error


def _reaches_tool_call(env: dict[str, str], run_id: str) -> bool:
    """Follow the run's events (`timestep events`) until its tool call; False if it ends first."""
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli.main", "events", run_id], env=env, stdout=subprocess.PIPE, text=True)
    try:
        return any("tool_call" in line for line in proc.stdout)  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.processes
def test_refusals_name_the_flag_in_the_librarys_words(running: Up) -> None:
    env = running.env()
    limit = cli(env, "queues", "configure", uid("q"), "--limit", "0", "--period", "1", code=2).stderr.strip()
    assert limit == "error: --limit: 0 is not a whole number from 1 to 2147483647"
    period = cli(env, "queues", "configure", uid("q"), "--limit", "2", code=2).stderr.strip()
    assert period.startswith("error: --period: is missing; a rate limit needs both")
    bad_id = cli(env, "run", AGENT, "hi", "--id", "a.b", code=2).stderr.strip()
    assert bad_id.startswith("rejected: --id: 'a.b' contains '.'; use only letters, digits")
    priority = cli(env, "run", AGENT, "hi", "--queue", "default", "--priority", "0", code=2).stderr.strip()
    assert priority.startswith("rejected: --priority: 0 is not a whole number from 1 to 2147483646")
    for message in (limit, period, bad_id, priority):
        assert "Expected" not in message


@pytest.mark.processes
def test_workflows_commands_refuse_what_is_not_there(running: Up) -> None:
    env = running.env()
    ghost = uid("ghost")
    for action in ("resume", "cancel", "show"):
        refused = cli(env, "workflows", action, ghost, code=1)
        assert refused.stdout == "" and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert f"no workflow '{ghost}'" in refused.stderr
    bogus = cli(env, "workflows", "list", "--status", "BOGUS", code=2)
    assert bogus.stdout == "" and "invalid choice: 'BOGUS'" in bogus.stderr
    run_id = uid("done")
    cli(env, "run", AGENT, "hello", "--id", run_id)
    for _ in range(100):  # `completed` is published just before DBOS records the end
        if "completed" in cli(env, "workflows", "show", run_id).stdout:
            break
        time.sleep(0.1)
    finished = cli(env, "workflows", "cancel", run_id, code=1)
    assert finished.stderr.strip() == f"error: workflow '{run_id}' already finished (completed); there is nothing to cancel"
    # The statuses are the words of events and `runs.list`, not DBOS's.
    [row] = [line for line in cli(env, "workflows", "list", "--status", "completed").stdout.splitlines() if line.startswith(run_id)]
    assert row.split()[1] == "completed"
    assert "invalid choice: 'SUCCESS'" in cli(env, "workflows", "list", "--status", "SUCCESS", code=2).stderr


@pytest.mark.processes
@pytest.mark.parametrize("args", [["--help"], ["workflows", "list"], ["queues", "status"], ["dead"], ["events", "EXISTING"]])
def test_a_closed_pipe_ends_quietly(running: Up, args: list[str]) -> None:
    """`timestep ... | head`: the reader is gone before the command writes."""
    env = running.env()
    if "EXISTING" in args:
        run_id = uid("piped")
        cli(env, "run", AGENT, "hello", "--id", run_id)
        args = [a.replace("EXISTING", run_id) for a in args]
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli.main", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # type: ignore[union-attr]
    err = proc.stderr.read().decode()  # type: ignore[union-attr]
    proc.wait(60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode in (0, 141), (proc.returncode, err)


@pytest.mark.parametrize(
    "args", [["run", AGENT, "hi"], ["events", "some-run"], ["approve", "some-run", "call_1"], ["cancel", "some-run"],
             ["queues", "status"], ["schedules", "list"], ["dead"]],
)
def test_without_timestep_up_a_command_fails_at_once_in_one_line(tmp_path: Path, args: list[str]) -> None:
    """A `timestep up` that stopped without tidying up left its nats.url behind; nothing listens there."""
    url = f"nats://127.0.0.1:{free_port()}"
    (tmp_path / "nats.url").write_text(url + "\n")
    began = time.monotonic()
    done = cli(process_env(TIMESTEP_HOME=str(tmp_path)), *args, code=2)
    took = time.monotonic() - began
    print(f"{' '.join(args)}: failed in {took:.2f} s")
    assert done.stderr.splitlines() == [
        f"error: no `timestep up` answers at {url} (the address in {tmp_path / 'nats.url'}, from one that has stopped); "
        "start one with `timestep up --agents YOUR_MODULE`, or set NATS_URL"
    ]
    assert took < 5  # a generous bound: it used to take 10 s (NATS_CONNECT_TIMEOUT)


@pytest.mark.processes
def test_the_approvals_inbox_and_its_audit_trail(running: Up) -> None:
    import getpass
    import json

    env = running.env()
    run_id = uid("inbox")
    cli(env, "run", AGENT, "send_email to=ada", "--id", run_id, code=3)
    listed = cli(env, "approvals", "--run", run_id).stdout.splitlines()
    assert listed[0].split()[:2] == ["REQUESTED", "(UTC)"] and len(listed) == 2
    assert run_id in listed[1] and "send_email" in listed[1] and '{"to": "ada"}' in listed[1]
    [record] = json.loads(cli(env, "approvals", "--agent", AGENT, "--run", run_id, "--json").stdout)
    assert (record["call_id"], record["status"]) == ("call_1", "pending")
    assert json.loads(cli(env, "approvals", "--tool", "no_such_tool", "--json").stdout) == []
    assert cli(env, "approvals", "--limit", "0", code=2).stderr.startswith("error: --limit: ")
    assert "--older-than" in cli(env, "approvals", "--older-than", "soon", code=2).stderr

    bad = cli(env, "approve", run_id, "call_1", "--arguments", '{"to": 1}', code=1)
    assert bad.stderr.startswith("error: arguments.to: 1 is not of type 'string'")
    assert "with the arguments given" in cli(env, "approve", run_id, "call_1", "--arguments", '{"to": "bob"}').stdout
    events = cli(env, "events", run_id).stdout.splitlines()
    assert events[-1].split()[1] == "completed" and "sent to bob" in events[-1]

    assert json.loads(cli(env, "approvals", "--run", run_id, "--json").stdout) == []
    trail = cli(env, "approvals", "--decided", "--run", run_id).stdout.splitlines()
    assert len(trail) == 2 and "approved" in trail[1] and getpass.getuser() in trail[1] and 'arguments={"to": "bob"}' in trail[1]


TIMESTEP = Path(sys.executable).parent / "timestep"  # the installed command, as a user types it


@pytest.mark.processes
def test_up_imports_agents_from_the_working_directory(tmp_path: Path) -> None:
    """`timestep up --agents myapp.agents` in the folder that holds myapp/, with no PYTHONPATH,
    as with uvicorn or celery."""
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "agents.py").write_text(
        "from agents import Agent\nfrom timestep import register_agent\n\nregister_agent(Agent(name='my-own-agent'))\n"
    )
    env = process_env("PYTHONPATH", TIMESTEP_HOME=str(tmp_path / "home"), TIMESTEP_NATS_PORT=str(free_port()))
    env.pop("PYTHONPATH")
    out = tmp_path / "up.out"
    proc = subprocess.Popen([TIMESTEP, "up", "--agents", "myapp.agents"], cwd=tmp_path, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_printed([(proc, out)])
        assert "agents: my-own-agent" in out.read_text()
    finally:
        stop([proc])


@pytest.mark.processes
@pytest.mark.parametrize(
    ("module", "says"),
    [
        ("nosuch.agents", "no module named 'nosuch' in {cwd}"),
        ("myapp.nope", "no module named 'myapp.nope'"),
        ("myapp/agents.py", "'myapp/agents.py' is a file path; give a module name, e.g. myapp.agents"),
        ("myapp.needs", "importing 'myapp.needs' failed: No module named 'not_installed_here' (myapp/needs.py, line 2)"),
    ],
)
def test_up_names_an_agents_module_it_cannot_import_in_one_line(tmp_path: Path, module: str, says: str) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "needs.py").write_text("import json\nimport not_installed_here\n")
    env = process_env(TIMESTEP_HOME=str(tmp_path / "home"), TIMESTEP_NATS_PORT=str(free_port()))
    done = subprocess.run([TIMESTEP, "up", "--agents", module], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: --agents: ") and says.format(cwd=tmp_path) in line, line


_Q = uid("q")
BAD_INPUT = [
    # (arguments, the argument the one line must name)
    (["schedules", "create", uid("s"), "* * * * *", AGENT, "hi", "--queue", "bad.q"], "--queue"),
    (["schedules", "create", "bad.name", "* * * * *", AGENT, "hi"], "name"),
    (["schedules", "create", uid("s"), "nope", AGENT, "hi"], "cron"),
    (["schedules", "create", uid("s"), "* * * * * * *", AGENT, "hi"], "cron"),
    (["schedules", "create", uid("s"), "0 0 30 2 *", AGENT, "hi"], "cron"),
    (["schedules", "create", uid("s"), "* * * * *", "no-such-agent", "hi"], "agent"),
    (["schedules", "create", uid("s"), "* * * * *", AGENT], "TEXT"),
    (["schedules", "delete", "bad.name"], "name"),
    (["events", "bad.id"], "run_id"),
    (["run", AGENT, "hi", "--id", "bad.id"], "--id"),
    (["run", AGENT, "hi", "--context", "[1]"], "--context"),
    (["run", AGENT, "hi", "--id", "x" * 129], "--id"),
    (["run", AGENT, "hi", "--queue", "bad.q"], "--queue"),
    (["run", AGENT, "hi", "--queue", "default", "--priority", "0"], "--priority"),
    (["run", AGENT, "hi", "--priority", "high"], "--priority"),
    (["run", AGENT, "hi", "--timeout", "0"], "--timeout"),
    (["run", AGENT, "hi", "--timeout", "nan"], "--timeout"),
    (["run", AGENT, "hi", "--max-tokens", "0"], "--max-tokens"),
    (["run", "no-such-agent", "hi"], "agent"),
    (["approve", "bad.id", "call_1"], "run_id"),
    (["approve", uid("r"), "call_1", "--by", ""], "--by"),
    (["approve", uid("r"), "call_1", "--arguments", "to=bob"], "--arguments"),
    (["approve", uid("r"), "call_1", "--arguments", "[1]"], "--arguments"),
    (["reject", "bad.id", "call_1"], "run_id"),
    (["cancel", "bad.id"], "run_id"),
    (["approvals", "--limit", "0"], "--limit"),
    (["approvals", "--limit", "-1"], "--limit"),
    (["approvals", "--run", "bad.id"], "--run"),
    (["approvals", "--queue", "bad.q"], "--queue"),
    (["approvals", "--older-than", "soon"], "--older-than"),
    (["dead", "--limit", "0"], "--limit"),
    (["queues", "configure", "bad.q", "--concurrency", "1"], "name"),
    (["queues", "configure", _Q, "--concurrency", "0"], "--concurrency"),
    (["queues", "configure", _Q, "--limit", "1", "--period", "0"], "--period"),
    (["queues", "configure", _Q, "--limit", "1", "--period", "nan"], "--period"),
    (["queues", "configure", _Q, "--tokens", "0"], "--tokens"),
    (["queues", "configure", _Q, "--max-tokens-per-run", "-1"], "--max-tokens-per-run"),
    (["queues", "status", "bad.q"], "name"),
    (["queues", "delete", "bad.q"], "name"),
    (["queues", "delete"], "NAME"),
    (["workflows", "show", "bad.id"], "workflow_id"),
    (["workflows", "list", "--limit", "0"], "--limit"),
    (["workflows", "list", "--status", "BOGUS"], "--status"),
    (["check", "nope://x", "--agent", AGENT], "url"),
    (["check", "--agent", AGENT, "--timeout", "0"], "--timeout"),
    (["console", "--nats", "nope://x"], "--nats"),
    (["console", "--host", "999.0.0.1", "--port", "0"], "--host"),
    (["console", "--port", "70000"], "--port"),
    (["up", "--role", "boss"], "--role"),
    (["up", "--http-port", "x"], "--http-port"),
]


# The ids leave out the random names: xdist's workers must collect the same test ids.
_IDS = [re.sub(r"-[0-9a-f]{8}\b", "", " ".join(a))[:60] for a, _ in BAD_INPUT]


@pytest.mark.processes
@pytest.mark.parametrize(("args", "names"), BAD_INPUT, ids=_IDS)
def test_bad_input_is_one_line_naming_the_argument(running: Up, args: list[str], names: str) -> None:
    done = cli(running.env(), *args, code=2, timeout=30)
    assert done.stdout == "", done.stdout
    [line] = done.stderr.splitlines()
    assert names in line, line
    assert "Expected `" not in line and "period" not in line.replace("--period", ""), line  # no msgspec text, no queue hint


@pytest.mark.processes
def test_following_a_run_that_has_no_events_yet_says_so_once_and_keeps_following(running: Up) -> None:
    env = running.env()
    run_id = uid("later")
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.cli.main", "events", run_id], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr.readline().strip() == f"waiting for run {run_id}, which has no events yet (Ctrl-C to stop)"  # type: ignore[union-attr]
        cli(env, "run", AGENT, "hello", "--id", run_id)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err == "" and [line.split()[1] for line in out.splitlines()][-1] == "completed", (out, err)
    # A run with events is followed without the note.
    again = cli(env, "events", run_id)
    assert again.stderr == ""


@pytest.mark.processes
def test_schedules_list_shows_agent_cron_time_zone_queue_and_next_tick(running: Up) -> None:
    from datetime import datetime, timezone

    env = running.env()
    assert cli(env, "schedules", "list").stdout == "no schedules\n"
    assert "UTC" in cli(env, "schedules", "--help").stdout
    daily, often = uid("daily"), uid("often")
    assert cli(env, "schedules", "create", daily, "0 9 * * *", AGENT, "report", "--queue", "reports").stdout.strip() == (
        f"schedule {daily}: 0 9 * * * (UTC) -> {AGENT}"
    )
    cli(env, "schedules", "create", often, "*/10 * * * * *", AGENT, "hello")
    before = datetime.now(timezone.utc)
    lines = cli(env, "schedules", "list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "AGENT", "CRON", "TZ", "QUEUE", "FIRED", "BY", "NEXT", "TICK", "(UTC)", "INPUT"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {daily, often}
    name, agent, *cron, tz, queue, by, day, time_of_day, text = rows[daily].split()
    assert (agent, " ".join(cron), tz, queue, by, text) == (AGENT, "0 9 * * *", "UTC", "reports", "scheduler", "report")
    tick = datetime.strptime(f"{day} {time_of_day}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    assert tick.strftime("%H:%M:%S") == "09:00:00" and tick > before
    assert rows[often].split()[9] == "-"  # no queue: a direct run
    cli(env, "schedules", "delete", daily)
    cli(env, "schedules", "delete", often)
    assert cli(env, "schedules", "list").stdout == "no schedules\n"


def _queue_counts(env: dict[str, str], queue: str) -> tuple[int, int]:
    import json

    [status] = json.loads(cli(env, "queues", "status", queue, "--json").stdout)
    return status["depth"], status["running"]


@pytest.mark.processes
def test_a_queue_is_deleted_only_when_no_run_waits_or_runs_on_it(running: Up) -> None:
    env = running.env()
    queue, busy, waiting = uid("q"), uid("busy"), uid("waiting")
    cli(env, "queues", "configure", queue, "--concurrency", "1")
    follow = [
        subprocess.Popen([sys.executable, "-m", "actors.cli.main", "run", AGENT, "think seconds=60", "--id", run_id, "--queue", queue],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for run_id in (busy, waiting)
    ]
    try:
        while _queue_counts(env, queue) != (1, 1):
            time.sleep(0.1)
        refused = cli(env, "queues", "delete", queue, code=1)
        assert refused.stdout == "" and refused.stderr.splitlines() == [
            f"error: name: queue '{queue}' has 1 run waiting and 1 running; "
            "delete it once they are done, or cancel them first (timestep cancel RUN_ID)"
        ]
        assert _queue_counts(env, queue) == (1, 1)  # refused: nothing changed
        cli(env, "cancel", waiting)
        cli(env, "cancel", busy)
        while _queue_counts(env, queue) != (0, 0):
            time.sleep(0.1)
    finally:
        for proc in follow:
            proc.kill()
            proc.wait()
    assert cli(env, "queues", "delete", queue).stdout.strip() == f"deleted queue {queue}"
    assert queue not in cli(env, "queues", "status").stdout
    gone = cli(env, "queues", "delete", queue, code=1)
    assert gone.stderr.strip() == f"error: no queue '{queue}'; `timestep queues status` lists them"
    assert "'default' holds the runs that name no queue" in cli(env, "queues", "delete", "default", code=1).stderr
    # A run that names the queue again creates it anew, with the default policy, and runs.
    cli(env, "run", AGENT, "hello", "--queue", queue)
