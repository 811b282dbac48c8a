"""streams/patches/resume_streams.py: when recovery ends, no record reaches a stream between
the seek to the committed offsets and the clearing of the streams' queues (such a record
was thrown away and never read again).

Faust's own Recovery.on_recovery_completed runs here, with a real app's flow control and a
stream queue; the consumer is a stand-in whose fetcher, like Faust's, hands records to the
stream whenever the consumer's flow is on.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
from faust.tables.recovery import Recovery as FaustRecovery
from faust.types import TP

from streams.patches.tables import Recovery

TOPIC = TP("by-shipper", 0)


class Consumer:
    """Positions, a committed offset and a fetcher that delivers while the flow is on."""

    def __init__(self, queue: asyncio.Queue, committed: int) -> None:
        self.queue, self.committed = queue, committed
        self.position = committed + 7  # already fetched ahead before the seek
        self.flow_active = True
        self.sought = asyncio.Event()

    def assignment(self) -> set[TP]:
        return {TOPIC}

    def resume_partitions(self, tps: set[TP]) -> None:
        pass

    def stop_flow(self) -> None:
        self.flow_active = False

    def resume_flow(self) -> None:
        self.flow_active = True

    async def perform_seek(self) -> None:
        for _ in range(3):  # Faust asks the broker per partition: the fetcher runs meanwhile
            await asyncio.sleep(0)
        self.position = self.committed
        self.sought.set()
        for _ in range(3):  # ... and for the other partitions after this one
            await asyncio.sleep(0)

    async def fetch(self) -> None:
        while True:
            if self.flow_active:
                self.queue.put_nowait(self.position)
                self.position += 1
            await asyncio.sleep(0)


async def recover(recovery_class: type[FaustRecovery]) -> tuple[list[int], int]:
    """End a recovery; what the stream's queue then holds, and the committed offset."""
    app = faust.App("resume-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    queue = app.FlowControlQueue(maxsize=0, clear_on_resume=True)  # as a stream's
    consumer = Consumer(queue, committed=100)
    app._consumer = consumer
    app._fetcher = SimpleNamespace(maybe_start=_nothing)
    app.flow_control.resume()
    recovery = recovery_class(app, app.tables)
    fetcher = asyncio.ensure_future(consumer.fetch())
    try:
        await recovery.on_recovery_completed(generation_id=app.consumer_generation_id)
        for _ in range(5):  # the stream's fetcher goes on after recovery
            await asyncio.sleep(0)
    finally:
        fetcher.cancel()
    held = []
    while not queue.empty():
        held.append(queue.get_nowait())
    return held, consumer.committed


async def _nothing() -> None:
    return None


async def test_the_stream_reads_on_from_the_committed_offset() -> None:
    held, committed = await recover(Recovery)
    assert held, "the fetcher delivered nothing after recovery"
    assert held[0] == committed, f"the stream starts at {held[0]}, not at {committed}"
    assert held == list(range(committed, committed + len(held)))


async def test_faust_alone_loses_what_was_delivered_between_the_seek_and_the_clear() -> None:
    """The fault the patch is for, shown on Faust's own class: if this passes no more,
    faust-streaming fixed it and the patch can go."""
    held, committed = await recover(FaustRecovery)
    assert held and held[0] > committed
