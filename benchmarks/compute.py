"""Compute cost per decision: the worker's stage functions alone, no Kafka (issue 17).

    python -m benchmarks.compute [--parcels 40000] [--batch 2000] [--seed 3] [--version V]

Generated traffic runs through what the score-parcels agents call (streams/agents.py):
join_batch (decode + validate inside), consignee_batch, shipper_batch + undecided +
record_decisions, score_batch + the encoding of decisions and holds (streams.publishing),
on dict tables, in batches, on one thread (BLAS and OpenMP limited to 1), with the
worker's default settings (rules file, hold cap, thresholds). Envelopes between stages and
the producer are Kafka's side and are left out. Times are CPU time of this process: the
figure a shared machine's load disturbs least.

Decoding is also timed on its own (the join re-decodes the same bytes), and inside the
score step features and predict are re-timed on the same batches. The baseline, measured in
the same run on the same records, is the naive scorer of benchmarks/naive.py without Kafka:
decode, then features and model for one record at a time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from models import registry
from models.features import build_features
from models.outputs import Source
from models.parcel import ParcelView
from models.pipeline import (
    Incoming,
    ParcelMessage,
    consignee_batch,
    join_batch,
    record_decisions,
    score_batch,
    shipper_batch,
    undecided,
)
from models.records import MAX_RECORD_BYTES, RecordError, decode
from models.rules import HoldCap, RuleSet, RulesFile
from models.sampling import Sampler
from models.scoring import Scorer
from models.synthetic import Event, GeneratorConfig, TrafficGenerator
from streams.app import settle_heap
from streams.publishing import scored
from streams.settings import Settings

# issue 17's targets, in µs per decision (per record for decoding)
TARGETS = {"decode + validate": 5.0, "predict": 15.0, "total": 65.0}


class Clock:
    """Seconds spent per step, summed over batches."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def time(self, step: str, fn: Callable[[], Any]) -> Any:
        t0 = time.process_time()
        out = fn()
        self.spent[step] = self.spent.get(step, 0.0) + time.process_time() - t0
        return out


def incoming(chunk: list[Event], offset: int) -> list[Incoming]:
    """Records as the join agent gets them: keyed by HAWB, spread over 8 partitions."""
    return [
        Incoming(ev.kind, Source("bench", (offset + i) % 8, offset + i, ev.key.encode()), ev.value)
        for i, ev in enumerate(chunk)
    ]


def run_stages(
    events: list[Event], scorer: Scorer, s: Settings, batch: int
) -> tuple[Clock, int, list[Any]]:
    """The stages over every batch; returns the clock, the decisions and the scored views."""
    rules: RuleSet = RulesFile(Path(s.rules) if s.rules else None).rules
    cap = HoldCap(s.hold_cap_per_hour)
    pkey = s.pseudonym_key.encode()
    sampler = Sampler(pkey)  # the compliance sample, as the worker draws it
    clock = Clock()
    bills: dict[str, Any] = {}
    consignees: dict[str, Any] = {}
    shippers: dict[str, Any] = {}
    decided = 0
    batches: list[list[ParcelView]] = []
    for start in range(0, len(events), batch):
        items = incoming(events[start : start + batch], start)
        clock.time("decode + validate", lambda: [_decode(it) for it in items])  # noqa: B023
        res = clock.time("join", lambda: join_batch(items, bills, MAX_RECORD_BYTES))  # noqa: B023
        msgs = [m for _, m in res.forward]
        fwd = clock.time("consignee history", lambda: consignee_batch(msgs, consignees))  # noqa: B023

        def shipper_stage() -> list[ParcelMessage]:
            parcels = shipper_batch([m for _, m in fwd], shippers)  # noqa: B023
            return [parcels[i] for i in undecided(parcels, shippers)]

        parcels = clock.time("shipper history", shipper_stage)

        def score_stage() -> int:
            out = score_batch(parcels, scorer, pkey, rules, cap, sampler=sampler)  # noqa: B023
            scored(out)  # the messages' bytes, as the agent sends them
            record_decisions(parcels, out.flagged, scorer.version, shippers)  # noqa: B023
            return len(out.decisions)

        decided += clock.time("score", score_stage)
        batches.append([p["view"] for p in parcels])
    return clock, decided, batches


