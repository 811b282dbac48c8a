"""Shadow scoring: the candidate's view on every decision, holds untouched; the server's
shadow lifecycle; the monitor's summary; `promote` arguments."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.drift import reference_of
from models.features import FEATURES, References
from models.monitor import summarise
from models.outputs import Source
from models.pipeline import Incoming, consignee_batch, join_batch, score_batch, shipper_batch
from models.records import MAX_RECORD_BYTES
from models.registry import load, versions
from models.scoring import Scorer
from models.shadow import score_shadow
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.cli import main
from streams.serving import ModelServer
from streams.settings import Settings


@pytest.fixture(scope="module")
def parcels() -> list:
    gen = TrafficGenerator(GeneratorConfig(seed=13))
    batch = [
        Incoming(ev.kind, Source(f"parcels.{ev.kind}", 0, n, ev.key.encode()), ev.value)
        for n, ev in enumerate(gen.events(600))
    ]
    staged = consignee_batch([m for _, m in join_batch(batch, {}, MAX_RECORD_BYTES).forward], {})
    return shipper_batch([m for _, m in staged], {})


@pytest.fixture(scope="module")
def two_folders(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's model under its own version and as a candidate `m-candidate`."""
    folder = tmp_path_factory.mktemp("shadow-models")
    (version,) = versions(model_dir)
    shutil.copytree(model_dir / version, folder / version)
    shutil.copytree(model_dir / version, folder / "m-candidate")
    return folder


def test_decisions_carry_the_shadow_and_holds_stay_the_serving_models(
    parcels: list, two_folders: Path
) -> None:
    serving = Scorer(load(two_folders, versions(two_folders)[-1]))
    # a stricter candidate: every parcel above a tiny threshold would be held
    candidate = Scorer(load(two_folders, "m-candidate"))
    candidate.thresholds = {c: {"hold": 1e-9, "review": 1e-9} for c in candidate.thresholds}
    alone = score_batch(parcels, serving, b"k")
    both = score_batch(parcels, serving, b"k", shadow=candidate)
    assert [h["hawb"] for h in both.holds] == [h["hawb"] for h in alone.holds]
    assert all(h["model_version"] == serving.version for h in both.holds)
    for d, plain in zip(both.decisions, alone.decisions, strict=True):
        assert "shadow" not in plain
        assert d["action"] == plain["action"] and d["scores"] == plain["scores"]
        assert d["shadow"]["model_version"] == "m-candidate"
        assert d["shadow"]["scores"] == d["scores"]  # the same model, so the same scores
        assert d["shadow"]["action"] == "hold"
    (shadowed,) = both.shadowed
    assert shadowed.features is both.scored[0].features  # same references: reused


def test_a_failing_candidate_costs_no_decision(parcels: list, two_folders: Path) -> None:
    serving = Scorer(load(two_folders, versions(two_folders)[-1]))
    art = load(two_folders, "m-candidate")
    broken = Scorer(replace(art, model=None))  # type: ignore[arg-type]
    res = score_batch(parcels, serving, b"k", shadow=broken)
    assert len(res.decisions) == len(parcels) and res.shadow_failures == 1
    assert not any("shadow" in d for d in res.decisions) and res.shadowed == []


def test_a_candidate_with_other_references_builds_its_own_features(
    parcels: list, two_folders: Path
) -> None:
    serving = Scorer(load(two_folders, versions(two_folders)[-1]))
    art = load(two_folders, "m-candidate")
    other = Scorer(replace(art, references=References({}, {}, 100.0)))
    views = [p["view"] for p in parcels]
    served = serving.score(views)
    got = score_shadow(other, serving, views, served, [[] for _ in views])
    assert got.features is not served.features
    assert not np.array_equal(got.features, served.features, equal_nan=True)


def test_the_server_starts_switches_to_and_stops_a_shadow(two_folders: Path) -> None:
    first = versions(two_folders)[-1]
    s = Settings(model_dir=two_folders)
    server = ModelServer(s, load(two_folders, first))

    async def steps() -> None:
        assert await server.follow_shadow({"version": "m-missing"}) is False
        assert server.candidate() is None
        assert await server.follow_shadow({"version": "m-candidate", "sha256": "bad"}) is False
        assert await server.follow_shadow({"version": "m-candidate"})
        assert server.versions() == [first, "m-candidate"]
        shadow = server.candidate()
        assert shadow is not None
        assert await server.switch({"version": "m-candidate"})
        assert server.scorer.artifact is shadow.artifact  # loaded once
        assert server.candidate() is None and server.versions() == ["m-candidate"]
        assert await server.follow_shadow({"version": None})
        assert server.shadow is None

    asyncio.run(steps())


def _decision(hawb: str, version: str, action: str | None, category: str | None, **kw) -> dict:
    return {
        "hawb": hawb,
        "model_version": version,
        "action": action,
        "category": category,
        "scores": {"fentanyl": 0.0, "counterfeit": 0.5, "undervaluation": 0.0},
        "features": [0.0] * len(FEATURES),
        **kw,
    }


def test_the_monitor_summary_counts_actions_hits_and_disagreements(model_dir: Path) -> None:
    shadow = {
        "model_version": "m2",
        "scores": {"fentanyl": 0.0, "counterfeit": 0.9, "undervaluation": 0.0},
        "action": "hold",
        "category": "counterfeit",
    }
    decisions = [
        _decision("A", "m1", "hold", "counterfeit", shadow=shadow),
        _decision("B", "m1", None, None, shadow=shadow),
        _decision("C", "m1", "review", "fentanyl", shadow={**shadow, "action": None}),
        _decision("D", "m1", "hold", "counterfeit"),
    ]
    dispositions = [{"hawb": "A", "outcome": "seized_ipr"}, {"hawb": "D", "outcome": "released"}]
    ref = reference_of(load(model_dir).meta)
    got = summarise(decisions, dispositions, {"m1": ref, "m2": None})
    m1, m2 = got["models"]
    assert (m1["version"], m1["role"], m1["decisions"]) == ("m1", "serving", 4)
    assert m1["actions"]["counterfeit"]["hold"] == 0.5
    assert m1["actions"]["fentanyl"]["review"] == 0.25
    assert m1["outcomes"]["counterfeit"] == {"examined": 2, "hits": 1, "hit_rate": 0.5}
    assert m1["drift"] is not None and set(m1["drift"]["scores"]) == set(ref.scores)
    assert (m2["role"], m2["decisions"], m2["drift"]) == ("shadow", 3, None)
    assert m2["outcomes"]["counterfeit"] == {"examined": 1, "hits": 1, "hit_rate": 1.0}
    (dis,) = got["disagreements"]
    assert (dis["serving"], dis["shadow"], dis["decisions"], dis["disagree"]) == ("m1", "m2", 3, 2)
    assert dis["by"] == {"none -> hold counterfeit": 1, "review fentanyl -> none": 1}


@pytest.mark.parametrize(
    "args", [["promote"], ["promote", "--shadow"], ["promote", "v1", "--stop-shadow"]]
)
def test_promote_needs_a_version_or_stop_shadow_alone(args: list[str]) -> None:
    assert main(args) == 2
