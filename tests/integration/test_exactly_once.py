"""Exactly-once on the real broker (streams/outbox.py, streams/patches/transactions.py): a
worker's tables come back from changelogs written in transactions, and a paused worker
whose partitions moved is fenced, so nothing is decided twice for a read-committed reader.
The SIGKILL crash runs are in test_crash.py."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections import defaultdict

import orjson
import pytest

from benchmarks.harness import assigned, metric_value
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import decisions_per_record, eventually, free_port, read_all

pytestmark = pytest.mark.integration


async def _revisions(s: Settings, worker, before: int = 0) -> dict[str, list[int]]:  # type: ignore[no-untyped-def]
    """Produce the traffic of seed 41 and read every HAWB's decision revisions so far
    (`before` decisions were there already)."""
    sent: list = []
    await produce_events(s, TrafficGenerator(GeneratorConfig(seed=41)).events(300), sent=sent)
    expect = before + len(sent)
    got = await read_all(s, "decisions_topic", expect=expect, timeout=180, worker=worker)
    revisions: dict[str, list[int]] = defaultdict(list)
    for _k, v in got:
        d = orjson.loads(v)
        revisions[d["hawb"]].append(d["revision"])
    assert sum(map(len, revisions.values())) == expect, worker.output()
    return revisions


async def test_tables_come_back_from_changelogs_written_in_transactions(
    settings: Settings, start_worker
) -> None:
    """A changelog ends with a commit marker, and a read-committed consumer learns where it
    ends only from the broker: faust-streaming alone took an unfetched changelog for an
    empty one and started with empty tables."""
    s = settings  # exactly-once is the default
    await ensure_topics(s)
    first = start_worker(s)
    before = await _revisions(s, first)
    first.stop()
    shutil.rmtree(s.data_dir)  # the local stores are gone: only the changelogs remain
    second = start_worker(s)
    after = await _revisions(s, second, sum(map(len, before.values())))  # the same again
    # every bill was restored: its records come again as later revisions, never as new
    for hawb, revs in after.items():
        first_time = sorted(before[hawb])
        assert sorted(revs)[: len(first_time)] == first_time
        assert min(sorted(revs)[len(first_time) :]) > max(first_time), (hawb, revs)


async def test_a_paused_worker_is_fenced_and_nothing_is_decided_twice(
    settings: Settings, start_worker
) -> None:
    s = settings.with_(partitions=4)
    await ensure_topics(s)
    a = start_worker(s)
    b_settings = s.with_(
        web_port=free_port(), data_dir=s.data_dir.with_name(s.data_dir.name + "-b")
    )
    manifest = s.topic("manifest_topic")
    assert await eventually(lambda: assigned(s.web_port, manifest) == 4, timeout=180), a.output()
    sent: list = []
    events = list(TrafficGenerator(GeneratorConfig(seed=43)).events(8_000))

    async def stream() -> None:  # a chunk a second: the stream goes on while a is paused
        for i in range(0, len(events), 500):
            await produce_events(s, events[i : i + 500], sent=sent)
            await asyncio.sleep(1.0)

    feed = asyncio.create_task(stream())
    assert await eventually(
        lambda: metric_value(s.web_port, "parcel_risk_decisions_total") > 500, timeout=120
    ), a.output()
    os.kill(a.proc.pid, signal.SIGSTOP)  # paused mid-stream, its transactions open
    try:
        b = start_worker(b_settings)
        # b takes every partition once a's session has expired, fencing a's producers
        assert await eventually(
            lambda: assigned(b_settings.web_port, manifest) == 4, timeout=120
        ), b.output()
        await asyncio.sleep(3.0)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)  # a wakes up to commit what it had
    await feed
    valid = {(md.topic, md.partition, md.offset) for ev, md in sent if ev.bad_reason is None}
    decided = await decisions_per_record(s, valid, timeout=300, worker=b)
    lost = valid - set(decided)
    assert not lost, f"{len(lost)} records without a decision"
    twice = {src: revs for src, revs in decided.items() if len(revs) > 1}
    assert not twice, f"{len(twice)} records decided twice, e.g. {next(iter(twice.items()))}"
    assert a.proc.poll() is None, "a fenced worker goes on (it rejoins the group)"
