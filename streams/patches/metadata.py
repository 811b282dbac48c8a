"""A producer must keep the metadata of every topic it sends to.

aiokafka's client fetches metadata for all topics while it tracks none, and `send` does
not start tracking a topic it already finds in that metadata. The first send to a topic
not yet in it (Faust creates its internal topics after the producer has started) makes the
client track that one topic alone, and the next refresh drops every other topic: batches
already queued for them lose their leader and wait out the producer's request timeout
(Faust's default: 20 minutes). Two workers starting together on a backlog stalled that way
in CI. Tracking each topic at its first send keeps them all in every refresh.
"""

from __future__ import annotations

from typing import Any

from aiokafka.client import AIOKafkaClient

from streams.patches import written_for

_wait_on_metadata = AIOKafkaClient._wait_on_metadata


async def wait_on_metadata(self: AIOKafkaClient, topic: str) -> Any:
    if topic not in self._topics and self.cluster.partitions_for_topic(topic) is not None:
        self._topics.add(topic)  # already in the metadata: no refresh needed now
    return await _wait_on_metadata(self, topic)


def install() -> None:
    """Patch aiokafka's client (idempotent)."""
    AIOKafkaClient._wait_on_metadata = wait_on_metadata


written_for("aiokafka", "0.14.0")
