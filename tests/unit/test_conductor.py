"""streams/patches/conductor.py: a record reaches its one stream's queue without a lock, a
task or a producer-buffer check per record, and waits where Faust's handler waits.

A real app (streams/patches/app.py), never started, and a real topic's queue: no broker is
needed for the delivery path.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.exceptions import ValueDecodeError
from faust.types import TP
from faust.types.tuples import Message

from streams.patches.app import App
from streams.patches.conductor import Conductor
from tests.fakes import Tasks

TOPIC = "parcels.manifest"
TP0 = TP(TOPIC, 0)


def app() -> App:
    a = App("conductor-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    a.flow_control.resume()  # as the worker does once its partitions are assigned
    return a


def topic(a: App, serializer: str = "raw") -> Any:
    t = a.topic(
        TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer=serializer
    )
    return t.clone(is_iterator=True)  # as a stream reads it


def message(offset: int, value: bytes = b"v") -> Message:
    return Message(TOPIC, 0, offset, 0.0, 0, None, b"k", value, None)


def conductor(a: App, channels: set[Any]) -> Conductor:
    c = a.topics
    assert isinstance(c, Conductor)  # installed by the app's transport
    c._tp_to_callback[TP0] = c._build_handler(TP0, channels)
    return c


class CountingLock(asyncio.Lock):
    def __init__(self) -> None:
        super().__init__()
        self.acquired = 0

    async def acquire(self) -> bool:
        self.acquired += 1
        return await super().acquire()


async def test_records_reach_the_stream_in_order_without_taking_the_lock() -> None:
    a = app()
    t = topic(a)
    c = conductor(a, {t})
    lock = c._tp_to_callback_lock = CountingLock()  # Faust's on_message reads it per call
    c.on_message = c._compile_message_handler()
    for offset in range(100):
        await c.on_message(message(offset))
    got = [t.queue.get_nowait() for _ in range(100)]
    assert [ev.message.offset for ev in got] == list(range(100))
    assert {(ev.key, ev.value) for ev in got} == {(b"k", b"v")}
    assert all(ev.message.refcount == 1 for ev in got)  # one stream holds each
    assert lock.acquired == 0  # Faust's takes it once per record


async def test_a_record_waits_while_the_handlers_are_rebuilt() -> None:
    a = app()
    t = topic(a)
    c = conductor(a, {t})
    await c._tp_to_callback_lock.acquire()
    delivery = asyncio.ensure_future(c.on_message(message(0)))
    await asyncio.sleep(0.01)
    assert not delivery.done() and t.queue.empty()
    c._tp_to_callback_lock.release()
    await asyncio.wait_for(delivery, 1)
    assert t.queue.get_nowait().message.offset == 0


async def test_a_full_queue_is_waited_on_in_place_without_a_task() -> None:
    a = app()
    t = topic(a)
    full: list[TP] = []
    a.sensors.on_topic_buffer_full = full.append  # type: ignore[method-assign]
    c = conductor(a, {t})
    for offset in range(t.queue.maxsize):
        await c.on_message(message(offset))
    assert t.queue.full()
    counted = len(full)
    loop = asyncio.get_running_loop()
    tasks = Tasks()
    loop.set_task_factory(tasks)
    try:
        step = c.on_message(message(t.queue.maxsize)).__await__()
        next(step)  # the delivery waits for room
        assert t.queue.get_nowait().message.offset == 0
        await asyncio.sleep(0)  # the queue wakes the waiting put
        try:
            step.send(None)
        except StopIteration:
            pass
        else:
            raise AssertionError("the delivery should have finished once there was room")
    finally:
        loop.set_task_factory(None)
    assert tasks.n == 0  # Faust's handler puts through asyncio.wait of a task
    assert t.queue.full()
    assert full[counted:] == [TP0]  # the sensor counts the wait, as Faust's handler does


async def test_a_suspended_flow_holds_the_record_until_it_resumes() -> None:
    a = app()
    t = topic(a)
    c = conductor(a, {t})
    a.flow_control.suspend()
    delivery = asyncio.ensure_future(c.on_message(message(0)))
    await asyncio.sleep(0.01)
    assert not delivery.done() and t.queue.empty()
    a.flow_control.resume()
    await asyncio.wait_for(delivery, 1)
    assert t.queue.qsize() == 1


async def test_a_full_producer_buffer_is_waited_on_only_when_full() -> None:
    a = app()
    t = topic(a)
    buffer = a.producer.buffer
    ebbs = 0

    async def wait_until_ebb() -> None:
        nonlocal ebbs
        ebbs += 1

    buffer.wait_until_ebb = wait_until_ebb  # type: ignore[method-assign]
    c = conductor(a, {t})
    await c.on_message(message(0))
    assert ebbs == 0  # Faust's handler awaits it for every record
    for _ in range(buffer.max_messages + 1):
        buffer.pending.put_nowait(None)
    await c.on_message(message(1))
    assert ebbs == 1


async def test_an_undecodable_record_is_acknowledged_and_raised_in_the_stream() -> None:
    a = app()
    t = topic(a, serializer="json")
    c = conductor(a, {t})
    bad = message(0, value=b"{not json")
    await c.on_message(bad)
    assert bad.acked
    with pytest.raises(ValueDecodeError):  # raised where the stream takes its next event
        t.queue.get_nowait()


async def test_a_partition_read_by_two_streams_goes_through_fausts_handler() -> None:
    a = app()
    one, two = topic(a), topic(a)
    c = conductor(a, {one, two})
    await c.on_message(message(0))
    for t in (one, two):
        assert t.queue.get_nowait().message.offset == 0
    assert one.queue.empty() and two.queue.empty()
