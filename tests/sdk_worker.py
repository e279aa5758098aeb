"""A process that runs an Agents SDK agent, written as the SDK's docs write the feature, durably.

    python tests/sdk_worker.py run|recover|read SCENARIO DB_URL LOG_DIR

`run` starts the scenario's run (workflow id `sdk-SCENARIO`), `recover` launches Timestep (which
recovers the run) and waits for it, `read` reads its outcome from the database. Each prints one JSON
line: {"output": ...} or {"error": class name, "message": ...}.

Every call an agent makes (model, tool, guardrail, handoff callback, MCP call) appends a line to
LOG_DIR/calls.log, so the test counts what ran in each process. The tool `slow` (and the MCP tool
`slow_add`) blocks while LOG_DIR/block exists: the test SIGKILLs the process there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import agents
from agents import (
    Agent,
    GuardrailFunctionOutput,
    ModelSettings,
    RunConfig,
    RunContextWrapper,
    Runner,
    ToolGuardrailFunctionOutput,
    ToolInputGuardrailData,
    ToolOutputGuardrailData,
    TResponseInputItem,
    function_tool,
    handoff,
    input_guardrail,
    output_guardrail,
    tool_input_guardrail,
    tool_output_guardrail,
)
from agents.mcp import MCPServerStdio
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from pydantic import BaseModel

agents.set_tracing_disabled(True)

import timestep  # noqa: E402

mode, scenario, db_url, log_dir = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
LOG = log_dir / "calls.log"
RUN_ID = f"sdk-{scenario}"


def log(line: str) -> None:
    with LOG.open("a") as f:
        f.write(f"{line} pid={os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


@function_tool
async def slow(x: int) -> str:
    """Blocks while LOG_DIR/block exists."""
    log("tool:slow:start")
    while (log_dir / "block").exists():
        await asyncio.sleep(0.05)
    log("tool:slow:end")
    return f"slow({x})"


def outputs(call: Any) -> list[str]:
    return [i["output"] for i in call.input if isinstance(i, dict) and i.get("type") == "function_call_output"]


def user_text(call: Any) -> str:
    return next((i["content"] for i in call.input if isinstance(i, dict) and i.get("role") == "user"), "")


def model(name: str, respond: Any) -> ScriptedModel:
    """Logs `model:NAME:N`, N the tool outputs it was given."""
    def logged(call: Any) -> Any:
        log(f"model:{name}:{len(outputs(call))}")
        return respond(call)

    return ScriptedModel([ModelStep.respond(logged) for _ in range(100)])


# --- guardrails (guardrails.md) --------------------------------------------------------------


class HomeworkOutput(BaseModel):
    is_homework: bool
    reasoning: str


guardrail_agent = Agent(
    name="Guardrail check",
    instructions="Check if the user is asking you to do their homework.",
    output_type=HomeworkOutput,
    model=model("guardrail-check", lambda call: [assistant_message('{"is_homework": false, "reasoning": "a question"}')]),
)


@input_guardrail
async def homework_guardrail(
    ctx: RunContextWrapper[None], agent: Agent, input: str | list[TResponseInputItem]
) -> GuardrailFunctionOutput:
    log("guardrail:homework")
    result = await Runner.run(guardrail_agent, input, context=ctx.context)
    return GuardrailFunctionOutput(output_info=result.final_output, tripwire_triggered=result.final_output.is_homework)


@output_guardrail
async def no_secrets(ctx: RunContextWrapper, agent: Agent, output: str) -> GuardrailFunctionOutput:
    log("guardrail:no_secrets")
    return GuardrailFunctionOutput(output_info={"length": len(output)}, tripwire_triggered="secret" in output)


def answer(call: Any) -> Any:
    """Calls `slow`, then answers with its output."""
    done = [i["output"] for i in call.input if isinstance(i, dict) and i.get("call_id") == "s1" and "output" in i]
    if not done:
        return [function_call("slow", {"x": 1}, call_id="s1")]
    return [assistant_message(f"{user_text(call)}: {done[0]}")]


guarded = timestep.register_agent(Agent(
    name="guarded",
    instructions="Answer with the tools.",
    tools=[slow],
    input_guardrails=[homework_guardrail],
    output_guardrails=[no_secrets],
    model=model("guarded", answer),
))

# --- handoffs (handoffs.md) -------------------------------------------------------------------


class EscalationData(BaseModel):
    reason: str


async def on_escalation(ctx: RunContextWrapper[None], input_data: EscalationData) -> None:
    log(f"on_handoff:{input_data.reason}")


refunds = Agent(name="Refund agent", instructions="Handle refunds.", tools=[slow], model=model("refunds", answer))
triage = timestep.register_agent(Agent(
    name="Triage agent",
    instructions="Hand refunds to the refund agent.",
    handoffs=[handoff(agent=refunds, on_handoff=on_escalation, input_type=EscalationData)],
    model=model("triage", lambda call: [function_call("transfer_to_refund_agent", {"reason": "refund"}, call_id="h1")]),
))

# --- MCP (mcp.md) -------------------------------------------------------------------------------


def calculate(call: Any) -> Any:
    """add(2, 3), then slow_add(5, 7), then the answer; logs the tools it was given."""
    done = outputs(call)
    log(f"tools:{','.join(sorted(t.name for t in call.tools))}")
    if not done:
        return [function_call("add", {"a": 2, "b": 3}, call_id="m1")]
    if len(done) == 1:
        return [function_call("slow_add", {"a": 5, "b": 7}, call_id="m2")]
    last = done[-1] if isinstance(done[-1], str) else "".join(part["text"] for part in done[-1])  # MCP: content parts
    return [assistant_message(f"{user_text(call)} = {last}")]


def mcp_agent(server: MCPServerStdio) -> Agent:
    return timestep.register_agent(Agent(
        name="Calculator assistant", instructions="Use the tools to answer the questions.",
        mcp_servers=[server], model=model("calculator", calculate),
    ))


def mcp_server() -> MCPServerStdio:
    return MCPServerStdio(
        name="Calculator",
        params={"command": sys.executable, "args": [str(Path(__file__).with_name("mcp_server.py")), str(log_dir)], "env": dict(os.environ)},
    )


# --- agents as tools (tools.md) -----------------------------------------------------------------

spanish_agent = Agent(
    name="Spanish agent", instructions="You translate the user's message to Spanish", tools=[slow],
    model=model("spanish", lambda call: answer(call) if len(outputs(call)) == 0 else [assistant_message(f"hola ({outputs(call)[0]})")]),
)


def orchestrate(call: Any) -> Any:
    if not outputs(call):
        return [function_call("translate_to_spanish", {"input": user_text(call)}, call_id="t1")]
    return [assistant_message(f"translated: {outputs(call)[0]}")]


orchestrator = timestep.register_agent(Agent(
    name="orchestrator_agent",
    instructions="You are a translation agent. You use the tools given to you to translate.",
    tools=[spanish_agent.as_tool(tool_name="translate_to_spanish", tool_description="Translate the user's message to Spanish")],
    model=model("orchestrator", orchestrate),
))

# --- a run context (context.md) -------------------------------------------------------------------


@dataclasses.dataclass
class Cart:
    user: str
    items: list[str] = dataclasses.field(default_factory=list)


@function_tool
async def add_item(wrapper: RunContextWrapper[Cart], item: str) -> str:
    """Put an item in the user's cart."""
    log(f"tool:add_item:{item}")
    wrapper.context.items.append(item)
    return f"{len(wrapper.context.items)} items"


