"""Crashes on the real broker: SIGKILL the worker at random moments, lose nothing.

Offsets are committed only after a batch's outputs and table writes are acknowledged by
the broker, so a killed worker's uncommitted records are decided again by the next one:
every input record ends with at least one decision; the extra ones are counted.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import read_all

pytestmark = pytest.mark.integration


async def wait_for_decisions(s: Settings, n: float, timeout: float) -> bool:
    """Poll the decisions topic's end offsets (one consumer) until they sum to n."""
    c = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None)
    await c.start()
    try:
        topic = s.topic("decisions_topic")
        tps = [TopicPartition(topic, p) for p in range(s.partitions)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum((await c.end_offsets(tps)).values()) >= n:
                return True
            await asyncio.sleep(0.5)
        return False
    finally:
        await c.stop()


async def crash_run(
    s: Settings, start_worker, parcels: int, kills: int, seed: int, **env: str
) -> Counter:
    """Preload parcels, run a worker killed `kills` times; decisions per input record."""
    await ensure_topics(s)
    sent: list = []
    events = TrafficGenerator(GeneratorConfig(seed=seed, bad_fraction=0.01)).events(parcels)
    await produce_events(s, events, sent=sent)
    valid = {(md.topic, md.partition, md.offset) for ev, md in sent if ev.bad_reason is None}
    rng = random.Random(seed)
    worker = start_worker(s, **env)
    for k in range(kills):
        # a random point in the k-th quarter of the run, then a random extra moment
        target = len(valid) * (k + rng.uniform(0.3, 1.0)) / (kills + 1)
        assert await wait_for_decisions(s, target, timeout=600), (
            f"no progress before kill {k + 1}:\n{worker.output()}"
        )
        await asyncio.sleep(rng.uniform(0.0, 2.0))
        worker.stop(signal.SIGKILL)
        worker = start_worker(s, **env)
    assert await wait_for_decisions(s, len(valid), timeout=900), worker.output()
    decided: Counter = Counter()
    for _k, v in await read_all(
        s,
        "decisions_topic",
        idle_s=5.0,
        timeout=300,
        worker=worker,
        isolation_level="read_committed",
    ):
        src = orjson.loads(v)["source"]
        decided[(src["topic"], src["partition"], src["offset"])] += 1
    lost = valid - set(decided)
    assert not lost, f"{len(lost)} records without a decision, e.g. {sorted(lost)[:5]}"
    return decided


def report(decided: Counter, label: str) -> int:
    dups = sum(c - 1 for c in decided.values())
    print(f"{label}: {len(decided):,} records decided, {dups:,} duplicate decisions")
    return dups


async def test_three_sigkills_lose_no_record(settings: Settings, start_worker) -> None:
    decided = await crash_run(settings, start_worker, parcels=12_000, kills=3, seed=31)
    dups = report(decided, "at-least-once, 3 SIGKILLs")
    assert dups < len(decided)  # duplicates are bounded by the uncommitted tail, not a replay


@pytest.mark.slow
async def test_three_sigkills_over_200k_parcels(settings: Settings, start_worker) -> None:
    s = settings.with_(partitions=8)
    decided = await crash_run(s, start_worker, parcels=200_000, kills=3, seed=32)
    report(decided, "at-least-once, 200k parcels, 3 SIGKILLs")
