"""How a stage's batch ends (streams/outbox.py), without Kafka.

At-least-once: the batch's table writes flushed, then its outputs acknowledged by the
broker, then remembered and flushed again; and nothing remembered when the broker refuses
an output. Exactly-once: the batch's outputs, table writes and offsets handed to its
stage's transaction, and nothing of a fenced batch kept."""

from __future__ import annotations

import asyncio
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from models.outputs import Source
from models.pipeline import Incoming
from models.records import RecordError
from streams import metrics
from streams.outbox import Outbox, settle
from streams.patches.transactions import Fenced
from streams.publishing import Outgoing
from tests.fakes import Batch, BatchProducer


class Topic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


def producer(log: list[str], fail: bool = False) -> BatchProducer:
    """Logs each acknowledged record, as the broker acknowledges its batch."""

    def acked(topic: str, _partition: int, batch: Batch) -> None:
        log.extend(f"acked {topic}" for _ in batch.records)

    return BatchProducer(refuse=RuntimeError("broker refused") if fail else None, on_ack=acked)


class App:
    in_transaction = False  # at-least-once

    def __init__(self, producer: BatchProducer) -> None:
        self.producer = producer


class Table:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def flush_changelog(self) -> int:
        self.log.append("flushed")
        return 0


def _box(log: list[str], fail: bool = False) -> Outbox:
    outputs = {"decisions": Topic("decisions"), "deadletter": Topic("deadletter")}
    return Outbox(App(producer(log, fail)), outputs, partitions=4)  # type: ignore[arg-type]


def test_writes_are_flushed_before_outputs_and_outputs_acknowledged_before_remembered() -> None:
    log: list[str] = []
    box = _box(log)
    box.send([Outgoing("decisions", b"H1", b"{}"), Outgoing("decisions", b"H2", b"{}")])
    box.forward(Topic("stage2"), [(b"k", {"kind": "parcel"})])  # type: ignore[list-item]
    asyncio.run(settle(box.end(Table(log), remember=lambda: log.append("remembered"))))  # type: ignore[arg-type]
    assert log == [
        "flushed",  # the revisions the outputs carry, before any output
        "acked decisions",
        "acked decisions",
        "acked stage2",
        "remembered",
        "flushed",
    ]
    assert box.messages == []  # a settled outbox starts the next batch empty


def test_nothing_is_remembered_when_the_broker_refuses_an_output() -> None:
    log: list[str] = []
    box = _box(log, fail=True)
    box.send([Outgoing("decisions", b"H1", b"{}")])
    with pytest.raises(RuntimeError):
        asyncio.run(settle(box.end(Table(log), remember=lambda: log.append("remembered"))))  # type: ignore[arg-type]
    assert log == ["flushed"]  # the batch is not acknowledged either: the agent's error stops it


def test_dead_letters_are_sent_with_the_batch_and_counted() -> None:
    log: list[str] = []
    box = _box(log)
    counted = metrics.DEAD_LETTERS.labels("parcels.manifest", "hawb")._value.get()
    bad = Incoming("manifest", Source("parcels.manifest", 0, 7, b"K"), b"not json")
    box.dead([(bad, RecordError("hawb", "missing"))])
    asyncio.run(settle(box))
    assert log == ["acked deadletter"]
    assert metrics.DEAD_LETTERS.labels("parcels.manifest", "hawb")._value.get() == counted + 1


class TransactionsApp:
    """An exactly-once app: `consumer.transactions.run` records each stage's transaction."""

    in_transaction = True

    def __init__(self, fenced: bool = False, broken: bool = False) -> None:
        self.conf = SimpleNamespace(id="app")
        self.runs: list[tuple[str, list[Any], dict[Any, int]]] = []
        self.log: list[str] = []
        app = self

        class Manager:
            async def run(self, stage: str, sends: list[Any], offsets: dict[Any, int]) -> list[Any]:
                app.log.append(f"run {stage}")
                if fenced:
                    raise Fenced(stage)
                if broken:
                    raise RuntimeError("broker refused")
                app.runs.append((stage, list(sends), dict(offsets)))
                return [
                    SimpleNamespace(topic=t, partition=p, offset=i)
                    for i, (t, p, *_) in enumerate(sends)
                ]

        self.consumer = SimpleNamespace(transactions=Manager())


