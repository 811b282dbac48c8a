"""Throughput on the real broker: the worker against the transport's limit and a naive agent.

    python -m benchmarks.throughput [--parcels 1000000] [--naive-records 20000]
        [--workers 1 2] [--guarantees at_least_once exactly_once]

Preloads generated parcels (manifests and entries) into the input topics once, then runs
three consumers of the same bytes, one after the other, each in a fresh consumer group:
  raw    aiokafka consume-and-produce passthrough (the transport's limit in Python)
  naive  a Faust agent that decodes and scores one event at a time (benchmarks/naive.py)
  worker the full pipeline: validate, join, history, features, model, rules, publish,
         under each processing guarantee
Each figure is output messages over the span of their CreateTimes (start-up excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks import harness
from benchmarks.naive import OUTPUT as NAIVE_OUTPUT
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events, producer_for
from streams.settings import Settings
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
    """Run one process until `topic` holds n messages: (count, per second, RSS MiB)."""
    proc = harness.start_worker(s, log, module=module)
    try:
        await harness.wait_for_count(s, topic, n, timeout, workers=[proc])
        rss = harness.rss_mib(proc.pid)
    finally:
        harness.stop(proc)
    got, per_s = await harness.rate(s, topic)
    return got, per_s, rss


async def run_workers(
    s: Settings, count: int, n: int, work: Path, timeout: float
) -> tuple[int, float, float, list[float]]:
    """`count` workers in one group on their own decisions topic, measured once all of them
    own partitions (a worker that joins late would otherwise count as scale-out's cost):
    (decisions, decisions per second, summed RSS MiB, each worker's CPU µs per decision of
    the group). The decisions are read back as a read-committed reader gets them, which is
    also what counts under exactly-once."""
    tag = f"w{count}{'x' if s.processing_guarantee == 'exactly_once' else ''}"
    s = s.with_(app_id=f"{s.app_id}-{tag}", decisions_topic=f"parcels.decisions.{tag}")
    topic = s.topic("decisions_topic")
    ports = [harness.free_port() for _ in range(count)]
    procs = [
        harness.start_worker(
            s.with_(data_dir=work / f"{tag}-{i}"),
            work / f"{tag}-{i}.log",
            web_port=port,
            PARCEL_RISK_DECISIONS_TOPIC=s.decisions_topic,
        )
        for i, port in enumerate(ports)
    ]
    try:
        await ensure_topics(s)
        reading = asyncio.create_task(harness.read_times(s, topic, n, timeout))
        await harness.wait_assigned(s.topic("manifest_topic"), ports, procs, timeout=300)
        joined = time.time()
        cpu = [harness.cpu_seconds(p.pid) for p in procs]
        stamps = await harness.while_alive(reading, procs)
        cpu = [harness.cpu_seconds(p.pid) - c for p, c in zip(procs, cpu, strict=True)]
        rss = sum(harness.rss_mib(p.pid) for p in procs)
    finally:
        for p in procs:
            harness.stop(p)
    counted = sum(1 for t in stamps if t > joined)
    per_decision = [c / max(counted, 1) * 1e6 for c in cpu]
    return len(stamps), counted / max(max(stamps) - joined, 1e-6), rss, per_decision


async def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--parcels", type=int, default=1_000_000)
    a.add_argument("--naive-records", type=int, default=20_000)
    a.add_argument("--partitions", type=int, default=8)
    a.add_argument("--broker", default="127.0.0.1:9092")
    a.add_argument("--seed", type=int, default=11)
    a.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="worker counts to run, e.g. 1 2"
    )
    a.add_argument(
        "--guarantees",
        nargs="+",
        default=["at_least_once", "exactly_once"],
        choices=["at_least_once", "exactly_once"],
    )
    args = a.parse_args()
    s = harness.own_run(
        Settings(broker=args.broker, partitions=args.partitions), "bt", "bench-throughput"
    )
    # at the end, its topics (naive and raw outputs, each worker count's decisions),
    # changelogs and groups (the app id's, -naive, -w<count>) leave the shared broker
    async with harness.work_dir(s) as work:
        await measure(s.with_(data_dir=work / "data"), args, work)


async def measure(s: Settings, args: argparse.Namespace, work: Path) -> None:
    prefix = s.topic_prefix
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

    rates: dict[tuple[str, int], float] = {}
    for guarantee in args.guarantees:
        for count in args.workers:
            t0 = time.monotonic()
            got, rates[guarantee, count], rss, cpu = await run_workers(
                s.with_(processing_guarantee=guarantee), count, n, work, timeout=4 * 3600
            )
            print(
                f"parcel-risk, {guarantee}, {count} worker{'s' if count > 1 else ' '}: "
                f"{rates[guarantee, count]:>9,.0f} decisions/s ({got:,} decisions, "
                f"{time.monotonic() - t0:.0f}s with start-up; RSS {rss:,.0f} MiB); "
                f"CPU µs per decision: {' + '.join(f'{c:,.0f}' for c in cpu)}"
                + (f" = {sum(cpu):,.0f}" if count > 1 else "")
            )
    first = args.workers[0]
    for guarantee in args.guarantees:
        worker = rates[guarantee, first]
        for count in args.workers[1:]:
            print(
                f"{guarantee}, {count} workers / {first}: {rates[guarantee, count] / worker:.2f}x"
            )
        print(
            f"{guarantee}: worker / raw passthrough {worker / raw:.1%} (target >= 50%), "
            f"worker / naive agent {worker / naive:.1f}x (target >= 20x)"
        )
    if len(args.guarantees) == 2:
        alo, eos = (rates[g, first] for g in ("at_least_once", "exactly_once"))
        print(f"exactly-once / at-least-once: {eos / alo:.2f}x (default if >= 0.75x)")


if __name__ == "__main__":
    asyncio.run(main())
