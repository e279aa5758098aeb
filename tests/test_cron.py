"""Cron expressions of schedules: when the next tick is, which crons are refused before anything
is stored, and the run id one tick gets in every process."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from croniter import CroniterBadDateError

from subjects.ids import is_valid_run_id
from timestep import ValidationError
from timestep.durable.runs import tick_run_id
from timestep.durable.schedules import check_crontab, next_time

AT = datetime(2026, 3, 14, 15, 9, 26, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("crontab", "after", "then"),
    [
        ("*/5 * * * *", AT, datetime(2026, 3, 14, 15, 10, tzinfo=timezone.utc)),
        ("0 */6 * * *", AT, datetime(2026, 3, 14, 18, 0, tzinfo=timezone.utc)),
        ("*/10 * * * * *", AT, datetime(2026, 3, 14, 15, 9, 30, tzinfo=timezone.utc)),  # 6 fields: seconds first
        ("* * * * * *", AT, datetime(2026, 3, 14, 15, 9, 27, tzinfo=timezone.utc)),
        ("0 0 L * *", AT, datetime(2026, 3, 31, 0, 0, tzinfo=timezone.utc)),  # the month's last day
        ("0 0 29 2 *", AT, datetime(2028, 2, 29, 0, 0, tzinfo=timezone.utc)),  # the next leap day
    ],
)
def test_the_next_tick_is_the_first_matching_time_after_now(crontab: str, after: datetime, then: datetime) -> None:
    assert next_time(crontab, after) == then


def test_a_tick_that_just_fired_is_not_due_again() -> None:
    due = datetime(2026, 3, 14, 15, 10, tzinfo=timezone.utc)
    assert next_time("*/5 * * * *", due) == datetime(2026, 3, 14, 15, 15, tzinfo=timezone.utc)


def test_a_cron_that_never_fires_has_no_next_tick() -> None:
    with pytest.raises(CroniterBadDateError):
        next_time("0 0 30 2 *", AT)


@pytest.mark.parametrize(("crontab", "kept"), [("*/5 * * * *", "*/5 * * * *"), ("  0   */6 * * * ", "0 */6 * * *"), ("*/10 * * * * *", "*/10 * * * * *")])
def test_a_good_cron_is_kept_with_its_fields_single_spaced(crontab: str, kept: str) -> None:
    assert check_crontab(crontab) == kept


@pytest.mark.parametrize(
    ("crontab", "says"),
    [
        (None, "None is not a string"),
        ("* * *", "has 3 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("every minute", "has 2 fields"),
        ("61 * * * *", "is not a valid cron expression"),
        ("* * * 13 *", "is not a valid cron expression"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6 *", "never fires"),
    ],
)
def test_a_bad_cron_is_refused_naming_the_field_and_why(crontab: object, says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        check_crontab(crontab)
    assert refused.value.field == "crontab"
    assert says in str(refused.value), refused.value


def test_one_tick_is_one_run_id_in_every_process_and_the_next_tick_another() -> None:
    tick = datetime(2026, 3, 14, 15, 10, tzinfo=timezone.utc)
    assert tick_run_id("inbox-check", tick) == tick_run_id("inbox-check", tick) == "inbox-check-20260314T151000"
    assert tick_run_id("inbox-check", next_time("* * * * * *", tick)) != tick_run_id("inbox-check", tick)
    longest = tick_run_id("x" * 100, tick)
    assert is_valid_run_id(longest) and len(longest) <= 128
