"""Throughput on the real broker: the worker against the transport's limit and a naive agent.

    python -m benchmarks.throughput [--parcels 1000000] [--naive-records 20000]

Preloads generated parcels (manifests and entries) into the input topics once, then runs
three consumers of the same bytes, one after the other, each in a fresh consumer group:
  raw    aiokafka consume-and-produce passthrough (the transport's limit in Python)
  naive  a Faust agent that decodes and scores one event at a time (benchmarks/naive.py)
  worker the full pipeline: validate, join, history, features, model, rules, publish
Each figure is output messages over the span of their CreateTimes (start-up excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks import harness
from benchmarks.naive import OUTPUT as NAIVE_OUTPUT
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events, producer_for
from streams.settings import ROOT, Settings
from streams.topics import ensure_topics

RAW_OUTPUT = "bench.raw"


async def preload(s: Settings, parcels: int, seed: int) -> int:
    """Generated parcels into the input topics; returns the number of records."""
    events = TrafficGenerator(GeneratorConfig(seed=seed)).events(parcels)
    t0 = time.monotonic()
    stats = await produce_events(s, events)
    print(
        f"preloaded {parcels:,} parcels = {stats.events:,} records in {time.monotonic() - t0:.0f}s"
    )
    return stats.events


async def passthrough(s: Settings, n: int) -> None:
    """Consume every input record and produce its bytes unchanged, as fast as aiokafka can."""
    c = AIOKafkaConsumer(
        bootstrap_servers=s.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await c.start()
    p = producer_for(s)
    await p.start()
    out = s.topic_prefix + RAW_OUTPUT
    try:
        tps = [
            TopicPartition(s.topic(t), i)
            for t in ("manifest_topic", "entries_topic")
            for i in range(s.partitions)
        ]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        done = 0
        while done < n:
            futures = []
            for msgs in (await c.getmany(timeout_ms=1000, max_records=10_000)).values():
                for m in msgs:
                    futures.append(await p.send(out, m.value, key=m.key))
                done += len(msgs)
            await asyncio.gather(*futures)
    finally:
        await p.stop()
        await c.stop()


async def run_process(
    s: Settings, module: str, topic: str, n: int, log: Path, timeout: float
) -> tuple[int, float, float]:
    """Run a worker process until `topic` holds n messages: (count, per second, RSS MiB)."""
    proc = harness.start_worker(s, log, module=module)
    try:
        await harness.wait_for_count(s, topic, n, timeout)
        rss = harness.rss_mib(proc.pid)
    finally:
        harness.stop(proc)
    got, per_s = await harness.rate(s, topic)
    return got, per_s, rss


async def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--parcels", type=int, default=1_000_000)
    a.add_argument("--naive-records", type=int, default=20_000)
    a.add_argument("--partitions", type=int, default=8)
    a.add_argument("--broker", default="127.0.0.1:9092")
    a.add_argument("--seed", type=int, default=11)
    args = a.parse_args()
    tag = uuid.uuid4().hex[:6]
    prefix = f"bt{tag}."
    work = ROOT / ".local" / f"bench-throughput-{tag}"
    work.mkdir(parents=True)
    s = Settings(
        broker=args.broker,
        topic_prefix=prefix,
        app_id=f"bench-throughput-{tag}",
        partitions=args.partitions,
        data_dir=work / "data",
    )
    await ensure_topics(s)
    n = await preload(s, args.parcels, args.seed)
    print(f"topics prefix {prefix} ({args.partitions} partitions), work dir {work}")

    t0 = time.monotonic()
    await passthrough(s, n)
    raw_n, raw = await harness.rate(s, s.topic_prefix + RAW_OUTPUT)
    print(
        f"raw aiokafka passthrough: {raw:>9,.0f} records/s "
        f"({raw_n:,} in {time.monotonic() - t0:.0f}s)"
    )

    naive_n, naive, _ = await run_process(
        s,
        "benchmarks.naive",
        s.topic_prefix + NAIVE_OUTPUT,
        min(n, args.naive_records),
        work / "naive.log",
        timeout=1800,
    )
    print(f"naive Faust agent:        {naive:>9,.0f} records/s ({naive_n:,} records)")

    t0 = time.monotonic()
    got, worker, rss = await run_process(
        s, "streams.cli", s.topic("decisions_topic"), n, work / "worker.log", timeout=4 * 3600
    )
    print(
        f"parcel-risk worker:       {worker:>9,.0f} decisions/s ({got:,} decisions, "
        f"{time.monotonic() - t0:.0f}s with start-up; RSS {rss:,.0f} MiB)"
    )
    print(
        f"worker / raw passthrough: {worker / raw:.1%} (target >= 50%)\n"
        f"worker / naive agent:     {worker / naive:.1f}x (target >= 20x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
