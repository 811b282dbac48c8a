"""The protocol pieces aiokafka lacks (streams/patches/txn_offsets.py), without Kafka: the
versions they insist on and how answers are read. The broker's side is
tests/integration/test_txn_offsets.py."""

from __future__ import annotations

import asyncio
from io import BytesIO
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import RequestTimedOutError
from aiokafka.structs import OffsetAndMetadata

from streams.patches.txn_offsets import (
    UNSTABLE_OFFSET_COMMIT,
    GroupMetadata,
    StableOffsetFetchRequest,
    TxnOffsetCommitRequest,
    TxnOffsetCommitRequest_v3,
    unstable,
    wait_stable,
)


def test_offsets_go_with_the_generation_and_an_old_broker_is_refused() -> None:
    group = GroupMetadata("app", 7, "member-1")
    offsets = {
        TopicPartition("in", 2): OffsetAndMetadata(42, ""),
        TopicPartition("in", 0): OffsetAndMetadata(5, ""),
    }
    request = TxnOffsetCommitRequest("app-join-w1", 1000, 3, group, offsets)
    struct = request.prepare({28: (0, 4)})
    assert isinstance(struct, TxnOffsetCommitRequest_v3)
    decoded = TxnOffsetCommitRequest_v3.SCHEMA.decode(BytesIO(struct.encode()))
    tid, gid, pid, epoch, generation, member, instance, topics, _tags = decoded
    assert (tid, gid, pid, epoch, generation, member, instance) == (
        "app-join-w1",
        "app",
        1000,
        3,
        7,
        "member-1",
        None,
    )
    assert [(t, [(p, o) for p, o, *_ in parts]) for t, parts, _ in topics] == [
        ("in", [(0, 5), (2, 42)])
    ]
    with pytest.raises(NotImplementedError):  # v0-v2 carry no generation: no fencing
        request.prepare({28: (0, 2)})
    with pytest.raises(NotImplementedError):
        StableOffsetFetchRequest("app", offsets).prepare({9: (0, 6)})


def _answer(top: int, *partitions: tuple[int, int]) -> SimpleNamespace:
    rows = [(p, 10, -1, "", code, {}) for p, code in partitions]
    return SimpleNamespace(error_code=top, topics=[("in", rows, {})])


def test_partitions_held_by_an_open_transaction_are_named() -> None:
    assert unstable(_answer(0, (0, 0), (1, UNSTABLE_OFFSET_COMMIT))) == [TopicPartition("in", 1)]
    assert unstable(_answer(0, (0, 0))) == []
    held = unstable(_answer(UNSTABLE_OFFSET_COMMIT, (0, 0), (1, 0)))
    assert held == [TopicPartition("in", 0), TopicPartition("in", 1)]
    with pytest.raises(Exception, match="NotCoordinator"):
        unstable(_answer(0, (0, 16)))


class Client:
    """Answers OffsetFetch from a script: an exception to raise, or an answer."""

    def __init__(self, *script: object) -> None:
        self.script, self.asked = list(script), 0

    async def coordinator_lookup(self, kind: object, group: str) -> int:
        return 1

    async def send(self, node: int, request: object, group: object) -> object:
        self.asked += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


def test_a_wait_for_stable_offsets_outlasts_a_broker_that_moves_and_ends() -> None:
    tp = TopicPartition("in", 1)
    client = Client(
        RequestTimedOutError(),  # the broker restarting: ask again
        _answer(0, (1, UNSTABLE_OFFSET_COMMIT)),
        _answer(0, (1, 0)),
    )
    assert asyncio.run(wait_stable(client, "app", [tp], timeout=10)) == []  # type: ignore[arg-type]
    assert client.asked == 3
    held = Client(*[_answer(0, (1, UNSTABLE_OFFSET_COMMIT))] * 100)
    assert asyncio.run(wait_stable(held, "app", [tp], timeout=0.3)) == [tp]  # type: ignore[arg-type]
