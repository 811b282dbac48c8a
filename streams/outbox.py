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
recognise). `Outbox.settle` is steps 1-3, so no agent spells the order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence

import faust

from models.filers import FilerMessage
from models.pipeline import Failures, Incoming, StageMessage
from models.records import RecordError
from streams import envelopes, metrics
from streams.publishing import Outgoing, dead_letters, failed_letters
from streams.tables import BatchedTable

Message = tuple[faust.TopicT, int | None, bytes, bytes]  # topic, partition, key, value


class Outbox:
    """Collects one batch's messages; `settle` ends the batch (module docstring)."""

    def __init__(
        self, app: faust.App, outputs: Mapping[str, faust.TopicT], partitions: int
    ) -> None:
        self.app, self.outputs, self.partitions = app, outputs, partitions
        self.messages: list[Message] = []

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
            metrics.count_dead_letters((item.source.topic, err.field) for item, err in dead)

    def parked(self, stage: str, failed: Failures) -> None:
        """Stage messages whose processing raised: dead letters, counted as failures."""
        if failed:
            self.send(failed_letters(failed))
            metrics.count_dead_letters((m["source"]["topic"], err.field) for m, err in failed)
            metrics.count_failures(stage, len(failed))

    async def settle(
        self, *tables: BatchedTable, remember: Callable[[], None] | None = None
    ) -> None:
        """Steps 1-3 of the module docstring: flush the tables, produce and wait for the
        broker, then `remember` and flush again."""
        for table in tables:
            await table.flush_changelog()
        messages, self.messages = self.messages, []
        if messages:
            send = self.app.producer.send  # straight to the producer, not Faust's channels
            futures = [
                await send(topic.get_topic_name(), key, value, partition, None, None)
                for topic, partition, key, value in messages
            ]
            await asyncio.gather(*futures)
        if remember is not None:
            remember()
            for table in tables:
                await table.flush_changelog()
