"""Offsets committed in a transaction, checked against the consumer group (Kafka's KIP-447).

aiokafka 0.14 speaks Kafka's first exactly-once protocol only: `send_offsets_to_transaction`
names the group and nothing else (TxnOffsetCommit v0), so the only way to fence a worker
whose partitions have moved is a transactional id per input partition, whose next owner's
`init_transactions` fences the last. That is a transaction per partition and stage in every
batch: 8 per stage at the default, each writing its commit markers, and at 1,000 parcels/s
the local broker spent 69% of a core on them while holds took 3-7 s (benchmarks/RESULTS.md).

Since Kafka 2.5 the group coordinator checks the consumer's generation and member id sent
with the offsets (TxnOffsetCommit v3): a worker that is no longer the group's member it was
cannot commit what it read, whatever its transactional id, so one producer per stage and
worker is enough. Two pieces of the protocol make that safe, and aiokafka has neither:
- `GroupProducer.send_offsets_to_transaction(offsets, group)` sends v3 with the group's
  generation; the broker's refusal (a rebalance the worker missed) is `GroupFenced`;
- `wait_stable` asks for the committed offsets of partitions just assigned with
  `require_stable` (OffsetFetch v7) until no transaction of another worker still holds
  offsets for them: a worker paused between committing offsets and ending its transaction
  could otherwise end it after the partitions' next owner has read the older offsets.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import aiokafka.errors as Errors
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient, ConnectionGroup, CoordinationType
from aiokafka.producer.sender import Sender, TxnOffsetCommitHandler
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

from streams.patches import written_for

log = logging.getLogger(__name__)

# a transaction of a worker that died is aborted by the broker after this long, and
# until then the partitions it wrote are unreadable to read-committed readers, and its
# offsets unstable (Kafka Streams uses the same 10 s under exactly-once)
TRANSACTION_TIMEOUT_MS = 10_000
UNSTABLE_OFFSET_COMMIT = 88  # the error code of OffsetFetch while a transaction holds offsets
# TxnOffsetCommit's answers that mean the worker is no longer the member it was
FENCING_ERRORS = {
    22: "illegal generation",
    25: "unknown member id",
    27: "rebalance in progress",
    82: "fenced instance id",
}


class GroupFenced(Errors.KafkaError):
    """The group has moved on from the generation a transaction's offsets were read in."""


@dataclass(frozen=True)
class GroupMetadata:
    """What the group coordinator checks offsets against (Java's ConsumerGroupMetadata)."""

    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


def _per_topic(field: str, *partition_fields: tuple[str, Any]) -> tuple[str, CompactArray]:
    """A flexible version's list of topics, each with its list of partitions."""
    partitions = CompactArray(*partition_fields, ("tags", TaggedFields))
    return (
        field,
        CompactArray(
            ("name", CompactString("utf-8")), ("partitions", partitions), ("tags", TaggedFields)
        ),
    )


class TxnOffsetCommitResponse_v3(Response):
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        _per_topic("errors", ("partition", Int32), ("error_code", Int16)),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        _per_topic(
            "topics",
            ("partition_index", Int32),
            ("committed_offset", Int64),
            ("committed_leader_epoch", Int32),
            ("committed_metadata", CompactString("utf-8")),
        ),
        ("tags", TaggedFields),
    )


TxnOffsetCommitStruct: TypeAlias = TxnOffsetCommitRequest_v3


class TxnOffsetCommitRequest(Request[TxnOffsetCommitStruct]):
    """TxnOffsetCommit with the group's generation (v3 only: a broker older than Kafka 2.5
    cannot fence by generation, and is refused rather than silently trusted)."""

    API_KEY = 28

    def __init__(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        group: GroupMetadata,
        offsets: Mapping[TopicPartition, Any],
    ) -> None:
        self.fields = (transactional_id, producer_id, producer_epoch, group, offsets)

    def build(self, request_struct_class: type[TxnOffsetCommitStruct]) -> TxnOffsetCommitStruct:
        tid, pid, epoch, group, offsets = self.fields
        by_topic: dict[str, list[tuple[int, int, int, str, dict[int, bytes]]]] = (
            collections.defaultdict(list)
        )
        for tp, om in sorted(offsets.items()):
            by_topic[tp.topic].append((tp.partition, om.offset, -1, om.metadata, {}))
        return request_struct_class(
            tid,
            group.group_id,
            pid,
            epoch,
            group.generation_id,
            group.member_id,
            group.group_instance_id,
            [(topic, parts, {}) for topic, parts in by_topic.items()],
            {},
        )


