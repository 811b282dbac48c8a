"""The stateful stages without Kafka: join, consignee and shipper history, dispositions."""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson

from models import history, parcel
from models.outputs import Source
from models.pipeline import (
    Incoming,
    consignee_batch,
    join_batch,
    no_ctx,
    record_decisions,
    record_forwarded,
    shipper_batch,
    undecided,
)
from streams.publishing import dead_letters
from streams.tables import sweep_bills
from tests.samples import ENTRY, MANIFEST


def _in(kind: str, rec: dict[str, Any] | bytes, offset: int = 0) -> Incoming:
    raw = rec if isinstance(rec, bytes) else orjson.dumps(rec)
    return Incoming(kind, Source(f"parcels.{kind}", 0, offset, b"k"), raw)


def _disposition(hawb: str, outcome: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_time": "2025-03-05T00:00:00Z",
        "hawb": hawb,
        "outcome": outcome,
        "examined_at": "2025-03-04T10:00:00Z",
        "analyst": "ana",
    }


def _through(batch: list[Incoming], bills: dict, consignees: dict, shippers: dict) -> list:
    res = join_batch(batch, bills, 1 << 20)
    msgs = consignee_batch([m for _, m in res.forward], consignees)
    return shipper_batch([m for _, m in msgs], shippers)


def test_first_record_scored_then_rescored_with_both_sides() -> None:
    bills: dict = {}
    res = join_batch([_in("manifest", MANIFEST)], bills, 1 << 20)
    ((_, first),) = res.forward
    assert first["revision"] == 1
    assert first["view"]["entry"] is None and first["view"]["manifest"] is not None
    res = join_batch([_in("entry", ENTRY, 1)], bills, 1 << 20)
    ((_, second),) = res.forward
    assert second["revision"] == 2
    assert second["view"]["manifest"]["hawb"] == second["view"]["entry"]["hawb"]


def test_first_seen_manifest_is_kept() -> None:
    bills: dict = {}
    join_batch([_in("manifest", MANIFEST)], bills, 1 << 20)
    later = {**MANIFEST, "declared_value": 999.0, "event_time": "2025-03-01T11:00:00+00:00"}
    res = join_batch([_in("manifest", later, 1)], bills, 1 << 20)
    assert res.forward[0][1]["view"]["manifest"]["declared_value"] == 24.5
    assert res.forward[0][1]["revision"] == 2


def test_bad_records_and_unknown_dispositions_are_dead_lettered() -> None:
    bills: dict = {}
    disp = _disposition("NOPE1", "seized_ipr")
    res = join_batch([_in("manifest", b"{oops"), _in("disposition", disp, 1)], bills, 1 << 20)
    assert not res.forward
    assert [e.field for _, e in res.dead] == ["record", "hawb"]
    assert "no parcel known" in res.dead[1][1].reason


def test_a_huge_record_leaves_a_dead_letter_small_enough_to_produce() -> None:
    raw = b'{"hawb": "' + b"A" * 3_000_000 + b'"}'
    res = join_batch([_in("manifest", raw)], {}, 1 << 18)
    (letter,) = dead_letters(res.dead)
    d = orjson.loads(letter.value)
    assert "too large" in d["reason"]
    assert len(letter.value) < 1_000_000  # under the producer's default request limit
    assert d["original_truncated"]["bytes"] == len(raw)
    assert base64.b64decode(d["original_b64"]) == raw[: len(base64.b64decode(d["original_b64"]))]
    (small,) = dead_letters(join_batch([_in("manifest", b"{oops")], {}, 1 << 18).dead)
    assert "original_truncated" not in orjson.loads(small.value)


def test_shipper_history_counts_parcels_before_this_one() -> None:
    bills: dict = {}
    consignees: dict = {}
    shippers: dict = {}
    m2 = {**MANIFEST, "hawb": "HX2", "event_time": "2025-03-02T10:00:00+00:00"}
    parcels = _through(
        [_in("manifest", MANIFEST), _in("manifest", m2, 1)], bills, consignees, shippers
    )
    assert parcels[0]["view"]["shipper_history"]["parcels"] == 0.0
    assert parcels[1]["view"]["shipper_history"]["parcels"] == 1.0
    assert parcels[1]["view"]["shipper_history"]["age_days"] == 1.0
    assert parcels[1]["view"]["consignee_history"]["parcels_today"] == 0.0  # a new day
    # the rescoring revision does not count the parcel twice
    _through([_in("entry", ENTRY, 2)], bills, consignees, shippers)
    key = parcel.shipper_key(MANIFEST["shipper"]["name"], "CN")
    assert shippers[key]["parcels"] == 2


def test_seizure_disposition_reaches_shipper_and_consignee_history() -> None:
    bills: dict = {}
    consignees: dict = {}
    shippers: dict = {}
    _through([_in("manifest", MANIFEST)], bills, consignees, shippers)
    disp = _disposition("HX12345678", "seized_narcotics")
    _through([_in("disposition", disp, 1)], bills, consignees, shippers)
    m2 = {**MANIFEST, "hawb": "HX3", "event_time": "2025-03-06T10:00:00+00:00"}
    (p,) = _through([_in("manifest", m2, 2)], bills, consignees, shippers)
    assert p["view"]["shipper_history"]["seized_narcotics"] == 1.0
    assert p["view"]["consignee_history"]["prior_seizures"] == 1.0


