"""streams/produce.py on the real broker: record batches land as aiokafka's own sends
would, in order, at the offsets their metadata gives, also when a partition's records
fill several batches."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.produce import Send, produce
from streams.settings import Settings

pytestmark = pytest.mark.integration


async def test_sends_land_in_order_at_their_offsets_and_keyed_where_send_puts_them(
    settings: Settings,
) -> None:
    topic = f"{settings.app_id}-produce-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        await admin.close()
    # small batches: a partition's 100-odd records of 200 B fill several
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, max_batch_size=4096)
    await producer.start()
    try:
        sends: list[Send] = [
            (topic, None if i % 2 else i % 4, b"key-%d" % i, b"%05d" % i + b"x" * 200)
            for i in range(500)
        ]
        metadata = await asyncio.wait_for(await produce(producer, sends), 30)
        # aiokafka's own send puts a keyed record where produce put it
        one = await (await producer.send(topic, b"probe", key=b"key-1"))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        read: dict[tuple[int, int], tuple[bytes | None, bytes | None]] = {}
        while len(read) < len(sends) + 1:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
            for records in batch.values():
                read.update({(r.partition, r.offset): (r.key, r.value) for r in records})
    finally:
        await consumer.stop()
    assert len(metadata) == len(sends)
    for (_, partition, key, value), md in zip(sends, metadata, strict=True):
        assert partition is None or md.partition == partition
        assert read[md.partition, md.offset] == (key, value)  # its metadata says where it is
    assert one.partition == metadata[1].partition  # key-1, sent with no partition
    for p in range(4):  # each partition in the order sent
        mine = [
            int(value[:5])
            for (q, _), (_, value) in sorted(read.items())
            if q == p and value and value != b"probe"
        ]
        assert mine == sorted(mine)
