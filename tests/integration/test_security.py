"""TLS and SASL/SCRAM against a real broker's secure listeners (keys made by keytool).

The broker is the test's own (deploy/kafka/broker.py --ssl-port --sasl-ssl-port): a local
CA signs its certificate, and the SCRAM user is written into its metadata when formatted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events
from streams.security import connection
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import Broker, read_all

pytestmark = pytest.mark.integration


async def test_worker_scores_over_scram_and_tls(
    secure_broker: Broker, model_dir: Path, start_worker, tmp_path: Path
) -> None:
    s = secure_broker.worker_settings(model_dir, tmp_path / "worker", partitions=2)
    await ensure_topics(s)
    # the feed connects with TLS only (no SASL), on the other listener
    tls_only = s.with_(broker=f"127.0.0.1:{secure_broker.ssl_port}", security_protocol="SSL")
    sent: list = []
    events = TrafficGenerator(GeneratorConfig(seed=61)).events(150)
    await produce_events(tls_only, events, sent=sent)
    records = {(md.topic, md.partition, md.offset) for _ev, md in sent}

    worker = start_worker(s)
    got = await read_all(s, "decisions_topic", expect=len(records), timeout=180, worker=worker)
    sources = [orjson.loads(v)["source"] for _k, v in got]
    decided = {(src["topic"], src["partition"], src["offset"]) for src in sources}
    assert records <= decided, worker.output()
    assert s.sasl_password not in worker.output()


async def _refused(s: Settings) -> None:
    producer = AIOKafkaProducer(**connection(s), request_timeout_ms=10_000)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), timeout=60)
    await producer.stop()


async def test_wrong_password_plaintext_and_unknown_ca_are_refused(
    secure_broker: Broker,
) -> None:
    good = secure_broker.sasl_settings()
    await _refused(good.with_(sasl_password="not-the-password"))
    # a plaintext client on the TLS listener, and TLS without trusting the local CA
    await _refused(good.with_(security_protocol="PLAINTEXT", sasl_username=""))
    await _refused(good.with_(ssl_cafile=""))
