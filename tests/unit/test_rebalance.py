"""streams/patches/rebalance.py without Kafka: never-committed partitions are fetched again,
and the stall detector skips partitions whose offsets are not looked up yet (no crash)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.consumer.subscription_state import SubscriptionState
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streams.patches.app import App
from streams.patches.rebalance import ConsumerThread


def thread() -> ConsumerThread:
    return ConsumerThread.__new__(ConsumerThread)  # no consumer started: only these methods


def test_partitions_without_a_commit_are_rewound_and_committed_ones_left(monkeypatch) -> None:
    async def faust_seek(_self: object) -> dict[str, int | None]:
        return {"never": None, "zero": 0, "committed": 42}

    rewound: list[str] = []

    async def seek_to_beginning(*tps: str) -> None:
        rewound.extend(tps)

    monkeypatch.setattr(AIOKafkaConsumerThread, "seek_to_committed", faust_seek)
    t = thread()
    t.seek_to_beginning = seek_to_beginning  # type: ignore[method-assign,assignment]
    committed = asyncio.run(t.seek_to_committed())
    assert rewound == ["never", "zero"]
    assert committed == {"never": None, "zero": 0, "committed": 42}


def test_the_worker_s_consumer_runs_this_thread() -> None:
    app = App("rebalance-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    assert isinstance(app.consumer._new_consumer_thread(), ConsumerThread)  # type: ignore[attr-defined]


def test_stall_check_waits_for_a_partition_to_have_a_position(monkeypatch) -> None:
    verified: list[TP] = []
    faust_check = lambda _self, _now, tp: verified.append(tp)  # noqa: E731
    monkeypatch.setattr(AIOKafkaConsumerThread, "verify_event_path", faust_check)

    async def check() -> None:
        subscriptions = SubscriptionState()  # aiokafka's own, as the consumer has it
        subscriptions.assign_from_user({TopicPartition("parcels.manifest", 3)})
        t = thread()
        t._consumer = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=subscriptions))  # type: ignore[assignment]
        tp = TP("parcels.manifest", 3)
        # just assigned: aiokafka 0.14 asserts on reading its position, Faust's check read it
        t.verify_event_path(0.0, tp)
        assert verified == []
        subscriptions.seek(TopicPartition("parcels.manifest", 3), 5)
        t.verify_event_path(0.0, tp)
        assert verified == [tp]

    asyncio.run(check())
