"""Stream time per partition: what "now" means when state expires.

Not the wall clock: a backfill of last year's traffic must not expire the bills it is
joining. Not the newest event time seen either: one record dated 9999-12-31 once moved it
to the year 9999 and the next sweep erased every open bill. Here each partition has its
own clock, the lower median of its last WINDOW event times, which never goes back and never
passes the wall clock: an outlier cannot move it, a backfill moves it only as far as its
records agree, and one partition's traffic does not age another partition's state.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW = 31


class StreamTime:
    """Per-partition stream clocks, fed with event times and advanced once per batch."""

    def __init__(self, window: int = WINDOW, wall: Callable[[], float] = time.time) -> None:
        self._window = window
        self._wall = wall
        self._recent: dict[int, deque[float]] = {}
        self._now: dict[int, float] = {}
        self._dirty: set[int] = set()

    def observe(self, partition: int, event_time: float) -> None:
        recent = self._recent.get(partition)
        if recent is None:
            recent = self._recent[partition] = deque(maxlen=self._window)
        recent.append(event_time)
        self._dirty.add(partition)

    def advance(self) -> None:
        """Move the clocks of the partitions observed since the last call (per batch: a
        sort of WINDOW values per partition, not per record)."""
        wall = self._wall()
        for p in self._dirty:
            xs = sorted(self._recent[p])
            candidate = min(xs[(len(xs) - 1) // 2], wall)
            self._now[p] = max(self._now.get(p, candidate), candidate)
        self._dirty.clear()

    def now(self, partition: int) -> float | None:
        """The partition's stream time; None before it has seen a record."""
        return self._now.get(partition)

    def stamp(self, partition: int, event_time: float) -> float:
        """When state written for a record at `event_time` counts as touched: the later of
        the partition's stream time and the record's own time (never ahead of the wall
        clock). A backfilled record is as fresh as the partition; a record newer than the
        clock (whose batch has not advanced it yet) is as fresh as itself."""
        own = min(event_time, self._wall())
        now = self._now.get(partition)
        return own if now is None else max(now, own)
