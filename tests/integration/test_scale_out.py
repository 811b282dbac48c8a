"""Two workers in one consumer group share the partitions, and every record is decided."""

from __future__ import annotations

import orjson
import pytest

from benchmarks.harness import assigned, metric_value
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import decisions_per_record, eventually, free_port, read_all

pytestmark = pytest.mark.integration


async def test_two_workers_share_eight_partitions(settings: Settings, start_worker) -> None:
    s = settings.with_(partitions=8)
    await ensure_topics(s)
    other = s.with_(web_port=free_port(), data_dir=s.data_dir.with_name(s.data_dir.name + "-b"))
    workers = [start_worker(s), start_worker(other)]
    manifest = s.topic("manifest_topic")

    def owned(port: int) -> float:
        return assigned(port, manifest)

    # both have joined and split the 8 partitions before any traffic arrives
    assert await eventually(
        lambda: owned(s.web_port) > 0 and owned(s.web_port) + owned(other.web_port) == 8,
        timeout=180,
    ), "\n".join(w.output() for w in workers)
    sent: list = []
    events = TrafficGenerator(GeneratorConfig(seed=61)).events(3_000)
    await produce_events(s, events, sent=sent)
    inputs = {(md.topic, md.partition, md.offset) for _ev, md in sent}

    def consumed(port: int) -> float:
        return metric_value(port, "parcel_risk_records_consumed_total")

    # both members took part (each consumed input records of its own partitions)
    assert await eventually(
        lambda: consumed(s.web_port) > 0 and consumed(other.web_port) > 0, timeout=180
    ), "\n".join(w.output() for w in workers)
    decided = set()
    for _k, v in await read_all(s, "decisions_topic", expect=len(inputs), timeout=240):
        src = orjson.loads(v)["source"]
        decided.add((src["topic"], src["partition"], src["offset"]))
    assert inputs <= decided, f"{len(inputs - decided)} records without a decision"
    total = consumed(s.web_port) + consumed(other.web_port)
    assert total >= len(inputs)  # between them, every input record was consumed


async def test_workers_starting_together_on_a_backlog_lose_nothing(
    settings: Settings, start_worker
) -> None:
    """Their first rebalance comes before any partition is committed
    (streams/patches/rebalance.py)."""
    s = settings.with_(partitions=8)
    await ensure_topics(s)
    sent: list = []
    await produce_events(s, TrafficGenerator(GeneratorConfig(seed=62)).events(10_000), sent=sent)
    inputs = {(md.topic, md.partition, md.offset) for ev, md in sent if ev.bad_reason is None}
    other = s.with_(web_port=free_port(), data_dir=s.data_dir.with_name(s.data_dir.name + "-b"))
    workers = [start_worker(s), start_worker(other)]
    decided = await decisions_per_record(s, inputs, timeout=600)
    missing = inputs - decided.keys()
    assert not missing, (
        f"{len(missing)} of {len(inputs)} records without a decision, e.g. {sorted(missing)[:3]}\n"
        + "\n".join(w.output() for w in workers)
    )
