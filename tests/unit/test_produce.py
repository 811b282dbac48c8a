"""streams/produce.py without a broker: a batch's sends go out as one record batch per
partition, in order, and each send gets its own metadata back."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.partitioner import murmur2

from streams.produce import Send, produce
from tests.fakes import BatchProducer


def run(producer: BatchProducer, sends: list[Send]) -> list[tuple[str, int, int]]:
    async def go() -> list[tuple[str, int, int]]:
        acknowledged = await produce(producer, sends)  # type: ignore[arg-type]
        return [(md.topic, md.partition, md.offset) for md in await acknowledged]

    return asyncio.run(go())


def test_a_batch_goes_out_as_one_record_batch_per_partition() -> None:
    producer = BatchProducer(partitions=4)
    sends: list[Send] = [("out", i % 4, b"k%d" % i, b"v%d" % i) for i in range(100)]
    got = run(producer, sends)
    # one hand-over per partition, where aiokafka's `send` took one per message
    assert sorted((t, p) for t, p, _ in producer.batches) == [("out", p) for p in range(4)]
    # each send's own metadata, in the order of the sends, at its offset in its partition
    assert got == [("out", i % 4, i // 4) for i in range(100)]


def test_keyed_sends_go_where_kafkas_clients_put_them_and_keep_their_order() -> None:
    producer = BatchProducer(partitions=8)
    keys = [b"H%d" % i for i in range(50)]
    got = run(producer, [("decisions", None, k, b"{}") for k in keys])
    expected = [(murmur2(k) & 0x7FFFFFFF) % 8 for k in keys]
    assert [p for _, p, _ in got] == expected
    for partition in set(expected):  # in each partition, in the order sent
        sent = [k for _, k, _, p in producer.sent if p == partition]
        assert sent == [k for k, p in zip(keys, expected, strict=True) if p == partition]


def test_a_partition_whose_records_fill_a_batch_continues_in_the_next_in_order() -> None:
    producer = BatchProducer(partitions=1, limit=2)
    got = run(producer, [("out", 0, None, b"%d" % i) for i in range(5)])
    assert [b.record_count() for _, _, b in producer.batches] == [2, 2, 1]
    assert [v for _, _, v, _ in producer.sent] == [b"%d" % i for i in range(5)]
    assert [offset for _, _, offset in got] == [0, 1, 2, 3, 4]


def test_a_refused_batch_is_raised_when_the_acknowledgements_are_awaited() -> None:
    producer = BatchProducer(refuse=RuntimeError("broker refused"))
    with pytest.raises(RuntimeError, match="broker refused"):
        run(producer, [("out", 0, b"k", b"v"), ("out", 1, b"k", b"v")])


def test_a_message_larger_than_a_record_batch_is_refused_before_anything_is_sent() -> None:
    producer = BatchProducer(limit=0)
    with pytest.raises(ValueError, match="does not fit"):
        run(producer, [("out", 0, b"k", b"v")])
    assert producer.batches == []
