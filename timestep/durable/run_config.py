"""A run's RunConfig and RunHooks (`Runner.run(agent, input, run_config=..., hooks=...)`), as a
recovered run gets them again.

Given per run (`run_agent_workflow(..., run_config=..., hooks=...)`), they are stored with the run,
pickled: the RunConfig's fields that differ from the SDK's defaults, and the hooks object. Objects
holding local functions, clients or locks cannot be stored: those are registered with the agent
instead (`register_agent(agent, run_config=..., hooks=...)`), in every process that runs or recovers
its runs, and every run of the agent uses them (a run's own fields win over the registered ones).
The SDK's default model provider is not stored: Timestep's stands in for it (see `models`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agents import RunConfig, RunHooks
from agents.models.multi_provider import MultiProvider

from timestep.durable import registry, run_context

_REGISTER = "register it with the agent instead (register_agent(agent, {what}=...)), in every process that runs the agent's runs"


def set_fields(config: RunConfig) -> dict[str, Any]:
    """The fields of `config` that differ from the SDK's defaults (its default model provider left out)."""
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(RunConfig):
        value = getattr(config, field.name)
        if field.name == "model_provider":
            if type(value) is not MultiProvider:  # the SDK's default kind: Timestep's provider stands in
                fields[field.name] = value
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            fields[field.name] = value
            continue
        try:
            same = bool(value == default)
        except Exception:
            same = False
        if not same:
            fields[field.name] = value
    return fields


def pack(run_config: Any, hooks: Any) -> bytes | None:
    """A run's own RunConfig and hooks, as stored with it (None when it has neither); a
    ValidationError names the field that cannot be stored (`run_config.handoff_input_filter`)."""
    if run_config is None and hooks is None:
        return None
    registry.check_run_options(run_config, hooks)
    fields = set_fields(run_config) if run_config is not None else {}
    for name, value in fields.items():
        _check(f"run_config.{name}", value, "run_config")
    if hooks is not None:
        _check("hooks", hooks, "hooks")
    return run_context.dumps({"run_config": fields, "hooks": hooks})


def _check(field: str, value: Any, what: str) -> None:
    run_context.storable(value, field, "define its functions and classes at a module's top level, or " + _REGISTER.format(what=what))


def resolve(
    agent: str, stored: bytes | None, run_id: str, given: RunConfig | None = None, given_hooks: Any = None,
) -> tuple[RunConfig | None, RunHooks | None]:
    """The RunConfig and hooks a run of `agent` uses: the agent's registered ones, with the run's
    own over them: the objects `given` where the run executes in the process that started it, else
    as `stored`."""
    own: dict[str, Any] = {"run_config": {}, "hooks": None}
    if given is not None or given_hooks is not None:
        own = {"run_config": set_fields(given) if given is not None else {}, "hooks": given_hooks}
    elif stored is not None:
        own = run_context.loaded(stored, run_id, "its run_config or hooks")
    registered = registry.agent_run_config(agent)
    fields = {**(set_fields(registered) if registered is not None else {}), **own["run_config"]}
    config = RunConfig(**fields) if fields or registered is not None else None
    return config, own["hooks"] or registry.agent_hooks(agent)
