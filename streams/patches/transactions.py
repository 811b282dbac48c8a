"""Exactly-once: one transactional producer per stage task, fenced when its partitions move.

faust-streaming's TransactionManager names a producer per assigned partition but picks the
producer of a send by the *destination* partition and commits offsets by the *source*
partition, on its own timer: a record repartitioned to another partition, or a batch half
sent when the timer fires, lands in another transaction than its input offset (one SIGKILL
in a 3,000-parcel run left 2,300 duplicate decisions). Here a task is a stage and a
partition number (the join's three input topics share theirs: they are co-partitioned by
HAWB, as its bills table is), as in Kafka Streams' first exactly-once mode, which is the one
aiokafka 0.14 speaks (`send_offsets_to_transaction(offsets, group_id)`, no group metadata):
- a task's producer is started when the task's partitions are assigned; its
  `init_transactions` fences the producer of the worker that had them before, so a paused
  or partitioned-away worker can no longer commit what it read;
- a batch commits each task's outputs, table writes and input offsets in that task's
  transaction (streams/outbox.py); Faust's own offset commits do nothing.

Reading committed only also needs two fixes in Faust's table recovery (`ReadCommittedThread`,
`CommittedRecovery`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.structs import RecordMetadata
from faust.tables.recovery import Recovery as FaustRecovery
from faust.transport.consumer import TransactionManager as FaustTransactionManager
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, AppT

from streams.patches import written_for

log = logging.getLogger(__name__)

Send = tuple[str, int | None, bytes | None, bytes | None]  # topic, partition, key, value


class Fenced(Exception):
    """A task's partitions have moved to another worker: its batch is not this worker's."""


def stages(app: AppT) -> dict[str, str]:
    """Input topic -> the name of the agent (stage) that reads it."""
    out: dict[str, str] = {}
    for agent in app.agents.values():
        channel = agent.channel
        if isinstance(channel, faust.TopicT):
            out.update({topic: agent.name for topic in channel.topics})
    return out


def task_id(app_id: str, stage: str, partition: int) -> str:
    """The transactional id of a task: the same on every worker that runs it."""
    return f"{app_id}-{stage}-{partition}"


class TransactionManager(FaustTransactionManager):
    """The worker's transactional producers, one per task it runs (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.producers: dict[str, AIOKafkaProducer] = {}
        self._stages: dict[str, str] | None = None

    def _task_ids(self, tps: set[TP]) -> set[str]:
        if self._stages is None:  # the agents exist once the worker assigns partitions
            self._stages = stages(self.app)
        named = self._stages
        return {
            task_id(self.app.conf.id, named[tp.topic], tp.partition)
            for tp in tps
            if tp.topic in named
        }

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Nothing is pending between batches: each one ends with its commits."""

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP]
    ) -> None:
        """A new producer for every task assigned, kept ones included: a worker paused past
        its session gets its old partitions back in the same call, while another worker
        has fenced its producers meanwhile."""
        await asyncio.gather(*(self._stop(tid) for tid in list(self.producers)))
        await asyncio.gather(*(self._start(tid) for tid in sorted(self._task_ids(assigned))))

    async def _start(self, tid: str) -> None:
        # Faust's producer settings (brokers, credentials, acks=all, idempotence)
        producer = self.app.producer._new_producer(transactional_id=tid)  # type: ignore[attr-defined]
        await producer.start()  # init_transactions: the task's previous producer is fenced
        self.producers[tid] = producer

    async def _stop(self, tid: str) -> None:
        producer = self.producers.pop(tid, None)
        if producer is not None:
            try:
                await producer.stop()
            except Exception:  # a fenced producer may refuse to close cleanly; it is gone
                log.warning("transactional producer %s did not stop cleanly", tid, exc_info=True)

    async def _rejoin(self) -> None:
        """A task fenced while the consumer still reads its partitions: the batch is
        dropped, so the worker rejoins its group, which sends every partition back to its
        committed offset and gives the worker new producers for what it is assigned."""
        await self.app.consumer._thread.rejoin()  # type: ignore[attr-defined]

    async def on_stop(self) -> None:
        await asyncio.gather(*(self._stop(tid) for tid in list(self.producers)))

    async def commit(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Faust's commit through its manager, which the worker's consumer never calls under
        exactly-once (TransactionalConsumer.commit): each batch commits its offsets with
        its outputs, in its tasks' transactions. Kept so that no path reaches Faust's."""
        return True

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        """Faust's route for `topic.send` inside the worker: every output of a stage goes
        through its batch's transactions instead (streams/outbox.py)."""
        raise RuntimeError("exactly-once: a worker's outputs go through the batch's Outbox")

    async def run(
        self, tid: str, sends: Sequence[Send], offsets: Mapping[TP, int]
    ) -> list[RecordMetadata]:
        """Produce `sends` and commit `offsets` (next offset to read, per input partition)
        in one transaction of task `tid`; the sends' metadata once committed.

        Raises Fenced if the task is no longer this worker's (revoked, or fenced by the
        worker that has it now); anything else is aborted and raised.
        """
        if tid not in self.producers:  # revoked, or fenced before
            raise Fenced(tid)
        txn: AIOKafkaProducer = self.producers[tid]
        try:
            await txn.begin_transaction()
            futures = [
                await txn.send(topic, value, key=key, partition=partition)
                for topic, partition, key, value in sends
            ]
            metadata = list(await asyncio.gather(*futures, return_exceptions=True))
            failed = [md for md in metadata if isinstance(md, BaseException)]
            if failed:
                raise failed[0]
            if offsets:
                await txn.send_offsets_to_transaction(
                    {TopicPartition(tp.topic, tp.partition): o for tp, o in offsets.items()},
                    self.app.conf.id,
                )
            await txn.commit_transaction()
            if offsets:
                cast(TransactionalConsumer, self.consumer).committed_in_transaction(offsets)
            return metadata
        except Exception as exc:
            still_ours = self.producers.get(tid) is txn
            if not still_ours:  # a rebalance replaced or stopped it meanwhile
                raise Fenced(tid) from exc
            if isinstance(exc, ProducerFenced):  # another worker has the task now
                await self._stop(tid)
                await self._rejoin()
                raise Fenced(tid) from exc
            try:
                await txn.abort_transaction()
            except Exception:
                log.warning("could not abort the transaction of %s", tid, exc_info=True)
            raise


