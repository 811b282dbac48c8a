"""Exactly-once's changes to Faust (streams/patches/transactions.py), without Kafka: which
producers a rebalance leaves, with which generation a batch commits, and when a changelog
written in transactions is recovered.
The real-broker checks are tests/integration/test_exactly_once.py and test_crash.py."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.errors import ProducerFenced
from aiokafka.structs import RecordMetadata, TopicPartition
from faust.types import TP
from intervaltree import IntervalTree

from streams.patches import transactions
from streams.patches.transactions import (
    CommittedRecovery,
    Fenced,
    TransactionalConsumer,
    TransactionManager,
    instance_id,
    task_id,
)
from streams.patches.txn_offsets import GroupFenced, GroupMetadata
from tests.fakes import Batch


class Producer:
    """A transactional producer: started (init_transactions), stopped, fenced on demand."""

    def __init__(self, tid: str, log: list[str], fenced: BaseException | None = None) -> None:
        self.tid, self.log, self.fenced = tid, log, fenced
        self.client = f"client of {tid}"

    async def start(self) -> None:
        self.log.append(f"start {self.tid}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.tid}")

    async def begin_transaction(self) -> None:
        pass

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> Batch:
        return Batch(1_000)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if isinstance(self.fenced, ProducerFenced):
            done.set_exception(self.fenced)
        else:
            tp = TopicPartition(topic, partition)
            done.set_result(RecordMetadata(topic, partition, tp, 0, -1, 0, 0))
        return done

    async def send_offsets_to_transaction(self, offsets: Any, group: GroupMetadata) -> None:
        if isinstance(self.fenced, GroupFenced):
            raise self.fenced
        self.log.append(f"offsets {group.generation_id}")

    async def commit_transaction(self) -> None:
        self.log.append(f"commit {self.tid}")

    async def abort_transaction(self) -> None:
        self.log.append(f"abort {self.tid}")


def _manager(
    log: list[str], monkeypatch: pytest.MonkeyPatch, fenced: BaseException | None = None
) -> TransactionManager:
    coordinator = SimpleNamespace(generation=5, member_id="m-1", _group_instance_id=None)
    topics = faust.App("x")
    app = SimpleNamespace(
        conf=SimpleNamespace(id="app"),
        agents={
            "join": SimpleNamespace(name="join", channel=topics.topic("a", "b")),
            "score": SimpleNamespace(name="score", channel=topics.topic("c")),
        },
        producer=SimpleNamespace(
            _new_producer=lambda transactional_id: Producer(transactional_id, log, fenced)
        ),
        consumer=SimpleNamespace(
            _thread=SimpleNamespace(
                rejoin=lambda: _logged(log, "rejoin"),
                _ensure_consumer=lambda: SimpleNamespace(_coordinator=coordinator),
            )
        ),
    )
    manager = TransactionManager.__new__(TransactionManager)
    manager.app = app  # type: ignore[assignment]
    manager.consumer = SimpleNamespace(  # type: ignore[assignment]
        committed_in_transaction=lambda offsets: log.append(f"committed {dict(offsets)}")
    )
    manager.producers = {}
    manager.group = None
    manager._stages = None
    manager._instance = "w1"

    async def wait_stable(client: str, group: str, tps: Any, timeout: float) -> list[Any]:
        log.append(f"stable {group} {sorted((tp.topic, tp.partition) for tp in tps)}")
        return []

    monkeypatch.setattr(transactions, "wait_stable", wait_stable)
    manager.coordinator = coordinator  # type: ignore[attr-defined]  # the test moves it on
    return manager


async def _logged(log: list[str], line: str) -> None:
    log.append(line)


def test_a_rebalance_starts_a_new_producer_for_every_stage_kept_or_new(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker paused past its session is given its old partitions back while the group
    moved on: a batch read before the rebalance must not commit with the new generation."""
    log: list[str] = []
    manager = _manager(log, monkeypatch)
    asyncio.run(manager.on_rebalance({TP("a", 0), TP("b", 0), TP("a", 1)}, set(), set()))
    # the join's topics are one stage; its partitions' offsets are checked before reading
    assert log == ["start app-join-w1", "stable app [('a', 0), ('a', 1), ('b', 0)]"]
    assert manager.group is not None and manager.group.generation_id == 5
    first = manager.producers["join"]
    log.clear()
    manager.coordinator.generation = 6  # type: ignore[attr-defined]
    asyncio.run(manager.on_rebalance({TP("a", 0), TP("c", 2), TP("changelog", 2)}, set(), set()))
    assert sorted(log) == [
        "stable app [('a', 0), ('c', 2)]",
        "start app-join-w1",
        "start app-score-w1",
        "stop app-join-w1",
    ]
    assert manager.producers["join"] is not first
    assert manager.group.generation_id == 6
    assert task_id("app", "score", "w1") == "app-score-w1"


