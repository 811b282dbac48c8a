"""Issue 17: the faster stages decide exactly as the build before them did.

`scoring_golden.json` holds what the stages made of a fixed batch at commit d287f10 (before
the compute work): per decision its scores (exact), action, category, rules, pseudonyms and
a digest of its feature vector, per hold its reasons. The model is trained here on one
thread, so it is the same model bit for bit on every run of the same libraries. There are
no differences to explain: typed decoding, cached tokens and pseudonyms, keys taken from the
stage messages, rounding only the feature values that need it and reasons that run only
their category's trees all give the same records.

A change that means to decide differently (the generator, the training, the rules file)
writes the golden file again, `python -m tests.unit.test_scoring_equivalence`, and says in
its commit why the decisions changed: the filers work (issue 19) did, with its generator
(filers, estimated arrivals) and its policy rules in deploy/rules.toml, and again with the
filer's smoothed violation rate as a feature.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
from threadpoolctl import threadpool_limits

from models import registry
from models.dataset import from_generator
from models.filers import Board
from models.outputs import Source
from models.pipeline import (
    Incoming,
    attach_filers,
    consignee_batch,
    join_batch,
    score_batch,
    shipper_batch,
)
from models.records import MAX_RECORD_BYTES
from models.rules import HoldCap, RulesFile
from models.scoring import Scorer
from models.synthetic import GeneratorConfig, TrafficGenerator
from models.training import TrainConfig, train_and_save

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("scoring_golden.json")


def outcome(model_dir: Path) -> dict[str, Any]:
    """What the stages decide for the fixed batch, without the wall-clock fields."""
    with threadpool_limits(limits=1):
        train_and_save(
            from_generator(GeneratorConfig(seed=5), 3_000),
            model_dir,
            TrainConfig(seed=5, max_iter=40),
        )
        scorer = Scorer(registry.load(model_dir))
        events = TrafficGenerator(GeneratorConfig(seed=6)).events(400)
        items = [
            Incoming(ev.kind, Source("t", i % 4, i, ev.key.encode()), ev.value)
            for i, ev in enumerate(events)
        ]
        shippers: dict[str, Any] = {}
        joined = join_batch(items, {}, MAX_RECORD_BYTES)
        msgs = consignee_batch([m for _, m in joined.forward], {})
        parcels = shipper_batch([m for _, m in msgs], shippers)
        attach_filers(parcels, Board())  # as a worker that has read no scorecard yet
        rules = RulesFile(ROOT / "deploy" / "rules.toml").rules
        res = score_batch(parcels, scorer, b"key", rules, HoldCap(1_000_000))
    return {
        "dead": [(item.source.offset, err.field, err.reason) for item, err in joined.dead],
        "decisions": [
            [
                d["hawb"],
                d["revision"],
                list(d["scores"].values()),
                d["action"],
                d["category"],
                d["rules"],
                d["shipper_id"],
                d["consignee_id"],
                hashlib.sha256(orjson.dumps(d["features"])).hexdigest()[:16],
            ]
            for d in res.decisions
        ],
        "holds": [[h["hawb"], h["revision"], h["reasons"]] for h in res.holds],
    }


def test_scores_actions_and_records_are_those_of_the_build_before(tmp_path: Path) -> None:
    now = orjson.loads(orjson.dumps(outcome(tmp_path)))  # tuples as lists, as stored
    before = orjson.loads(GOLDEN.read_bytes())
    assert len(now["decisions"]) == len(before["decisions"]) > 500
    assert sum(d[3] is not None for d in before["decisions"]) > 10  # flagged ones too
    assert now["dead"] == before["dead"]
    for new, old in zip(now["decisions"], before["decisions"], strict=True):
        assert new == old, new[0]
    assert now["holds"] == before["holds"]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        GOLDEN.write_bytes(orjson.dumps(outcome(Path(folder))))
