"""The agent of the fault tests, importable by `timestep up --agents fault_agents` (tests/ on PYTHONPATH).

`ledger`: model call m0 asks for tool `work`, the tool runs, model call m1 answers.
Every call draws a fresh nonce and appends `start` and `end` lines to the ledger file
($TIMESTEP_LEDGER). The final answer carries the nonces of the three executions
that were recorded (`m0=... t=... m1=...`), because each call's input holds what
the durable steps before it returned. So after any number of SIGKILLs a test can
tell, per run and step, which execution counted and whether any ran after it.
`ledger-approve` is the same agent whose tool waits for a person's approval first.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, Model, Usage, function_tool
from agents.items import ModelResponse
from dbos import DBOS
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from timestep import register_agent

LEDGER = os.environ.get("TIMESTEP_LEDGER")
USAGE = Usage(requests=1, input_tokens=10, output_tokens=5, total_tokens=15)
_rand = random.Random()


def ledger(kind: str, phase: str, run_id: str, step: str, nonce: str) -> None:
    """One line per event, appended with O_APPEND (whole lines, in order, across processes;
    a SIGKILL does not lose what the kernel already has)."""
    if LEDGER:
        fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{kind} {phase} {run_id} {step} {nonce} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


def _text(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id="msg_ledger", type="message", role="assistant", status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])],
    )


class LedgerModel(Model):
    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        items = [i for i in (input if isinstance(input, list) else []) if isinstance(i, dict)]
        outputs = [i for i in items if i.get("type") == "function_call_output"]
        step = "m1" if outputs else "m0"
        run_id, nonce = DBOS.workflow_id or "?", uuid.uuid4().hex[:10]
        ledger("model", "start", run_id, step, nonce)
        await asyncio.sleep(_rand.uniform(0.005, 0.04))
        if step == "m0":
            output: list[Any] = [
                ResponseFunctionToolCall(
                    id="fc_1", call_id="c1", type="function_call", name="work", arguments=json.dumps({"m0": nonce})
                )
            ]
        else:
            call = next(i for i in items if i.get("type") == "function_call")
            m0 = json.loads(call["arguments"])["m0"]
            output = [_text(f"m0={m0} t={outputs[0]['output']} m1={nonce}")]
        ledger("model", "end", run_id, step, nonce)
        return ModelResponse(output=output, usage=USAGE, response_id=None)

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the ledger agent is not streamed")
        yield  # pragma: no cover


async def _work() -> str:
    run_id, nonce = DBOS.workflow_id or "?", uuid.uuid4().hex[:10]
    ledger("tool", "start", run_id, "t", nonce)
    await asyncio.sleep(_rand.uniform(0.02, 0.25))
    ledger("tool", "end", run_id, "t", nonce)
    return nonce


@function_tool
async def work(m0: str) -> str:
    return await _work()


@function_tool(needs_approval=True, name_override="work")
async def work_approved(m0: str) -> str:
    return await _work()


register_agent(Agent(name="ledger", model=LedgerModel(), tools=[work]))
# The same, with the tool waiting for a person's approval first (the run parks in between).
register_agent(Agent(name="ledger-approve", model=LedgerModel(), tools=[work_approved]))
