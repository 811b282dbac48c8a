"""The whole path on the real broker: feed -> worker -> decisions, holds and dead letters."""

from __future__ import annotations

import base64
from collections import Counter

import orjson
import pytest

from models.registry import load
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events
from streams.topics import ensure_topics
from tests.conftest import read_all

pytestmark = pytest.mark.integration


async def test_every_record_ends_in_exactly_one_place(settings, start_worker) -> None:
    await ensure_topics(settings)
    gen = TrafficGenerator(GeneratorConfig(seed=11, bad_fraction=0.05))
    sent: list = []
    await produce_events(settings, gen.events(1500), sent=sent)
    good = {(md.topic, md.partition, md.offset): ev for ev, md in sent if ev.bad_reason is None}
    bad = {(md.topic, md.partition, md.offset): ev for ev, md in sent if ev.bad_reason}
    assert len(good) > 2000 and len(bad) > 50  # a few thousand records, malformed among them

    worker = start_worker(settings)
    decisions = await read_all(
        settings, "decisions_topic", expect=len(good), timeout=180, worker=worker
    )
    dead = await read_all(settings, "deadletter_topic", expect=len(bad), timeout=60)
    holds = await read_all(settings, "holds_topic", idle_s=3)
    assert worker.proc.poll() is None, worker.output()

    # every valid record: exactly one decision, from exactly that record
    by_source = Counter()
    for key, value in decisions:
        d = orjson.loads(value)
        src = d["source"]
        by_source[(src["topic"], src["partition"], src["offset"])] += 1
        assert key == d["hawb"].encode()
        assert "name" not in value.decode()  # pseudonymised: no names in decisions
    assert set(by_source) == set(good)
    assert max(by_source.values()) == 1

    # every malformed record: in the dead-letter topic, original bytes and the right field
    dead_by_source = {}
    for _key, value in dead:
        d = orjson.loads(value)
        src = d["source"]
        dead_by_source[(src["topic"], src["partition"], src["offset"])] = d
    assert set(dead_by_source) == set(bad)
    for where, d in dead_by_source.items():
        assert base64.b64decode(d["original_b64"]) == bad[where].value
        assert d["field"].split(".")[0].split("[")[0] == bad[where].bad_reason.split(".")[0]
        assert d["reason"]

    # holds are exactly the decisions at or above a threshold, with scores and reasons
    thresholds = load(settings.model_dir).thresholds
    flagged = {}
    for _key, value in decisions:
        d = orjson.loads(value)
        over = [c for c, v in d["scores"].items() if v >= thresholds[c]["review"]]
        if not d["rules"]:  # rules may force an action; without them the thresholds decide
            assert (d["action"] is not None) == bool(over)
            if d["action"] == "hold":
                assert any(v >= thresholds[c]["hold"] for c, v in d["scores"].items())
        if d["action"]:
            flagged[(d["hawb"], d["source"]["offset"], d["source"]["topic"])] = d
    got = {}
    for key, value in holds:
        h = orjson.loads(value)
        assert key == h["hawb"].encode()
        assert h["reasons"] and all(isinstance(r, str) and r for r in h["reasons"])
        assert set(h["scores"]) == {"fentanyl", "counterfeit", "undervaluation"}
        got[(h["hawb"], h["source"]["offset"], h["source"]["topic"])] = h
    assert set(got) == set(flagged)
    assert flagged, "a few thousand parcels should flag some"
    for k, h in got.items():
        assert h["category"] == flagged[k]["category"]
        assert h["action"] == flagged[k]["action"]
