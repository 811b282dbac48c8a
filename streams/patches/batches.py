"""A stage's batches taken off its stream's queue in bulk, not one event at a time.

faust-streaming 0.15's `Stream.take_events` fills its buffer from a second task that
iterates the stream event by event: per event, a turn of the event loop (the iterator's
`sleep(0)`), an await of the queue, the sensors, the stream's current event set, and an
awaited processor that appends the event to the buffer; the batch's acks are then awaited
one by one. On benchmarks/stream_floor.py that path was the largest part of the consumer's
CPU left after the conductor and the drain (issue 18); with this module, 32-37 µs of CPU per
event instead of 69-84, in four alternating runs.

Here the agent's own task takes what is queued with `get_nowait`, and waits (one future,
woken by the queue's next put or by the window's end) only when the queue is empty. What
the batch holds and when it is yielded are Faust's: up to `max_` events, yielded when full
or when `within` has passed since the last batch was done with (an empty window yields
nothing); an event of a partition taken away by a rebalance since it was fetched is
dropped; each message is tracked for commit and counted by the sensors as it is taken,
and acknowledged once the agent is done with the batch. An error thrown into the channel
is raised in the agent, as Faust's iterator raises it; the StopAsyncIteration a stopping
app throws ends the batches, as it ends Faust's iterator.

A stream with processors, or already read another way, or over something else than a
channel's queue, takes Faust's path. Installed as the app's `Stream` (streams/app.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from typing import Any

import faust
from faust.types import ChannelT, EventT
from mode.utils.times import Seconds, want_seconds

from streams.patches import written_for


class Stream(faust.Stream):
    """Faust's stream with the bulk `take_events` of the module docstring."""

    async def take_events(self, max_: int, within: Seconds) -> AsyncIterator[Sequence[EventT]]:  # type: ignore[override]
        channel = self.channel
        if self._processors or self._passive or not isinstance(channel, ChannelT):
            async for events in super().take_events(max_, within):
                yield events
            return
        self.enable_acks = False  # as Faust's: the batch is acknowledged once it is done
        self._finalized = True
        started = await self.maybe_start()
        take = Taker(self, channel.queue, max_, want_seconds(within))
        try:
            while not self.should_stop:
                events = await take.batch()
                if not events:
                    continue
                self.events_total += len(events)
                try:
                    yield events
                finally:
                    take.acknowledge(events)
        except StopAsyncIteration:
            return  # thrown into the channel as the app stops: the end, as Faust's iterator
        finally:
            self._channel_stop_iteration(channel)
            if started:
                await self.stop()
                self.service_reset()


class Taker:
    """One stream's batches from its channel's queue (the module docstring)."""

    def __init__(self, stream: Stream, queue: Any, max_: int, within: float) -> None:
        app = stream.app
        self.stream = stream
        self.queue = queue
        self.max = max_
        self.within = within
        self.loop = asyncio.get_running_loop()
        self.app = app
        self.flow_active = app.flow_control.is_active
        self.acking = app.topics._acking_topics  # type: ignore[attr-defined]
        self.unacked = app.consumer._unacked_messages  # type: ignore[attr-defined]
        self.on_message_in = stream._on_message_in
        self.on_event_in = stream._on_stream_event_in
        self.on_event_out = stream._on_stream_event_out
        self.on_message_out = stream._on_message_out

    async def batch(self) -> list[EventT]:
        """The events taken in one window: up to `max` of them, or what came by its end."""
        queue = self.queue
        events: list[EventT] = []
        deadline = self.loop.time() + self.within
        while len(events) < self.max:
            if queue.empty():  # no event queued and no error thrown
                if not await self.arrival(deadline) or self.stream.should_stop:
                    break
                continue
            event = queue.get_nowait()  # raises an error thrown into the channel
            if self.taken(event):
                events.append(event)
        return events

    def taken(self, event: EventT) -> bool:
        """What Faust's iterator does with an event as it takes it: False for one fetched
        before the current rebalance (dropped, never acknowledged)."""
        message = event.message
        if not self.flow_active() or message.generation_id != self.app.consumer_generation_id:
            return False
        tp, offset = message.tp, message.offset
        if message.topic in self.acking and not message.tracked:
            message.tracked = True
            self.unacked.add(message)
            self.on_message_in(tp, offset, message)
        self.on_event_in(tp, offset, self.stream, event)
        return True

    async def arrival(self, deadline: float) -> bool:
        """Wait for the queue's next put (True) or the deadline (False), with one future
        among the queue's getters, as `asyncio.Queue.get` waits."""
        remaining = deadline - self.loop.time()
        if remaining <= 0:
            return False
        waiter: asyncio.Future[None] = self.loop.create_future()
        getters = self.queue._getters
        getters.append(waiter)
        timer = self.loop.call_later(remaining, _wake, waiter)
        try:
            await waiter  # an error thrown into the channel is raised here
        finally:
            timer.cancel()
            waiter.cancel()  # if it is still waiting (this task is cancelled)
            with suppress(ValueError):  # a put that woke it has taken it off already
                getters.remove(waiter)
        return not self.queue.empty()

    def acknowledge(self, events: Sequence[EventT]) -> None:
        """`Stream.ack` for each event of a batch the agent is done with."""
        stream = self.stream
        for event in events:
            last = event.ack()
            message = event.message
            self.on_event_out(message.tp, message.offset, stream, event)
            if last:
                self.on_message_out(message.tp, message.offset, message)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


written_for("faust-streaming", "0.15.3")
