"""Hostile input through a running worker: everything is dead-lettered with a reason, the
worker keeps running and deciding, and its memory stays bounded.

The decoder's own property tests (tests/unit/test_records.py) cover the space of inputs;
this one sends the nastiest kinds through the real broker and the real worker.
"""

from __future__ import annotations

import random

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from benchmarks.harness import rss_mib
from streams.security import connection
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import decisions_for, publish, read_all
from tests.samples import MANIFEST

pytestmark = pytest.mark.integration


def hostile(rng: random.Random) -> list[bytes]:
    """One of each kind the issue names, and a few random ones."""
    deep = b"[" * 100_000 + b"]" * 100_000
    good = orjson.dumps(MANIFEST)
    return [
        bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 2000))),  # random bytes
        b'{"hawb": "\xff\xfe\xfa"}',  # invalid UTF-8
        b'{"hawb": "' + b"A" * 3_000_000 + b'"}',  # a multi-megabyte record
        deep,  # deep nesting
        good.replace(b"24.5", b"NaN"),
        good.replace(b"24.5", b"Infinity"),
        good.replace(b"24.5", b"1e999"),  # overflows to infinity
        good[:-1] + b',"hawb":"OTHER1"}',  # duplicate keys
        good.replace(b'"CN"', b"42"),  # wrong type
        b"",
        b"null",
        b'"just a string"',
        orjson.dumps({"hawb": ["list"] * 10_000}),
        *(bytes(rng.getrandbits(8) for _ in range(64)) for _ in range(20)),
    ]


async def test_hostile_records_are_dead_lettered_and_the_worker_carries_on(
    settings: Settings, start_worker
) -> None:
    await ensure_topics(settings)
    worker = start_worker(settings)
    payloads = hostile(random.Random(7))
    producer = AIOKafkaProducer(**connection(settings), max_request_size=8 * 2**20)
    await producer.start()
    try:
        for topic in ("manifest_topic", "entries_topic", "dispositions_topic"):
            for i, raw in enumerate(payloads):
                key = bytes([0xFF, i % 256]) if i % 2 else None  # undecodable keys too
                await producer.send_and_wait(settings.topic(topic), raw, key=key)
    finally:
        await producer.stop()
    expected = 3 * len(payloads)

    dead = await read_all(settings, "deadletter_topic", expect=expected, timeout=180, worker=worker)
    letters = [orjson.loads(v) for _k, v in dead]
    assert len(letters) == expected
    assert all(d["reason"] and d["field"] and d["source"]["topic"] for d in letters)
    too_large = [d for d in letters if "too large" in d["reason"] or "bytes" in d["reason"]]
    assert len(too_large) >= 3, {d["reason"] for d in letters}

    # still alive and deciding: a good parcel after all that gets its decision
    await publish(settings, "manifest_topic", [{**MANIFEST, "hawb": "AFTER01"}])
    assert (await decisions_for(settings, {"AFTER01"}))["AFTER01"]
    assert worker.proc.poll() is None, worker.output()
    rss = rss_mib(worker.proc.pid)
    assert rss < 1024, f"worker RSS {rss:.0f} MiB after hostile input"
