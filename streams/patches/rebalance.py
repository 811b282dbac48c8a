"""A rebalance must not lose the records a worker fetched before it.

faust-streaming skips, and acknowledges, events fetched in an earlier consumer generation,
relying on a seek back to the committed offsets to fetch them again. aiokafka's
`seek_to_committed` does not seek a partition whose committed offset is none or 0, so on a
partition that has never been committed (a new group's first seconds, a new internal
topic) those records were skipped for good: two workers starting together on 8 partitions
lost 3,312 of 192,083 parcels. Seeking such partitions to their beginning, which is where
`auto_offset_reset=earliest` starts them anyway, fetches them again.

Nor must it crash the worker. Faust's stall detector (every 2.5 commit intervals) reads
each assigned partition's position, which aiokafka 0.14 asserts is known; a partition just
assigned, or just sent back to its beginning, has none until its offset is looked up, and
the assertion crashed a worker in CI. Such a partition is not stalled, just starting, so
the check skips it until it has a position.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from streams.patches import written_for


class ConsumerThread(driver.AIOKafkaConsumerThread):
    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed = await super().seek_to_committed()
        never = [tp for tp, offset in committed.items() if not offset]
        if never:
            await self.seek_to_beginning(*never)
        return committed

    def verify_event_path(self, now: float, tp: TP) -> None:
        if self.known_position(tp) < 0:
            return None  # assigned but its offset not looked up yet: nothing to verify
        return super().verify_event_path(now, tp)

    def known_position(self, tp: TP) -> int:
        """The partition's position, without waiting (-1 while it has none)."""
        subscription = self._ensure_consumer()._fetcher._subscriptions.subscription
        assignment = subscription.assignment if subscription is not None else None
        state = (
            assignment.state_value(TopicPartition(tp.topic, tp.partition)) if assignment else None
        )
        if state is None or not state.has_valid_position:
            return -1
        return int(state.position)


class RebalancingConsumer(driver.Consumer):
    """A consumer whose aiokafka thread is the one above (Faust's hook for its thread)."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


written_for("faust-streaming", "0.15.3")
written_for("aiokafka", "0.14.0")