@function_tool
async def checkout(wrapper: RunContextWrapper[Cart]) -> str:
    """Check the cart out (blocks while LOG_DIR/block exists)."""
    log("tool:checkout:start")
    while (log_dir / "block").exists():
        await asyncio.sleep(0.05)
    log("tool:checkout:end")
    return f"{wrapper.context.user} bought {', '.join(wrapper.context.items)}"


def shop(call: Any) -> Any:
    done = outputs(call)
    steps = [function_call("add_item", {"item": "apple"}, call_id="a1"), function_call("add_item", {"item": "pear"}, call_id="a2"),
             function_call("checkout", {}, call_id="k1")]
    return [steps[len(done)]] if len(done) < len(steps) else [assistant_message(done[-1])]


shopper = timestep.register_agent(Agent[Cart](
    name="shopper", instructions="Fill the cart, then check out.", tools=[add_item, checkout], model=model("shopper", shop),
))

# --- run config (config.md): run-level guardrails and model settings, given per run --------------


@input_guardrail
async def run_level_check(ctx: RunContextWrapper[None], agent: Agent, input: str | list[TResponseInputItem]) -> GuardrailFunctionOutput:
    log("guardrail:run_level_check")
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)


def answer_with_settings(call: Any) -> Any:
    """Calls `slow`, then answers with its output and the temperature the run config set."""
    done = outputs(call)
    if not done:
        return [function_call("slow", {"x": 2}, call_id="s2")]
    return [assistant_message(f"{done[0]} at {call.model_settings.temperature}")]


