"""Exactly-once: one transactional producer per stage and worker, fenced by the group.

faust-streaming's TransactionManager names a producer per assigned partition but picks the
producer of a send by the *destination* partition and commits offsets by the *source*
partition, on its own timer: a record repartitioned to another partition, or a batch half
sent when the timer fires, lands in another transaction than its input offset (one SIGKILL
in a 3,000-parcel run left 2,300 duplicate decisions). Here each stage (the agent that
reads a topic; the join's three input topics are one stage) has one producer per worker,
and a stage's batch is one transaction, as in Kafka Streams' second exactly-once mode:
- a batch commits its outputs, table writes and input offsets in its stage's transaction
  (streams/outbox.py); Faust's own offset commits do nothing;
- the offsets go with the group generation the worker had when its producers started
  (streams/patches/txn_offsets.py): a paused or partitioned-away worker whose partitions
  have moved can no longer commit what it read, and its batch is dropped;
- every rebalance starts new producers (a batch read before it is dropped, not committed
  late), and before the partitions are read, waits until no open transaction of another
  worker still holds their offsets;
- a producer's transactional id is the stage's and the worker's own, kept in its data
  directory, so a worker restarted after a crash aborts what it left open at once; a
  worker that does not come back has it aborted by the broker after the transaction
  timeout (10 s).

Reading committed only also needs two fixes in Faust's table recovery (`ReadCommittedThread`,
`CommittedRecovery`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.structs import RecordMetadata
from faust.tables.recovery import Recovery as FaustRecovery
from faust.transport.consumer import TransactionManager as FaustTransactionManager
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, AppT

from streams.patches import written_for
from streams.patches.txn_offsets import (
    TRANSACTION_TIMEOUT_MS,
    GroupFenced,
    GroupMetadata,
    GroupProducer,
    wait_stable,
)
from streams.produce import Send, produce

log = logging.getLogger(__name__)

# longest wait for another worker's open transaction on partitions just assigned: the
# broker aborts it after the transaction timeout, and checks for that every 10 s
STABLE_WAIT_S = TRANSACTION_TIMEOUT_MS / 1000 + 15.0


class Fenced(Exception):
    """A stage's batch is no longer this worker's to commit: its partitions moved, or a
    rebalance came between its reading and its commit."""


def stages(app: AppT) -> dict[str, str]:
    """Input topic -> the name of the agent (stage) that reads it."""
    out: dict[str, str] = {}
    for agent in app.agents.values():
        channel = agent.channel
        if isinstance(channel, faust.TopicT):
            out.update({topic: agent.name for topic in channel.topics})
    return out


def instance_id(appdir: Path) -> str:
    """This worker's own name in transactional ids: made once, kept in its data directory,
    so that the worker restarted on it fences what it left open."""
    path = appdir / "transactional-instance"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex[:12]
        path.write_text(name + "\n")
        return name


def task_id(app_id: str, stage: str, instance: str) -> str:
    """The transactional id of a stage's producer on one worker."""
    return f"{app_id}-{stage}-{instance}"


