"""One conversation, one run at a time: the turns of a session's runs.

A run with a session takes a turn before it starts: a row in `timestep_session_turns`, whose id
is its place in the order of arrival across every process on the database. What happens when
an earlier run of the session is unfinished is the run's `session_policy`:

- `enqueue` (default): the run waits, durably, until every earlier run of the session ended,
  then runs on the history that includes their turns;
- `reject`: the run is refused with `SessionBusyError`, naming the unfinished run; nothing ran;
- `interrupt`: the earlier unfinished runs are cancelled (each stops at its next step boundary)
  and the run goes on with the history so far plus its own input.

A run waiting for approval is unfinished: a bus run waits inside its workflow, a library run
that returned `interrupted` keeps its turn (state `interrupted`) until its resume, which takes
the turn over, ends. `enqueue` waits behind it, `interrupt` cancels it (and forgets its saved
state), `reject` names it.

Joining is one step (its place is recorded, so a recovered run keeps it and never joins twice);
each look at whether the turn has come is a step too, and between looks the run waits on a
durable `recv`, woken by the run that releases the turn (and at most `MAX_WAIT_SECONDS` apart, so
a run that ended without releasing, by a crash of its last process, is noticed all the same).
"""

from __future__ import annotations

import time
import zlib

import sqlalchemy as sa

from timestep.durable import engine, store
from timestep.durable.events import say_cancelled
from timestep.durable.state_store import state_keys
from timestep.errors import SessionBusyError

DEFAULT_POLICY = "enqueue"
#: The topic on which a waiting run is told that a turn was released.
TURN_TOPIC = "timestep.turn"
FIRST_WAIT_SECONDS = 0.5
MAX_WAIT_SECONDS = 60.0
#: A run cancelled this recently may still be finishing the step it was in: its turn is
#: released by the run itself as it stops; this is how long the next run waits for that.
CANCEL_GRACE_SECONDS = 10.0
#: What a cancelled run that waits for approval is woken with, so it notices the cancel at once.
WAKE = "timestep.wake"



# --- inside the workflow -------------------------------------------------------------


async def take_turn(session_id: str, run_id: str, policy: str, *, resume: bool) -> None:
    """Join the session's order of arrival and wait for this run's turn (see the module's text).
    Raises SessionBusyError for `reject` when an earlier run is unfinished."""

    async def join() -> tuple[int, str | None, str | None]:
        position, busy, blocker, cancelled = await engine.blocking(_join, session_id, run_id, policy, resume)
        for other in cancelled:
            await say_cancelled(other)
        return position, busy, blocker

    position, busy, blocker = await engine.step("session.join", join)
    if busy is not None:
        raise SessionBusyError(session_id, busy)
    wait = FIRST_WAIT_SECONDS
    while blocker is not None:
        await engine.recv(TURN_TOPIC, wait)
        wait = min(wait * 2, MAX_WAIT_SECONDS)

        async def look() -> str | None:
            return await engine.blocking(_first_unfinished, session_id, position)

        blocker = await engine.step("session.turn", look)


async def hold(run_id: str) -> None:
    """A library run returned for approval: it keeps its turn until its resume ends."""
    await store.run(lambda e: _set_state(e, run_id, "interrupted"))


async def release(run_id: str) -> None:
    """The run ended (completed, failed, cancelled): the next run of its session may go. Never a
    step (a cancelled run may record nothing); idempotent, so a replay may do it again."""
    await engine.blocking(_release, run_id)


async def unfinished(session_id: str, *, besides: str | None = None) -> str | None:
    """The first unfinished run of the session (not `besides`), or None."""
    return await engine.blocking(_first_unfinished, session_id, None, besides)


# --- the database ---------------------------------------------------------------------


