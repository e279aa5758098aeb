"""A queued run's priority: lower runs first, a run given none runs after every prioritised run
(DBOS itself would run it first), and a value outside the stored range is refused before anything
is written, naming the field, on the library's way in as on the bus's."""

from __future__ import annotations

import pytest

from timestep import ValidationError
from timestep.durable.admission import run_request
from timestep.durable.queues import LOWEST_PRIORITY, stored_priority


@pytest.mark.parametrize("priority", [1, 2, 1000, 2**31 - 2])
def test_a_whole_number_in_range_is_stored_as_given(priority: int) -> None:
    assert stored_priority(run_request("assistant", "Hi", queue="q", priority=priority).priority) == priority


def test_a_run_without_priority_runs_after_every_prioritised_run() -> None:
    unset = stored_priority(run_request("assistant", "Hi", queue="q").priority)
    assert unset == LOWEST_PRIORITY
    assert unset > stored_priority(2**31 - 2) > stored_priority(1)


@pytest.mark.parametrize("priority", [0, -1, 2**31 - 1, 2**31, 2.5, "1", True])
def test_anything_else_is_refused_naming_the_field_and_the_range(priority: object) -> None:
    with pytest.raises(ValidationError) as refused:
        run_request("assistant", "Hi", queue="q", priority=priority)
    assert refused.value.field == "priority"
    assert str(refused.value).startswith("priority: ") and "whole number from 1 to 2147483646" in str(refused.value), refused.value
