"""The naive baseline: a Faust agent that decodes and scores one event at a time.

    python -m benchmarks.naive worker      (configured by PARCEL_RISK_* like the worker)

What a first Faust scorer looks like: `async for` over values, one model call and one
awaited send per record. It does less than the pipeline (no join, no history, no rules,
no reasons), so the ratio against it is, if anything, flattering to the naive agent.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any

import faust
import orjson
from faust.types import EventT

from models.parcel import ParcelView
from models.records import RecordError, decode
from models.registry import load
from models.scoring import Scorer
from streams.serving import limit_model_threads
from streams.settings import Settings, from_env

OUTPUT = "bench.naive"


def create_app(s: Settings, scorer: Scorer) -> faust.App:
    app = faust.App(
        f"{s.app_id}-naive",
        broker=f"kafka://{s.bootstrap}",
        store="memory://",
        datadir=str(s.data_dir / "naive"),
        topic_partitions=s.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
    )
    kinds = {s.topic("manifest_topic"): "manifest", s.topic("entries_topic"): "entry"}
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    inputs = app.topic(*kinds, **raw)
    out = app.topic(s.topic_prefix + OUTPUT, **raw)

    @app.agent(inputs)
    async def score(stream: AsyncIterable[EventT]) -> None:
        # events is on Faust's Stream, not on the AsyncIterable it is typed as here
        async for ev in stream.events():  # type: ignore[attr-defined]
            kind = kinds[ev.message.topic]
            try:
                rec = decode(kind, ev.message.value, s.max_record_bytes)
            except RecordError:
                continue
            view = ParcelView(
                hawb=rec["hawb"],
                manifest=rec if kind == "manifest" else None,
                entry=rec if kind == "entry" else None,
            )
            scored = scorer.score([view])
            value = {"hawb": rec["hawb"], "scores": scored.scores[0].tolist()}
            await out.send(key=ev.message.key, value=orjson.dumps(value))

    return app


def main() -> None:
    s = from_env()
    s.data_dir.mkdir(parents=True, exist_ok=True)
    scorer = Scorer(load(s.model_dir, s.model_version or None))
    limit_model_threads(s.model_threads)  # as the worker: a fair baseline
    app = create_app(s, scorer)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
