"""Worker state at scale: history for N shippers, memory, and recovery after a restart.

    python -m benchmarks.state [--shippers 1000000] [--partitions 8]

Produces one manifest from each of N distinct shippers (and N distinct addresses) to the
real local broker, runs one worker (RocksDB store) until every parcel is decided, then
reports the worker's RSS, the local store's size on disk, and two recoveries after
SIGKILL: with the local RocksDB store kept (a restart on the same machine) and with it
deleted (a new machine rebuilding state from the changelog topics). Recovery is timed
from process start to the first decision for a new parcel of an already-known shipper,
whose history must be intact.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks import harness
from models.features import INDEX
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.samples import MANIFEST


def manifest(i: int, hawb: str) -> bytes:
    m = copy.deepcopy(MANIFEST)
    m["hawb"] = hawb
    m["shipper"]["name"] = f"Bench Shipper {i} Trading Co Ltd"
    m["consignee"]["address"] = f"{i} Benchmark St"
    return orjson.dumps(m)


async def produce(s: Settings, n: int) -> None:
    p = AIOKafkaProducer(bootstrap_servers=s.bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await p.start()
    try:
        for i in range(n):
            hawb = f"S{i:011d}"
            await p.send(s.topic("manifest_topic"), manifest(i, hawb), key=hawb.encode())
        await p.flush()
    finally:
        await p.stop()


async def _decisions(s: Settings, reset: str, timeout: float) -> AsyncGenerator[Any]:
    """Messages on the decisions topic (from the start or from now) until `timeout`."""
    c = AIOKafkaConsumer(
        s.topic("decisions_topic"),
        bootstrap_servers=s.bootstrap,
        group_id=None,
        auto_offset_reset=reset,
    )
    await c.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=1000, max_records=20000)).values():
                for m in msgs:
                    yield m
    finally:
        await c.stop()


async def count_decisions(s: Settings, n: int, timeout: float) -> float:
    """Seconds until n decisions exist (consumes the decisions topic from the start)."""
    start = time.monotonic()
    seen = 0
    async with aclosing(_decisions(s, "earliest", timeout)) as messages:
        async for _m in messages:
            seen += 1
            if seen >= n:
                return time.monotonic() - start
    raise TimeoutError(f"only {seen} of {n} decisions after {timeout}s")


async def decision_of(s: Settings, hawb: str, timeout: float = 600) -> dict:
    async with aclosing(_decisions(s, "latest", timeout)) as messages:
        async for m in messages:
            if m.key == hawb.encode():
                return orjson.loads(m.value)
    raise TimeoutError(f"no decision for {hawb}")


async def recover(s: Settings, log: Path, probe: int) -> tuple[float, dict]:
    """Start a worker, send a parcel from a known shipper, time until its decision."""
    started = time.monotonic()
    w = harness.start_worker(s, log)
    try:
        hawb = f"P{uuid.uuid4().hex[:10].upper()}"
        waiter = asyncio.create_task(decision_of(s, hawb))
        await asyncio.sleep(1.0)
        p = AIOKafkaProducer(bootstrap_servers=s.bootstrap)
        await p.start()
        await p.send_and_wait(s.topic("manifest_topic"), manifest(probe, hawb), key=hawb.encode())
        await p.stop()
        d = await waiter
        took = time.monotonic() - started
    finally:
        _kill(w)
    return took, d


def _kill(w: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker this benchmark started, by its pid."""
    if w.poll() is None:
        os.kill(w.pid, signal.SIGKILL)
    w.wait()


async def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--shippers", type=int, default=1_000_000)
    a.add_argument("--partitions", type=int, default=8)
    a.add_argument("--broker", default="127.0.0.1:9092")
    args = a.parse_args()
    s = harness.own_run(
        Settings(broker=args.broker, partitions=args.partitions), "bs", "bench-state"
    )
    async with harness.work_dir(s) as work:  # its topics, changelogs and group go at the end
        await measure(s.with_(data_dir=work / "data"), work, args.shippers)


async def measure(s: Settings, work: Path, shippers: int) -> None:
    log = work / "worker.log"
    await ensure_topics(s)
    t0 = time.monotonic()
    await produce(s, shippers)
    print(f"produced {shippers:,} manifests from distinct shippers in {time.monotonic() - t0:.0f}s")
    w = harness.start_worker(s, log)
    try:
        took = await count_decisions(s, shippers, timeout=7200)
        rss = harness.rss_mib(w.pid)
    finally:
        _kill(w)  # a crash, as the restarts below recover from
    print(
        f"decided all in {took:.0f}s ({shippers / took:,.0f} parcels/s through three "
        f"stages); worker RSS {rss:,.0f} MiB; local RocksDB {harness.du_mib(s.data_dir):,.0f} MiB"
    )
    warm, d1 = await recover(s, log, probe=7)
    print(
        f"restart with local store: first decision after {warm:.1f}s; shipper history "
        f"parcels = {d1['features'][INDEX['shipper_parcels']]:.0f}"
    )
    shutil.rmtree(s.data_dir)
    cold, d2 = await recover(s, log, probe=8)
    print(
        f"restart without local store (changelog replay): first decision after {cold:.1f}s;"
        f" shipper history parcels = {d2['features'][INDEX['shipper_parcels']]:.0f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
