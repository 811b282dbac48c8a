"""Synthetic traffic into Kafka: the generator's events produced to the input topics.

With a rate, events are paced by their event time (the generator spaces parcels at that
rate and entries trail their manifests), so a live demo looks like real traffic; without
one, they go out as fast as the producer can batch them (preloading, benchmarks). Gaps
longer than 5 s (the entries trailing the last manifests of a finite run) are shortened.

A feed may run for days (`make run`), so it holds nothing per parcel for good: labels are
streamed to their file (or not kept), and the entries waiting for their time are bounded
by shortening the manifest-to-entry time of a fast or live feed (see `lag_scale`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from models.synthetic import Event, GeneratorConfig, Label, TrafficGenerator, label_line
from streams.security import connection
from streams.settings import Settings

# A live feed's entries follow their manifests 180 times sooner than in real traffic
# (median 30 s instead of 90 min, at most 4 min instead of 12 h): a demo shows the
# rescoring with both sides within a minute, and few entries wait in memory.
LIVE_ENTRY_LAG_SCALE = 1 / 180
# Whatever the rate, at most about this many entries wait for their time (a few KiB each).
MAX_WAITING_ENTRIES = 100_000
LONGEST_ENTRY_LAG_S = 12 * 3600.0  # the generator's cap, at entry_lag_scale 1


def lag_scale(config: GeneratorConfig, live: bool) -> float:
    """The entry-lag scale a feed uses: waiting entries are those of the parcels within the
    longest lag, so their number is bounded by parcels/s x longest lag x scale."""
    bound = MAX_WAITING_ENTRIES / (config.parcels_per_second * LONGEST_ENTRY_LAG_S)
    scale = min(config.entry_lag_scale, bound)
    return min(scale, LIVE_ENTRY_LAG_SCALE) if live else scale


def traffic(
    config: GeneratorConfig,
    count: int,
    live: bool,
    label_sink: Callable[[Label], None] | None = None,
) -> Iterator[Event]:
    """The events a feed produces, in bounded memory: no label is kept (`label_sink` gets
    each one), and a live feed releases each event at its time without waiting for later
    parcels (an entry filed before its manifest just arrives first)."""
    config = replace(config, entry_lag_scale=lag_scale(config, live))
    gen = TrafficGenerator(config, keep_labels=False, label_sink=label_sink)
    return gen.events(count, horizon=timedelta(0)) if live else gen.events(count)


@dataclass
class FeedStats:
    parcels: int = 0
    events: int = 0
    bad: int = 0
    seconds: float = 0.0


def producer_for(s: Settings, **overrides: object) -> AIOKafkaProducer:
    """A producer tuned for throughput: large batches, short linger."""
    options: dict[str, object] = {
        **connection(s),
        "linger_ms": 20,
        "max_batch_size": 512 * 1024,
        "acks": 1,
        "max_request_size": 4 * 1024 * 1024,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def produce_events(
    s: Settings,
    events: Iterable[Event],
    rate: float = 0.0,
    progress: Callable[[int], None] | None = None,
    sent: list[tuple[Event, RecordMetadata]] | None = None,
) -> FeedStats:
    """Produce events; if `sent` is given, append (event, where it landed) for each."""
    topics = {"manifest": s.topic("manifest_topic"), "entry": s.topic("entries_topic")}
    stats = FeedStats()
    producer = producer_for(s)
    await producer.start()
    started = time.monotonic()
    first_event: float | None = None
    try:
        pending: list[asyncio.Future[RecordMetadata]] = []
        batch_events: list[Event] = []
        for ev in events:
            if rate > 0:
                t = ev.event_time.timestamp()
                first_event = t if first_event is None else first_event
                delay = (t - first_event) - (time.monotonic() - started)
                if delay > 0:
                    await asyncio.sleep(min(delay, 5.0))
            pending.append(await producer.send(topics[ev.kind], ev.value, key=ev.key.encode()))
            batch_events.append(ev)
            stats.events += 1
            stats.bad += ev.bad_reason is not None
            if len(pending) >= 10_000:
                await _settle(pending, batch_events, sent)
                if progress:
                    progress(stats.events)
        await producer.flush()
        await _settle(pending, batch_events, sent)
        if progress:
            progress(stats.events)
    finally:
        await producer.stop()
    stats.seconds = time.monotonic() - started
    return stats


async def _settle(
    pending: list[asyncio.Future[RecordMetadata]],
    events: list[Event],
    sent: list[tuple[Event, RecordMetadata]] | None,
) -> None:
    results = await asyncio.gather(*pending)
    if sent is not None:
        sent.extend(zip(events, results, strict=True))
    pending.clear()
    events.clear()


async def feed(
    s: Settings,
    config: GeneratorConfig,
    count: int,
    rate: float = 0.0,
    labels_path: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> FeedStats:
    """Generate `count` parcels and produce them; ground truth goes to `labels_path` (JSON
    lines, as write_labels writes them) as the parcels are made, never held."""
    if labels_path is None:
        stats = await produce_events(s, traffic(config, count, live=rate > 0), rate, progress)
    else:
        labels_path.parent.mkdir(parents=True, exist_ok=True)
        with labels_path.open("wb") as f:

            def sink(label: Label) -> None:
                f.write(label_line(label))

            events = traffic(config, count, live=rate > 0, label_sink=sink)
            stats = await produce_events(s, events, rate, progress)
    stats.parcels = count
    return stats