def test_replayed_stage_messages_are_not_counted_twice() -> None:
    """After a crash the stages re-read their uncommitted messages (at-least-once)."""
    bills: dict = {}
    consignees: dict = {}
    shippers: dict = {}
    disp = _disposition("HX12345678", "seized_ipr")
    forward = join_batch([_in("manifest", MANIFEST), _in("disposition", disp, 1)], bills, 1 << 20)
    msgs = [m for _, m in forward.forward]
    for _ in range(2):  # the same stage-2 and stage-3 input, delivered twice
        staged = consignee_batch(copy.deepcopy(msgs), consignees)
        shipper_batch([m for _, m in staged], shippers)
    (ship,) = shippers.values()
    (cons,) = consignees.values()
    assert (ship["parcels"], ship["seized_ipr"], cons["parcels"], cons["seizures"]) == (1, 1, 1, 1)
    # a new parcel is still counted
    m2 = {**MANIFEST, "hawb": "HX2", "event_time": "2025-03-06T10:00:00+00:00"}
    _through([_in("manifest", m2, 2)], bills, consignees, shippers)
    assert shippers[parcel.shipper_key("Shenzhen Joy", "CN")]["parcels"] == 2


def test_a_replayed_input_record_keeps_its_revision() -> None:
    """Stage 1 re-reading its uncommitted records must not invent a rescore."""
    bills: dict = {}
    manifest, entry = _in("manifest", MANIFEST), _in("entry", ENTRY, 1)
    first = [m["revision"] for _, m in join_batch([manifest, entry], bills, 1 << 20).forward]
    again = [m["revision"] for _, m in join_batch([manifest, entry], bills, 1 << 20).forward]
    assert first == again == [1, 2]
    other = _in("manifest", MANIFEST, 7)  # the same bill sent again: a new record, rescored
    assert join_batch([other], bills, 1 << 20).forward[0][1]["revision"] == 3


def test_a_replay_the_next_stage_acknowledged_is_not_sent_again() -> None:
    bills: dict = {}
    manifest, entry = _in("manifest", MANIFEST), _in("entry", ENTRY, 1)
    record_forwarded(join_batch([manifest], bills, 1 << 20).joined, bills, no_ctx)  # acked
    join_batch([entry], bills, 1 << 20)  # joined, but the crash came before the ack
    again = join_batch([manifest, entry], bills, 1 << 20)
    assert (again.replays, [m["revision"] for _, m in again.forward]) == (1, [2])


def test_a_published_decision_is_not_made_again_on_replay() -> None:
    """Decisions are remembered only once acknowledged; a replay of one is skipped, a
    parcel never remembered is decided, and the shipper's history stays usable."""
    bills: dict = {}
    consignees: dict = {}
    shippers: dict = {}
    m2 = {**MANIFEST, "hawb": "HX2"}
    parcels = _through(
        [_in("manifest", MANIFEST), _in("manifest", m2, 1)], bills, consignees, shippers
    )
    assert undecided(parcels, shippers) == [0, 1]
    record_decisions(parcels[:1], [(0, "narcotics", "hold")], shippers)  # only the first acked
    assert undecided(copy.deepcopy(parcels), shippers) == [1]
    (state,) = shippers.values()
    assert state["holds"] == 1 and state["parcels"] == 2
    # a shipper first known through a decision alone still has readable features
    fresh: dict = {}
    record_decisions(parcels[:1], [], fresh)
    assert history.shipper_features(next(iter(fresh.values())), 0.0)["parcels"] == 0.0
    assert undecided(parcels, fresh) == [1]


def test_remembered_events_are_bounded() -> None:
    state: dict = {}
    for i in range(history.RECENT + 5):
        history.remember(state, f"parcel:H{i}")
    assert len(state["recent"]) == history.RECENT
    assert history.replayed(state, f"parcel:H{history.RECENT + 4}")
    assert not history.replayed(state, "parcel:H0")  # forgotten: beyond the window


def test_distinct_counts_are_bounded() -> None:
    state = None
    for i in range(history.MAX_DISTINCT + 50):
        state = history.observe_consignee_parcel(state, f"shipper {i}", 0.0)
    assert len(state["shippers"]) == history.MAX_DISTINCT
    assert history.consignee_features(state, 0.0)["parcels_today"] == history.MAX_DISTINCT + 50


def test_expiry_sweep_forgets_old_bills() -> None:
    class FakeTable(dict):
        pass

    bills = FakeTable()
    join_batch([_in("manifest", MANIFEST)], bills, 1 << 20)
    newer = copy.deepcopy(MANIFEST) | {"hawb": "HX9", "event_time": "2025-04-20T00:00:00Z"}
    join_batch([_in("manifest", newer, 1)], bills, 1 << 20)
    now = bills["HX9"]["last_seen"] + 5 * history.DAY
    assert sweep_bills(bills, 30 * history.DAY, now, "parcels.manifest") == 1  # type: ignore[arg-type]
    assert set(bills) == {"HX9"}
