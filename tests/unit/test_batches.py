"""streams/patches/batches.py: records that came during a batch longer than the window are
the next batch at once; after a shorter batch, or when idle, the window runs as Faust's.

Faust's own stream and channel, in memory: no broker is involved in how a stream batches.
"""

from __future__ import annotations

import asyncio
import time

import faust
import pytest

from streams.patches.batches import Stream

WINDOW = 0.5
LONG, SHORT = 0.7, 0.2  # what the agent spends on its first batch: more, less than WINDOW


async def batches(
    stream_class: type[faust.Stream], work: float, max_: int = 100
) -> list[tuple[float, list]]:
    """Batches (when taken, values) of a stage: two records while idle, then three more
    while it works on the first batch."""
    app = faust.App("batches-test", broker="kafka://127.0.0.1:1", Stream=stream_class)
    app.flow_control.resume()
    channel = app.channel(maxsize=1000)
    stream = app.stream(channel)
    taken: list[tuple[float, list]] = []
    started = time.monotonic()

    async def first() -> None:
        await asyncio.sleep(0.05)
        await channel.send(value=1)
        await channel.send(value=2)

    sending = asyncio.ensure_future(first())
    async with stream:
        async for events in stream.take_events(max_, within=WINDOW):
            taken.append((time.monotonic() - started, [e.value for e in events]))
            if len(taken) == 1:
                for value in (3, 4, 5):
                    await channel.send(value=value)
                await asyncio.sleep(work)
            elif sum(len(values) for _, values in taken) == 5:
                break
    await sending
    return taken


@pytest.mark.parametrize(("work", "after"), [(LONG, LONG), (SHORT, SHORT + WINDOW)])
async def test_no_window_after_a_batch_longer_than_it(work: float, after: float) -> None:
    """A batch that took longer than the window is followed at once; a shorter one, after a
    window, as in Faust."""
    (first_at, first), (second_at, second) = await batches(Stream, work)
    assert (first, second) == ([1, 2], [3, 4, 5])  # an idle stage still gathers
    assert first_at == pytest.approx(WINDOW, abs=0.1)
    assert second_at - first_at == pytest.approx(after, abs=0.1)


@pytest.mark.parametrize("work", [LONG, SHORT])
async def test_faust_itself_waits_a_window_after_every_batch(work: float) -> None:
    """Why the patch exists: if this fails, Faust changed and the patch may be unneeded."""
    (first_at, _), (second_at, second) = await batches(faust.Stream, work)
    assert second == [3, 4, 5]
    assert second_at - first_at == pytest.approx(work + WINDOW, abs=0.1)


async def test_a_batch_is_at_most_max_records() -> None:
    taken = await batches(Stream, LONG, max_=2)
    assert [values for _, values in taken] == [[1, 2], [3, 4], [5]]
