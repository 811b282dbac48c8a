"""streams/patches/batches.py: a stage's batch is taken off its queue in bulk, with the
batches, drops, acks and errors of Faust's `take_events`.

A real app (streams/patches/app.py), never started, a real topic's queue filled through the
worker's conductor, and the app's Stream class: no broker is needed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import faust
import pytest
from faust.types import TP, EventT
from faust.types.tuples import ConsumerMessage

from streams.app import bare_app
from streams.patches.app import App
from streams.patches.batches import Stream
from streams.settings import Settings

TOPIC = "parcels.manifest"
TP0 = TP(TOPIC, 0)
WITHIN_S = 0.05


def app() -> App:
    a = App("batches-test", broker="kafka://127.0.0.1:1", autodiscover=False, Stream=Stream)
    a.flow_control.resume()  # as the worker does once its partitions are assigned
    return a


class Fed:
    """A topic's stream queue, fed through the app's conductor as the drain feeds it."""

    def __init__(self, a: App) -> None:
        t = a.topic(
            TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        self.topic = t.clone(is_iterator=True)  # as a stream reads it
        c = a.topics
        c._acking_topics.add(TOPIC)  # type: ignore[attr-defined]  # as conductor.add does
        self.deliver = c._build_handler(TP0, {self.topic})  # type: ignore[attr-defined]
        self.app = a
        self.sent = 0

    async def put(self, n: int) -> None:
        for offset in range(self.sent, self.sent + n):
            generation = self.app.consumer_generation_id  # stamped as the consumer fetches
            await self.deliver(
                ConsumerMessage(
                    TOPIC, 0, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation
                )
            )
        self.sent += n


def offsets(events: Sequence[EventT]) -> list[int]:
    return [ev.message.offset for ev in events]


class Ticks:
    """Turns of the event loop, counted by a callback that schedules itself again."""

    def __init__(self) -> None:
        self.n = 0
        self.handle = asyncio.get_running_loop().call_soon(self.tick)

    def tick(self) -> None:
        self.n += 1
        self.handle = asyncio.get_running_loop().call_soon(self.tick)

    def stop(self) -> int:
        self.handle.cancel()
        return self.n


async def first(batches: AsyncIterator[Sequence[EventT]]) -> Sequence[EventT]:
    return await asyncio.wait_for(batches.__anext__(), 2)


def test_the_worker_app_streams_with_it() -> None:
    a = bare_app(Settings())
    assert a.conf.Stream is Stream


@pytest.mark.parametrize(
    ("stream_class", "bulk"), [(Stream, True), (faust.Stream, False)], ids=["bulk", "faust"]
)
async def test_a_full_batch_is_taken_without_a_loop_turn_per_event(
    stream_class: type[faust.Stream], bulk: bool
) -> None:
    a = app()
    fed = Fed(a)
    await fed.put(400)
    batches = stream_class(fed.topic, app=a).take_events(300, within=WITHIN_S)
    ticks = Ticks()
    batch = await first(batches)
    turns = ticks.stop()
    assert offsets(batch) == list(range(300))
    # Faust's iterator turns the loop at least once per event; this stream, a few times
    assert (turns < 10) is bulk, turns
    await batches.aclose()


async def test_a_window_yields_what_came_and_then_takes_the_rest() -> None:
    a = app()
    fed = Fed(a)
    batches = Stream(fed.topic, app=a).take_events(100, within=WITHIN_S)
    await fed.put(30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert offsets(await first(batches)) == list(range(30))  # not full: the window's end
    assert loop.time() - started >= WITHIN_S * 0.9

    async def later() -> None:
        await asyncio.sleep(WITHIN_S / 5)
        await fed.put(150)

    feeding = asyncio.ensure_future(later())
    assert offsets(await first(batches)) == list(range(30, 130))  # woken by the put; full
    assert offsets(await first(batches)) == list(range(130, 180))
    await feeding
    await batches.aclose()


class Counted(faust.Sensor):
    """What the sensors hear of messages and events."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: Counter[str] = Counter()

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        self.heard["message in"] += 1

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        self.heard["event in"] += 1

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        self.heard["event out"] += 1

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        self.heard["message out"] += 1


async def test_a_batch_is_acknowledged_once_the_agent_is_done_with_it() -> None:
    a = app()
    sensor = Counted()
    a.sensors.add(sensor)
    fed = Fed(a)
    await fed.put(20)
    batches = Stream(fed.topic, app=a).take_events(10, within=WITHIN_S)
    batch = await first(batches)
    messages = [ev.message for ev in batch]
    unacked = a.consumer._unacked_messages  # type: ignore[attr-defined]
    assert all(m.tracked and m in unacked and not m.acked for m in messages)
    assert sensor.heard == {"message in": 10, "event in": 10}  # as taken, as Faust's
    assert offsets(await first(batches)) == list(range(10, 20))  # the agent came back
    assert all(m.acked and m not in unacked for m in messages)
    assert sensor.heard == {"message in": 20, "event in": 20, "event out": 10, "message out": 10}
    assert a.consumer._acked[TP0] == list(range(10))  # type: ignore[attr-defined]  # to commit
    await batches.aclose()


async def test_events_from_before_a_rebalance_are_dropped() -> None:
    a = app()
    fed = Fed(a)
    await fed.put(5)
    a.consumer_generation_id += 1  # a rebalance since they were fetched
    await fed.put(5)
    batches = Stream(fed.topic, app=a).take_events(100, within=WITHIN_S)
    assert offsets(await first(batches)) == list(range(5, 10))
    await batches.aclose()


class Broken(Exception):
    pass


@pytest.mark.parametrize("waiting", [True, False])
async def test_an_error_thrown_into_the_channel_reaches_the_agent(waiting: bool) -> None:
    a = app()
    fed = Fed(a)
    batches = Stream(fed.topic, app=a).take_events(100, within=10.0)
    taking = asyncio.ensure_future(first(batches))
    if waiting:
        await asyncio.sleep(0.01)  # the stream waits on the empty queue
    await fed.topic.throw(Broken())
    with pytest.raises(Broken):
        await taking


@pytest.mark.parametrize("waiting", [True, False])
async def test_the_stop_a_stopping_app_throws_ends_the_batches(waiting: bool) -> None:
    a = app()
    fed = Fed(a)
    await fed.put(3)
    batches = Stream(fed.topic, app=a).take_events(3, within=10.0)
    assert offsets(await first(batches)) == [0, 1, 2]
    taking = asyncio.ensure_future(first(batches))
    if waiting:
        await asyncio.sleep(0.01)  # the stream waits on the empty queue
    await fed.topic.throw(StopAsyncIteration())  # as Faust's agents and streams stop
    with pytest.raises(StopAsyncIteration):  # the end, not a RuntimeError
        await taking


async def test_a_stream_with_a_processor_takes_fausts_path() -> None:
    a = app()
    fed = Fed(a)
    await fed.put(3)
    stream = Stream(fed.topic, app=a)
    seen: list[Any] = []
    stream.add_processor(seen.append)
    batches = stream.take_events(3, within=WITHIN_S)
    assert offsets(await first(batches)) == [0, 1, 2]
    assert len(seen) == 3  # Faust's take_events runs the processors
    await batches.aclose()
