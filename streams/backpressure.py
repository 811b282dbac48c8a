"""Later stages first: the worker holds its input partitions back while the stages after
the join are behind.

One consumer fetches all of a worker's topics and one loop hands the records to its agents,
so a backlog of input records crowds out the stage envelopes: on a 288k-record backlog the
join read 3,300 records/s for 90 s while scoring got 3-10 envelopes/s of its 35-39, and
decisions ran at 15% of their rate for the first minute (issue 22). Here the join reads
while the stage topics of this worker hold few envelopes not yet committed by their
stages; above `high` its input partitions are left out of fetches
(streams/patches/consumer.py) until the backlog is down to `low`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import faust
from faust.types import TP

from streams import metrics
from streams.patches.consumer import Consumer

INTERVAL_S = 0.25


@dataclass
class Gate:
    """Hysteresis between `high` and `low` envelopes behind."""

    high: int
    low: int
    held: bool = False

    def update(self, behind: int) -> bool:
        self.held = behind > (self.low if self.held else self.high)
        return self.held


def behind(
    ends: Mapping[TP, int],
    committed: Mapping[TP, int],
    tps: Iterable[TP],
    read: Mapping[TP, int | None] | None = None,
    positions: Mapping[TP, int] | None = None,
) -> int:
    """Messages on these partitions not yet committed by their consumer (a partition never
    committed counts from its start; one with no known end, as nothing).

    With the consumer's `read` offsets (last record handed to the stream) and fetch
    `positions`: what was read and not committed, plus what is not fetched yet. Offsets also
    number the transaction markers of exactly-once writers, which are never read: counted
    from the end, the ones after a partition's last record kept the input held for good
    (96 "envelopes" behind with every stage idle)."""
    total = 0
    for tp in tps:
        if tp not in ends:
            continue
        done = committed.get(tp, 0)
        last = read.get(tp) if read is not None else None
        position = positions.get(tp, -1) if positions is not None else -1
        if last is None or position < 0:
            total += max(0, ends[tp] - done)
        else:
            total += max(0, last + 1 - done) + max(0, ends[tp] - position)
    return total


def register(
    app: faust.App, inputs: Iterable[str], stages: Iterable[str], high: int, low: int
) -> None:
    """Every INTERVAL_S, hold or release this worker's partitions of `inputs` by the backlog
    on its partitions of `stages` (not while a rebalance runs: Faust pauses and seeks
    then)."""
    gate = Gate(high, low)
    input_topics, stage_topics = set(inputs), set(stages)

    @app.timer(interval=INTERVAL_S)
    async def hold_inputs() -> None:
        consumer = app.consumer
        if app.rebalancing or not isinstance(consumer, Consumer):
            return
        assigned = consumer.assignment()  # the monitor keeps partitions gone since
        stage = [tp for tp in assigned if tp.topic in stage_topics]
        waiting = behind(
            app.monitor.tp_end_offsets,
            app.monitor.tp_committed_offsets,
            stage,
            read=consumer._read_offset,
            positions={tp: consumer.known_position(tp) for tp in stage},
        )
        was_held = gate.held
        held = gate.update(waiting)
        metrics.STAGE_BACKLOG.set(waiting)
        metrics.INPUT_HELD.set(held)
        if held and not was_held:
            metrics.INPUT_HOLDS.inc()
        consumer.hold(
            frozenset(tp for tp in assigned if tp.topic in input_topics) if held else frozenset()
        )