class TransactionalConsumer(driver.Consumer):
    """Faust's offset bookkeeping follows the batches' transactions.

    Faust commits what its acks say on a timer. With transactions, offsets also number the
    commit markers, which are never delivered: its gap tracking misses some (the ones before
    a partition's first record read, those after an offset 0), and then it never commits
    that partition again, keeps every later ack in memory, and shows the partition ever
    further behind (the stage backlog read 7,000 envelopes with every stage idle, and held
    the input). Under exactly-once its timed commit does nothing; each transaction's offsets
    are what is committed, acks below them are dropped, and the monitor shows them."""

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        if self.in_transaction:
            return False  # committed by each batch's transactions
        return await super().commit(topics, start_new_transaction=start_new_transaction)

    def committed_in_transaction(self, offsets: Mapping[TP, int]) -> None:
        """A transaction committed `offsets` (next offset to read, per partition)."""
        for tp, offset in offsets.items():
            if (self._committed_offset[tp] or 0) >= offset:
                continue
            self._committed_offset[tp] = offset
            acked = self._acked[tp]
            done = [o for o in acked if o < offset]
            if done:
                acked[:] = [o for o in acked if o >= offset]
                self._acked_index[tp].difference_update(done)
            self._gap[tp].chop(0, offset)
            self.app.monitor.on_tp_commit({tp: offset})


class ReadCommittedThread(driver.AIOKafkaConsumerThread):
    """Changelog highwaters for a read-committed consumer from the broker, the last offset
    fetched of each partition, and a way to rejoin the group.

    Faust reads highwaters from aiokafka's `last_stable_offset`, which is known only once
    the partition has been fetched: before that it is None, which Faust's recovery takes for
    an empty changelog, and a restarted worker started with empty tables. `end_offsets`
    asks the broker, which answers the last stable offset to a read-committed consumer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetched: dict[TP, int] = {}  # partition -> offset of its last record fetched

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        if not self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        consumer = self._ensure_consumer()
        return dict(await consumer.end_offsets(partitions))

    async def _fetch_records(
        self,
        consumer: AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> driver.RecordMap:
        records = await super()._fetch_records(consumer, active_partitions, timeout, max_records)
        for tp, messages in records.items():
            if messages:
                self.fetched[tp] = messages[-1].offset
        return records

    async def rejoin(self) -> None:
        await self.call_thread(self._request_rejoin)

    async def _request_rejoin(self) -> None:  # in the consumer's own thread and loop
        self._ensure_consumer()._coordinator.request_rejoin()


class CommittedRecovery(FaustRecovery):
    """A changelog written in transactions ends with a commit marker, which is never
    delivered: Faust waits for an event at that offset, and only after two 5-second
    timeouts looks at the consumer's position. A partition is recovered once its position
    has passed its highwater (nothing but markers left) and every record fetched from it
    has been applied."""

    def active_remaining(self) -> Counter[TP]:
        remaining = super().active_remaining()
        if not self.app.in_transaction:
            return remaining
        thread = self.app.consumer._thread  # type: ignore[attr-defined]
        for tp, left in remaining.items():
            if (
                left > 0
                and thread.known_position(tp) > self.active_highwaters[tp]
                and self.active_offsets[tp] >= thread.fetched.get(tp, -1)
            ):
                remaining[tp] = 0
        return remaining


written_for("faust-streaming", "0.15.3")
written_for("aiokafka", "0.14.0")
