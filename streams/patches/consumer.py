"""A consumer that can hold partitions back without losing what it already fetched.

The worker's three stages share one consumer, and one loop hands fetched records to the
agents in turn. With a backlog on the input topics their records fill the fetches and the
join stage's queue, and the stages after it get their envelopes only as fast as the join
frees room (issue 22: 378 decisions in 2.5 minutes while the join read 78,468 records).
streams/backpressure.py holds the input partitions back while the later stages are behind.

Faust's own way to stop fetching a partition, `pause_partitions`, removes it from the set
of active partitions, which its fetch loop also reads while handing out records fetched
before: the rest of a fetch of a partition paused then is skipped after aiokafka has moved
past it, and later taken for a gap and committed unprocessed. Held partitions here are
only left out of the partitions asked of aiokafka (`_getmany`): their records stay in
aiokafka's buffer, its position does not move, and they come once the hold is lifted.
Installed as the Consumer of the app's transport (streams/patches/app.py).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, cast

import faust
from aiokafka import AIOKafkaProducer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from faust.types.transports import ConductorT, ConsumerT, ProducerT, TransactionManagerT, TransportT

from streams.patches import written_for
from streams.patches.conductor import Conductor
from streams.patches.drain import EagerDrain
from streams.patches.rebalance import ConsumerThread as RebalancingThread
from streams.patches.rebalance import RebalancingConsumer
from streams.patches.transactions import (
    ReadCommittedThread,
    TransactionalConsumer,
    TransactionManager,
)
from streams.patches.txn_offsets import GroupProducer

IDLE_S = 0.05  # a fetch with every active partition held waits this long, then returns empty


class HoldingConsumer(driver.Consumer):
    held: frozenset[TP] = frozenset()

    def hold(self, tps: frozenset[TP]) -> None:
        """Leave these partitions out of fetches from now on (empty: fetch them all)."""
        self.held = tps

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> driver.RecordMap:
        held = self.held
        if held and active_partitions:
            asked = active_partitions - held
            if not asked:  # aiokafka reads an empty set of partitions as all of them
                await asyncio.sleep(min(timeout, IDLE_S))
                return {}
            return await super()._getmany(asked, timeout)
        return await super()._getmany(active_partitions, timeout)


class ConsumerThread(RebalancingThread, ReadCommittedThread):
    """rebalance.py's seeks, stall checks and positions; transactions.py's changelog
    highwaters and fetched offsets."""


class Consumer(HoldingConsumer, RebalancingConsumer, EagerDrain, TransactionalConsumer):
    """The worker's consumer: partitions can be held back, a rebalance neither loses nor
    crashes (rebalance.py), records are handed to the streams eagerly (drain.py), and
    under exactly-once, offsets are committed by the batches' transactions and recovery
    knows its changelogs' ends (transactions.py)."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def known_position(self, tp: TP) -> int:
        """Where the next fetch of `tp` starts, without waiting (-1 while unknown)."""
        return cast(ConsumerThread, self._thread).known_position(tp)


class Producer(driver.Producer):
    """Faust's producer, whose aiokafka producers can commit offsets with the group's
    generation (txn_offsets.py): the transactional ones of transactions.py."""

    @property
    def _producer_type(self) -> type[GroupProducer]:
        return GroupProducer

    def aiokafka_producer(self) -> AIOKafkaProducer:
        """The started aiokafka producer underneath, which a batch's sends go to in record
        batches (streams/produce.py)."""
        return self._ensure_producer()


class Transport(driver.Transport):
    Conductor: ClassVar[type[ConductorT]] = Conductor  # one stream per partition: conductor.py
    Consumer: ClassVar[type[ConsumerT]] = Consumer
    Producer: ClassVar[type[ProducerT]] = Producer
    # one transactional producer per stage (transactions.py), under exactly-once
    TransactionManager: ClassVar[type[TransactionManagerT]] = TransactionManager


class HoldingApp(faust.App):
    """An app whose transport is the one above (App._new_transport is Faust's hook)."""

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)


written_for("faust-streaming", "0.15.3")
