"""The stream layer's floor: consuming only, aiokafka against the worker's Faust consumer.

    python -m benchmarks.stream_floor [--records 200000]

Preloads 700-byte records on 8 partitions, then consumes them twice in one run, each time
in a fresh consumer group and doing nothing with them: aiokafka's `getmany` (the client's
limit in Python), and the worker's own Faust app (`streams.app.bare_app`: its patches and
settings) with one agent that takes batches with `take_events` as the stages do and
acknowledges them. Prints records/s and the Faust process's CPU per event, and Faust's
share of aiokafka's rate (issue 18: >= 15,000 events/s per process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks import harness
from streams.security import connection
from streams.settings import ROOT, Settings, from_env, to_env

PARTITIONS = 8
PAYLOAD = b'{"schema_version":1,"hawb":"ABCDEFGH1234","desc":"' + b"x" * 640 + b'"}'
BATCH = 2_000  # as the join stage takes them
WITHIN_S = 0.05


async def preload(s: Settings, topic: str, n: int) -> None:
    admin = AIOKafkaAdminClient(**connection(s))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    p = AIOKafkaProducer(**connection(s), linger_ms=5, max_batch_size=256 * 1024)
    await p.start()
    try:
        sends = [
            await p.send(topic, PAYLOAD, key=str(i).encode(), partition=i % PARTITIONS)
            for i in range(n)
        ]
        await asyncio.gather(*sends)
    finally:
        await p.stop()


async def aiokafka_floor(s: Settings, topic: str, n: int) -> float:
    """Records/s of a plain aiokafka consumer reading the topic once."""
    c = AIOKafkaConsumer(
        topic,
        **connection(s),
        group_id=f"{s.app_id}-aiokafka",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 2**20,
    )
    await c.start()
    got, started = 0, 0.0
    try:
        while got < n:
            batch = await c.getmany(timeout_ms=500, max_records=5_000)
            if batch and not started:
                started = time.perf_counter()
            got += sum(len(records) for records in batch.values())
    finally:
        await c.stop()
    return got / (time.perf_counter() - started)


def faust_floor(s: Settings, topic: str, n: int, work: Path) -> tuple[float, float, str]:
    """(records/s, CPU µs per event, the machine's shares meanwhile) of the worker's Faust
    app, run as its own process."""
    machine = harness.machine_time()
    faust_side = s.with_(app_id=f"{s.app_id}-faust", data_dir=work / "faust")
    env = {**os.environ, **to_env(faust_side)}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.stream_floor", "--agent", topic, "--records", str(n)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    # Faust's worker sends the process's stdout to its log (stderr)
    found = re.search(r"FLOOR (\S+) (\S+)", out.stdout + out.stderr)
    if found:
        return float(found[1]), float(found[2]), (harness.machine_time() - machine).shares()
    raise SystemExit(f"the Faust floor run failed ({out.returncode}):\n{out.stderr[-3000:]}")


def agent_process(topic: str, n: int) -> None:
    """The Faust side, in this process: count events until n, print the figures, exit."""
    from streams.app import bare_app, settle_heap

    s = from_env()
    app = bare_app(s)
    source = app.topic(
        topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    state = {"n": 0, "t0": 0.0, "c0": 0.0}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for events in stream.take_events(BATCH, within=WITHIN_S):
            if not state["n"]:
                state["t0"], state["c0"] = time.perf_counter(), time.process_time()
            state["n"] += len(events)
            if state["n"] >= n:
                wall = time.perf_counter() - state["t0"]
                cpu = time.process_time() - state["c0"]
                print(f"FLOOR {state['n'] / wall:.0f} {1e6 * cpu / state['n']:.1f}", flush=True)
                os._exit(0)  # the figure is out: no graceful stop to wait for

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    settle_heap()  # as the worker does
    app.main()


async def measure(s: Settings, n: int) -> None:
    async with harness.work_dir(s) as work:  # the Faust side's store; topics go at the end
        topic = s.topic_prefix + "floor"
        await preload(s, topic, n)
        raw = await aiokafka_floor(s, topic, n)
        rate, cpu, machine = faust_floor(s, topic, n, work)
    print(f"aiokafka getmany:        {raw:>9,.0f} records/s ({n:,} records of {len(PAYLOAD)} B)")
    print(
        f"worker's Faust consumer: {rate:>9,.0f} events/s, {cpu:,.0f} µs CPU per event "
        f"(take_events {BATCH}, acks on; target >= 15,000 events/s)"
    )
    print(f"meanwhile:               {machine}")
    print(f"Faust / aiokafka:        {rate / raw:.1%}")


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--records", type=int, default=200_000)
    a.add_argument("--broker", default="127.0.0.1:9092")
    a.add_argument("--agent", metavar="TOPIC", help=argparse.SUPPRESS)  # the Faust side
    args = a.parse_args()
    if args.agent:
        agent_process(args.agent, args.records)
        return
    s = harness.own_run(Settings(broker=args.broker, partitions=PARTITIONS), "bf", "bench-floor")
    asyncio.run(measure(s, args.records))


if __name__ == "__main__":
    main()
