"""Where a run's lifecycle events go: one small sink interface.

The runner hands every event (the msgspec types of `subjects.events`) to the
registered sinks and to the listeners of that run. The NATS bus is one sink;
a test or a UI can be another. Events are produced inside durable steps with
deterministic `seq` numbers, so a sink sees each event at least once and can
drop repeats by `(run_id, seq)`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, Protocol

from subjects.events import Cancelled, LiveText, RunEvent

log = logging.getLogger("timestep.durable.events")

Listener = Callable[[RunEvent], Awaitable[None] | None]


class EventSink(Protocol):
    """Receives every event of every run in this process. A sink may also have
    `async def settle(run_id=None)`: a run calls it (with its id, where the method takes one)
    before a step is recorded as done, so a sink that publishes without waiting can wait there
    until what it published of that run (of every run, with None) is stored;
    and `async def last_stored(run_id) -> (seq, type) | None`: the run's last stored
    event, which a resumed run numbers its new events after; and `async def live(piece: LiveText)`:
    each piece of streamed model text the moment the model yields it, before any of it is stored
    (best effort: a sink that cannot keep up may drop pieces, which the stored `delta` events hold)."""

    async def emit(self, event: RunEvent) -> None: ...


_sinks: list[EventSink] = []
_listeners: dict[str, list[Listener]] = {}


def add_event_sink(sink: EventSink) -> None:
    """Send every run's events to `sink` too.

    >>> class Printer:
    ...     async def emit(self, event): print(event.type, event.run_id)
    >>> add_event_sink(Printer())
    """
    if sink not in _sinks:
        _sinks.append(sink)


def remove_event_sink(sink: EventSink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def listen(run_id: str, listener: Listener) -> Callable[[], None]:
    """Call `listener` with each event of run `run_id` (in order); returns the function that stops it."""
    _listeners.setdefault(run_id, []).append(listener)

    def stop() -> None:
        listeners = _listeners.get(run_id)
        if listeners and listener in listeners:
            listeners.remove(listener)
            if not listeners:
                del _listeners[run_id]

    return stop


def now() -> datetime:
    return datetime.now(timezone.utc)


async def dispatch(event: RunEvent) -> None:
    """Hand `event` to every sink and to the run's listeners. A failing sink or
    listener is logged and never breaks the run."""
    await _to_sinks(event)
    for listener in list(_listeners.get(event.run_id, ())):
        try:
            result = listener(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("listener failed on %s event of run %s", type(event).__name__, event.run_id)


async def _to_sinks(event: RunEvent) -> None:
    for sink in list(_sinks):
        try:
            await sink.emit(event)
        except Exception:
            log.exception("event sink %r failed on %s event of run %s", sink, type(event).__name__, event.run_id)


#: Event types after which a run says nothing more.
ENDINGS = ("cancelled", "completed", "failed", "rejected")


async def say_cancelled(run_id: str) -> None:
    """The `cancelled` event of a run ended from outside it (a cancel, a newer run of its session
    that interrupts it), numbered after its last stored event, to the sinks that store events (the
    bus), stored before this returns. A queued run, a run waiting for approval and a run whose
    process is gone say nothing more themselves; a run executing here says `cancelled` too, under
    the same number, which the bus stores once. Nothing when its last stored event already ends it.
    Not to the run's listeners: a run executing here tells them itself."""
    if not any(hasattr(sink, "last_stored") for sink in _sinks):
        return
    last = await last_stored(run_id)
    if last is not None and last[1] in ENDINGS:
        return
    await _to_sinks(Cancelled(run_id=run_id, seq=(last[0] if last is not None else 0) + 1, time=now()))
    await settle(run_id)


def live_sinks() -> list[Callable[[LiveText], Awaitable[None]]]:
    """The `live` methods of the sinks that take streamed text as it is yielded (see EventSink)."""
    return [method for sink in _sinks if (method := getattr(sink, "live", None)) is not None]


async def live(sinks: list[Callable[[LiveText], Awaitable[None]]], piece: LiveText) -> None:
    """Hand a live text piece to `sinks` (from `live_sinks()`); a failing sink is logged, never breaks the run."""
    for send in sinks:
        try:
            await send(piece)
        except Exception:
            log.exception("event sink %r failed on live text of run %s", send, piece.run_id)


async def settle(run_id: str | None = None) -> None:
    """Wait until every sink has stored the events emitted so far: those of run `run_id`, or
    with None those of every run (see EventSink)."""
    for sink in list(_sinks):
        settle_sink = getattr(sink, "settle", None)
        if settle_sink is not None:
            try:
                await (settle_sink(run_id) if run_id is not None and _takes_run_id(settle_sink) else settle_sink())
            except Exception:
                log.exception("event sink %r failed to settle", sink)


_takes: dict[Any, bool] = {}


def _takes_run_id(method: Any) -> bool:
    """Whether a sink's `settle` takes a run id (a sink written before it did takes none)."""
    key = getattr(method, "__func__", method)
    known = _takes.get(key)
    if known is None:
        try:
            known = len(inspect.signature(method).parameters) >= 1
        except (TypeError, ValueError):
            known = False
        _takes[key] = known
    return known


async def last_stored(run_id: str) -> tuple[int, str] | None:
    """The run's last event as the sinks that store events know it: (seq, type), or None."""
    found: tuple[int, str] | None = None
    for sink in list(_sinks):
        ask = getattr(sink, "last_stored", None)
        if ask is None:
            continue
        try:
            last = await ask(run_id)
        except Exception:
            log.exception("event sink %r could not tell the last event of run %s", sink, run_id)
            continue
        if last is not None and (found is None or last[0] > found[0]):
            found = last
    return found
