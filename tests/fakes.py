"""Stand-ins of the unit tests: an aiokafka producer's record-batch API without a broker
(streams/produce.py uses it), and a task factory that counts the tasks a loop creates."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from aiokafka.structs import RecordMetadata, TopicPartition


class Batch:
    """A record batch that holds `limit` records."""

    def __init__(self, limit: int) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.limit = limit

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: Any) -> Any:
        if len(self.records) == self.limit:
            return None
        self.records.append((key, value))
        return True

    def record_count(self) -> int:
        return len(self.records)


class BatchProducer:
    """`partitions_for`, `create_batch` and `send_batch`. Batches are acknowledged a moment
    later, at offsets that follow on per partition as a broker's log does, or refused;
    `sent` lists each record as (topic, key, value, partition) in the order handed over."""

    def __init__(
        self,
        partitions: int = 4,
        limit: int = 1_000,
        refuse: BaseException | None = None,
        on_ack: Callable[[str, int, Batch], None] | None = None,
    ) -> None:
        self.partitions, self.limit, self.refuse, self.on_ack = partitions, limit, refuse, on_ack
        self.sent: list[tuple[str, bytes | None, bytes | None, int]] = []
        self.batches: list[tuple[str, int, Batch]] = []
        self.ends: defaultdict[tuple[str, int], int] = defaultdict(int)  # next offset

    def aiokafka_producer(self) -> BatchProducer:  # as the worker's Faust producer has it
        return self

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> Batch:
        return Batch(self.limit)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.batches.append((topic, partition, batch))
        self.sent.extend((topic, k, v, partition) for k, v in batch.records)
        base = self.ends[topic, partition]
        self.ends[topic, partition] += batch.record_count()
        ack: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()

        def acknowledge() -> None:
            if self.refuse is not None:
                ack.set_exception(self.refuse)
                return
            if self.on_ack is not None:
                self.on_ack(topic, partition, batch)
            tp = TopicPartition(topic, partition)
            ack.set_result(RecordMetadata(topic, partition, tp, base, -1, 0, 0))

        asyncio.get_running_loop().call_later(0.01, acknowledge)
        return ack


class Tasks:
    """Counts the tasks the loop creates while installed as its task factory."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task:
        self.n += 1
        return asyncio.Task(coro, loop=loop, **kw)
