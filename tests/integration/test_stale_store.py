"""The broker's state wiped while the worker's local stores survive (streams/patches/
stale_stores.py): the worker starts, says which stores it discards and why, rebuilds them
from the (now empty) changelogs, and decides what comes next as a worker with fresh state
would. faust-streaming 0.15.3 alone stops at every start with ConsistencyError.

The test runs its own broker, so wiping its state disturbs no other test.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import Broker, read_all

pytestmark = pytest.mark.integration


async def _revisions(s: Settings, parcels: int, worker) -> dict[str, list[int]]:  # type: ignore[no-untyped-def]
    """Produce the same traffic (seed 41) and read each HAWB's decision revisions."""
    sent: list = []
    await produce_events(s, TrafficGenerator(GeneratorConfig(seed=41)).events(parcels), sent=sent)
    got = await read_all(s, "decisions_topic", expect=len(sent), timeout=180, worker=worker)
    revisions: dict[str, list[int]] = defaultdict(list)
    for _k, v in got:
        d = orjson.loads(v)
        revisions[d["hawb"]].append(d["revision"])
    assert sum(map(len, revisions.values())) == len(sent), worker.output()
    return {hawb: sorted(r) for hawb, r in revisions.items()}


async def test_a_local_store_ahead_of_a_wiped_broker_is_rebuilt_from_the_changelog(
    own_broker: Broker, model_dir: Path, start_worker, tmp_path: Path
) -> None:
    s = own_broker.worker_settings(model_dir, tmp_path / "worker", partitions=2)
    assert s.store.startswith("rocksdb")
    await ensure_topics(s)
    first = start_worker(s)
    before = await _revisions(s, 200, first)
    first.stop()
    stores = sorted(p.name for p in s.data_dir.rglob("*.db"))
    assert any(name.startswith("bills-") for name in stores), stores

    own_broker.run("stop")
    shutil.rmtree(own_broker.state)  # the broker's state is gone; the worker's stays
    own_broker.run("start")
    await ensure_topics(s)
    second = start_worker(s)
    after = await _revisions(s, 200, second)  # fails at once if the worker exits

    # fresh state: the same records get the same revisions as the first time (with the
    # old bills kept, every HAWB would be a revision further on)
    assert after == before
    log = second.log.read_text(errors="replace")
    assert "ConsistencyError" not in log
    warned = [line for line in log.splitlines() if "is ahead of its changelog" in line]
    assert any("table bills: local store" in line and "bills-" in line for line in warned), log[
        -5000:
    ]
    assert all("rebuilding it from the changelog" in line for line in warned)
    assert second.proc.poll() is None
