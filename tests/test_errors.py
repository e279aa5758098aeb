"""Every error Timestep raises survives pickling with its message and attributes: DBOS stores a run's
error pickled, and whoever reads the run's outcome (another process, a recovery, `timestep runs get`)
gets it back as the same error, not as a base64 blob or a PicklingError."""

from __future__ import annotations

import inspect
import pickle

import openai
import pytest

import timestep.bus.server  # noqa: F401  (defines errors of its own)
import timestep.client  # noqa: F401
import timestep.ops.lease  # noqa: F401
from subjects.events import ErrorInfo
from timestep.durable.model_retry import provider_error
from timestep.errors import TimestepError

#: A value for each constructor argument name the errors take.
SAMPLES = {
    "field": "session_id", "problem": "contains a control character", "fix": "use printable characters",
    "name": "assistant", "known": ["helper", "writer"], "waited": 10.0, "deduplication_id": "dedup-1", "queue": "rx",
    "workflow_id": "run-1", "message": "it went wrong", "timeout_seconds": 30.0, "subject": "timestep.runs.submit",
    "user": "ops", "what": "a request", "operation": "publish", "url": "nats://127.0.0.1:4222",
    "provider_error": "RateLimitError", "status_code": 429, "attempts": 3, "used": 120, "max_tokens": 100,
    "session_id": "user-42", "running_run_id": "run-0", "agent": "assistant", "changes": ["instructions changed"],
    "run_id": "run-1", "error": ErrorInfo(type="InvalidRequest", message="input: is empty"),
}


def _all_errors() -> list[type]:
    found, todo = [], [TimestepError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted({cls for cls in found if not cls.__module__.startswith("tests")}, key=lambda c: c.__qualname__)


def _build(cls: type) -> Exception:
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return cls("something went wrong")
    missing = [p.name for p in params if p.name not in SAMPLES and p.default is p.empty]
    assert not missing, f"add a sample value for {missing} of {cls.__qualname__} to SAMPLES"
    return cls(**{p.name: SAMPLES[p.name] for p in params if p.name in SAMPLES})


@pytest.mark.parametrize("cls", _all_errors(), ids=lambda cls: cls.__qualname__)
def test_every_error_survives_pickling(cls: type) -> None:
    error = _build(cls)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error) and str(copy)
    assert vars(copy) == vars(error)


def test_a_provider_error_stays_the_providers_class_through_pickling() -> None:
    error = provider_error("RateLimitError", 429, "slow down", 3, (("retry-after", "2"),))
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, openai.RateLimitError) and str(copy) == str(error)
    assert copy.status_code == 429 and copy.attempts == 3