class OffsetFetchResponse_v7(Response):
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        _per_topic(
            "topics",
            ("partition_index", Int32),
            ("committed_offset", Int64),
            ("committed_leader_epoch", Int32),
            ("metadata", CompactString("utf-8")),
            ("error_code", Int16),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


OffsetFetchStruct: TypeAlias = OffsetFetchRequest_v7


class StableOffsetFetchRequest(Request[OffsetFetchStruct]):
    """OffsetFetch with `require_stable` (v7 only, Kafka 2.5)."""

    API_KEY = 9

    def __init__(self, group_id: str, tps: Iterable[TopicPartition]) -> None:
        by_topic: dict[str, list[int]] = collections.defaultdict(list)
        for tp in sorted(tps):
            by_topic[tp.topic].append(tp.partition)
        self.group_id, self.by_topic = group_id, by_topic

    def build(self, request_struct_class: type[OffsetFetchStruct]) -> OffsetFetchStruct:
        topics: list[tuple[str, list[int], dict[int, bytes]]] = [
            (topic, parts, {}) for topic, parts in self.by_topic.items()
        ]
        return request_struct_class(self.group_id, topics, True, {})


def unstable(response: Any) -> list[TopicPartition]:
    """The partitions an OffsetFetch v7 answer says are held by an open transaction
    (all asked, if the whole answer says so); raises on any other error."""
    if response.error_code == UNSTABLE_OFFSET_COMMIT:
        return [TopicPartition(t, p[0]) for t, parts, _ in response.topics for p in parts]
    if response.error_code:
        raise Errors.for_code(response.error_code)()
    held = []
    for topic, partitions, _tags in response.topics:
        for partition, _offset, _epoch, _meta, error_code, _ptags in partitions:
            if error_code == UNSTABLE_OFFSET_COMMIT:
                held.append(TopicPartition(topic, partition))
            elif error_code:
                raise Errors.for_code(error_code)()
    return held


async def wait_stable(
    client: AIOKafkaClient, group_id: str, tps: Iterable[TopicPartition], timeout: float
) -> list[TopicPartition]:
    """Wait until no open transaction holds offsets of `tps` for the group; the partitions
    still held when `timeout` (seconds) ran out (none: all stable)."""
    waiting = sorted(set(tps))
    deadline = time.monotonic() + timeout
    while waiting:
        try:
            node = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
            request = StableOffsetFetchRequest(group_id, waiting)
            response = await client.send(node, request, group=ConnectionGroup.COORDINATION)
            waiting = unstable(response)
        except Errors.KafkaError as exc:  # the coordinator moving, the broker restarting
            if not exc.retriable:
                raise
            log.info("asking for stable offsets of %s failed (%r); asking again", group_id, exc)
        if not waiting or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    return waiting


class GroupTxnOffsetCommitHandler(TxnOffsetCommitHandler):
    """aiokafka's handler, sending the group's generation and reading v3's answer."""

    def __init__(self, sender: Sender, offsets: Any, group: GroupMetadata) -> None:
        super().__init__(sender, offsets, group.group_id)
        self.group_metadata = group

    def create_request(self) -> TxnOffsetCommitRequest:
        txn = self._sender._txn_manager
        return TxnOffsetCommitRequest(
            txn.transactional_id,
            txn.producer_id,
            txn.producer_epoch,
            self.group_metadata,
            self._offsets,
        )

    def handle_response(self, resp: Any) -> float | None:
        for topic, partitions, _tags in resp.errors:
            for partition, error_code, _ptags in partitions:
                if error_code in FENCING_ERRORS:
                    group = self.group_metadata
                    exc = GroupFenced(
                        f"{topic}[{partition}]: {FENCING_ERRORS[error_code]}, generation "
                        f"{group.generation_id} of {group.group_id} is over"
                    )
                    self._sender._txn_manager.error_transaction(exc)
                    return None
        # the rest as aiokafka handles v0's answer (retries, other errors)
        resp.errors = [(t, [(p, e) for p, e, _ in parts]) for t, parts, _ in resp.errors]
        result: float | None = super().handle_response(resp)
        return result


class GroupSender(Sender):
    """aiokafka's sender, whose transactional offset commits carry the group's generation."""

    group: GroupMetadata | None = None

    async def _do_txn_offset_commit(self, offsets: Any, group_id: str) -> None:
        group = self.group
        if group is None or group.group_id != group_id:
            raise RuntimeError("GroupProducer: offsets sent without the group's generation")
        if not offsets:
            return
        node_id = await self._find_coordinator(CoordinationType.GROUP, group_id)
        await GroupTxnOffsetCommitHandler(self, offsets, group).do(node_id)


class GroupProducer(AIOKafkaProducer):
    """An AIOKafkaProducer whose transactions commit offsets checked by the group."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("transaction_timeout_ms", TRANSACTION_TIMEOUT_MS)
        super().__init__(**kwargs)
        self._sender.__class__ = GroupSender  # the same object, one method more

    async def send_offsets_to_transaction(self, offsets: Any, group_id: Any) -> None:
        """`group_id` is the group's GroupMetadata here: its generation goes with the offsets."""
        if not isinstance(group_id, GroupMetadata):
            raise TypeError("GroupProducer needs the group's GroupMetadata, not its id")
        self._sender.group = group_id
        await super().send_offsets_to_transaction(offsets, group_id.group_id)


written_for("aiokafka", "0.14.0")