def _decode(item: Incoming) -> Any:
    try:
        return decode(item.kind, item.raw, MAX_RECORD_BYTES)
    except RecordError as err:
        return err


def inside_score(scorer: Scorer, batches: list[list[ParcelView]]) -> Clock:
    """Features and predict re-timed on the same batches (they are part of 'score')."""
    clock = Clock()
    for views in batches:
        X = clock.time("  features", lambda: build_features(views, scorer.artifact.references))  # noqa: B023
        clock.time("  predict", lambda: scorer.artifact.model.predict_proba(X))  # noqa: B023
    return clock


def naive(events: list[Event], scorer: Scorer) -> float:
    """Seconds per record of the naive scorer: decode, then score one record at a time."""
    t0 = time.process_time()
    for ev in events:
        rec = decode(ev.kind, ev.value, MAX_RECORD_BYTES)
        view = ParcelView(
            hawb=rec["hawb"],
            manifest=rec if ev.kind == "manifest" else None,
            entry=rec if ev.kind == "entry" else None,
        )
        scorer.score([view])
    return (time.process_time() - t0) / len(events)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parcels", type=int, default=40_000)
    p.add_argument("--batch", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--version", default=None, help="model version (default: the newest)")
    p.add_argument("--naive-records", type=int, default=1_000)
    a = p.parse_args()

    s = Settings()
    artifact = registry.load(s.model_dir, a.version)
    scorer = Scorer(artifact, s.threshold_overrides(artifact.thresholds))
    gen = TrafficGenerator(GeneratorConfig(seed=a.seed))
    events = [ev for ev in gen.events(a.parcels) if ev.bad_reason is None]
    settle_heap()  # the worker's garbage collection: what is built frozen, rarer collections
    with threadpool_limits(limits=1):
        clock, decided, batches = run_stages(events, scorer, s, a.batch)
        inner = inside_score(scorer, batches)
        per_naive = naive(events[: a.naive_records], scorer)

    spent = clock.spent
    decode_s = spent["decode + validate"]
    total = sum(v for k, v in spent.items() if k != "decode + validate")
    rows = [
        ("decode + validate", decode_s, len(events)),
        ("join (without decoding)", spent["join"] - decode_s, decided),
        ("consignee history", spent["consignee history"], decided),
        ("shipper history", spent["shipper history"], decided),
        ("score (features ... encoding)", spent["score"], decided),
        *((k, v, decided) for k, v in inner.spent.items()),
    ]
    print(
        f"model {artifact.version}, {len(events):,} records of {a.parcels:,} parcels, "
        f"{decided:,} decisions, batches of {a.batch:,}, 1 thread"
    )
    print(f"{'step':<32}{'µs/decision':>12}{'target':>8}")
    for name, seconds, n in rows:
        target = TARGETS.get(name.strip(), "")
        unit = " (per record)" if name == "decode + validate" else ""
        print(f"{name:<32}{1e6 * seconds / n:>12.1f}{target!s:>8}{unit}")
    per_decision = total / decided
    print(f"{'total':<32}{1e6 * per_decision:>12.1f}{TARGETS['total']!s:>8}")
    print(f"pure compute: {decided / total:,.0f} decisions/s (target >= 15,000)")
    print(
        f"baseline (naive, one record at a time, {a.naive_records:,} records): "
        f"{1e6 * per_naive:,.0f} µs/record; pipeline per decision = "
        f"{per_decision / per_naive:.3f}x the naive per record"
    )


if __name__ == "__main__":
    main()
