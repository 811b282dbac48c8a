"""Offsets in transactions checked by the group, on the real broker
(streams/patches/txn_offsets.py): the broker takes the generation aiokafka cannot send,
refuses a stale one, and answers committed offsets only once no transaction holds them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streams.patches.txn_offsets import GroupFenced, GroupMetadata, GroupProducer, wait_stable
from streams.settings import Settings
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


async def _member(s: Settings, group: str, topic: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=s.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    await asyncio.wait_for(consumer.getmany(timeout_ms=100), 30)
    for _ in range(300):  # joined: an assignment and a generation
        if consumer.assignment() and consumer._coordinator.generation > 0:
            return consumer
        await asyncio.sleep(0.1)
    raise AssertionError("the consumer never joined its group")


async def _producer(s: Settings, group: str) -> GroupProducer:
    producer = GroupProducer(
        bootstrap_servers=s.bootstrap, transactional_id=f"{group}-{uuid.uuid4().hex[:6]}"
    )
    await producer.start()
    return producer


async def test_offsets_commit_with_the_generation_and_a_stale_one_is_fenced(
    settings: Settings,
) -> None:
    s = settings
    await ensure_topics(s)
    topic = s.topic("manifest_topic")
    group = f"{s.app_id}-fencing"
    member = await _member(s, group, topic)
    producer = await _producer(s, group)
    try:
        coordinator = member._coordinator
        tp = TopicPartition(topic, 0)
        current = GroupMetadata(group, coordinator.generation, coordinator.member_id)
        await producer.begin_transaction()
        await producer.send_offsets_to_transaction({tp: OffsetAndMetadata(7, "")}, current)
        await producer.commit_transaction()
        # the commit's markers are written after EndTxn's answer: read once stable
        assert await wait_stable(producer.client, group, [tp], timeout=10) == []
        assert await member.committed(tp) == 7

        stale = GroupMetadata(group, coordinator.generation + 1, coordinator.member_id)
        await producer.begin_transaction()
        with pytest.raises(GroupFenced, match="illegal generation"):
            await producer.send_offsets_to_transaction({tp: OffsetAndMetadata(9, "")}, stale)
        await producer.abort_transaction()
        assert await member.committed(tp) == 7  # the stale member's offsets never landed
    finally:
        await producer.stop()
        await member.stop()


async def test_committed_offsets_are_answered_once_no_transaction_holds_them(
    settings: Settings,
) -> None:
    s = settings
    await ensure_topics(s)
    topic = s.topic("manifest_topic")
    group = f"{s.app_id}-stable"
    producer = await _producer(s, group)
    try:
        tp, other = TopicPartition(topic, 1), TopicPartition(topic, 2)
        anyone = GroupMetadata(group, -1, "")  # an empty group: no member to check
        await producer.begin_transaction()
        await producer.send_offsets_to_transaction({tp: OffsetAndMetadata(3, "")}, anyone)
        client = producer.client
        # the open transaction holds tp's offsets, not the other partition's
        assert await wait_stable(client, group, [tp, other], timeout=1.0) == [tp]
        waiting = asyncio.create_task(wait_stable(client, group, [tp], timeout=30.0))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await producer.commit_transaction()
        assert await asyncio.wait_for(waiting, 10) == []
    finally:
        await producer.stop()
