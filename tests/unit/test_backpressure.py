"""streams/backpressure.py and the consumer it holds (streams/patches/consumer.py): the
input is held while the later stages are behind, and a held partition is never asked of
aiokafka, so nothing it fetched is skipped."""

from __future__ import annotations

from faust.types import TP

from streams.backpressure import Gate, behind
from streams.patches.consumer import Consumer

CONSIGNEE = [TP("app-by-consignee", p) for p in range(2)]
SHIPPER = [TP("app-by-shipper", p) for p in range(2)]
MANIFEST = [TP("parcels.manifest", p) for p in range(2)]


def test_the_gate_holds_above_high_and_lets_go_at_low() -> None:
    gate = Gate(high=160, low=80)
    seen = [gate.update(n) for n in (0, 160, 161, 120, 81, 80, 100, 170)]
    assert seen == [False, False, True, True, True, False, False, True]


def test_behind_counts_what_the_stages_have_not_committed_on_these_partitions() -> None:
    ends = {CONSIGNEE[0]: 50, CONSIGNEE[1]: 10, SHIPPER[0]: 300, SHIPPER[1]: 7}
    committed = {CONSIGNEE[0]: 40, CONSIGNEE[1]: 10, SHIPPER[0]: 100}
    assert behind(ends, committed, CONSIGNEE + SHIPPER) == 10 + 0 + 200 + 7
    # a partition that moved to another worker (still in the monitor) does not count
    assert behind(ends, committed, CONSIGNEE) == 10
    # one whose end is not known yet counts as nothing
    assert behind({}, committed, SHIPPER) == 0


def test_behind_does_not_count_transaction_markers_after_the_last_record() -> None:
    """Exactly-once: records 0-39 read and committed, then markers up to offset 49; the
    consumer's position has skipped them. Counted from the end, they held the input for
    good."""
    ends, committed = {CONSIGNEE[0]: 50}, {CONSIGNEE[0]: 40}
    assert behind(ends, committed, CONSIGNEE[:1]) == 10  # the end alone cannot tell
    assert (
        behind(
            ends, committed, CONSIGNEE[:1], read={CONSIGNEE[0]: 39}, positions={CONSIGNEE[0]: 50}
        )
        == 0
    )
    # read up to 44, not committed yet; 45-49 not fetched: both count
    assert (
        behind(
            ends, committed, CONSIGNEE[:1], read={CONSIGNEE[0]: 44}, positions={CONSIGNEE[0]: 45}
        )
        == 5 + 5
    )
    # nothing read yet (or no position): from the end, as before
    assert behind(ends, committed, CONSIGNEE[:1], read={}, positions={CONSIGNEE[0]: 45}) == 10


class Asked:
    """The aiokafka side of the consumer: records which partitions a fetch asks for."""

    def __init__(self) -> None:
        self.asked: list[set[TP] | None] = []

    async def getmany(self, active_partitions: set[TP] | None, timeout: float) -> dict:
        self.asked.append(None if active_partitions is None else set(active_partitions))
        return {}


def consumer() -> tuple[Consumer, Asked]:
    c = Consumer.__new__(Consumer)  # no app, no broker: only the fetch path is used
    thread = Asked()
    c._thread = thread  # type: ignore[assignment]
    return c, thread


async def test_held_partitions_are_left_out_of_fetches_and_come_back_when_let_go() -> None:
    c, thread = consumer()
    active = set(MANIFEST + SHIPPER)
    c.hold(frozenset(MANIFEST))
    await c._getmany(active, timeout=1.0)
    assert thread.asked[-1] == set(SHIPPER)
    assert active == set(MANIFEST + SHIPPER), "Faust's own set of active partitions changed"
    c.hold(frozenset())
    await c._getmany(active, timeout=1.0)
    assert thread.asked[-1] == active


async def test_all_partitions_held_asks_for_none_not_for_all() -> None:
    """aiokafka reads an empty set of partitions as every partition."""
    c, thread = consumer()
    c.hold(frozenset(MANIFEST))
    assert await c._getmany(set(MANIFEST), timeout=0.01) == {}
    assert thread.asked == []
