"""BatchedTable (streams/tables.py): a batch's writes reach the local store only after the
broker has their changelog, so a worker killed mid-batch leaves no store ahead of the
broker (the replay of a record whose parcel never went out must not look forwarded)."""

from __future__ import annotations

from typing import Any

import faust
import orjson
import pytest

from streams.tables import BatchedTable, PartitionEvent, in_event
from tests.fakes import BatchProducer


def table(producer: BatchProducer) -> BatchedTable:
    app = faust.App("test-tables", store="memory://", broker="kafka://127.0.0.1:1")
    app._producer = producer  # type: ignore[assignment] # Faust's, replaced before first use
    schema: faust.Schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
    t = BatchedTable(app, name="bills", default=None, partitions=4, schema=schema)
    return app.tables.add(t)  # type: ignore[return-value]


async def test_a_write_is_read_back_at_once_but_stored_only_after_its_changelog() -> None:
    producer = BatchProducer()
    bills = table(producer)
    with in_event(PartitionEvent(2, "parcels.manifest")):
        bills["1Z1"] = {"revision": 1}
        assert bills.get("1Z1") == {"revision": 1} and "1Z1" in bills
    assert dict(bills.data.items()) == {}  # a kill here leaves the store as it was
    assert await bills.flush_changelog() == 1
    assert dict(bills.data.items()) == {"1Z1": {"revision": 1}}
    [(topic, _key, _value, partition)] = producer.sent
    assert (topic, partition) == ("test-tables-bills-changelog", 2)


async def test_a_refused_changelog_leaves_the_store_alone() -> None:
    bills = table(BatchProducer(refuse=RuntimeError("refused")))
    with in_event(PartitionEvent(0, "parcels.manifest")):
        bills["1Z1"] = {"revision": 1}
    with pytest.raises(RuntimeError, match="refused"):
        await bills.flush_changelog()
    assert dict(bills.data.items()) == {}


async def test_a_delete_hides_the_key_at_once_and_leaves_the_store_after_the_flush() -> None:
    bills = table(BatchProducer())
    with in_event(PartitionEvent(1, "parcels.manifest")):
        bills["1Z1"] = {"revision": 1}
    await bills.flush_changelog()
    with in_event(PartitionEvent(1, "parcels.manifest")):
        del bills["1Z1"]
        assert bills.get("1Z1") is None and "1Z1" not in bills
        with pytest.raises(KeyError):
            bills["1Z1"]
    assert "1Z1" in dict(bills.data.items())
    await bills.flush_changelog()
    assert dict(bills.data.items()) == {}


def rocksdb_table(producer: BatchProducer, datadir: Any) -> BatchedTable:
    app = faust.App(
        "test-tables", store="rocksdb://", broker="kafka://127.0.0.1:1", datadir=datadir
    )
    app._producer = producer  # type: ignore[assignment] # Faust's, replaced before first use
    schema: faust.Schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
    t = BatchedTable(app, name="bills", default=None, partitions=4, schema=schema)
    return app.tables.add(t)  # type: ignore[return-value]


async def test_rocksdb_gets_the_changelogs_bytes_and_each_partitions_newest_offset(
    tmp_path: Any,
) -> None:
    producer = BatchProducer()
    bills = rocksdb_table(producer, tmp_path)
    written = ("1Z1", 1), ("1Z2", 3), ("1Z3", 1)
    for key, partition in written:
        with in_event(PartitionEvent(partition, "parcels.manifest")):
            bills[key] = {"revision": 1, "hawb": key}
    await bills.flush_changelog()
    store = bills.data
    changelog = "test-tables-bills-changelog"
    sent = {orjson.loads(k): (k, v, p) for _, k, v, p in producer.sent if k is not None}
    for key, partition in written:
        # the store holds the very bytes the changelog got, in the key's partition
        sent_key, sent_value, sent_partition = sent[key]
        assert sent_partition == partition
        assert store._db_for_partition(partition)[sent_key] == sent_value  # type: ignore[attr-defined]
        with in_event(PartitionEvent(partition, "parcels.manifest")):
            assert bills.get(key) == {"revision": 1, "hawb": key}
    # each partition's log: 1Z1 and 1Z3 at offsets 0 and 1 of partition 1, 1Z2 at 0 of 3
    assert store.persisted_offset(faust.types.TP(changelog, 1)) == 1
    assert store.persisted_offset(faust.types.TP(changelog, 3)) == 0
    with in_event(PartitionEvent(1, "parcels.manifest")):
        del bills["1Z1"]
    await bills.flush_changelog()
    deleted = sent["1Z1"][0]
    assert deleted not in store._db_for_partition(1)  # type: ignore[attr-defined]
    with in_event(PartitionEvent(1, "parcels.manifest")):
        assert bills.get("1Z1") is None and bills.get("1Z3") is not None
    assert store.persisted_offset(faust.types.TP(changelog, 1)) == 2