def _lock_session(conn: sa.Connection, session_id: str) -> None:
    """Hand out places one at a time per session, so the order of ids is the order of commits
    (on SQLite the single writer does it already)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(f"timestep.turn:{session_id}".encode())})


def _join(session_id: str, run_id: str, policy: str, resume: bool) -> tuple[int, str | None, str | None, list[str]]:
    """(place, the unfinished run that refuses a `reject`, the first run to wait for, the runs
    this one interrupted)."""
    table = store.session_turns
    with store.get_engine().begin() as conn:
        _lock_session(conn, session_id)
        position = conn.execute(sa.select(table.c.id).where(table.c.run_id == run_id)).scalar()
        if position is None and resume:
            # The resume of a library run that returned for approval takes that run's place.
            held = conn.execute(
                sa.select(table.c.id).where(table.c.session_id == session_id, table.c.state == "interrupted").order_by(table.c.id).limit(1)
            ).scalar()
            if held is not None:
                conn.execute(sa.update(table).where(table.c.id == held).values(run_id=run_id, state="running"))
                position = held
        if position is None:
            position = conn.execute(
                sa.insert(table).values(session_id=session_id, run_id=run_id, state="running", created_at=time.time()).returning(table.c.id)
            ).scalar_one()
    earlier = _unfinished_before(session_id, position)
    if policy == "reject" and earlier:
        _delete(run_id)
        return position, earlier[0][0], None, []
    cancelled = []
    if policy == "interrupt":
        for other, state in earlier:
            _interrupt(session_id, other, state)
            cancelled.append(other)
    return position, None, _first_unfinished(session_id, position), cancelled


def _unfinished_before(session_id: str, position: int | None, besides: str | None = None) -> list[tuple[str, str]]:
    """(run id, state) of the session's unfinished runs before `position` (all when None), oldest
    first; rows of runs that ended without releasing their turn are dropped on the way."""
    table = store.session_turns
    query = sa.select(table.c.run_id, table.c.state).where(table.c.session_id == session_id).order_by(table.c.id)
    if position is not None:
        query = query.where(table.c.id < position)
    with store.get_engine().connect() as conn:
        rows = conn.execute(query).all()
    found = []
    for run_id, state in rows:
        if run_id == besides:
            continue
        if state == "interrupted":
            found.append((run_id, state))
            continue
        status = engine.status_now(run_id)
        if status is None:
            found.append((run_id, state)) if _young(run_id) else _delete(run_id)
        elif not status.finished:
            found.append((run_id, state))
        elif status.status == "cancelled" and time.time() - (status.updated_at or 0) < CANCEL_GRACE_SECONDS:
            found.append((run_id, state))  # it releases its turn itself as it stops
        else:
            _delete(run_id)
    return found


def _first_unfinished(session_id: str, position: int | None, besides: str | None = None) -> str | None:
    earlier = _unfinished_before(session_id, position, besides)
    return earlier[0][0] if earlier else None


def _young(run_id: str) -> bool:
    """A turn whose workflow is not in the database yet: taken moments ago by a run being started."""
    table = store.session_turns
    with store.get_engine().connect() as conn:
        created = conn.execute(sa.select(table.c.created_at).where(table.c.run_id == run_id)).scalar()
    return created is not None and time.time() - created < CANCEL_GRACE_SECONDS


def _interrupt(session_id: str, run_id: str, state: str) -> None:
    if state == "interrupted":  # a library run that returned for approval: forget it and its saved state
        from timestep.durable.state_store import clear_keys_now

        clear_keys_now(state_keys(session_id, run_id))
        _release(run_id)
        return
    engine.cancel_now(run_id)
    engine.send_now(run_id, WAKE, "timestep.decision", idempotency_key=f"{run_id}.interrupted")


def _set_state(e: sa.Engine, run_id: str, state: str) -> None:
    table = store.session_turns
    with e.begin() as conn:
        conn.execute(sa.update(table).where(table.c.run_id == run_id).values(state=state))


def _delete(run_id: str) -> str | None:
    table = store.session_turns
    with store.get_engine().begin() as conn:
        return conn.execute(sa.delete(table).where(table.c.run_id == run_id).returning(table.c.session_id)).scalar()


def _release(run_id: str) -> None:
    session_id = _delete(run_id)
    if session_id is None:
        return
    table = store.session_turns
    with store.get_engine().connect() as conn:
        waiting = [r[0] for r in conn.execute(sa.select(table.c.run_id).where(table.c.session_id == session_id).order_by(table.c.id).limit(20))]
    for other in waiting:
        try:
            engine.send_now(other, "released", TURN_TOPIC, idempotency_key=f"{other}.after.{run_id}")
        except Exception:  # the waiter looks again by itself within MAX_WAIT_SECONDS
            pass
