"""A fetched record handed to its one stream with only the work the record needs.

faust-streaming 0.15's conductor delivers every record through two layers: `on_message`
takes an `asyncio.Lock` to look up the partition's handler (the lock guards the table of
handlers while a rebalance rebuilds it), and the handler awaits the flow control, awaits
the producer buffer's `wait_until_ebb` (whose `size` reads a setting through Faust's
settings object each time), decodes, and puts the event on each subscribed stream's
queue; a full queue is waited on through `asyncio.wait` of a task per stream. On
benchmarks/stream_floor.py those steps were about a fifth of the consumer's CPU
(issue 18).

Here, with the same outcomes:
- the handler table is read without the lock unless a rebuild holds it;
- the flow control and the producer buffer are awaited only when they would block (the
  flow suspended; more messages buffered than `max_messages`);
- a partition read by one stream (every topic of the worker) gets its event put on that
  stream's queue directly, and a full queue is awaited in place, without a task.
A partition read by several streams goes through Faust's own handler.
Installed as the Conductor of the app's transport (streams/patches/consumer.py).
"""

from __future__ import annotations

from collections.abc import Callable, MutableSet
from typing import Any, cast

from faust.exceptions import KeyDecodeError, ValueDecodeError
from faust.transport import conductor
from faust.types import TP, Message
from faust.types.transports import ConsumerCallback

from streams.patches import written_for


class Conductor(conductor.Conductor):
    """Faust's conductor with the single-stream delivery of the module docstring."""

    def _compile_message_handler(self) -> ConsumerCallback:
        handlers = self._tp_to_callback
        lock = self._tp_to_callback_lock

        async def on_message(message: Message) -> None:
            if lock.locked():  # the handlers are being rebuilt: wait for them, as Faust does
                async with lock:
                    handler = handlers[message.tp]
            else:
                handler = handlers[message.tp]
            await handler(message)

        return on_message

    def _build_handler(self, tp: TP, channels: MutableSet[Any]) -> ConsumerCallback:
        return single_stream_handler(self, tp, channels, super()._build_handler(tp, channels))


def single_stream_handler(
    owner: conductor.Conductor,
    tp: TP,
    channels: MutableSet[Any],
    faust_handler: Callable[[Message], Any],
) -> ConsumerCallback:
    """Deliver `tp`'s records to its one stream; to Faust's handler when it has several."""
    app = owner.app
    consumer = app.consumer
    flow = app.flow_control
    flow_active = flow.is_active
    buffer = app.producer.buffer
    wait_until_ebb = buffer.wait_until_ebb
    buffered: Callable[[], int] = (
        (lambda: buffer.size)  # threaded: Faust's own count
        if app.conf.producer_threaded
        else buffer.pending.qsize
    )
    max_messages = buffer.max_messages
    on_topic_buffer_full = app.sensors.on_topic_buffer_full
    on_buffer_full = consumer.on_buffer_full
    on_buffer_drop = consumer.on_buffer_drop

    def on_pressure_high() -> None:
        on_topic_buffer_full(tp)
        on_buffer_full(tp)

    def on_pressure_drop() -> None:
        on_buffer_drop(tp)

    async def on_message(message: Message) -> None:
        if len(channels) != 1:
            await faust_handler(message)
            return
        if not flow_active():
            await flow.acquire()
        if buffered() > max_messages:
            await wait_until_ebb()
        (chan,) = channels
        message.refcount += 1  # message.incref(1)
        try:
            event = await chan.decode(message, propagate=True)
        except KeyDecodeError as exc:
            message.ack(consumer, n=1)
            await chan.on_key_decode_error(exc, message)
            return
        except ValueDecodeError as exc:
            message.ack(consumer, n=1)
            await chan.on_value_decode_error(exc, message)
            return
        queue = chan.queue
        if queue.full():
            on_topic_buffer_full(tp)
            await chan.put(event)
        else:
            queue.put_nowait_enhanced(
                event, on_pressure_high=on_pressure_high, on_pressure_drop=on_pressure_drop
            )

    return cast(ConsumerCallback, on_message)


written_for("faust-streaming", "0.15.3")
