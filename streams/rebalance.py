"""A rebalance must not lose the records a worker fetched before it.

faust-streaming skips, and acknowledges, events fetched in an earlier consumer generation,
relying on a seek back to the committed offsets to fetch them again. aiokafka's
`seek_to_committed` does not seek a partition whose committed offset is none or 0, so on a
partition that has never been committed (a new group's first seconds, a new internal
topic) those records were skipped for good: two workers starting together on 8 partitions
lost 3,312 of 192,083 parcels. Seeking such partitions to their beginning, which is where
`auto_offset_reset=earliest` starts them anyway, fetches them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

_seek_to_committed = AIOKafkaConsumerThread.seek_to_committed


async def seek_to_committed(self: AIOKafkaConsumerThread) -> Mapping[Any, int]:
    committed = await _seek_to_committed(self)
    never = [tp for tp, offset in committed.items() if not offset]
    if never:
        await self.seek_to_beginning(*never)
    return committed


def install() -> None:
    """Patch the Faust consumer thread (idempotent)."""
    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
