"""The DBOS boundary's start-up check: every private DBOS name Timestep relies on is looked up before
launch, and one that a DBOS release moved is named, with what it is for and what to install."""

from __future__ import annotations

import asyncio
import threading
import time

import dbos._queue
import dbos._sys_db
import pytest

from timestep.durable.engine import hooks
from timestep.errors import ConfigurationError


def test_the_installed_dbos_has_every_hook_and_the_log_wording() -> None:
    assert hooks.missing() == []
    assert hooks.reworded() == []
    hooks.check()


def test_a_hook_a_dbos_release_removed_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a DBOS release that renamed these would look like to Timestep.
    monkeypatch.delattr(dbos._queue, "queue_worker_thread")
    monkeypatch.delattr(dbos._sys_db.SystemDatabase, "_is_latest_version")
    with pytest.raises(ConfigurationError) as refused:
        hooks.check()
    text = str(refused.value)
    assert "dbos._queue.queue_worker_thread (waking a queue's worker when this process enqueues)" in text
    assert "dbos._sys_db.SystemDatabase._is_latest_version (caching the application-version check of each poll)" in text
    assert f"written for DBOS {hooks.TESTED_DBOS}" in text and "pip install 'dbos~=3.4.0'" in text


def test_an_attribute_set_in_a_constructor_is_found_and_one_that_is_not_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queue._worker_concurrency exists only on instances: found in the constructor's source."""
    assert hooks._attribute(dbos._queue.Queue, "_worker_concurrency") is dbos._queue.Queue
    with pytest.raises(AttributeError):
        hooks._attribute(dbos._queue.Queue, "_no_such_field")


def test_a_log_line_dbos_reworded_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "WORDING", hooks.WORDING + (("dbos._core", "words DBOS never wrote", "a test"),))
    assert hooks.reworded() == ["dbos._core: 'words DBOS never wrote' (a test)"]


async def test_an_idle_queue_is_checked_less_and_less_often(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """While no run waits on a queue anywhere, its worker's checks back off from the polling interval to
    IDLE_POLL_SECONDS: over 2 s at a 0.05 s interval, at most a dozen checks, not forty (an idle
    `timestep up` spent 4.2% of a core checking every 0.05 s, 1.5% with the back-off)."""
    checks: list[float] = []
    real = hooks._queued_anywhere

    def counted(queue: str, stored_policy: bool = False) -> bool:
        if queue == "no-run-waits-here":  # the launched engine's own queues check too
            checks.append(time.monotonic())
        return real(queue, stored_policy)

    monkeypatch.setattr(hooks, "_queued_anywhere", counted)
    stop = threading.Event()
    waker = hooks._Waker(stop, "no-run-waits-here")
    waiting = threading.Thread(target=waker.wait, args=(0.05,))
    waiting.start()
    await asyncio.sleep(2.0)
    stop.set()
    waiting.join(5)
    assert not waiting.is_alive()
    assert 1 <= len(checks) <= 12, len(checks)
