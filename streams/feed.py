"""Synthetic traffic into Kafka: the generator's events produced to the input topics.

With a rate, events are paced by their event time (the generator spaces parcels at that
rate and entries trail their manifests), so a live demo looks like real traffic; without
one, they go out as fast as the producer can batch them (preloading, benchmarks). Gaps
longer than 5 s (the entries trailing the last manifests of a finite run) are shortened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from models.synthetic import Event, GeneratorConfig, TrafficGenerator, write_labels
from streams.security import connection
from streams.settings import Settings


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
    return AIOKafkaProducer(**options)  # type: ignore[arg-type]


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
    """Generate `count` parcels and produce them; write ground truth to `labels_path`."""
    gen = TrafficGenerator(config)
    events = gen.events(count, horizon=timedelta(0)) if rate > 0 else gen.events(count)
    stats = await produce_events(s, events, rate, progress)
    stats.parcels = count
    if labels_path is not None:
        labels_path.parent.mkdir(parents=True, exist_ok=True)
        write_labels(gen.labels(), labels_path)
    return stats
