"""A run's context (`Runner.run(agent, input, context=...)`), stored with the run and kept durable.

The context is the object the Agents SDK hands to every tool, guardrail, handoff callback and
dynamic instruction as `ctx.context`. A durable run stores it with its input, pickled (`pack`), so a
process that recovers the run gives its tools the same context. Tools may change it: each step of a
run with a context records the context as the step left it, and a replayed step (one whose recorded
outcome is returned instead of running it again) puts those changes back into the live object
(`restore`), so after a crash the run goes on with the context its finished steps made, not the one it
started with. The caller's own object gets the final context the same way when the run ends in its
process, as it would after `Runner.run`.

What a context may hold is what pickle can carry: a dataclass, a pydantic model, a dict, any object of
a class defined at a module's top level. A lock, a connection or a client cannot be pickled: give the
run what it needs to make one (a URL, a key's name), and make it in the tool.
"""

from __future__ import annotations

import base64
import importlib
import io
import pickle
import sys
from collections.abc import Mapping
from typing import Any

import msgspec

from subjects.problems import convert_problem
from timestep.errors import ValidationError

#: A pickled context bigger than this is refused: it is written with the run's input and again by
#: every step that changes it.
MAX_CONTEXT_BYTES = 1_000_000


def pack(context: Any) -> bytes:
    """The context as stored with the run; ValidationError (field `context`) when it cannot be."""
    data = storable(
        context, "context",
        "pass what pickle can carry (a dataclass, a pydantic model or a dict, of a class defined at a module's "
        "top level), holding no lock, connection or client: tools make those from what the context says",
    )
    if len(data) > MAX_CONTEXT_BYTES:
        raise ValidationError(
            "context", f"is {len(data)} bytes pickled; the limit is {MAX_CONTEXT_BYTES}",
            "keep large data elsewhere (a file, a table) and put its key in the context",
        )
    return data


def unpack(data: bytes, run_id: str) -> Any:
    """The stored context; a clear error when this process cannot import its class."""
    return loaded(data, run_id, "its context")


# --- what a run stores of the caller's objects (its context, its run config and hooks) ----------


class _Pickler(pickle.Pickler):
    """Pickle, with one addition: a function a decorator replaced at its module's top level (the SDK's
    `@input_guardrail`, `@output_guardrail`, `@function_tool` write them so) is stored as the
    decorated object's function, found again by the module and name."""

    def reducer_override(self, obj: Any) -> Any:
        if callable(obj) and type(obj).__name__ == "function":
            module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
            owner = getattr(sys.modules.get(module or ""), name, None) if "<" not in name else None
            if owner is not None and owner is not obj:
                for attribute in ("guardrail_function", "on_invoke_tool", "func"):
                    if getattr(owner, attribute, None) is obj:
                        return _decorated, (module, name, attribute)
        return NotImplemented


def _decorated(module: str, name: str, attribute: str) -> Any:
    return getattr(getattr(importlib.import_module(module), name), attribute)


def dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def storable(value: Any, field: str, fix: str) -> bytes:
    """`value` pickled, checked to come back; ValidationError naming `field` when it does not."""
    try:
        data = dumps(value)
    except Exception as exc:  # pickle raises PicklingError, TypeError, AttributeError, ...
        raise ValidationError(field, f"a {type(value).__name__} cannot be stored with the run ({type(exc).__name__}: {exc})", fix) from None
    try:
        pickle.loads(data)
    except Exception as exc:  # it pickles, but comes back only where its class is defined (a local class)
        raise ValidationError(field, f"a {type(value).__name__} is stored but cannot be read back ({type(exc).__name__}: {exc})", fix) from None
    return data


def loaded(data: bytes, run_id: str, what: str) -> Any:
    """What a run stored, read back; a clear error when this process cannot import a class it names."""
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise RuntimeError(
            f"run {run_id}: {what} cannot be read in this process ({type(exc).__name__}: {exc}); "
            "every process that runs or recovers runs must import what the run was given"
        ) from None


def snapshot(context: Any) -> bytes | None:
    """The context as a step left it, to record with the step (None when it cannot be pickled now:
    the step's changes are then not kept across a crash, and the run goes on)."""
    try:
        return pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)  # every step: pickle's own speed
    except Exception:
        return None


def restore(live: Any, recorded: Any) -> None:
    """Make `live` hold what `recorded` holds, in place (the run's tools, and the caller, keep
    their reference to it): a dict's or a list's items, an object's state."""
    if live is recorded or live is None:
        return
    if isinstance(live, dict) and isinstance(recorded, dict):
        live.clear()
        live.update(recorded)
    elif isinstance(live, list) and isinstance(recorded, list):
        live[:] = recorded
    elif type(live) is type(recorded):
        setstate = getattr(live, "__setstate__", None)
        if callable(setstate):  # pydantic models, classes that define their own
            setstate(recorded.__getstate__())
        elif hasattr(live, "__dict__"):
            vars(live).clear()
            vars(live).update(vars(recorded))
        slots = getattr(type(live), "__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if hasattr(recorded, name):
                object.__setattr__(live, name, getattr(recorded, name))


#: How a run's context is kept in a saved RunState (`RunStateStore`, an interruption's saved state):
#: the SDK serializes a context that is not a mapping only through a serializer that returns one.
_STATE_KEY = "timestep_context"


def for_state(context: Any) -> Mapping[str, str]:
    """The SDK's `context_serializer` for a run with a context: the pickled context, in a mapping."""
    return {_STATE_KEY: base64.b64encode(pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)).decode()}


def from_state(state: Any) -> bytes | None:
    """The pickled context a saved RunState carries (see `for_state`), or None."""
    wrapper = getattr(state, "_context", None)
    held = getattr(wrapper, "context", None)
    if isinstance(held, Mapping) and set(held) == {_STATE_KEY} and isinstance(held[_STATE_KEY], str):
        return base64.b64decode(held[_STATE_KEY])
    return None


def from_json(value: dict[str, Any], context_type: type | None) -> Any:
    """A request's context (a JSON object) as the agent's registered context type (a dataclass, a
    msgspec Struct, a pydantic model; the object itself when none is registered). ValidationError
    naming the field that does not fit (`context.uid`)."""
    if context_type is None:
        return value
    validate = getattr(context_type, "model_validate", None)
    if callable(validate):  # pydantic
        try:
            return validate(value)
        except Exception as exc:
            errors = getattr(exc, "errors", None)
            first = errors()[0] if callable(errors) and errors() else None
            if first is None:
                raise ValidationError("context", f"does not fit {context_type.__name__}: {exc}") from None
            where = ".".join(str(part) for part in first.get("loc", ()))
            raise ValidationError(f"context.{where}" if where else "context", f"{first.get('msg', exc)} (for {context_type.__name__})") from None
    try:
        return msgspec.convert(value, context_type)
    except msgspec.ValidationError as exc:
        field, problem = convert_problem(exc, value, context_type)
        raise ValidationError(f"context.{field}" if field else "context", f"{problem} (for {context_type.__name__})") from None
    except TypeError as exc:  # a type msgspec cannot build
        raise ValidationError("context", f"cannot become a {context_type.__name__} ({exc})", "register a dataclass, a msgspec Struct or a pydantic model as context_type") from None
