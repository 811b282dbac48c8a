"""The rebalance fix-up without Kafka: never-committed partitions are fetched again."""

from __future__ import annotations

import asyncio

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
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    rebalance.install()
    assert AIOKafkaConsumerThread.seek_to_committed is rebalance.seek_to_committed
