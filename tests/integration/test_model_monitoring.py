"""The model in production on the real broker: drift, exam outcomes and shadow scoring.

Traffic whose declared values drop twentyfold moves the undervaluation scores away from the
model's training reference, past the alert line; dispositions of held parcels move the
examined-holds and hit counters of the hold's category and model; a shadow model's scores
appear on every decision and in `parcel-risk monitor`, and promoting it switches holds in
the running worker.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from benchmarks.harness import metric_value
from models.drift import ALERT_PSI
from models.records import FINDINGS
from models.registry import versions
from models.synthetic import Event, GeneratorConfig, TrafficGenerator
from streams.cli import main
from streams.feed import produce_events
from streams.serving import promote
from streams.topics import ensure_topics
from tests.conftest import eventually, publish, read_all

pytestmark = pytest.mark.integration
FOUND = {category: outcome for outcome, category in FINDINGS.items()}


def cheaper(ev: Event, factor: float) -> Event:
    """The same parcel declared at `factor` times its value, on the manifest and the entry."""
    rec = orjson.loads(ev.value)
    if "declared_value" in rec:
        rec["declared_value"] = round(rec["declared_value"] * factor, 2)
    for line in rec.get("lines", ()):
        line["value_usd"] = round(line["value_usd"] * factor, 2)
    return replace(ev, value=orjson.dumps(rec))


async def test_value_shift_raises_drift_and_dispositions_move_hit_rates(
    settings, start_worker, model_dir
) -> None:
    s = settings.with_(drift_window_s=3600.0, drift_min_count=500)
    (version,) = versions(model_dir)
    await ensure_topics(s)
    worker = start_worker(s)
    port = s.web_port

    def psi(label: str) -> float:
        return metric_value(
            port, "parcel_risk_score_psi", {"label": label, "model_version": version}
        )

    def in_window() -> float:
        return metric_value(port, "parcel_risk_drift_window_parcels", {"model_version": version})

    # traffic like the training data's
    usual = list(TrafficGenerator(GeneratorConfig(seed=41)).events(1500))
    await produce_events(s, usual)
    assert await eventually(lambda: in_window() >= len(usual), timeout=240), worker.output()
    # a fresh worker's shippers have no history yet, unlike the training data's: measured,
    # this alone puts the undervaluation PSI at about 0.3 over these first parcels
    before = psi("undervaluation")

    # the same kind of traffic, declared at a twentieth of its value, twice as much of it
    shifted = [cheaper(ev, 0.05) for ev in TrafficGenerator(GeneratorConfig(seed=42)).events(3000)]
    await produce_events(s, shifted)
    assert await eventually(lambda: in_window() >= len(usual) + len(shifted), timeout=300), (
        worker.output()
    )
    assert await eventually(
        lambda: psi("undervaluation") > max(ALERT_PSI, 2 * before), timeout=30
    ), f"PSI before {before}, after {psi('undervaluation')}"
    print(f"undervaluation PSI: usual traffic {before:.3f}, then {psi('undervaluation'):.3f}")
    assert metric_value(port, "parcel_risk_feature_psi", {"model_version": version}) > 0

    # analysts examine held parcels: every other one confirms its hold's category
    held: dict[str, str] = {}
    for _k, v in await read_all(s, "holds_topic", idle_s=3.0):
        hold = orjson.loads(v)
        if hold["action"] == "hold":
            held[hold["hawb"]] = hold["category"]  # a bill's latest hold counts
    assert len(held) >= 10, "too few holds to examine"
    now = datetime.now(UTC).isoformat()
    examined = sorted(held)[:40]
    outcomes = {
        hawb: FOUND[held[hawb]] if i % 2 == 0 else "released" for i, hawb in enumerate(examined)
    }
    await publish(
        s,
        "dispositions_topic",
        [
            {
                "schema_version": 1,
                "event_time": now,
                "hawb": hawb,
                "outcome": outcome,
                "examined_at": now,
                "analyst": "test",
            }
            for hawb, outcome in outcomes.items()
        ],
    )

    def counted(name: str, category: str) -> float:
        return metric_value(port, name, {"category": category, "model_version": version})

    for category in set(held.values()):
        n = sum(1 for h in examined if held[h] == category)
        hits = sum(1 for h in examined if held[h] == category and outcomes[h] != "released")
        assert await eventually(
            lambda c=category, n=n: counted("parcel_risk_examined_holds_total", c) == n, 60
        ), worker.output()
        assert counted("parcel_risk_hold_hits_total", category) == hits
        assert counted("parcel_risk_hold_seizures_total", category) == hits
    assert metric_value(port, "parcel_risk_validation_precision", {"model_version": version}) > 0


def candidate_of(model_dir: Path, folder: Path) -> tuple[str, str]:
    """The session's model and a candidate: the same trees, holds at half the thresholds
    (thresholds live in meta.json, outside the checksummed model file), so the two
    disagree on some parcels."""
    shutil.copytree(model_dir, folder)
    (first,) = versions(folder)
    candidate = "m-candidate"
    shutil.copytree(folder / first, folder / candidate)
    meta_path = folder / candidate / "meta.json"
    meta = orjson.loads(meta_path.read_bytes())
    for t in meta["thresholds"].values():
        t["hold"] = t["review"] = t["hold"] / 2
    meta_path.write_bytes(orjson.dumps(meta))
    return first, candidate


async def test_shadow_scores_on_decisions_and_in_monitor_then_promoted_without_restart(
    settings, start_worker, model_dir, tmp_path, capsys
) -> None:
    folder = tmp_path / "models"
    first, candidate = candidate_of(model_dir, folder)
    s = settings.with_(model_dir=folder)
    await ensure_topics(s)
    await promote(s, first, by="test")
    worker = start_worker(s)
    await promote(s, candidate, by="test", shadow=True)
    assert await eventually(
        lambda: (
            metric_value(s.web_port, "parcel_risk_shadow_model_info", {"version": candidate}) == 1.0
        ),
        timeout=120,
    ), worker.output()

    sent: list = []
    await produce_events(s, list(TrafficGenerator(GeneratorConfig(seed=61)).events(800)), sent=sent)
    decisions = [
        orjson.loads(v)
        for _k, v in await read_all(s, "decisions_topic", expect=len(sent), timeout=240)
    ]
    assert len(decisions) == len(sent)
    assert all(d["model_version"] == first for d in decisions)
    assert all(d["shadow"]["model_version"] == candidate for d in decisions)
    shadow_holds = sum(d["shadow"]["action"] == "hold" for d in decisions)
    assert shadow_holds > sum(d["action"] == "hold" for d in decisions)
    holds = [orjson.loads(v) for _k, v in await read_all(s, "holds_topic", idle_s=2.0)]
    assert holds and all(h["model_version"] == first for h in holds)

    cli = ["--broker", s.broker, "--prefix", s.topic_prefix, "--model-dir", str(folder)]
    capsys.readouterr()
    # the CLI runs its own event loop: in a thread, as from a shell
    assert await asyncio.to_thread(main, [*cli, "monitor", "--json"]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    roles = {(m["role"], m["version"]): m for m in summary["models"]}
    assert roles["serving", first]["decisions"] == len(decisions)
    assert roles["shadow", candidate]["decisions"] == len(decisions)
    assert roles["shadow", candidate]["drift"] is not None
    (pair,) = summary["disagreements"]
    assert (pair["serving"], pair["shadow"]) == (first, candidate) and pair["disagree"] > 0
    assert await asyncio.to_thread(main, [*cli, "monitor"]) == 0
    assert "serving vs shadow" in capsys.readouterr().out

    # promoting the shadow: its holds from now on, no restart, no shadow left
    await promote(s, candidate, by="test")
    assert await eventually(
        lambda: metric_value(s.web_port, "parcel_risk_model_info", {"version": candidate}) == 1.0,
        timeout=60,
    ), worker.output()
    assert await eventually(
        lambda: metric_value(s.web_port, "parcel_risk_shadow_model_info", {"version": ""}) == 1.0,
        timeout=60,
    )
    more = list(TrafficGenerator(GeneratorConfig(seed=62)).events(400))
    await produce_events(s, more, sent=sent)
    new = {ev.key for ev in more}
    after = [
        d
        for d in (
            orjson.loads(v)
            for _k, v in await read_all(s, "decisions_topic", expect=len(sent), timeout=240)
        )
        if d["hawb"] in new
    ]
    assert after and all(d["model_version"] == candidate and "shadow" not in d for d in after)
    later = [orjson.loads(v) for _k, v in await read_all(s, "holds_topic", idle_s=2.0)]
    assert {h["model_version"] for h in later if h["hawb"] in new} == {candidate}
    assert worker.proc.poll() is None  # the same process all along
