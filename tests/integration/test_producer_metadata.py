"""A send to a topic created after the producer started must not strand other topics' batches.

The stall two workers met in CI (streams/patches/metadata.py), reproduced on the real broker with
Faust's producer request timeout, so that a stranded batch would wait 20 minutes.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.patches import metadata
from streams.security import connection
from streams.settings import Settings

pytestmark = pytest.mark.integration


async def test_queued_batches_survive_a_send_to_a_new_topic(settings: Settings) -> None:
    metadata.install()
    old, new = settings.topic("decisions_topic"), settings.topic("holds_topic")
    admin = AIOKafkaAdminClient(**connection(settings))
    await admin.start()
    producer = AIOKafkaProducer(**connection(settings), linger_ms=200, request_timeout_ms=1_200_000)
    try:
        await admin.create_topics([NewTopic(old, 2, 1)])
        await producer.start()
        # as after Faust's topic creation: metadata of every topic, none tracked yet
        await producer.client.force_metadata_update()
        await (await producer.send(old, b"first", partition=0))
        queued = await producer.send(old, b"queued", partition=1)  # lingers 200 ms
        await admin.create_topics([NewTopic(new, 2, 1)])
        await (await producer.send(new, b"elsewhere", partition=0))
        done, _ = await asyncio.wait([queued], timeout=20)
        assert done, "the queued batch lost its topic's metadata and is stranded"
        assert (queued.result().topic, queued.result().partition) == (old, 1)
    finally:
        # a stranded batch would hold stop() for the whole request timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(producer.stop(), 10)
        await admin.delete_topics([old, new])
        await admin.close()
