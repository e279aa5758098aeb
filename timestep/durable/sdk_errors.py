"""Errors that survive DBOS's pickling as themselves, the Agents SDK's above all.

DBOS stores a step's or a run's error pickled and raises the copy wherever the outcome is read: the
same workflow_id awaited again, a `RunHandle` in another process, a recovered run. The SDK's
exceptions often cannot be pickled as they are: `run_data` holds the run's agents, tools and context,
and a guardrail tripwire holds the guardrail, whose function is usually a local one.

`picklable(exc)` makes such an error picklable without changing its class: its class gets a reducer
(`copyreg`) that rebuilds it from its message and attributes, each attribute made picklable on the
way (`run_data` dropped: it describes live objects of the process that ran; a guardrail's function
replaced by a stand-in that keeps its name; an agent reduced to its name). `except
InputGuardrailTripwireTriggered` then catches the copy as it catches the original, with the same
message, guardrail name and output. Only an error that cannot be rebuilt so (a class that cannot
be imported, say) becomes a RuntimeError that names its class and message.
"""

from __future__ import annotations

import copyreg
import dataclasses
import pickle
from typing import Any

from agents import Agent
from agents.exceptions import AgentsException, UserError
from agents.guardrail import GuardrailFunctionOutput, InputGuardrail, InputGuardrailResult, OutputGuardrail, OutputGuardrailResult
from agents.tool_guardrails import ToolInputGuardrail, ToolOutputGuardrail

from timestep.errors import _rebuild


def picklable(exc: BaseException) -> BaseException:
    """`exc` itself when it survives pickling, once its class has a reducer if it needs one;
    else a RuntimeError naming it.

    >>> raise picklable(error)  # inside a workflow: DBOS stores it, and every reader gets its class
    """
    if _round_trips(exc):
        return exc
    cls = type(exc)
    if cls not in copyreg.dispatch_table and isinstance(exc, Exception):
        copyreg.pickle(cls, _reduce)
        if _round_trips(exc):
            return exc
    return RuntimeError(f"{cls.__name__}: {exc}")


def _round_trips(value: Any) -> bool:
    try:
        pickle.loads(pickle.dumps(value))
        return True
    except Exception:
        return False


def _reduce(exc: BaseException) -> tuple:
    state = {name: None if name == "run_data" else portable(value) for name, value in vars(exc).items()}
    return (_rebuild, (type(exc), tuple(portable(a) for a in exc.args), state))


def recorded_guardrail(*_: Any) -> GuardrailFunctionOutput:
    """Stands in for a guardrail's function in an error read back from the database: the function
    stayed in the process that ran it."""
    raise UserError("this guardrail was read back from a durable run's record; its function is not here to run")


def portable(value: Any) -> Any:
    """`value`, or a picklable likeness of it that keeps what a caller inspects (also what a guardrail's
    step records: see `steps`)."""
    if _round_trips(value):
        return value
    if isinstance(value, GuardrailFunctionOutput):
        return GuardrailFunctionOutput(output_info=portable(value.output_info), tripwire_triggered=value.tripwire_triggered)
    if isinstance(value, InputGuardrailResult):
        return InputGuardrailResult(guardrail=portable(value.guardrail), output=portable(value.output))
    if isinstance(value, OutputGuardrailResult):
        return OutputGuardrailResult(
            guardrail=portable(value.guardrail), agent_output=portable(value.agent_output),
            agent=portable(value.agent), output=portable(value.output),
        )
    if isinstance(value, (InputGuardrail, OutputGuardrail, ToolInputGuardrail, ToolOutputGuardrail)):
        return dataclasses.replace(value, guardrail_function=recorded_guardrail, name=value.get_name())
    if isinstance(value, Agent):
        return Agent(name=value.name)
    if isinstance(value, AgentsException):
        return picklable(value)
    return repr(value)
