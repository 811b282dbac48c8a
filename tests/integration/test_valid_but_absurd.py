"""Records that pass the schema in form but are absurd or ambiguous in meaning, through a
running worker (issue 15): they are dead-lettered with the field and the reason, and the
worker goes on joining and deciding.

On the build before the fix, the naive timestamp stopped the scoring agent (no decision
after it), and the far-future record moved stream time to the year 9999 so that the next
expiry sweep erased every bill (the entry came as revision 1, without its manifest).
"""

from __future__ import annotations

import asyncio
import base64
import copy
from datetime import UTC, datetime

import orjson
import pytest

from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import decisions_for, publish, read_all
from tests.samples import ENTRY, MANIFEST

pytestmark = pytest.mark.integration

SWEEP_S = 2.0


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def test_naive_and_far_future_records_neither_stop_nor_wipe_the_worker(
    settings: Settings, start_worker
) -> None:
    await ensure_topics(settings)
    worker = start_worker(settings, PARCEL_RISK_BILL_SWEEP_S=str(SWEEP_S))
    opened = copy.deepcopy(MANIFEST) | {"hawb": "HOPEN1", "event_time": _now()}
    naive = copy.deepcopy(MANIFEST) | {"hawb": "HNAIVE1", "event_time": "2026-06-01T10:00:00"}
    far = copy.deepcopy(MANIFEST) | {"hawb": "HFAR1", "event_time": "9999-12-31T00:00:00Z"}
    await publish(settings, "manifest_topic", [opened, naive, far])
    await decisions_for(settings, {"HOPEN1"}, timeout=120)
    await asyncio.sleep(3 * SWEEP_S)  # sweeps run meanwhile

    entry = copy.deepcopy(ENTRY) | {"hawb": "HOPEN1", "event_time": _now()}
    after = copy.deepcopy(MANIFEST) | {"hawb": "HAFTER1", "event_time": _now()}
    await publish(settings, "entries_topic", [entry])
    await publish(settings, "manifest_topic", [after])
    found = await decisions_for(settings, {"HOPEN1", "HAFTER1"}, timeout=120)
    # the entry joined the manifest the sweep must not have erased
    assert [d["revision"] for d in found["HOPEN1"]] == [1, 2]
    assert found["HOPEN1"][-1]["has_manifest"] and found["HOPEN1"][-1]["has_entry"]
    assert "HNAIVE1" not in found and "HFAR1" not in found

    letters = [orjson.loads(v) for _k, v in await read_all(settings, "deadletter_topic")]
    reasons = {orjson.loads(base64.b64decode(d["original_b64"]))["hawb"]: d for d in letters}
    assert reasons["HNAIVE1"]["field"] == "event_time"
    assert "no time zone" in reasons["HNAIVE1"]["reason"]
    assert reasons["HFAR1"]["field"] == "event_time"
    assert "in the future" in reasons["HFAR1"]["reason"]
    assert worker.proc.poll() is None, worker.output()
    assert "Crashed" not in worker.output()
