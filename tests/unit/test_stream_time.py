"""Stream time per partition (models/stream_time.py): outliers, backfills and mixes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from models.stream_time import WINDOW, StreamTime

NOW = 1_780_000_000.0  # the wall clock of these tests (2026)
DAY = 86_400.0
YEAR = 365 * DAY


def clock() -> StreamTime:
    return StreamTime(wall=lambda: NOW)


def feed(c: StreamTime, partition: int, times: list[float]) -> None:
    for t in times:
        c.observe(partition, t)
    c.advance()


def test_no_clock_before_a_record_and_a_first_record_stamps_its_own_time():
    c = clock()
    assert c.now(0) is None
    assert c.stamp(0, NOW - DAY) == NOW - DAY
    assert c.stamp(0, NOW + YEAR) == NOW  # never ahead of the wall clock


def test_a_far_future_record_does_not_move_the_clock():
    c = clock()
    feed(c, 0, [NOW - DAY] * 10)
    feed(c, 0, [253_402_214_400.0])  # 9999-12-31
    assert c.now(0) == NOW - DAY
    c2 = clock()
    feed(c2, 0, [253_402_214_400.0])  # alone on its partition: capped at the wall clock
    assert c2.now(0) == NOW


def test_a_backfill_keeps_its_own_time():
    c = clock()
    last_year = [NOW - YEAR + k * 60.0 for k in range(100)]
    feed(c, 0, last_year)
    assert NOW - YEAR < c.now(0) < NOW - YEAR + 100 * 60.0  # not the wall clock


def test_a_backfill_mixed_with_live_traffic_never_goes_back():
    c = clock()
    feed(c, 0, [NOW - 60.0] * WINDOW)
    live = c.now(0)
    for k in range(5):  # a backfill floods the partition afterwards
        feed(c, 0, [NOW - YEAR + k] * WINDOW)
        assert c.now(0) == live
    # and a bill the backfill writes is stamped with live stream time, not its own
    assert c.stamp(0, NOW - YEAR) == live


def test_partitions_keep_their_own_clocks():
    c = clock()
    feed(c, 0, [NOW - 60.0] * 5)
    feed(c, 1, [NOW - YEAR] * 5)
    assert c.now(0) == NOW - 60.0 and c.now(1) == NOW - YEAR


@given(st.lists(st.floats(min_value=946_684_800.0, max_value=2.6e11), min_size=1, max_size=200))
def test_monotone_never_ahead_of_the_wall_and_outlier_proof(times):
    c = clock()
    before = None
    for t in times:
        c.observe(3, t)
        c.advance()
        now = c.now(3)
        assert now is not None and now <= NOW
        assert before is None or now >= before
        before = now
    # one more record, however extreme, moves a clock whose window agrees by at most the
    # spread of its own recent records
    recent = sorted(times[-WINDOW:])
    if len(recent) >= 3:
        c.observe(3, 2.6e11)
        c.advance()
        assert c.now(3) <= max(before, min(recent[len(recent) // 2], NOW))  # type: ignore[type-var]
