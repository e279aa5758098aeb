"""Run requests from the bus: size limit, decoding, validation (by the rules the library keeps too:
`timestep.durable.admission`), run ids; and the internal hand-off of a validated direct run to
the agent actors."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from subjects.events import ErrorInfo
from subjects.ids import is_valid_run_id
from subjects.messages import RunRequest
from subjects.problems import body_problem
from timestep.errors import ValidationError
from timestep.durable.admission import check_request
from timestep.durable.runs import RunSpec, spec_for

_decoder = msgspec.json.Decoder(RunRequest)


class Invalid(Exception):
    """A request that cannot run: `field` says where, `message` why and how to fix it."""

    def __init__(self, field: str, message: str, run_id: str | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.run_id = run_id

    kind = "InvalidRequest"

    def info(self) -> ErrorInfo:
        return ErrorInfo(type=self.kind, message=str(self), field=self.field)


class Busy(Invalid):
    """A request with `session_policy: reject` whose session has an unfinished run."""

    kind = "SessionBusy"


class StartRun(msgspec.Struct, kw_only=True):
    """Internal (`<prefix>.runs.start`): a validated direct run for the agent actors."""

    run_id: str
    timeout_seconds: float | None
    spec: RunSpec


def derive_run_id(data: bytes, headers: dict[str, str] | None) -> str:
    """The run id of a request without `id`: from its Nats-Msg-Id, or else its bytes,
    so a repeated publish of the same request is the same run, never two."""
    msg_id = (headers or {}).get("Nats-Msg-Id", "")
    return "r-" + hashlib.sha256(msg_id.encode() + b"\0" + data).hexdigest()[:40]


def _claimed_id(data: bytes) -> str | None:
    """The request's own `id`, when it is a valid one, even if the rest is not."""
    try:
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    candidate = value.get("id") if isinstance(value, dict) else None
    return candidate if is_valid_run_id(candidate) else None


def parse_request(data: bytes, headers: dict[str, str] | None, max_bytes: int) -> tuple[RunRequest, str]:
    """Decode and validate a run request; return it with its run id, or raise Invalid."""
    if len(data) > max_bytes:
        raise Invalid("request", f"is {len(data)} bytes; the limit is {max_bytes} (TIMESTEP_MAX_REQUEST_BYTES)")
    try:
        request = _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        field, problem = body_problem(exc, example='{"agent": "assistant", "input": "Hi"}', data=data, type=RunRequest)
        raise Invalid(field, problem, _claimed_id(data)) from None
    run_id = request.id or derive_run_id(data, headers)
    try:
        check_request(request)
    except ValidationError as exc:
        raise Invalid(exc.field, exc.reason, run_id) from None
    return request, run_id


def to_spec(request: RunRequest, *, seq_base: int) -> RunSpec:
    """The workflow input of a bus run: it waits for approvals instead of returning."""
    return spec_for(request, wait_for_approval=True, seq_base=seq_base)


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)