class PendingTable:
    """A table's pending writes, handed over and applied as BatchedTable's are."""

    def __init__(self, log: list[str], writes: dict[str, tuple[int, Any]]) -> None:
        self.log, self.pending, self.applied = log, writes, {}

    def take_pending(self) -> dict[str, tuple[int, Any]]:
        pending, self.pending = self.pending, {}
        return pending

    def changelog(self, key: str, write: tuple[int, Any]) -> tuple[str, int, bytes, bytes]:
        return ("changelog", write[0], key.encode(), str(write[1]).encode())

    def apply(self, writes: dict[str, Any], sent: list[Any], produced: list[Any]) -> None:
        assert [md.topic for md in produced] == ["changelog"] * len(writes)
        assert [self.changelog(k, w) for k, w in writes.items()] == sent
        self.applied.update(writes)


def _event(partition: int, offset: int, topic: str = "in") -> Any:
    tp = TP(topic, partition)
    return SimpleNamespace(message=SimpleNamespace(partition=partition, offset=offset, tp=tp))


def _batch(app: TransactionsApp, table: PendingTable) -> Outbox:
    """A batch read from two partitions of two topics, with an output and table writes."""
    outputs = {"decisions": Topic("decisions")}
    events = [_event(0, 10), _event(3, 5), _event(0, 11), _event(3, 6, "other")]
    box = Outbox(app, outputs, 4, "stage", events)  # type: ignore[arg-type]
    box.send([Outgoing("decisions", b"H", b"{}")])
    return box.end(
        table,  # type: ignore[arg-type]
        remember=partial(app.log.append, "remembered"),
        then=partial(app.log.append, "counted"),
    )


def test_exactly_once_commits_a_batch_in_one_transaction_of_its_stage() -> None:
    app = TransactionsApp()
    table = PendingTable(app.log, {"k0": (0, "a"), "k3": (3, "b")})
    asyncio.run(settle(_batch(app, table)))
    [(stage, sends, offsets)] = app.runs
    assert stage == "stage"
    assert [(t, p, k) for t, p, k, _v in sends] == [
        ("decisions", None, b"H"),
        ("changelog", 0, b"k0"),
        ("changelog", 3, b"k3"),
    ]
    # every partition the batch read, at the offset after its last record
    assert offsets == {TP("in", 0): 12, TP("in", 3): 6, TP("other", 3): 7}
    # what it remembers goes in its transaction; it is counted once committed
    assert app.log == ["remembered", "run stage", "counted"]
    assert table.applied == {"k0": (0, "a"), "k3": (3, "b")}


def test_a_fenced_batch_keeps_nothing() -> None:
    app = TransactionsApp(fenced=True)
    table = PendingTable(app.log, {"k0": (0, "a"), "k3": (3, "b")})
    fenced = metrics.FENCED_BATCHES.labels("stage")._value.get()
    asyncio.run(settle(_batch(app, table)))
    assert table.applied == {}  # the store never gets the moved batch's writes
    assert "counted" not in app.log
    assert metrics.FENCED_BATCHES.labels("stage")._value.get() == fenced + 1


def test_a_failed_transaction_raises_and_keeps_nothing() -> None:
    app = TransactionsApp(broken=True)
    table = PendingTable(app.log, {"k0": (0, "a")})
    with pytest.raises(RuntimeError, match="broker refused"):
        asyncio.run(settle(_batch(app, table)))
    assert table.applied == {}
    assert "counted" not in app.log


@pytest.mark.parametrize("fenced", [False, True])
def test_dead_letters_are_counted_once_their_batch_commits(fenced: bool) -> None:
    """A fenced batch's are not: the worker that reads it again sends them, and counts them."""
    app = TransactionsApp(fenced=fenced)
    outputs = {"deadletter": Topic("deadletter")}
    counted = metrics.DEAD_LETTERS.labels("parcels.manifest", "hawb")._value.get()
    failures = metrics.RECORD_FAILURES.labels("stage")._value.get()
    box = Outbox(app, outputs, 4, "stage", [_event(0, 1)])  # type: ignore[arg-type]
    bad = Incoming("manifest", Source("parcels.manifest", 0, 1, b"K"), b"not json")
    box.dead([(bad, RecordError("hawb", "missing"))])
    source = {"topic": "parcels.manifest", "partition": 0, "offset": 2}
    box.parked("stage", [({"source": source}, RecordError("hawb", "boom"))])  # type: ignore[list-item]
    asyncio.run(settle(box))
    added = 0 if fenced else 1
    assert (
        metrics.DEAD_LETTERS.labels("parcels.manifest", "hawb")._value.get() == counted + 2 * added
    )
    assert metrics.RECORD_FAILURES.labels("stage")._value.get() == failures + added
