"""The order in which a stage's batch ends (streams/outbox.py), without Kafka: the
batch's table writes flushed, then its outputs acknowledged by the broker, then
remembered and flushed again; and nothing remembered when the broker refuses an output."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from models.outputs import Source
from models.pipeline import Incoming
from models.records import RecordError
from streams import metrics
from streams.outbox import Outbox
from streams.publishing import Outgoing


class Topic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class Producer:
    """Records sends; each send's acknowledgement comes later, as the broker's does."""

    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log, self.fail = log, fail

    async def send(self, topic: str, key: bytes, value: bytes, partition: Any, *_: Any) -> Any:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def acknowledge() -> None:
            if self.fail:
                ack.set_exception(RuntimeError("broker refused"))
            else:
                self.log.append(f"acked {topic}")
                ack.set_result(None)

        asyncio.get_running_loop().call_later(0.01, acknowledge)
        return ack


class App:
    def __init__(self, producer: Producer) -> None:
        self.producer = producer


class Table:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def flush_changelog(self) -> int:
        self.log.append("flushed")
        return 0


def _box(log: list[str], fail: bool = False) -> Outbox:
    outputs = {"decisions": Topic("decisions"), "deadletter": Topic("deadletter")}
    return Outbox(App(Producer(log, fail)), outputs, partitions=4)  # type: ignore[arg-type]


def test_writes_are_flushed_before_outputs_and_outputs_acknowledged_before_remembered() -> None:
    log: list[str] = []
    box = _box(log)
    box.send([Outgoing("decisions", b"H1", b"{}"), Outgoing("decisions", b"H2", b"{}")])
    box.forward(Topic("stage2"), [(b"k", {"kind": "parcel"})])  # type: ignore[list-item]
    asyncio.run(box.settle(Table(log), remember=lambda: log.append("remembered")))  # type: ignore[arg-type]
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
        asyncio.run(box.settle(Table(log), remember=lambda: log.append("remembered")))  # type: ignore[arg-type]
    assert log == ["flushed"]  # the batch is not acknowledged either: the agent's error stops it


def test_dead_letters_are_sent_with_the_batch_and_counted() -> None:
    log: list[str] = []
    box = _box(log)
    counted = metrics.DEAD_LETTERS.labels("parcels.manifest", "hawb")._value.get()
    bad = Incoming("manifest", Source("parcels.manifest", 0, 7, b"K"), b"not json")
    box.dead([(bad, RecordError("hawb", "missing"))])
    asyncio.run(box.settle())
    assert log == ["acked deadletter"]
    assert metrics.DEAD_LETTERS.labels("parcels.manifest", "hawb")._value.get() == counted + 1