class TransactionManager(FaustTransactionManager):
    """The worker's transactional producers, one per stage it runs (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.producers: dict[str, GroupProducer] = {}
        self.group: GroupMetadata | None = None
        self._stages: dict[str, str] | None = None
        self._instance: str | None = None

    def _stage_names(self, tps: set[TP]) -> set[str]:
        if self._stages is None:  # the agents exist once the worker assigns partitions
            self._stages = stages(self.app)
        return {self._stages[tp.topic] for tp in tps if tp.topic in self._stages}

    def _tid(self, stage: str) -> str:
        if self._instance is None:
            self._instance = instance_id(Path(self.app.conf.appdir))
        return task_id(self.app.conf.id, stage, self._instance)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Nothing is pending between batches: each one ends with its commits."""

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP]
    ) -> None:
        """New producers for the stages assigned, kept ones included (a batch read before
        the rebalance must not commit after it), with the group's new generation; then
        wait until no other worker's open transaction holds the partitions' offsets."""
        await asyncio.gather(*(self._stop(stage) for stage in list(self.producers)))
        self.group = self._group_metadata()
        names = sorted(self._stage_names(assigned))
        await asyncio.gather(*(self._start(stage) for stage in names))
        if names:
            named = self._stages or {}
            read = [TopicPartition(tp.topic, tp.partition) for tp in assigned if tp.topic in named]
            producer = self.producers[names[0]]
            held = await wait_stable(producer.client, self.app.conf.id, read, STABLE_WAIT_S)
            if held:
                log.warning(
                    "offsets of %s still held by an open transaction after %.0f s; reading on",
                    held,
                    STABLE_WAIT_S,
                )

    def _group_metadata(self) -> GroupMetadata:
        coordinator = self.app.consumer._thread._ensure_consumer()._coordinator  # type: ignore[attr-defined]
        return GroupMetadata(
            self.app.conf.id,
            coordinator.generation,
            coordinator.member_id,
            coordinator._group_instance_id,
        )

    async def _start(self, stage: str) -> None:
        # Faust's producer settings (brokers, credentials, acks=all, idempotence); its
        # transport's producer type is GroupProducer (streams/patches/consumer.py)
        producer = self.app.producer._new_producer(transactional_id=self._tid(stage))  # type: ignore[attr-defined]
        await producer.start()  # init_transactions: what this worker left open is aborted
        self.producers[stage] = producer

    async def _stop(self, stage: str) -> None:
        producer = self.producers.pop(stage, None)
        if producer is not None:
            try:
                await producer.stop()
            except Exception:  # a fenced producer may refuse to close cleanly; it is gone
                log.warning("producer of %s did not stop cleanly", stage, exc_info=True)

    async def _rejoin(self) -> None:
        """A batch fenced while the consumer still reads its partitions: the batch is
        dropped, so the worker rejoins its group, which sends every partition back to its
        committed offset and gives the worker new producers for what it is assigned."""
        await self.app.consumer._thread.rejoin()  # type: ignore[attr-defined]

    async def on_stop(self) -> None:
        await asyncio.gather(*(self._stop(stage) for stage in list(self.producers)))

    async def commit(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Faust's commit through its manager, which the worker's consumer never calls under
        exactly-once (TransactionalConsumer.commit): each batch commits its offsets with
        its outputs, in its stage's transaction. Kept so that no path reaches Faust's."""
        return True

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        """Faust's route for `topic.send` inside the worker: every output of a stage goes
        through its batch's transaction instead (streams/outbox.py)."""
        raise RuntimeError("exactly-once: a worker's outputs go through the batch's Outbox")

    async def run(
        self, stage: str, sends: Sequence[Send], offsets: Mapping[TP, int]
    ) -> list[RecordMetadata]:
        """Produce `sends` and commit `offsets` (next offset to read, per input partition)
        in one transaction of `stage`'s producer; the sends' metadata once committed.

        Raises Fenced if the batch is no longer this worker's (a rebalance since its
        producer started, or the group moved on without it); anything else is aborted
        and raised.
        """
        txn = self.producers.get(stage)
        group = self.group
        if txn is None or group is None:  # revoked, or fenced before
            raise Fenced(stage)
        try:
            await txn.begin_transaction()
            acknowledged = await produce(txn, sends)
            committing = []
            if offsets:  # with the sends in flight: the broker adds the group meanwhile
                tps = {TopicPartition(tp.topic, tp.partition): o for tp, o in offsets.items()}
                committing.append(txn.send_offsets_to_transaction(tps, group))
            produced, *committed = await asyncio.gather(
                acknowledged, *committing, return_exceptions=True
            )
            failed = [r for r in (produced, *committed) if isinstance(r, BaseException)]
            if failed:
                raise failed[0]
            await txn.commit_transaction()
            if offsets:
                cast(TransactionalConsumer, self.consumer).committed_in_transaction(offsets)
            return cast(list[RecordMetadata], produced)
        except Exception as exc:
            still_ours = self.producers.get(stage) is txn
            if not still_ours:  # a rebalance replaced or stopped it meanwhile
                raise Fenced(stage) from exc
            if isinstance(exc, ProducerFenced | GroupFenced):  # the group moved on
                log.warning("%s: %s; the batch is dropped and the worker rejoins", stage, exc)
                if isinstance(exc, GroupFenced):  # the producer itself can still abort
                    await self._abort(stage, txn)
                await self._stop(stage)
                await self._rejoin()
                raise Fenced(stage) from exc
            await self._abort(stage, txn)
            raise

    async def _abort(self, stage: str, txn: GroupProducer) -> None:
        try:
            await txn.abort_transaction()
        except Exception:
            log.warning("could not abort the transaction of %s", stage, exc_info=True)


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