@pytest.mark.parametrize("fenced", [ProducerFenced(), GroupFenced("illegal generation")])
def test_a_fenced_batch_is_dropped_and_the_worker_rejoins_its_group(
    fenced: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []
    manager = _manager(log, monkeypatch, fenced=fenced)
    asyncio.run(manager.on_rebalance({TP("a", 0)}, set(), set()))
    with pytest.raises(Fenced):
        asyncio.run(manager.run("join", [("out", None, b"k", b"v")], {TP("a", 0): 5}))
    assert not any(line.startswith("commit") for line in log)
    assert log[-2:] == ["stop app-join-w1", "rejoin"]
    if isinstance(fenced, GroupFenced):  # the producer is still the worker's: it aborts
        assert log[-3] == "abort app-join-w1"
    with pytest.raises(Fenced):  # until the rebalance gives it a new producer
        asyncio.run(manager.run("join", [], {}))


def test_a_batch_commits_its_sends_and_offsets_with_the_group_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log: list[str] = []
    manager = _manager(log, monkeypatch)
    asyncio.run(manager.on_rebalance({TP("a", 0)}, set(), set()))
    got = asyncio.run(manager.run("join", [("out", None, b"k", b"v")], {TP("a", 0): 5}))
    assert len(got) == 1
    assert log[-3:] == ["offsets 5", "commit app-join-w1", f"committed {{{TP('a', 0)!r}: 5}}"]


def test_a_worker_keeps_its_instance_name(tmp_path: Path) -> None:
    """A worker restarted on the same data directory gets its transactional ids back, so
    its producers' init_transactions abort what it left open when it died."""
    first = instance_id(tmp_path / "app-data")
    assert instance_id(tmp_path / "app-data") == first
    assert instance_id(tmp_path / "other-data") != first


def _recovery(highwater: int, applied: int, position: int, fetched: int) -> Counter[TP]:
    tp = TP("bills-changelog", 0)
    thread = SimpleNamespace(known_position=lambda _tp: position, fetched={tp: fetched})
    recovery = CommittedRecovery.__new__(CommittedRecovery)
    recovery.__dict__.update(
        app=SimpleNamespace(in_transaction=True, consumer=SimpleNamespace(_thread=thread)),
        active_highwaters=Counter({tp: highwater}),
        active_offsets=Counter({tp: applied}),
    )
    return recovery.active_remaining()


def test_a_changelog_ending_in_a_commit_marker_is_recovered_once_read_and_applied() -> None:
    tp = TP("bills-changelog", 0)
    # records 0-8 and the commit marker at 9 (highwater: the last stable offset 10, less 1)
    assert _recovery(highwater=9, applied=8, position=10, fetched=8)[tp] == 0
    # Faust's own count, until it looks at the position after two 5-second timeouts
    assert _recovery(highwater=9, applied=8, position=9, fetched=8)[tp] == 1
    # fetched but not yet applied: not done
    assert _recovery(highwater=9, applied=5, position=10, fetched=8)[tp] == 4


def _consumer(in_transaction: bool = True) -> tuple[TransactionalConsumer, list[Any]]:
    committed: list[Any] = []
    consumer = TransactionalConsumer.__new__(TransactionalConsumer)
    consumer.__dict__.update(
        in_transaction=in_transaction,
        app=SimpleNamespace(monitor=SimpleNamespace(on_tp_commit=committed.append)),
        _committed_offset=defaultdict(lambda: None),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
    )
    return consumer, committed


def test_faust_commits_nothing_itself_under_exactly_once() -> None:
    consumer, committed = _consumer()
    tp = TP("by-shipper", 0)
    consumer._acked[tp].extend([3, 5])  # 4: a commit marker, never delivered nor acked
    assert asyncio.run(consumer.commit()) is False
    assert consumer._committed_offset[tp] is None and committed == []


def test_a_transaction_s_offsets_are_what_faust_counts_as_committed() -> None:
    consumer, committed = _consumer()
    tp = TP("by-shipper", 0)
    consumer._acked[tp].extend([3, 5, 7])
    consumer._acked_index[tp].update([3, 5, 7])
    consumer._gap[tp].addi(4, 5)
    consumer.committed_in_transaction({tp: 6})
    assert consumer._committed_offset[tp] == 6
    assert consumer._acked[tp] == [7] and consumer._acked_index[tp] == {7}
    assert not consumer._gap[tp]  # nothing below the committed offset is tracked any more
    assert committed == [{tp: 6}]  # the monitor (and the stage backlog) sees it
    consumer.committed_in_transaction({tp: 4})  # an older transaction never goes back
    assert consumer._committed_offset[tp] == 6 and len(committed) == 1
