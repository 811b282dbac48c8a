"""streams/patches/drain.py: fetched records reach the streams without a task per record, a
delivery that must wait still yields to a suspended flow as Faust's does, and the fetch
loop does not wait a whole second while a partition's stream buffer drains.

A real app's consumer (streams/patches/app.py), never started: no broker is needed for
the delivery path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import Message

from streams.patches import drain
from streams.patches.app import App
from streams.patches.consumer import Consumer
from tests.fakes import Tasks

TOPIC = TP("parcels.manifest", 0)


def consumer(callback: Callable[[Any], Awaitable[None]]) -> Consumer:
    app = App("drain-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    c = app.consumer
    assert isinstance(c, Consumer)
    c.callback = callback
    return c


def message(offset: int) -> Message:
    return Message(TOPIC.topic, TOPIC.partition, offset, 0.0, 0, None, None, b"v", None)


async def test_a_delivery_that_does_not_wait_needs_no_task() -> None:
    got: list[int] = []
    lock = asyncio.Lock()  # Faust's conductor takes an uncontended lock per record

    async def callback(m: Message) -> None:
        async with lock:
            got.append(m.offset)

    c = consumer(callback)
    loop = asyncio.get_running_loop()
    tasks = Tasks()
    loop.set_task_factory(tasks)
    try:
        for offset in range(1_000):
            await c.deliver_eagerly(message(offset))
    finally:
        loop.set_task_factory(None)
    assert got == list(range(1_000))
    # Faust's wait_first makes four tasks per record (the delivery, the suspend, stopped
    # and crashed events)
    assert tasks.n == 0


async def test_a_delivery_that_waits_for_room_goes_on_once_and_finishes() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(-1)
    started = []

    async def callback(m: Message) -> None:
        started.append(m.offset)
        await queue.put(m.offset)

    c = consumer(callback)
    delivery = asyncio.create_task(c.deliver_eagerly(message(7)))  # the fetch loop's task
    loop = asyncio.get_running_loop()
    tasks = Tasks()
    loop.set_task_factory(tasks)
    try:
        await asyncio.sleep(0.01)
        assert not delivery.done(), "the queue is full: the delivery waits"
        assert queue.get_nowait() == -1
        await asyncio.wait_for(asyncio.shield(delivery), 1.0)
    finally:
        loop.set_task_factory(None)
    assert queue.get_nowait() == 7
    assert started == [7], "the delivery's first step ran once, not again when resumed"
    assert tasks.n <= 1, "no task of its own (wait_for's own aside): Faust's path made four"


async def test_a_waiting_delivery_is_abandoned_when_the_flow_is_suspended() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(-1)
    cancelled = []

    async def callback(m: Message) -> None:
        try:
            await queue.put(m.offset)
        except asyncio.CancelledError:
            cancelled.append(m.offset)
            raise

    c = consumer(callback)
    delivery = asyncio.create_task(c.deliver_eagerly(message(8)))
    await asyncio.sleep(0.01)
    c.stop_flow()  # a rebalance: Faust gives up the delivery
    await asyncio.wait_for(delivery, 1.0)
    assert cancelled == [8]
    assert queue.get_nowait() == -1 and queue.empty()


async def test_a_delivery_that_raises_at_once_raises_to_the_fetch_loop() -> None:
    async def callback(m: Message) -> None:
        raise ValueError(f"bad {m.offset}")

    c = consumer(callback)
    with pytest.raises(ValueError, match="bad 3"):
        await c.deliver_eagerly(message(3))


async def test_the_fetch_loop_delivers_in_order_and_asks_with_a_short_timeout() -> None:
    got: list[int] = []
    asked: list[float] = []
    fetcher = SimpleNamespace(_stopped=asyncio.Event())

    async def callback(m: Message) -> None:
        got.append(m.offset)

    c = consumer(callback)

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        asked.append(timeout)
        if len(asked) == 3:
            fetcher._stopped.set()
        for offset in range(10 * (len(asked) - 1), 10 * len(asked)):
            yield TOPIC, message(offset)

    c.getmany = getmany  # type: ignore[method-assign]
    await asyncio.wait_for(c._drain_messages(fetcher), 5.0)  # type: ignore[arg-type]
    assert got == list(range(30))
    assert c._read_offset[TOPIC] == 29
    # Faust's 1 s: a partition whose stream buffer drained meanwhile waited it out
    assert asked == [drain.FETCH_TIMEOUT_S] * 3 and drain.FETCH_TIMEOUT_S <= 0.1
