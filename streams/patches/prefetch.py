"""aiokafka fetches again sooner while some of its fetched records wait to be taken.

aiokafka sends one fetch at a time per broker, for every assigned partition that has no
fetched records waiting, and holds the next fetch back while any partition's records wait,
until they are taken or they have waited its prefetch backoff (100 ms, not a setting of
AIOKafkaConsumer). Faust takes records only for the partitions whose streams have room, so
on a backlog some partitions' records always wait: the consumer sat idle at each fetch's
end (38% of the main thread in `select`, py-spy of benchmarks/stream_floor.py). With 10 ms
the floor measured 14,845 events/s against 13,884 (five runs each, alternating, 13,699-
15,294 against 13,293-14,467); 0 spins (8,100 events/s).
"""

from __future__ import annotations

from faust.transport.drivers import aiokafka as driver

from streams.patches import PatchVersionError, written_for

PREFETCH_BACKOFF_S = 0.01


class PrefetchingThread(driver.AIOKafkaConsumerThread):
    async def on_start(self) -> None:
        await super().on_start()
        fetcher = self._ensure_consumer()._fetcher
        if not hasattr(fetcher, "_prefetch_backoff"):
            raise PatchVersionError("aiokafka's Fetcher has no _prefetch_backoff any more")
        fetcher._prefetch_backoff = PREFETCH_BACKOFF_S


written_for("faust-streaming", "0.15.3")
written_for("aiokafka", "0.14.0")
