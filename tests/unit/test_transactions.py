"""Exactly-once's changes to Faust (streams/patches/transactions.py), without Kafka: which
producers a rebalance leaves, and when a changelog written in transactions is recovered.
The real-broker checks are tests/integration/test_exactly_once.py and test_crash.py."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.errors import ProducerFenced
from faust.types import TP
from intervaltree import IntervalTree

from streams.patches.transactions import (
    CommittedRecovery,
    Fenced,
    TransactionalConsumer,
    TransactionManager,
    task_id,
)


class Producer:
    """A transactional producer: started (init_transactions), stopped, fenced on demand."""

    def __init__(self, tid: str, log: list[str], fenced: bool = False) -> None:
        self.tid, self.log, self.fenced = tid, log, fenced

    async def start(self) -> None:
        self.log.append(f"start {self.tid}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.tid}")

    async def begin_transaction(self) -> None:
        pass

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fenced:
            done.set_exception(ProducerFenced())
        else:
            done.set_result(SimpleNamespace(topic="out", partition=0, offset=0))
        return done

    async def send_offsets_to_transaction(self, *args: Any) -> None:
        pass

    async def commit_transaction(self) -> None:
        self.log.append(f"commit {self.tid}")


def _manager(log: list[str], fenced: bool = False) -> TransactionManager:
    app = SimpleNamespace(
        conf=SimpleNamespace(id="app"),
        agents={
            "join": SimpleNamespace(name="join", channel=faust.App("x").topic("a", "b")),
        },
        producer=SimpleNamespace(
            _new_producer=lambda transactional_id: Producer(transactional_id, log, fenced)
        ),
        consumer=SimpleNamespace(_thread=SimpleNamespace(rejoin=lambda: _logged(log, "rejoin"))),
    )
    manager = TransactionManager.__new__(TransactionManager)
    manager.app = app  # type: ignore[assignment]
    manager.consumer = SimpleNamespace(  # type: ignore[assignment]
        committed_in_transaction=lambda offsets: log.append(f"committed {dict(offsets)}")
    )
    manager.producers = {}
    manager._stages = None
    return manager


async def _logged(log: list[str], line: str) -> None:
    log.append(line)


def test_a_rebalance_starts_a_new_producer_for_every_task_kept_or_new() -> None:
    """A worker paused past its session is given its old partitions back while another
    worker fenced its producers: a kept task's old producer must not be used again."""
    log: list[str] = []
    manager = _manager(log)
    asyncio.run(manager.on_rebalance({TP("a", 0), TP("b", 0), TP("a", 1)}, set(), set()))
    assert sorted(log) == ["start app-join-0", "start app-join-1"]  # a and b share a task
    first = manager.producers["app-join-0"]
    log.clear()
    asyncio.run(manager.on_rebalance({TP("a", 0), TP("changelog", 2)}, {TP("a", 1)}, set()))
    assert sorted(log) == ["start app-join-0", "stop app-join-0", "stop app-join-1"]
    assert manager.producers["app-join-0"] is not first
    assert set(manager.producers) == {task_id("app", "join", 0)}


def test_a_fenced_task_is_dropped_and_the_worker_rejoins_its_group() -> None:
    log: list[str] = []
    manager = _manager(log, fenced=True)
    asyncio.run(manager.on_rebalance({TP("a", 0)}, set(), set()))
    with pytest.raises(Fenced):
        asyncio.run(manager.run("app-join-0", [("out", None, b"k", b"v")], {TP("a", 0): 5}))
    assert log[-2:] == ["stop app-join-0", "rejoin"]  # no commit
    with pytest.raises(Fenced):  # until the rebalance gives it a new producer
        asyncio.run(manager.run("app-join-0", [], {}))


def test_a_task_commits_its_sends_and_offsets() -> None:
    log: list[str] = []
    manager = _manager(log)
    asyncio.run(manager.on_rebalance({TP("a", 0)}, set(), set()))
    got = asyncio.run(manager.run("app-join-0", [("out", None, b"k", b"v")], {TP("a", 0): 5}))
    assert len(got) == 1 and log[-2:] == ["commit app-join-0", f"committed {{{TP('a', 0)!r}: 5}}"]


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
