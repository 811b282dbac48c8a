"""What one batch of a stage sends, and the one order in which a batch ends.

At-least-once rests on that order, the same in every stage:
1. the batch's table writes (a bill's records and the revisions they got, histories) are
   flushed: changelog acknowledged by the broker, then the local store;
2. then every output of the batch (decisions, holds, dead letters, stage envelopes) is
   produced and acknowledged by the broker;
3. then the stage remembers what the broker now has (a bill's forwarded revision, a
   shipper's acknowledged decisions), so a replay of this batch is recognised and
   skipped, and flushes that as in 1;
4. only then are the batch's offsets acknowledged, which Faust does when the agent asks
   for its next batch.
Remembering before 2 would skip work the broker never got (a loss after a crash). Outputs
before 1 would let a crash lose the revisions they carry: the replay, joined in another
order across partitions, would give the same record another revision. Acknowledging
before 3 would let a restart read tables older than the offsets (a replay the stage cannot
recognise).

Exactly-once has no order to keep: a stage's batch, its outputs, table writes (what it
remembers included) and input offsets are committed in one transaction of the stage's
producer (streams/patches/transactions.py), or not at all. The local stores get the writes
once the transaction has committed. A batch whose partitions have moved to another worker
(or that a rebalance came between reading and committing) is dropped: it is read again.

`settle` ends a batch either way, so no agent spells the order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import cast

import faust
from faust.types import TP, EventT

from models.filers import FilerMessage
from models.pipeline import Failures, Incoming, StageMessage
from models.records import RecordError
from streams import envelopes, metrics
from streams.patches.transactions import Fenced, TransactionManager
from streams.produce import Send, of_app, produce
from streams.publishing import Outgoing, dead_letters, failed_letters
from streams.tables import BatchedTable, Write

log = logging.getLogger(__name__)

Message = tuple[faust.TopicT, int | None, bytes, bytes]  # topic, partition, key, value


class Outbox:
    """Collects one batch's messages and how it ends; `settle` ends it."""

    def __init__(
        self,
        app: faust.App,
        outputs: Mapping[str, faust.TopicT],
        partitions: int,
        stage: str = "",
        events: Sequence[EventT] = (),
    ) -> None:
        self.app, self.outputs, self.partitions = app, outputs, partitions
        self.stage, self.events = stage, events
        self.messages: list[Message] = []
        self.ending = Ending()
        # counted once the batch has ended: a batch dropped when fenced is counted by the
        # worker that does it again, not twice
        self.counts: list[Callable[[], None]] = []

    def send(self, messages: Iterable[Outgoing]) -> None:
        outputs = self.outputs
        self.messages.extend((outputs[o.output], None, o.key, o.value) for o in messages)

    def forward(
        self, topic: faust.TopicT, items: Sequence[tuple[bytes, StageMessage | FilerMessage]]
    ) -> None:
        """Messages for the next stage (or the filers' owner), in envelopes per partition."""
        self.messages.extend(
            (topic, partition, b"", value)
            for partition, value in envelopes.pack(items, self.partitions)
        )

    def dead(self, dead: Sequence[tuple[Incoming, RecordError]]) -> None:
        """Records that cannot be read: dead letters with the reason, counted."""
        if dead:
            self.send(dead_letters(dead))
            where = [(item.source.topic, err.field) for item, err in dead]
            self.count(partial(metrics.count_dead_letters, where))

    def parked(self, stage: str, failed: Failures) -> None:
        """Stage messages whose processing raised: dead letters, counted as failures."""
        if failed:
            self.send(failed_letters(failed))
            where = [(m["source"]["topic"], err.field) for m, err in failed]
            self.count(partial(metrics.count_dead_letters, where))
            self.count(partial(metrics.count_failures, stage, len(failed)))

    def count(self, counting: Callable[[], None]) -> None:
        """A metric to count once the batch has ended (a fenced batch is not counted)."""
        self.counts.append(counting)

    def end(
        self,
        *tables: BatchedTable,
        remember: Callable[[], None] | None = None,
        then: Callable[[], None] | None = None,
    ) -> Outbox:
        """How the batch ends: the tables it wrote, what it remembers once its outputs are
        the broker's, and what to count once it has ended."""
        self.ending = Ending(tables, remember, then)
        return self

    def sends(self) -> list[Send]:
        """The batch's messages as the producer takes them."""
        return [
            (t.get_topic_name(), partition, key, value)
            for t, partition, key, value in self.messages
        ]

    def offsets(self) -> dict[TP, int]:
        """Per input partition, the offset to read next once this batch is done."""
        out: dict[TP, int] = {}
        for ev in self.events:
            m = ev.message
            out[m.tp] = max(out.get(m.tp, 0), m.offset + 1)
        return out

    async def settle_at_least_once(self) -> None:
        """Steps 1-3 of the module docstring: flush the tables, produce and wait for the
        broker, then remember and flush again."""
        tables, remember = self.ending.tables, self.ending.remember
        for table in tables:
            await table.flush_changelog()
        sends, self.messages = self.sends(), []
        if sends:
            await (await produce(of_app(self.app), sends))
        if remember is not None:
            remember()
            for table in tables:
                await table.flush_changelog()


@dataclass(frozen=True)
class Ending:
    tables: Sequence[BatchedTable] = ()
    remember: Callable[[], None] | None = None
    then: Callable[[], None] | None = None


async def settle(box: Outbox) -> None:
    """End a batch (module docstring), then count it; a fenced batch is not counted."""
    if box.app.in_transaction:
        if not await _commit(box):
            return
    else:
        await box.settle_at_least_once()
    for counting in box.counts:
        counting()
    if box.ending.then is not None:
        box.ending.then()


async def _commit(box: Outbox) -> bool:
    """Exactly-once: the batch's outputs, table writes and offsets in one transaction of
    its stage; whether it committed (not if the batch was fenced)."""
    if box.ending.remember is not None:
        box.ending.remember()  # in the same transaction as what it remembers
    sends, box.messages = box.sends(), []
    writes: list[tuple[BatchedTable, dict[str, Write], int]] = []
    for table in box.ending.tables:
        pending = table.take_pending()
        writes.append((table, pending, len(sends)))
        sends.extend(table.changelog(key, write) for key, write in pending.items())
    manager = cast(TransactionManager, box.app.consumer.transactions)
    try:
        produced = await manager.run(box.stage, sends, box.offsets())
    except Fenced:
        log.warning("%s: its batch is no longer this worker's; dropped", box.stage)
        metrics.FENCED_BATCHES.labels(box.stage).inc()
        return False
    for table, pending, first in writes:
        last = first + len(pending)
        table.apply(pending, sends[first:last], produced[first:last])
    return True
