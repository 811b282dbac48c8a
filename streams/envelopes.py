"""Stage-to-stage messages: many records per Kafka message, one partition per envelope.

Between the worker's own stages a Kafka message per record costs a Faust event, a
producer send and a consumer fetch each, for records no one else reads. So a stage packs
the records of a batch by destination partition (crc32 of the next stage's key, modulo
the partition count) into envelopes of at most `max_records` or about `max_bytes`: the
next stage sees one event per envelope, and every record in it belongs to that event's
partition, hence to that partition's table. Order within a partition is kept.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

MAX_RECORDS = 100
MAX_BYTES = 128 * 1024  # far under Kafka's 1 MiB; bounds what Faust buffers per partition


class EnvelopeError(ValueError):
    """A stage message that is not a list of records (corrupt, or not ours)."""


def partition_of(key: bytes, partitions: int) -> int:
    """The next stage's partition for a key: stable across processes and restarts."""
    return zlib.crc32(key) % partitions


def pack(
    items: Sequence[tuple[bytes, Mapping[str, Any]]],
    partitions: int,
    max_records: int = MAX_RECORDS,
    max_bytes: int = MAX_BYTES,
) -> Iterator[tuple[int, bytes]]:
    """(partition, envelope) for (key, record) items, in order within each partition."""
    by_partition: dict[int, list[bytes]] = {}
    for key, record in items:
        by_partition.setdefault(partition_of(key, partitions), []).append(orjson.dumps(record))
    for partition, records in by_partition.items():
        chunk: list[bytes] = []
        size = 0
        for r in records:
            if chunk and (len(chunk) >= max_records or size + len(r) > max_bytes):
                yield partition, _join(chunk)
                chunk, size = [], 0
            chunk.append(r)
            size += len(r) + 1
        if chunk:
            yield partition, _join(chunk)


def _join(records: list[bytes]) -> bytes:
    return b"[" + b",".join(records) + b"]"


def unpack(value: bytes | None) -> list[dict[str, Any]]:
    """The records of an envelope; EnvelopeError if it is not one."""
    try:
        records = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"corrupt stage message ({exc})") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise EnvelopeError("stage message is not a list of records")
    return [_upgraded(r) if "t" in r else r for r in records]


# Field names of stage messages written before they were typed (models/pipeline.py): such
# messages are in flight while workers are upgraded, and are read, not lost.
_RENAMED = {
    "t": "kind",
    "time": "event_epoch",
    "shipper": "shipper_key",
    "consignee": "consignee_key",
}


def _upgraded(record: dict[str, Any]) -> dict[str, Any]:
    return {_RENAMED.get(k, k): v for k, v in record.items()}
