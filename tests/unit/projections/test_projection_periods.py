from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from projections.periods import Period, expected_progress

Q1 = Period(date(2026, 1, 1), date(2026, 3, 31))


def test_period_bounds_cover_start_midnight_to_day_after_end() -> None:
    assert Q1.starts_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert Q1.ends_at == datetime(2026, 4, 1, tzinfo=UTC)
    assert Q1.iso == "2026-01-01/2026-03-31"


def test_contains_is_half_open() -> None:
    assert Q1.contains(datetime(2026, 1, 1, tzinfo=UTC))
    assert Q1.contains(datetime(2026, 3, 31, 23, 59, 59, 999999, tzinfo=UTC))
    assert not Q1.contains(datetime(2026, 4, 1, tzinfo=UTC))
    assert not Q1.contains(datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC))


def test_contains_compares_instants_not_wall_clock() -> None:
    # 2026-04-01 00:30 in +01:00 is 2026-03-31 23:30Z: inside.
    plus_one = timezone(timedelta(hours=1))
    assert Q1.contains(datetime(2026, 4, 1, 0, 30, tzinfo=plus_one))


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Q1.contains(datetime(2026, 2, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        expected_progress(Q1, datetime(2026, 2, 1))


def test_start_after_end_is_rejected() -> None:
    with pytest.raises(ValueError, match="after its end"):
        Period(date(2026, 2, 1), date(2026, 1, 31))


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (datetime(2025, 12, 1, tzinfo=UTC), 0.0),
        (datetime(2026, 1, 1, tzinfo=UTC), 0.0),
        (datetime(2026, 1, 10, tzinfo=UTC), 9 / 90),
        (datetime(2026, 2, 15, tzinfo=UTC), 0.5),
        (datetime(2026, 4, 1, tzinfo=UTC), 1.0),
        (datetime(2027, 1, 1, tzinfo=UTC), 1.0),
    ],
)
def test_expected_progress_is_linear_and_clamped(at: datetime, expected: float) -> None:
    assert expected_progress(Q1, at) == expected


def test_one_day_period_lasts_a_full_day() -> None:
    day = Period(date(2026, 2, 28), date(2026, 2, 28))
    assert expected_progress(day, datetime(2026, 2, 28, 12, tzinfo=UTC)) == 0.5
    assert day.ends_at == datetime(2026, 3, 1, tzinfo=UTC)
