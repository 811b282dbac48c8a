"""The worker's state: Faust tables for bills, consignees, shippers and filers.

Each table is changelog-backed (state survives restarts and moves with its partitions) and
co-partitioned with the stream that updates it. Faust finds a key's partition from the
*current event*, which `stream.take_events` does not set per record (faust-streaming issue
#497), so `in_event` sets it for each record of a batch: every read and write then goes to
that record's own partition, store and changelog.

Faust produces one changelog message per write through its producer buffer, one message
at a time, and stalls the stream when that buffer passes 100 messages: the worker's top
cost in profiles. `BatchedTable` keeps the writes of a batch and produces them in one go
when the batch ends (streams/outbox.py): under at-least-once `flush_changelog()` before
the batch's outputs and again after what the stage remembers of them; under exactly-once
in the batch's transaction. The local store gets them only then, in one write batch per
partition (`apply`).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import faust
from aiokafka.structs import RecordMetadata
from faust.serializers.codecs import dumps
from faust.streams import _current_event
from faust.types import TP, EventT

from models.join import expired, partition_of
from models.stream_time import StreamTime
from streams import metrics
from streams.produce import Send, of_app, produce
from streams.settings import Settings

log = logging.getLogger(__name__)

Write = tuple[int | None, Any]  # a key's partition, and its value or None for a delete


@dataclass(frozen=True)
class Tables:
    bills: BatchedTable  # HAWB -> first-seen manifest and entry, revision, partition
    consignees: BatchedTable  # normalised address -> consignee history
    shippers: BatchedTable  # normalised shipper key -> shipper history
    filers: BatchedTable  # filer code -> filer state (its owner's; every worker reads the
    # scorecards it publishes, streams/filers.py)


class BatchedTable(faust.Table):
    """A table whose writes of a batch are kept aside until `flush_changelog`: one
    changelog message per key written (its last value; the changelog is compacted), then,
    once the broker has them, the local store.

    Faust writes the local store at once. A worker killed between a write and the batch's
    sends left its store ahead of what the broker had: the next worker on that data dir read
    a bill that said its first record had been forwarded when it never was, and skipped the
    replay (244 of 23,000 records without a decision after three SIGKILLs). Here the store
    only gets what the changelog already has, so a restart's store is never ahead of the
    broker; reads in the batch see its own writes."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # key -> (partition, value or None for a delete); Faust types the partition
        # optional, but a write inside an event (in_event) always has one
        self._pending: dict[str, Write] = {}
        self.reads = 0  # counted here and reported per batch: Faust's per-key sensor
        # calls cost more than the lookups themselves

    def get(self, key: str, default: Any = None) -> Any:
        """The batch's own write, else one store lookup (Faust's mapping path does two,
        plus a sensor call)."""
        self.reads += 1
        pending = self._pending.get(key)
        if pending is not None:
            return default if pending[1] is None else pending[1]
        return self.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __setitem__(self, key: str, value: Any) -> None:
        self._pending[key] = (self.partition_for_key(key), value)

    def __delitem__(self, key: str) -> None:
        self._pending[key] = (self.partition_for_key(key), None)

    def take_pending(self) -> dict[str, Write]:
        """The batch's writes, handed over to be produced (and counted); none kept."""
        pending, self._pending = self._pending, {}
        metrics.count_table_operations(self.name, self.reads, len(pending))
        self.reads = 0
        return pending

    def changelog(self, key: str, write: Write) -> Send:
        """The changelog message of one write: key, and value or None for a delete."""
        partition, value = write
        return (
            self.changelog_topic.get_topic_name(),
            partition,
            dumps(self.key_serializer, key),
            None if value is None else dumps(self.value_serializer, value),
        )

    def apply(
        self,
        writes: Mapping[str, Write],
        sent: Sequence[Send],
        produced: Sequence[RecordMetadata],
    ) -> None:
        """Once the broker has them: `writes`, sent as the changelog messages `sent`
        (`changelog`, in the same order) and acknowledged as `produced`, to the local store
        as Faust's recovery applies a changelog. The RocksDB store writes each partition's
        messages in one write batch, with no second encoding of their values, and keeps
        each partition's newest offset as what a restart can skip."""
        self.data.apply_changelog_batch(
            cast(
                list[EventT],  # the two attributes of an event Faust's stores read
                [
                    Acknowledged(key, value, Message(md, sent_key, sent_value))
                    for (key, (_, value)), (_, _, sent_key, sent_value), md in zip(
                        writes.items(), sent, produced, strict=True
                    )
                ],
            ),
            to_key=self._to_key,
            to_value=self._to_value,
        )

    async def flush_changelog(self) -> int:
        """Produce the pending writes and wait for the broker; then write them to the store
        (at-least-once; under exactly-once they go in the batch's transactions instead,
        streams/outbox.py)."""
        pending = self.take_pending()
        if not pending:
            return 0
        sent = [self.changelog(key, write) for key, write in pending.items()]
        acknowledged = await produce(of_app(self.app), sent)
        self.apply(pending, sent, await acknowledged)
        return len(pending)


