"""The stateful stages without Kafka: join, consignee and shipper history, dispositions."""

from __future__ import annotations

import base64
import copy
import time
from typing import Any

import orjson

from models import history, parcel
from models.outputs import Source
from models.pipeline import (
    Exam,
    Incoming,
    consignee_batch,
    join_batch,
    no_ctx,
    record_decisions,
    record_forwarded,
    shipper_batch,
    undecided,
)
from models.stream_time import WINDOW, StreamTime
from streams.publishing import dead_letters, failed_letters
from streams.tables import sweep_bills
from tests.samples import ENTRY, MANIFEST


def _in(kind: str, rec: dict[str, Any] | bytes, offset: int = 0) -> Incoming:
    """An input record, keyed by its HAWB as producers must."""
    raw = rec if isinstance(rec, bytes) else orjson.dumps(rec)
    key = b"HX12345678" if isinstance(rec, bytes) else rec["hawb"].encode()
    return Incoming(kind, Source(f"parcels.{kind}", 0, offset, key), raw)


def _disposition(hawb: str, outcome: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_time": "2025-03-05T00:00:00Z",
        "hawb": hawb,
        "outcome": outcome,
        "examined_at": "2025-03-04T10:00:00Z",
        "analyst": "ana",
    }


def _through(
    batch: list[Incoming],
    bills: dict,
    consignees: dict,
    shippers: dict,
    exams: list[Exam] | None = None,
) -> list:
    res = join_batch(batch, bills, 1 << 20)
    msgs = consignee_batch([m for _, m in res.forward], consignees)
    return shipper_batch([m for _, m in msgs], shippers, exams=exams)


def _two_parcels() -> tuple[dict, dict, dict, list]:
    """Tables after two parcels of one shipper (HX12345678 and HX2), and the parcels."""
    bills: dict = {}
    consignees: dict = {}
    shippers: dict = {}
    m2 = {**MANIFEST, "hawb": "HX2"}
    parcels = _through(
        [_in("manifest", MANIFEST), _in("manifest", m2, 1)], bills, consignees, shippers
    )
    return bills, consignees, shippers, parcels


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


def test_a_replay_is_sent_when_a_later_revision_of_its_bill_went_on_first() -> None:
    """After a crash the bill's two records, from two topics, come back in either order:
    the entry's revision 2 acknowledged says nothing of the manifest's revision 1, whose
    parcel never went out (the three-SIGKILL test lost such records)."""
    bills: dict = {}
    manifest, entry = _in("manifest", MANIFEST), _in("entry", ENTRY, 1)
    join_batch([manifest], bills, 1 << 20)  # joined and flushed, the crash before its send
    record_forwarded(join_batch([entry], bills, 1 << 20).joined, bills, no_ctx)  # acked
    again = join_batch([manifest], bills, 1 << 20)
    assert (again.replays, [m["revision"] for _, m in again.forward]) == (0, [1])
    record_forwarded(again.joined, bills, no_ctx)
    assert join_batch([manifest, entry], bills, 1 << 20).replays == 2


def test_bills_stored_with_a_newest_forwarded_revision_are_still_read() -> None:
    bills: dict = {}
    manifest, entry = _in("manifest", MANIFEST), _in("entry", ENTRY, 1)
    join_batch([manifest, entry], bills, 1 << 20)
    ((hawb, bill),) = bills.items()
    bills[hawb] = {**bill, "forwarded": 1}  # as stored before revisions were kept one by one
    again = join_batch([manifest, entry], bills, 1 << 20)
    assert (again.replays, [m["revision"] for _, m in again.forward]) == (1, [2])


def test_a_published_decision_is_not_made_again_on_replay() -> None:
    """Decisions are remembered only once acknowledged; a replay of one is skipped, a
    parcel never remembered is decided, and the shipper's history stays usable."""
    _bills, _consignees, shippers, parcels = _two_parcels()
    assert undecided(parcels, shippers) == [0, 1]
    # only the first acknowledged
    record_decisions(parcels[:1], [(0, "fentanyl", "hold")], "m1", shippers)
    assert undecided(copy.deepcopy(parcels), shippers) == [1]
    (state,) = shippers.values()
    assert state["holds"] == 1 and state["parcels"] == 2
    # a shipper first known through a decision alone still has readable features
    fresh: dict = {}
    record_decisions(parcels[:1], [], "m1", fresh)
    assert history.shipper_features(next(iter(fresh.values())), 0.0)["parcels"] == 0.0
    assert undecided(parcels, fresh) == [1]


