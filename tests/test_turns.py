"""The turn-taker's decisions, one at a time, against the real turns table (no runs): the order of
arrival, who a run waits for, what `reject` and `interrupt` do, a recovered run keeping its place,
a resume taking over the place of the run it resumes, and turns left behind by a crash.
`tests/test_session_policy.py` proves the same through whole runs."""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa

from timestep.durable import engine, store, turns


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def join(session: str, run: str, policy: str = "enqueue", *, resume: bool = False) -> tuple[int, str | None, str | None, list[str]]:
    return await engine.blocking(turns._join, session, run, policy, resume)


async def holders(session: str) -> list[tuple[str, str]]:
    table = store.session_turns

    def read(db: sa.Engine) -> list[tuple[str, str]]:
        with db.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(table.c.run_id, table.c.state).where(table.c.session_id == session).order_by(table.c.id))]

    return await store.run(read)


async def test_runs_take_places_in_order_of_arrival_and_wait_for_the_first_unfinished(db: str) -> None:
    session, a, b, c = uid("s"), uid("a"), uid("b"), uid("c")
    first, second, third = await join(session, a), await join(session, b), await join(session, c)
    assert first[0] < second[0] < third[0]
    assert first[1:] == (None, None, [])  # nobody before it
    assert second[1:] == (None, a, []) and third[1:] == (None, a, [])  # both wait for the oldest unfinished
    assert await join(session, b) == second  # a recovered run joins again: the same place, nothing more
    await engine.blocking(turns._release, a)
    assert await engine.blocking(turns._first_unfinished, session, third[0]) == b
    assert await holders(session) == [(b, "running"), (c, "running")]


async def test_other_sessions_do_not_wait_for_each_other(db: str) -> None:
    one, two = uid("s"), uid("s")
    await join(one, uid("a"))
    assert (await join(two, uid("b")))[1:] == (None, None, [])


async def test_reject_names_the_unfinished_run_and_leaves_no_place(db: str) -> None:
    session, a, b, c = uid("s"), uid("a"), uid("b"), uid("c")
    await join(session, a)
    _, busy, wait_for, cancelled = await join(session, b, "reject")
    assert (busy, wait_for, cancelled) == (a, None, [])
    assert await holders(session) == [(a, "running")]  # the refused run holds nothing
    assert (await join(session, c))[2] == a
    assert (await join(uid("s"), uid("d"), "reject"))[1] is None  # an idle session takes it


async def test_interrupt_forgets_a_library_run_that_returned_for_approval(db: str) -> None:
    session, a, b = uid("s"), uid("a"), uid("b")
    await join(session, a)
    await store.run(lambda e: turns._set_state(e, a, "interrupted"))
    _, busy, wait_for, cancelled = await join(session, b, "interrupt")
    assert (busy, wait_for, cancelled) == (None, None, [a])
    assert await holders(session) == [(b, "running")]


async def test_a_resume_takes_the_place_of_the_run_it_resumes(db: str) -> None:
    session, a, b, resumed = uid("s"), uid("a"), uid("b"), uid("resumed")
    place, *_ = await join(session, a)
    await store.run(lambda e: turns._set_state(e, a, "interrupted"))
    behind, *_, = await join(session, b)  # arrives while `a` waits for its approval: waits behind it
    assert (await join(session, resumed, resume=True))[0] == place  # ahead of `b`, as `a` was
    assert await holders(session) == [(resumed, "running"), (b, "running")]
    assert await engine.blocking(turns._first_unfinished, session, behind) == resumed


async def test_a_turn_left_by_a_run_that_never_started_is_dropped_once_it_is_old(db: str) -> None:
    """A turn whose workflow is not in the database: taken moments ago by a run being started (waited
    for), or left by a process that died before it started the run (dropped)."""
    session, gone, young, b = uid("s"), uid("gone"), uid("young"), uid("b")
    await join(session, gone)
    await join(session, young)
    table = store.session_turns

    def age(db: sa.Engine) -> None:
        with db.begin() as conn:
            conn.execute(sa.update(table).where(table.c.run_id == gone).values(created_at=time.time() - 2 * turns.CANCEL_GRACE_SECONDS))

    await store.run(age)
    assert (await join(session, b))[2] == young
    assert [run for run, _ in await holders(session)] == [young, b]
