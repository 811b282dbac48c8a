"""The feedback loop on the real broker: decisions + dispositions -> export -> train -> promote."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime

import orjson
import pytest

from benchmarks.harness import metric_value
from models.registry import load, versions
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.cli import main
from streams.feed import produce_events
from streams.serving import promote
from streams.topics import ensure_topics
from tests.conftest import eventually, publish, read_all

pytestmark = pytest.mark.integration

OUTCOME = {
    "fentanyl": "seized_narcotics",
    "counterfeit": "seized_ipr",
    "undervaluation": "undervalued",
}


async def test_export_train_promote(settings, start_worker, model_dir, tmp_path) -> None:
    folder = tmp_path / "models"
    shutil.copytree(model_dir, folder)
    s = settings.with_(model_dir=folder)
    (first,) = versions(folder)
    await ensure_topics(s)
    await promote(s, first, by="test")
    worker = start_worker(s)

    gen = TrafficGenerator(GeneratorConfig(seed=31))
    events = list(gen.events(3000))
    labels = gen.labels()
    sent: list = []
    await produce_events(s, events, sent=sent)
    decisions = await read_all(s, "decisions_topic", expect=len(sent), timeout=180, worker=worker)
    assert len(decisions) == len(sent)

    # analysts examine the risky parcels and a few clean ones
    now = datetime.now(UTC).isoformat()
    examined = []
    for lab in labels:
        risky = [c for c in OUTCOME if getattr(lab, c)]
        if risky or hash(lab.hawb) % 50 == 0:
            examined.append(
                {
                    "schema_version": 1,
                    "event_time": now,
                    "hawb": lab.hawb,
                    "outcome": OUTCOME[risky[0]] if risky else "released",
                    "examined_at": now,
                    "analyst": "test",
                }
            )
    await publish(s, "dispositions_topic", examined)

    env = ["--broker", s.broker, "--prefix", s.topic_prefix, "--model-dir", str(folder)]
    export = tmp_path / "export.jsonl"
    assert await asyncio.to_thread(main, [*env, "export", "--out", str(export)]) == 0
    rows = [orjson.loads(line) for line in export.read_bytes().splitlines()]
    assert len(rows) == len(decisions)
    positives = sum(any(r["labels"].values()) for r in rows)
    assert positives > 0.5 * sum(1 for d in examined if d["outcome"] != "released")

    assert await asyncio.to_thread(main, [*env, "train", "--data", str(export), "--seed", "3"]) == 0
    second = versions(folder)[-1]
    assert second != first
    trained = load(folder, second)
    assert trained.references == load(folder, first).references  # same features as served
    assert trained.meta["data"]["rows"] == len(rows)

    assert await asyncio.to_thread(main, [*env, "promote", second]) == 0
    assert await eventually(
        lambda: metric_value(s.web_port, "parcel_risk_model_info", {"version": second}) == 1.0,
        timeout=60,
    )
    more = list(TrafficGenerator(GeneratorConfig(seed=32)).events(100))
    sent_more: list = []
    await produce_events(s, more, sent=sent_more)
    latest = await read_all(
        s, "decisions_topic", expect=len(sent) + len(more), timeout=120, worker=worker
    )
    # the new records' decisions, by source: the topic's order across partitions is not
    # the order of deciding, so the last ones read need not be the new ones
    new = {(md.topic, md.partition, md.offset) for _ev, md in sent_more}
    decided = [orjson.loads(v) for _k, v in latest]
    tail = [
        d for d in decided if tuple(d["source"][k] for k in ("topic", "partition", "offset")) in new
    ]
    assert tail and all(d["model_version"] == second for d in tail)
