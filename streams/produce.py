"""A batch's messages to the broker: a record batch per partition, not a send per message.

A stage ends each batch by producing its changelog writes, its outputs and its envelopes
(streams/outbox.py). aiokafka's `send` pays per message for a coroutine chain, a future
and the accumulator's bookkeeping, about 13 µs; filling a partition's record batch with
`BatchBuilder.append` and handing it over once with `send_batch` costs about half
(benchmarks/RESULTS.md, issue 18). The record batches go to the broker as `send`'s would,
in the same produce requests, and under exactly-once in the same transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, cast

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import RecordMetadata
from faust.types import AppT

# topic, partition (None: by key, as Kafka's clients partition), key, value (None: a delete)
Send = tuple[str, int | None, bytes | None, bytes | None]

by_key = DefaultPartitioner()  # murmur2 of the key, as aiokafka's `send` and Kafka's clients


class Producing(Protocol):
    """The worker's Faust producer (streams/patches/consumer.py)."""

    def aiokafka_producer(self) -> AIOKafkaProducer: ...


def of_app(app: AppT) -> AIOKafkaProducer:
    """The worker's aiokafka producer (not a stage's transactional one)."""
    return cast(Producing, app.producer).aiokafka_producer()


async def produce(
    producer: AIOKafkaProducer, sends: Sequence[Send]
) -> Awaitable[list[RecordMetadata]]:
    """Hand `sends` to `producer`, in order within each partition; what is returned gives
    each send's metadata, in the order of `sends`, once the broker has them all (or raises
    what the broker refused)."""
    partitions: dict[str, list[int]] = {}
    for topic in {topic for topic, partition, _, _ in sends if partition is None}:
        partitions[topic] = sorted(await producer.partitions_for(topic))
    batches: dict[tuple[str, int], list[Any]] = {}  # per partition, its record batches in order
    where: list[tuple[Any, int]] = []  # per send: its record batch, and its place in it
    for topic, partition, key, value in sends:
        if partition is None:
            known = partitions[topic]
            partition = by_key(key, known, known)
        tp_batches = batches.setdefault((topic, partition), [])
        batch = tp_batches[-1] if tp_batches else None
        if batch is None or batch.append(key=key, value=value, timestamp=None) is None:
            batch = producer.create_batch()
            tp_batches.append(batch)
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a message to {topic} does not fit in a record batch")
        where.append((batch, batch.record_count() - 1))
    sent = await asyncio.gather(
        *(
            _send_in_order(producer, topic, partition, tp_batches)
            for (topic, partition), tp_batches in batches.items()
        )
    )
    futures = {id(batch): future for futures in sent for batch, future in futures}
    return _metadata(where, futures)


async def _send_in_order(
    producer: AIOKafkaProducer, topic: str, partition: int, batches: list[Any]
) -> list[tuple[Any, asyncio.Future[RecordMetadata]]]:
    """A partition's record batches, one after the other: aiokafka queues one at a time
    per partition (each waits until the one before has gone out)."""
    return [
        (batch, await producer.send_batch(batch, topic, partition=partition)) for batch in batches
    ]


async def _metadata(
    where: list[tuple[Any, int]], futures: dict[int, asyncio.Future[RecordMetadata]]
) -> list[RecordMetadata]:
    """Each send's metadata: its record batch's, at its own offset in the batch."""
    acked = dict(zip(futures, await asyncio.gather(*futures.values()), strict=True))
    out = []
    for batch, index in where:
        md = acked[id(batch)]
        out.append(md._replace(offset=md.offset + index))
    return out
