"""The rebalance fix-ups without Kafka: never-committed partitions are fetched again, and
the stall detector skips partitions whose offsets are not looked up yet (no crash)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.consumer.subscription_state import SubscriptionState
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streams import rebalance


class FakeThread:
    def __init__(self) -> None:
        self.rewound: list[str] = []

    async def seek_to_beginning(self, *tps: str) -> None:
        self.rewound.extend(tps)


def test_partitions_without_a_commit_are_rewound_and_committed_ones_left(monkeypatch) -> None:
    async def faust_seek(_self: object) -> dict[str, int | None]:
        return {"never": None, "zero": 0, "committed": 42}

    monkeypatch.setattr(rebalance, "_seek_to_committed", faust_seek)
    thread = FakeThread()
    committed = asyncio.run(rebalance.seek_to_committed(thread))  # type: ignore[arg-type]
    assert thread.rewound == ["never", "zero"]
    assert committed == {"never": None, "zero": 0, "committed": 42}


def test_install_patches_the_faust_consumer_thread() -> None:
    rebalance.install()
    assert AIOKafkaConsumerThread.seek_to_committed is rebalance.seek_to_committed
    assert AIOKafkaConsumerThread.verify_event_path is rebalance.verify_event_path


def test_stall_check_waits_for_a_partition_to_have_a_position(monkeypatch) -> None:
    verified: list[TP] = []
    faust_check = lambda _self, _now, tp: verified.append(tp)  # noqa: E731
    monkeypatch.setattr(rebalance, "_verify_event_path", faust_check)

    async def check() -> None:
        subscriptions = SubscriptionState()  # aiokafka's own, as the consumer has it
        subscriptions.assign_from_user({TopicPartition("parcels.manifest", 3)})
        thread = AIOKafkaConsumerThread.__new__(AIOKafkaConsumerThread)
        thread._consumer = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=subscriptions))
        tp = TP("parcels.manifest", 3)
        # just assigned: aiokafka 0.14 asserts on reading its position, Faust's check read it
        rebalance.verify_event_path(thread, 0.0, tp)
        assert verified == []
        subscriptions.seek(TopicPartition("parcels.manifest", 3), 5)
        rebalance.verify_event_path(thread, 0.0, tp)
        assert verified == [tp]

    asyncio.run(check())
