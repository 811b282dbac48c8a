"""A broker restart mid-run: the worker reconnects by itself and decides every record.

The test runs its own broker (deploy/kafka/broker.py on free ports, its own state dir) so
that stopping it does not disturb the other tests; it stops it by its pid at the end.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import Broker, eventually, read_all

pytestmark = pytest.mark.integration


async def _produce(s: Settings, parcels: int, seed: int) -> set[tuple[str, int, int]]:
    sent: list = []
    events = TrafficGenerator(GeneratorConfig(seed=seed)).events(parcels)
    await produce_events(s, events, sent=sent)
    return {(md.topic, md.partition, md.offset) for _ev, md in sent}


async def _decided(s: Settings, worker) -> set[tuple[str, int, int]]:  # type: ignore[no-untyped-def]
    out = set()
    for _k, v in await read_all(s, "decisions_topic", idle_s=2.0, timeout=60, worker=worker):
        src = orjson.loads(v)["source"]
        out.add((src["topic"], src["partition"], src["offset"]))
    return out


async def test_worker_survives_a_broker_restart(
    own_broker: Broker, model_dir: Path, start_worker, tmp_path: Path
) -> None:
    s = own_broker.worker_settings(model_dir, tmp_path / "worker")
    await ensure_topics(s)
    before = await _produce(s, 1_500, seed=41)
    worker = start_worker(s)
    assert await eventually(lambda: _covers(s, worker, before), timeout=180), worker.output()

    own_broker.run("stop")  # SIGTERM by pid: a rolling restart, as operators do
    own_broker.run("start")
    after = await _produce(s, 1_500, seed=42)
    assert await eventually(lambda: _covers(s, worker, before | after), timeout=240), (
        worker.output()
    )
    assert worker.proc.poll() is None, "the worker exited instead of reconnecting"


async def _covers(s: Settings, worker, records: set) -> bool:  # type: ignore[no-untyped-def]
    return records <= await _decided(s, worker)
