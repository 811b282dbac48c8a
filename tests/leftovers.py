"""Topics and consumer groups that test and benchmark runs left on a broker before they
deleted their own (benchmarks/harness.remove_run), found by their naming only.

    python -m tests.leftovers [--broker 127.0.0.1:9092] [--delete]

Lists them (with --delete, deletes them). Only names the runs made are matched: a topic
prefix of a run's kind and tag (`t1a2b3c4d.`, `bl1a2b3c.` ...), or a run's app id
(`parcel-risk-test-1a2b3c4d`, `bench-latency-1a2b3c`, `crash-crash1a2b3c4d.` ...); the
product's own topics and the default app's are never matched. A broker that no longer
starts within broker.py's wait because of them can be started by hand and left to load
(`python deploy/kafka/broker.py wait` again), then cleaned with this.
"""

from __future__ import annotations

import argparse
import asyncio
import re

from aiokafka.admin import AIOKafkaAdminClient

from benchmarks.harness import delete_group
from streams.security import connection
from streams.settings import Settings

PREFIX = re.compile(r"^(?:(?:t|o|r|crash)[0-9a-f]{8}|b[lst][0-9a-f]{6}(?:[0-9a-f]{2})?)\.")
APP_ID = re.compile(
    r"(?:^|-)(?:parcel-risk-(?:test|own|run)-[0-9a-f]{8}"
    r"|bench-(?:latency|state|throughput)-[0-9a-f]{6}(?:[0-9a-f]{2})?"
    r"|crash-crash[0-9a-f]{8}\.)"
)


def is_leftover(name: str) -> bool:
    return bool(PREFIX.match(name) or APP_ID.search(name))


async def leftovers(s: Settings, delete: bool) -> tuple[list[str], list[str]]:
    admin = AIOKafkaAdminClient(**connection(s), request_timeout_ms=60_000)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if is_leftover(t))
        groups = sorted(g[0] for g in await admin.list_consumer_groups() if is_leftover(g[0]))
        if delete:
            for i in range(0, len(topics), 500):  # a request of a bounded size
                await admin.delete_topics(topics[i : i + 500], timeout_ms=60_000)
            for group in groups:
                await delete_group(admin, group)
    finally:
        await admin.close()
    return topics, groups


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broker", default=Settings().broker)
    p.add_argument("--delete", action="store_true", help="delete them (default: list only)")
    a = p.parse_args()
    topics, groups = asyncio.run(leftovers(Settings(broker=a.broker), a.delete))
    for name in topics:
        print(f"topic {name}")
    for name in groups:
        print(f"group {name}")
    done = "deleted" if a.delete else "found (--delete deletes them)"
    print(f"{len(topics)} topics and {len(groups)} consumer groups of test runs {done}")


if __name__ == "__main__":
    main()
