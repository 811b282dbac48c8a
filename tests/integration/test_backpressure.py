"""A worker on a backlog holds its input back for the later stages (streams/backpressure.py)
and still decides every record: a held partition loses nothing it had fetched."""

from __future__ import annotations

import pytest

from benchmarks.harness import metric_value
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import decisions_per_record

pytestmark = pytest.mark.integration


async def test_a_held_input_loses_nothing(settings: Settings, start_worker) -> None:
    s = settings.with_(stage_backlog=8)  # a few envelopes: the input is held again and again
    await ensure_topics(s)
    sent: list = []
    events = TrafficGenerator(GeneratorConfig(seed=41, bad_fraction=0.0)).events(6_000)
    await produce_events(s, events, sent=sent)
    valid = {(md.topic, md.partition, md.offset) for _ev, md in sent}
    worker = start_worker(s)
    decided = await decisions_per_record(s, valid, timeout=300, worker=worker)
    assert not valid - set(decided), f"{len(valid - set(decided))} records without a decision"
    holds = metric_value(s.web_port, "parcel_risk_input_holds_total")
    assert holds >= 1, "the input was never held: the test did not test the hold"
