"""Fetched records handed to the streams without a task per record.

faust-streaming 0.15's `Consumer._drain_messages` hands every fetched record to the
conductor through `wait_first(callback(message), suspend_flow.wait())`: four tasks (the
delivery, the suspend event, the service's stopped and crashed events) and an
`asyncio.wait` per record, so that a delivery blocked on a full stream queue is abandoned
when a rebalance suspends the flow. Almost every delivery does not block: it decodes the
record and puts it on a queue with room. Measured with benchmarks/stream_floor.py, this
module took Faust's consumer from 142 to 97-108 µs of CPU per event (issue 18).

Here the delivery's first step runs at once, in the fetch loop's task. If it finishes
there, the record is delivered and nothing else is needed: the same outcome Faust's
`wait_first` gives a delivery that does not block. A delivery that blocks (a stream's
queue is full) is stepped on in the same task, each time what it waits on is done, as a
task would step it; a future that either that or the flow's suspension wakes replaces
`wait_first`'s four tasks, so a rebalance abandons it exactly as before (a stopping
consumer cancels the fetch loop, and the waiting delivery with it). On the floor the
queues are full most of the time (the agent works on a batch of 2,000 while 512 events
fit), and those deliveries were 20% of the consumer's CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.consumer import Consumer as FaustConsumer
from mode import Service, ServiceT

from streams.patches import written_for

# Faust asks for records with a 1 s timeout, and only from the partitions active when it
# asks; a partition whose stream buffer was full is left out, and when the buffer drains a
# fetch already waiting does not see it: the records wait on in memory for the rest of the
# second. Measured on benchmarks/stream_floor.py, every third fetch did (issue 18).
FETCH_TIMEOUT_S = 0.05


class Suspension(asyncio.Event):
    """The consumer's `suspend_flow` event, which also wakes the deliveries waiting for
    room in a stream's queue: they are abandoned when it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.wakers: set[asyncio.Future[bool]] = set()

    def set(self) -> None:
        super().set()
        for waker in self.wakers:
            if not waker.done():
                waker.set_result(False)


class EagerDrain(FaustConsumer):
    """`_drain_messages` of faust-streaming 0.15.3 with the delivery started eagerly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.suspend_flow = Suspension()

    async def deliver_eagerly(self, message: Any) -> None:
        """Hand one record to the conductor, as `wait_first` with the suspend event does."""
        # Faust types the callback as returning an Awaitable; it is the conductor's coroutine
        coro = cast(Coroutine[Any, Any, None], self.callback(message))
        try:
            yielded = coro.send(None)
        except StopIteration:
            return  # delivered without waiting: the common case
        except BaseException:
            coro.close()
            raise
        # it waits (a stream's queue is full): step it on as a task would, each time what
        # it waits on is done, unless the flow is suspended first
        suspension = cast(Suspension, self.suspend_flow)
        while True:
            try:
                ready = await self._ready(yielded, suspension)
            except BaseException:
                _abandon(coro)  # the fetch loop is cancelled: the worker stops
                raise
            if not ready:
                _abandon(coro)  # a rebalance: Faust gives up the delivery
                return
            try:
                yielded = coro.send(None)
            except StopIteration:
                return
            except BaseException:
                coro.close()
                raise

    async def _ready(self, yielded: Any, suspension: Suspension) -> bool:
        """Wait for what a delivery waits on (True) or for the flow's suspension (False),
        without a task: a future woken by either."""
        if suspension.is_set():
            return False
        if not asyncio.isfuture(yielded):  # a bare yield: one turn of the loop
            await asyncio.sleep(0)
            return not suspension.is_set()
        yielded._asyncio_future_blocking = False  # taken, as a task takes what it awaits
        waker: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def done(_: asyncio.Future[Any]) -> None:
            if not waker.done():
                waker.set_result(True)

        yielded.add_done_callback(done)
        suspension.wakers.add(waker)
        try:
            return await waker
        finally:
            suspension.wakers.discard(waker)
            yielded.remove_done_callback(done)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        # Faust's loop, line for line, but for the delivery (deliver_eagerly above) and
        # the fetch's timeout (FETCH_TIMEOUT_S)
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        deliver = self.deliver_eagerly

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=FETCH_TIMEOUT_S)

                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await deliver(message)
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


def _abandon(coro: Coroutine[Any, Any, None]) -> None:
    """Cancel a delivery where it waits, as cancelling its task would."""
    try:
        coro.throw(asyncio.CancelledError())
    except (asyncio.CancelledError, StopIteration):
        return
    coro.close()  # it went on waiting: closed instead


written_for("faust-streaming", "0.15.3")