def test_a_shipper_known_first_by_a_hold_survives_the_json_table() -> None:
    """The worker's tables store JSON, where infinity comes back as null: a shipper state
    begun by a hold (no parcel of it counted yet) must read and count as a new one."""
    bills: dict = {}
    consignees: dict = {}
    (p,) = _through([_in("manifest", MANIFEST)], bills, consignees, {})
    shippers: dict = {}
    record_decisions([p], [(0, "counterfeit", "hold")], "m1", shippers)
    stored = {k: orjson.loads(orjson.dumps(v)) for k, v in shippers.items()}
    (state,) = stored.values()
    assert history.shipper_features(state, 1e9)["age_days"] == 0.0
    m2 = {**MANIFEST, "hawb": "HX2", "event_time": "2025-03-03T10:00:00+00:00"}
    (p2,) = _through([_in("manifest", m2, 1)], bills, consignees, stored)
    assert p2["view"]["shipper_history"]["prior_holds"] == 1.0
    m3 = {**MANIFEST, "hawb": "HX3", "event_time": "2025-03-04T10:00:00+00:00"}
    (p3,) = _through([_in("manifest", m3, 2)], bills, consignees, stored)
    assert p3["view"]["shipper_history"]["parcels"] == 1.0
    assert p3["view"]["shipper_history"]["age_days"] == 1.0


def test_exam_outcomes_of_holds_name_the_hold_category_and_model_once() -> None:
    bills, consignees, shippers, parcels = _two_parcels()
    record_decisions(
        parcels, [(0, "counterfeit", "hold"), (1, "fentanyl", "review")], "m1", shippers
    )
    seized = _in("disposition", _disposition("HX12345678", "seized_ipr"), 2)
    released = _in("disposition", _disposition("HX2", "released"), 3)  # reviewed, not held
    got: list[Exam] = []
    _through([seized, released], bills, consignees, shippers, got)
    assert got == [Exam("counterfeit", "m1", "seized_ipr")]
    assert got[0].hit and got[0].seizure
    again: list[Exam] = []
    _through([seized], bills, consignees, shippers, again)
    assert again == []  # a replay is counted once
    other = Exam("fentanyl", "m1", "seized_ipr")
    assert other.seizure and not other.hit
    assert not Exam("fentanyl", "m1", "released").seizure


def test_a_bill_held_again_keeps_one_hold_with_the_latest_model_and_holds_are_bounded() -> None:
    state = history.observe_hold(None, "H1", "fentanyl", "m1")
    state = history.observe_hold(state, "H1", "counterfeit", "m2")
    assert history.held(state, "H1") == ("counterfeit", "m2") and len(state["held"]) == 1
    for i in range(history.HELD + 3):
        state = history.observe_hold(state, f"X{i}", "fentanyl", "m2")
    assert len(state["held"]) == history.HELD and history.held(state, "H1") is None


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
        view = {"hawb": f"H{i}", "manifest": {"declared_value": 10.0, "currency": "USD"}}
        state = history.observe_consignee_parcel(state, view, f"shipper {i}", 0.0)
    assert len(state["shippers"]) == len(state["values_today"]) == history.MAX_DISTINCT
    today = history.consignee_features(state, 0.0)
    assert today["parcels_today"] == history.MAX_DISTINCT + 50
    assert today["value_today"] == 10.0 * (history.MAX_DISTINCT + 50)  # beyond: one sum


def test_a_consignees_day_total_counts_each_parcel_once_and_restarts_each_day() -> None:
    state = None
    for hawb, value in (("H1", 300.0), ("H2", 250.0)):
        view = {"hawb": hawb, "manifest": {"declared_value": value, "currency": "USD"}}
        state = history.observe_consignee_parcel(state, view, "s", 1_000.0)
    assert history.consignee_features(state, 2_000.0, "H3")["value_today"] == 550.0
    assert history.consignee_features(state, 2_000.0, "H2")["value_today"] == 300.0  # a rescore
    assert history.consignee_features(state, 1_000.0 + history.DAY, "H3")["value_today"] == 0.0


def test_expiry_sweep_forgets_old_bills() -> None:
    class FakeTable(dict):
        pass

    bills = FakeTable()
    clock = StreamTime()
    join_batch([_in("manifest", MANIFEST)], bills, 1 << 20, clock=clock)
    newer = copy.deepcopy(MANIFEST) | {"hawb": "HX9", "event_time": "2025-04-20T00:00:00Z"}
    later = [
        _in("manifest", {**newer, "hawb": f"HY{k}"}, 2 + k) for k in range(WINDOW)
    ]  # enough records at the newer time to move the partition's clock
    join_batch([_in("manifest", newer, 1), *later], bills, 1 << 20, clock=clock)
    assert sweep_bills(bills, 30 * history.DAY, clock, "parcels.manifest") == 1  # type: ignore[arg-type]
    assert "HX12345678" not in bills and "HX9" in bills


