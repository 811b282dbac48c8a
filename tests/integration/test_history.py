"""Stateful enrichment on the real broker: dispositions, mismatches, restart survival."""

from __future__ import annotations

import copy
import shutil
import signal

import pytest

from models.features import INDEX
from models.records import entry_check_digit
from streams.topics import ensure_topics
from tests.conftest import decisions_for, publish
from tests.samples import ENTRY, MANIFEST

pytestmark = pytest.mark.integration


def manifest(hawb: str, shipper: str, t: str, **changes) -> dict:
    m = copy.deepcopy(MANIFEST)
    m.update(hawb=hawb, event_time=t, **changes)
    m["shipper"]["name"] = shipper
    return m


def entry(hawb: str, shipper: str, t: str, value: float) -> dict:
    e = copy.deepcopy(ENTRY)
    serial = hawb[-7:].rjust(7, "0") if hawb[-7:].isdigit() else "0012345"
    e.update(
        hawb=hawb, event_time=t, entry_number="AB1" + serial + str(entry_check_digit("AB1", serial))
    )
    e["shipper"]["name"] = shipper
    e["lines"][0]["value_usd"] = value
    return e


def disposition(hawb: str, outcome: str, t: str) -> dict:
    return {
        "schema_version": 1,
        "event_time": t,
        "hawb": hawb,
        "outcome": outcome,
        "examined_at": t,
        "analyst": "test",
    }


def feature(d: dict, name: str) -> float:
    return d["features"][INDEX[name]]


async def test_seizures_raise_the_next_parcels_score(settings, start_worker) -> None:
    await ensure_topics(settings)
    start_worker(settings)
    bad, clean = "Guangzhou Quick Ship Ltd", "Hangzhou Honest Goods Ltd"
    first = [manifest(f"BAD{i}", bad, f"2025-03-0{i + 1}T08:00:00+00:00") for i in range(3)]
    await publish(settings, "manifest_topic", first)
    await decisions_for(settings, {m["hawb"] for m in first})
    await publish(
        settings,
        "dispositions_topic",
        [disposition(m["hawb"], "seized_narcotics", "2025-03-05T00:00:00+00:00") for m in first],
    )
    # Dispositions and manifests are different partitions of different topics: Kafka orders
    # neither against the other, and exactly-once commits the parts of a batch in one
    # transaction per source partition, so a parcel sent right after the dispositions may
    # be scored before they reach its shipper's history. Probe parcels show when they have.
    for i in range(30):
        probe = manifest(f"PROBE{i}", bad, "2025-03-06T08:00:00+00:00")
        await publish(settings, "manifest_topic", [probe])
        seen = await decisions_for(settings, {probe["hawb"]})
        if feature(seen[probe["hawb"]][0], "shipper_seized_narcotics") == 3:
            break
    else:
        raise AssertionError("the seizures never reached the shipper's history")
    # the same parcel, later, from the seized shipper and from a clean one
    t = "2025-03-09T08:00:00+00:00"
    await publish(
        settings, "manifest_topic", [manifest("NEXTBAD", bad, t), manifest("NEXTCLEAN", clean, t)]
    )
    got = await decisions_for(settings, {"NEXTBAD", "NEXTCLEAN"})
    after_bad, after_clean = got["NEXTBAD"][0], got["NEXTCLEAN"][0]
    assert feature(after_bad, "shipper_seized_narcotics") == 3
    assert feature(after_clean, "shipper_seized_narcotics") == 0
    assert feature(after_bad, "consignee_prior_seizures") == 3  # same delivery address
    assert after_bad["scores"]["fentanyl"] > after_clean["scores"]["fentanyl"]


async def test_value_mismatch_raises_undervaluation(settings, start_worker) -> None:
    await ensure_topics(settings)
    start_worker(settings)
    shipper = "Ningbo Bright Ltd"
    t0, t1 = "2025-03-01T08:00:00+00:00", "2025-03-01T09:00:00+00:00"
    m_same = manifest("VAL0000001", shipper, t0, declared_value=640.0, weight_kg=2.0)
    m_diff = manifest("VAL0000002", shipper, t0, declared_value=640.0, weight_kg=2.0)
    await publish(settings, "manifest_topic", [m_same, m_diff])
    await publish(
        settings,
        "entries_topic",
        [entry("VAL0000001", shipper, t1, 640.0), entry("VAL0000002", shipper, t1, 95.0)],
    )
    got = await decisions_for(settings, {"VAL0000001", "VAL0000002"})
    same = max(got["VAL0000001"], key=lambda d: d["revision"])
    diff = max(got["VAL0000002"], key=lambda d: d["revision"])
    assert same["revision"] == diff["revision"] == 2
    assert feature(diff, "entry_to_manifest_value_ratio") == pytest.approx(95 / 640, rel=1e-4)
    assert diff["scores"]["undervaluation"] > same["scores"]["undervaluation"]


@pytest.mark.parametrize("local_store", ["kept", "lost"])
async def test_history_survives_a_killed_worker(settings, start_worker, local_store) -> None:
    """With the local RocksDB store, or rebuilt from the changelog topics on a new machine."""
    await ensure_topics(settings)
    shipper = "Dongguan Steady Ltd"
    worker = start_worker(settings)
    first = [manifest(f"KEEP{i}", shipper, f"2025-03-0{i + 1}T08:00:00+00:00") for i in range(4)]
    await publish(settings, "manifest_topic", first)
    await decisions_for(settings, {m["hawb"] for m in first})
    worker.stop(signal.SIGKILL)
    if local_store == "lost":
        shutil.rmtree(settings.data_dir)
    start_worker(settings)
    await publish(
        settings, "manifest_topic", [manifest("KEEP9", shipper, "2025-03-08T08:00:00+00:00")]
    )
    got = await decisions_for(settings, {"KEEP9"}, timeout=120)
    assert feature(got["KEEP9"][0], "shipper_parcels") == 4
    assert feature(got["KEEP9"][0], "consignee_parcels") == 4
