"""Crashes on the real broker: SIGKILL the worker at random moments, lose nothing.

At-least-once: offsets are committed only after a batch's outputs and table writes are
acknowledged by the broker, so a killed worker's uncommitted records are decided again by
the next one: every input record ends with at least one decision; the extra ones are
counted. A replay is the same decision again (same revision), and one the worker remembers
publishing is skipped (`parcel_risk_replays_skipped_total`).

Exactly-once (the default): a read-committed reader sees every record decided once, and
every hold once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import decisions_per_record

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
) -> dict[tuple[str, int, int], list[int]]:
    """Preload parcels, run a worker killed `kills` times; each input record's decisions
    (their revisions)."""
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
    decided = await decisions_per_record(
        s, valid, timeout=900, worker=worker, isolation_level="read_committed"
    )
    lost = valid - set(decided)
    assert not lost, f"{len(lost)} records without a decision, e.g. {sorted(lost)[:5]}"
    return decided


def report(decided: dict[tuple[str, int, int], list[int]], label: str) -> int:
    dups = sum(len(revs) - 1 for revs in decided.values())
    worst = Counter(len(revs) for revs in decided.values())
    print(f"{label}: {len(decided):,} records decided, {dups:,} duplicate decisions")
    print(f"  decisions per record: {dict(sorted(worst.items()))}")
    return dups


def assert_replays_are_the_same_decision(decided: dict[tuple[str, int, int], list[int]]) -> None:
    """A record decided twice was replayed, not rescored: one revision per record."""
    rescored = {src: revs for src, revs in decided.items() if len(set(revs)) > 1}
    assert not rescored, (
        f"{len(rescored)} replays got a new revision, e.g. {next(iter(rescored.items()))}"
    )


async def test_three_sigkills_lose_no_record(settings: Settings, start_worker) -> None:
    s = settings.with_(processing_guarantee="at_least_once")
    decided = await crash_run(s, start_worker, parcels=12_000, kills=3, seed=31)
    report(decided, "at-least-once, 3 SIGKILLs")
    assert_replays_are_the_same_decision(decided)


@pytest.mark.slow
async def test_three_sigkills_over_200k_parcels(settings: Settings, start_worker) -> None:
    s = settings.with_(partitions=8, processing_guarantee="at_least_once")
    decided = await crash_run(s, start_worker, parcels=200_000, kills=3, seed=32)
    report(decided, "at-least-once, 200k parcels, 3 SIGKILLs")
    assert_replays_are_the_same_decision(decided)


async def holds_per_record(s: Settings) -> Counter[tuple[str, int, int, str]]:
    """How many holds of each category each input record got (the all-holds topic, read
    committed)."""
    import orjson

    from tests.conftest import read_all

    holds = await read_all(s, "holds_topic", idle_s=5.0)
    return Counter(
        (h["source"]["topic"], h["source"]["partition"], h["source"]["offset"], h["category"])
        for h in (orjson.loads(v) for _k, v in holds)
    )


async def exactly_once_crash_run(s: Settings, start_worker, parcels: int, seed: int) -> None:
    assert s.processing_guarantee == "exactly_once"
    decided = await crash_run(s, start_worker, parcels=parcels, kills=3, seed=seed)
    dups = report(decided, f"exactly-once, {parcels:,} parcels, 3 SIGKILLs")
    assert dups == 0
    holds = await holds_per_record(s)
    assert holds, "no holds to check"
    assert max(holds.values()) == 1, f"{sum(n - 1 for n in holds.values())} duplicate holds"


async def test_three_sigkills_exactly_once_no_duplicate(settings: Settings, start_worker) -> None:
    await exactly_once_crash_run(settings, start_worker, parcels=12_000, seed=33)


@pytest.mark.slow
async def test_three_sigkills_over_200k_parcels_exactly_once(
    settings: Settings, start_worker
) -> None:
    await exactly_once_crash_run(settings.with_(partitions=8), start_worker, 200_000, seed=34)