configured = timestep.register_agent(Agent(name="configured", tools=[slow], model=model("configured", answer_with_settings)))
RUN_CONFIG = RunConfig(model_settings=ModelSettings(temperature=0.3), input_guardrails=[run_level_check])

# --- tool guardrails (guardrails.md, "Tool guardrails") --------------------------------------------


@tool_input_guardrail
def block_secrets(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
    args = json.loads(data.context.tool_arguments or "{}")
    log(f"guardrail:block_secrets:{args.get('text')}")
    if "sk-" in json.dumps(args):
        return ToolGuardrailFunctionOutput.reject_content("Remove secrets before calling this tool.")
    return ToolGuardrailFunctionOutput.allow()


@tool_output_guardrail
def redact_output(data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
    log(f"guardrail:redact_output:{data.output}")
    if "SSN" in str(data.output):
        return ToolGuardrailFunctionOutput.reject_content("Output contained sensitive data.")
    return ToolGuardrailFunctionOutput.allow()


@function_tool(tool_input_guardrails=[block_secrets], tool_output_guardrails=[redact_output])
def classify_text(text: str) -> str:
    """Classify text for internal routing."""
    log(f"tool:classify_text:{text}")
    return f"length:{len(text)}"


def classify(call: Any) -> Any:
    """Two classify_text calls at once (one with a secret), then `slow`, then the outputs."""
    done = outputs(call)
    if not done:
        return [function_call("classify_text", {"text": "hello"}, call_id="c1"),
                function_call("classify_text", {"text": "sk-123"}, call_id="c2")]
    if len(done) == 2:
        return [function_call("slow", {"x": 3}, call_id="s3")]
    return [assistant_message(" | ".join(done))]


classifier = timestep.register_agent(Agent(name="classifier", tools=[classify_text, slow], model=model("classifier", classify)))


# --- the caller's own sessions (sessions.md): an SQLiteSession file, a session class of one's own ---


class FileSession:
    """A session of the caller's own kind: JSON lines in LOG_DIR/<id>.jsonl; each write is logged."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.path = log_dir / f"{session_id}.jsonl"

    async def get_items(self, limit: int | None = None) -> list[Any]:
        items = [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []
        return items if limit is None else items[-limit:]

    async def add_items(self, items: list[Any]) -> None:
        log(f"session:add:{','.join(i.get('type') or i.get('role') or '?' for i in items)}")
        with self.path.open("a") as f:
            f.writelines(json.dumps(i) + "\n" for i in items)

    async def pop_item(self) -> Any:
        items = await self.get_items()
        self.path.write_text("".join(json.dumps(i) + "\n" for i in items[:-1]))
        return items[-1] if items else None

    async def clear_session(self) -> None:
        self.path.unlink(missing_ok=True)


timestep.register_session_factory(FileSession, FileSession)  # at start-up, in every process
remembering = timestep.register_agent(Agent(name="remembering", tools=[slow], model=model("remembering", answer)))
SESSIONS = {
    "sqlite-session": lambda: agents.SQLiteSession("conv-1", log_dir / "conversations.db"),
    "own-session": lambda: FileSession("conv-2"),
}


async def session_items(scenario: str) -> dict[str, Any]:
    """What the scenario's session holds (read through a new object, as any reader makes it), by
    item type, and how many items Timestep's own database session of the same id holds."""
    session = SESSIONS[scenario]()
    kinds = [i.get("type") or "message" for i in await session.get_items()]
    return {"session": kinds, "database_session": len(await timestep.DatabaseSession(session.session_id).get_items())}


# --- fork (time travel): a run, then a fork of it from a step, with the agent's instructions changed ---


@function_tool
async def note(x: int) -> str:
    """Take a note."""
    log(f"tool:note:{x}")
    return f"noted {x}"


def plan(call: Any) -> Any:
    """note(1), then slow(2), then an answer in the agent's instructions' words."""
    done = outputs(call)
    if not done:
        return [function_call("note", {"x": 1}, call_id="n1")]
    if len(done) == 1:
        return [function_call("slow", {"x": 2}, call_id="s2")]
    return [assistant_message(f"{call.system_instructions} {' | '.join(done)}")]


# FORKED set: the agent as changed since the run it forks (its instructions), as a redeploy registers it.
planner = timestep.register_agent(Agent(
    name="planner", instructions=os.environ.get("FORKED_INSTRUCTIONS", "Be brief."), tools=[note, slow], model=model("planner", plan),
))
FORK_ID = f"sdk-{scenario}-fork"


SCENARIOS: dict[str, tuple[Agent | None, str]] = {
    "run_config": (configured, "configure"),
    "context": (shopper, "apples and pears"),
    "as_tool": (orchestrator, "hello"),
    "mcp": (None, "2 + 3 + 7"),  # made in main(), inside its server's `async with`
    "handoff": (triage, "refund please"),
    "guardrails": (guarded, "tell me"),
    "guardrail-trip": (guarded, "the secret"),  # the output guardrail trips, after the recovery
    "tool_guardrails": (classifier, "classify"),
    "fork": (planner, "plan"),
    "sqlite-session": (remembering, "remember"),
    "own-session": (remembering, "remember"),
}


async def main() -> None:
    if scenario == "mcp":
        async with mcp_server() as server:
            await run(mcp_agent(server), SCENARIOS[scenario][1])
    else:
        await run(*SCENARIOS[scenario])


async def run(agent: Agent, text: str) -> None:
    timestep.configure_dbos(system_database_url=db_url)
    timestep.ensure_dbos_launched()  # `recover`: recovers the run on this loop
    try:
        if mode == "run":
            context = Cart(user="ada") if scenario == "context" else None
            config = RUN_CONFIG if scenario == "run_config" else None
            session = SESSIONS[scenario]() if scenario in SESSIONS else None
            result = await timestep.run_agent_workflow(agent, text, session, workflow_id=RUN_ID, context=context, run_config=config)
        elif mode == "steps":  # the run's steps, as [number, name]
            print(json.dumps([[s.number, s.name] for s in await timestep.run_steps(RUN_ID)]))
            return
        elif mode == "fork":  # fork RUN_ID from the step FORK_FROM, then wait for the fork's result
            handle = await timestep.fork_run(RUN_ID, int(os.environ["FORK_FROM"]), workflow_id=FORK_ID)
            result = await handle.get_result()
        elif mode in ("recover", "read"):
            result = await timestep.RunHandle(os.environ.get("RESULT_OF", RUN_ID)).get_result()
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    except agents.AgentsException as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc), "detail": _detail(exc)}))
        return
    output = result.output.model_dump() if isinstance(result.output, BaseModel) else result.output
    context = {"context": dataclasses.asdict(result.context)} if result.context is not None else {}
    held = await session_items(scenario) if scenario in SESSIONS else {}
    print(json.dumps({"output": output, **context, **held}))


def _detail(exc: Exception) -> Any:
    result = getattr(exc, "guardrail_result", None)
    if result is None:
        return None
    return {"guardrail": result.guardrail.get_name(), "output_info": result.output.output_info}


asyncio.run(main())
os._exit(0)
