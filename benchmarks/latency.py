"""Latency under offered load: from a parcel's produce time to its hold being readable.

    python -m benchmarks.latency [--rates 1000 5000] [--seconds 30]

For each rate, a fresh worker is started on fresh topics and warmed up; generated parcels
are then produced at that rate (paced by the wall clock, in 10 ms ticks) while a consumer
reads targeting.holds and parcels.decisions. A record's latency is the wall-clock time at
which its hold (or decision) was read, minus the time its input record was sent; both are
matched by the input's topic, partition and offset, which every output carries.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import timedelta

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer

from benchmarks import harness
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import producer_for
from streams.settings import ROOT, Settings
from streams.topics import ensure_topics

Where = tuple[str, int, int]


async def read_outputs(
    s: Settings, arrivals: dict[str, dict[Where, float]], ready: asyncio.Event, stop: asyncio.Event
) -> None:
    """Record when each hold and decision becomes readable, keyed by its input record."""
    topics = {s.topic("holds_topic"): "holds", s.topic("decisions_topic"): "decisions"}
    c = AIOKafkaConsumer(
        *topics, bootstrap_servers=s.bootstrap, group_id=None, auto_offset_reset="latest"
    )
    await c.start()
    try:
        while not c.assignment():
            await asyncio.sleep(0.05)
        await c.seek_to_end()
        ready.set()
        while not stop.is_set():
            for tp, msgs in (await c.getmany(timeout_ms=100)).items():
                now = time.time()
                for m in msgs:
                    src = orjson.loads(m.value)["source"]
                    where = (src["topic"], src["partition"], src["offset"])
                    arrivals[topics[tp.topic]].setdefault(where, now)
    finally:
        await c.stop()


async def offer(s: Settings, rate: float, seconds: float, seed: int) -> dict[Where, float]:
    """Produce generated parcels at `rate` records/s; returns input record -> send time."""
    topics = {"manifest": s.topic("manifest_topic"), "entry": s.topic("entries_topic")}
    events = TrafficGenerator(GeneratorConfig(seed=seed)).events(
        int(rate * seconds), horizon=timedelta(0)
    )
    p = producer_for(s, linger_ms=2)
    await p.start()
    sent: list[tuple[asyncio.Future, float]] = []
    try:
        start = time.monotonic()
        per_tick = rate / 100
        due = 0.0
        for i, ev in enumerate(events):
            if i >= rate * seconds:
                break
            if i >= due:
                due += per_tick
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent.append((await p.send(topics[ev.kind], ev.value, key=ev.key.encode()), time.time()))
        await p.flush()
    finally:
        await p.stop()
    return {(md.topic, md.partition, md.offset): t for fut, t in sent if (md := fut.result())}


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "none read"
    ms = np.array(latencies) * 1000
    return (
        f"p50 {np.percentile(ms, 50):7.0f} ms  p99 {np.percentile(ms, 99):7.0f} ms  "
        f"max {ms.max():7.0f} ms  (n={len(ms):,})"
    )


async def run(broker: str, rate: float, seconds: float, partitions: int, seed: int) -> None:
    tag = uuid.uuid4().hex[:6]
    work = ROOT / ".local" / f"bench-latency-{tag}"
    work.mkdir(parents=True)
    s = Settings(
        broker=broker,
        topic_prefix=f"bl{tag}.",
        app_id=f"bench-latency-{tag}",
        partitions=partitions,
        data_dir=work / "data",
    )
    await ensure_topics(s)
    worker = harness.start_worker(s, work / "worker.log")
    try:
        await offer(s, 50, 2, seed + 1)  # warm-up: the worker joins and loads its model
        await harness.wait_for_count(s, s.topic("decisions_topic"), 100, timeout=300)
        arrivals: dict[str, dict[Where, float]] = {"holds": {}, "decisions": {}}
        ready, stop = asyncio.Event(), asyncio.Event()
        reader = asyncio.create_task(read_outputs(s, arrivals, ready, stop))
        await ready.wait()
        sent = await offer(s, rate, seconds, seed)
        deadline = time.monotonic() + 120
        while len(arrivals["decisions"]) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        stop.set()
        await reader
    finally:
        harness.stop(worker)
    print(f"offered {rate:,.0f} records/s for {seconds:.0f}s ({len(sent):,} records):")
    for name, got in arrivals.items():
        lat = [t - sent[w] for w, t in got.items() if w in sent]
        print(f"  {name:<9} readable: {summary(lat)}")
    lost = len(sent) - len(set(arrivals["decisions"]) & set(sent))
    if lost:
        print(f"  {lost:,} records without a decision within 120 s")


async def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--rates", type=float, nargs="+", default=[1000, 5000])
    a.add_argument("--seconds", type=float, default=30)
    a.add_argument("--partitions", type=int, default=8)
    a.add_argument("--broker", default="127.0.0.1:9092")
    a.add_argument("--seed", type=int, default=21)
    args = a.parse_args()
    for rate in args.rates:
        await run(args.broker, rate, args.seconds, args.partitions, args.seed)


if __name__ == "__main__":
    asyncio.run(main())