class Message:
    """An acknowledged changelog message, as a Faust store applies one in recovery."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, md: RecordMetadata, key: bytes | None, value: bytes | None) -> None:
        self.tp, self.partition, self.offset = TP(md.topic, md.partition), md.partition, md.offset
        self.key, self.value = key, value


class Acknowledged:
    """The event of an acknowledged changelog message: its key and value, decoded."""

    __slots__ = ("key", "message", "value")

    def __init__(self, key: str, value: Any, message: Message) -> None:
        self.key, self.value, self.message = key, value, message


# Per partition store (4 tables x partitions of them per worker). Faust's defaults (64 MiB x 3
# memtables and a 2 GiB block cache, each) let one worker grow to 2.7 GiB RSS over a
# million bills; these bound the stores to about 16 MiB each.
ROCKSDB = {
    "write_buffer_size": 4 * 2**20,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 * 2**20,
}


def define(app: faust.App, s: Settings) -> Tables:
    schema: faust.Schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")

    def table(name: str, help_: str) -> BatchedTable:
        # `add` returns the table it is given, typed as Faust's base collection
        return app.tables.add(  # type: ignore[return-value]
            BatchedTable(
                app,
                name=name,
                default=None,
                beacon=app.tables.beacon,
                partitions=s.partitions,
                schema=schema,
                help=help_,
                options=dict(ROCKSDB),  # a copy: Faust's store pops keys from it
            )
        )

    return Tables(
        bills=table("bills", "first-seen manifest and entry per HAWB"),
        consignees=table("consignees", "history per delivery address"),
        shippers=table("shippers", "history per normalised shipper"),
        filers=table("filers", "compliance state per filer code"),
    )


@contextmanager
def in_event(event: Any) -> Iterator[None]:
    """Make `event` the current event, so table access uses its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class PartitionEvent:
    """A stand-in event for table work outside a stream (the expiry sweep).

    Faust reads the partition and checks it against the table's source topic.
    """

    def __init__(self, partition: int, topic: str) -> None:
        self.message = SimpleNamespace(partition=partition, topic=topic)


def sweep_bills(bills: faust.Table, ttl_s: float, clock: StreamTime, source_topic: str) -> int:
    """Forget bills not written for `ttl_s` of their partition's stream time, each in its
    own partition; returns how many. A partition with no stream time yet keeps its bills.
    """
    stale = []
    for key, bill in list(bills.items()):
        now = clock.now(partition_of(bill)) if bill else None
        if now is not None and expired(bill, now, ttl_s):
            stale.append((key, partition_of(bill)))
    for key, partition in stale:
        ev = PartitionEvent(partition, source_topic)
        with in_event(ev):
            del bills[key]
    if stale:
        log.info("expired %d bills older than %.0f days", len(stale), ttl_s / 86400)
    return len(stale)
