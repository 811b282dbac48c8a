"""Stage envelopes: every record arrives once, in its key's partition, in order."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams import envelopes

keys = st.binary(min_size=0, max_size=12)
records = st.dictionaries(
    st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=50), max_size=4
)


@given(
    items=st.lists(st.tuples(keys, records), max_size=200),
    partitions=st.integers(1, 16),
    max_records=st.integers(1, 50),
    max_bytes=st.integers(1, 4000),
)
def test_pack_unpack_keeps_every_record_in_its_partition_and_order(
    items: list, partitions: int, max_records: int, max_bytes: int
) -> None:
    tagged = [(k, {**r, "_seq": i}) for i, (k, r) in enumerate(items)]
    got: dict[int, list[dict]] = {}
    for partition, value in envelopes.pack(tagged, partitions, max_records, max_bytes):
        batch = envelopes.unpack(value)
        assert 1 <= len(batch) <= max_records
        got.setdefault(partition, []).extend(batch)
    for p, batch in got.items():
        seqs = [r["_seq"] for r in batch]
        assert seqs == sorted(seqs)  # order kept within a partition
        assert all(envelopes.partition_of(tagged[s][0], partitions) == p for s in seqs)
    assert sorted(r["_seq"] for b in got.values() for r in b) == list(range(len(items)))


def test_envelopes_stay_under_the_byte_limit_unless_one_record_is_bigger() -> None:
    items = [(b"k", {"pad": "x" * 300}) for _ in range(100)]
    sizes = [len(v) for _p, v in envelopes.pack(items, 1, max_records=1000, max_bytes=1000)]
    assert len(sizes) > 30
    assert max(sizes) <= 1000 + 2


def test_partition_is_stable_and_spread() -> None:
    parts = {envelopes.partition_of(f"shipper {i}".encode(), 8) for i in range(200)}
    assert parts == set(range(8))
    assert envelopes.partition_of(b"acme|cn", 8) == envelopes.partition_of(b"acme|cn", 8)


@pytest.mark.parametrize("value", [b"", b"not json", b'{"kind": "parcel"}', b"[1, 2]", None])
def test_anything_else_is_refused(value: bytes | None) -> None:
    with pytest.raises(envelopes.EnvelopeError):
        envelopes.unpack(value)


def test_stage_messages_of_the_previous_build_are_read_after_an_upgrade() -> None:
    """Envelopes written before the stage messages were typed are in flight during an
    upgrade (once, they crashed the default worker): their fields are read by new names."""
    old = {"t": "parcel", "time": 1.0, "shipper": "s|CN", "consignee": "a|1", "revision": 1}
    (m,) = envelopes.unpack(orjson.dumps([old]))
    assert m == {
        "kind": "parcel",
        "event_epoch": 1.0,
        "shipper_key": "s|CN",
        "consignee_key": "a|1",
        "revision": 1,
    }
