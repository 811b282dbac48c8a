"""The project's Kafka topics and their creation.

Topics are created up front with the configured partition count, because partitions cap
parallelism (scale-out) and input topics must be co-partitioned with the tables keyed on
them. models.control and targeting.filers are compacted: only the latest promotion, and
each filer's latest scorecard, matter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from models.records import CATEGORIES
from streams.security import connection
from streams.settings import Settings

INPUT_TOPICS = ("manifest_topic", "entries_topic", "dispositions_topic")
OUTPUT_TOPICS = ("holds_topic", "decisions_topic", "deadletter_topic")


def all_topics(s: Settings) -> dict[str, dict[str, str]]:
    """Full topic name -> topic config, for every topic the product uses."""
    topics: dict[str, dict[str, str]] = {
        s.topic(name): {} for name in (*INPUT_TOPICS, *OUTPUT_TOPICS)
    }
    for category in CATEGORIES:  # each team subscribes to its own flagged parcels
        topics[category_holds_topic(s, category)] = {}
    topics[s.topic("control_topic")] = {"cleanup.policy": "compact"}
    topics[s.topic("filers_topic")] = {"cleanup.policy": "compact"}
    return topics


def category_holds_topic(s: Settings, category: str) -> str:
    return f"{s.topic('holds_topic')}.{category}"


def stage_topic(s: Settings, stage: str) -> str:
    """A worker stage's input topic ("by-consignee", "by-shipper", "by-filer"): internal,
    Faust creates it."""
    return f"{s.app_id}-{stage}"


async def ensure_topics(
    s: Settings, timeout_s: float = 30.0, internal: Mapping[str, Mapping[str, str]] | None = None
) -> None:
    """Create the product's topics if they do not exist (idempotent), and a worker's
    `internal` ones (name -> config), each with the worker's partition count.

    Faust declares its internal topics (stage topics, changelogs) as it starts, and its
    consumer may join the group before the last of them is in its metadata: the assignment
    then leaves that topic out until a later metadata refresh (aiokafka's default age is 5
    minutes). A `make run` on a new broker scored nothing for the 2.5 minutes watched that
    way (the scoring stage's topic was not assigned). Created here first, they are all there
    when it joins.
    """
    specs = {
        name: (1 if "cleanup.policy" in cfg else s.partitions, cfg)
        for name, cfg in all_topics(s).items()
    }
    specs.update({name: (s.partitions, dict(cfg)) for name, cfg in (internal or {}).items()})
    admin = AIOKafkaAdminClient(**connection(s), request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=cfg)
            for name, (partitions, cfg) in specs.items()
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted, timeout_ms=int(timeout_s * 1000))
        # Wait until the metadata shows them, so producers do not race the creation.
        deadline = asyncio.get_running_loop().time() + timeout_s
        while set(specs) - set(await admin.list_topics()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("topics did not appear in metadata")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def partitions(s: Settings, topic: str) -> list[int]:
    """The partition numbers of a topic (from the broker's metadata), [] if it is missing."""
    admin = AIOKafkaAdminClient(**connection(s), request_timeout_ms=15000)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code", 0) != 0:
        return []
    return sorted(p["partition"] for p in described.get("partitions", []))