def test_one_far_future_record_erases_no_bill() -> None:
    """Issue 15: one record dated 9999 moved stream time there and the sweep erased every
    bill. It is now refused, and a future record inside the tolerance cannot move it."""
    bills: dict = {}
    clock = StreamTime()
    join_batch([_in("manifest", MANIFEST)], bills, 1 << 20, clock=clock, latest=time.time())
    far = copy.deepcopy(MANIFEST) | {"hawb": "HFAR", "event_time": "9999-12-31T00:00:00Z"}
    res = join_batch([_in("manifest", far, 1)], bills, 1 << 20, clock=clock, latest=time.time())
    ((_, err),) = res.dead
    assert err.field == "event_time" and "in the future" in err.reason
    soon = copy.deepcopy(MANIFEST) | {"hawb": "HSOON", "event_time": "2099-01-01T00:00:00Z"}
    join_batch([_in("manifest", soon, 2)], bills, 1 << 20, clock=clock)  # no bound: offline
    assert sweep_bills(bills, 30 * history.DAY, clock, "parcels.manifest") == 0  # type: ignore[arg-type]
    res = join_batch([_in("entry", ENTRY, 3)], bills, 1 << 20, clock=clock, latest=time.time())
    ((_, joined),) = res.forward
    assert joined["revision"] == 2 and joined["view"]["manifest"] is not None


def test_naive_event_time_goes_to_the_dead_letters() -> None:
    naive = copy.deepcopy(MANIFEST) | {"event_time": "2026-06-01T10:00:00"}
    res = join_batch([_in("manifest", naive)], {}, 1 << 20)
    ((_, err),) = res.dead
    assert err.field == "event_time" and "time zone" in err.reason
    assert not res.forward


def test_a_record_that_raises_is_parked_and_the_batch_goes_on() -> None:
    class BrokenStore(dict):
        """A table whose store fails for one key (what a corrupt value does)."""

        def get(self, key: str, default: Any = None) -> Any:
            if key == "HBAD":
                raise OSError("corrupt value in store")
            return super().get(key, default)

    bad = copy.deepcopy(MANIFEST) | {"hawb": "HBAD"}
    res = join_batch([_in("manifest", bad), _in("manifest", MANIFEST, 1)], BrokenStore(), 1 << 20)
    assert [m["view"]["hawb"] for _, m in res.forward] == ["HX12345678"]
    ((item, err),) = res.dead
    assert item.source.offset == 0 and err.field == "record"
    assert "OSError: corrupt value in store" in err.reason and res.failures == 1


def test_history_stages_park_a_message_that_raises() -> None:
    res = join_batch([_in("manifest", MANIFEST)], {}, 1 << 20)
    msgs = [m for _, m in res.forward]
    broken = copy.deepcopy(msgs[0])
    broken["event_epoch"] = "not a time"  # history arithmetic on it raises
    broken["view"]["manifest"] = None  # and a parcel with no record at all
    dead: list = []
    out = consignee_batch([broken, *msgs], {}, dead=dead)
    assert [m for _, m in out] == msgs
    ((m, err),) = dead
    assert m is broken and err.field == "record" and "TypeError" in err.reason
    dead = []
    assert shipper_batch([broken, *msgs], {}, dead=dead) == msgs
    assert len(dead) == 1
    (letter,) = failed_letters(dead)
    value = orjson.loads(letter.value)
    assert value["source"] == msgs[0]["source"] and "neither a manifest nor" in value["reason"]


def test_a_record_not_keyed_by_its_hawb_is_refused() -> None:
    """Records of one bill meet only in one partition: a key other than the HAWB (or none)
    would leave the bill unjoined forever, so it is refused with the reason."""
    for key in (b"another-key", None, b"hx12345678"):
        item = Incoming("manifest", Source("parcels.manifest", 0, 0, key), orjson.dumps(MANIFEST))
        res = join_batch([item], {}, 1 << 20)
        ((_, err),) = res.dead
        assert err.field == "key" and "HX12345678" in err.reason
    lower = copy.deepcopy(MANIFEST) | {"hawb": "hx12345678"}  # normalised to upper case
    assert join_batch([_in("manifest", lower | {"hawb": "HX12345678"})], {}, 1 << 20).forward
    item = Incoming("manifest", Source("m", 0, 0, b"HX12345678"), orjson.dumps(lower))
    assert join_batch([item], {}, 1 << 20).forward  # the HAWB itself may come in lower case


def test_a_message_without_its_kind_is_parked_not_raised() -> None:
    msgs = [m for _, m in join_batch([_in("manifest", MANIFEST)], {}, 1 << 20).forward]
    strange = {"source": msgs[0]["source"], "revision": 1}  # no kind, no keys
    dead: list = []
    assert shipper_batch([strange, *msgs], {}, dead=dead) == msgs
    assert [m for m, _err in dead] == [strange]
