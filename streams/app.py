"""The Faust application, built from Settings by a factory.

A factory rather than a module-level app so that the CLI, the tests and the benchmarks can
each build a worker with their own topic prefix, consumer group and web port.
"""

from __future__ import annotations

import gc

import faust
from aiohttp.web import Response
from faust import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from streams import agents, metrics, monitoring, security
from streams.patches import metadata
from streams.patches.agent_errors import stopped_agents
from streams.patches.app import App
from streams.patches.batches import Stream
from streams.patches.sensors import Monitor
from streams.patches.tables import TableManager
from streams.serving import ModelServer
from streams.settings import Settings

GC_GEN0 = 20_000  # allocations between young collections (Python's default: 700)
GC_OLDER = 20  # young collections per older one (default: 10)


def create_app(s: Settings, server: ModelServer) -> faust.App:
    app = bare_app(s)
    _serve_metrics(app)
    _serve_liveness(app)
    drift = monitoring.DriftWatch(s.drift_window_s, s.drift_min_count)
    # the app carries its tables (monitoring, tests); faust.App declares no such attribute
    app.tables_ = agents.register(app, s, server, drift)  # type: ignore[attr-defined]
    tables = app.tables_  # type: ignore[attr-defined]
    monitoring.register(app, tables, drift, lambda: server.versions())
    return app


def bare_app(s: Settings) -> App:
    """The worker's app, its patches, settings and sensors, with no agent, table or page yet
    (the stream floor benchmark measures its consumer with an agent that does nothing)."""
    metadata.install()
    app = App(
        s.app_id,
        broker=f"kafka://{s.bootstrap}",
        broker_credentials=security.faust_credentials(s),
        store=s.store,
        datadir=str(s.data_dir),
        topic_partitions=s.partitions,
        topic_allow_declare=True,
        processing_guarantee=s.processing_guarantee,
        broker_session_timeout=s.session_timeout_s,
        consumer_auto_offset_reset="earliest",
        web_host=s.web_host,
        # Faust binds to web_bind (default: every interface) and only names web_host in
        # URLs; bind where the settings say (127.0.0.1 unless deployed)
        web_bind=s.web_host,
        web_port=s.web_port,
        # only /metrics and /livez are needed: Faust's /table views would serve table values
        # (names, addresses) and /router which worker holds a key, to whoever reaches the port
        web_tables_enabled=False,
        web_router_enabled=False,
        web_in_thread=False,
        # no linger: a stage's batch waits for the broker two or three times in a row (its
        # settle, streams/outbox.py), and one produce request is in flight per broker at a
        # time, so sends batch up behind it anyway; 1,000 parcels/s at-least-once, seven
        # pairs alternating with 5 ms: hold p99 lower in six (RESULTS.md, issue 18)
        producer_linger_ms=0,
        producer_max_batch_size=256 * 1024,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        # events buffered per partition before fetching pauses; stage envelopes hold up to
        # 100 records each, so this also bounds the memory of a stage that falls behind
        stream_buffer_maxsize=512,
        autodiscover=False,
        # a local store ahead of its changelog (the broker's state wiped) is rebuilt
        TableManager=TableManager,
        # a stage's batch taken off its queue in bulk (streams/patches/batches.py)
        Stream=Stream,
    )
    # Faust's sensors, named `faust_` whatever the app id (streams/metrics.py says why);
    # called on every event, so part of the consumer's cost (streams/patches/sensors.py)
    app.monitor = Monitor(metrics=metrics.faust_metrics())
    return app


def settle_heap() -> None:
    """Garbage collection for a long-running worker, called once it is built.

    What exists by then (the model, caches, the app) lives as long as the process: frozen,
    full collections no longer walk it. Each record makes a few dozen short-lived containers,
    so with Python's default threshold (700) a young collection ran every few dozen
    records; at 20,000 it runs every few hundred. Measured with benchmarks/stream_floor.py:
    78-82 -> 68-72 µs of CPU per event (issue 18).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0, GC_OLDER, GC_OLDER)


def internal_topics(app: faust.App) -> dict[str, dict[str, str]]:
    """The topics Faust would declare as the app starts: its agents' internal input topics
    (the stages) and its tables' changelogs (compacted), name -> topic config."""
    topics: dict[str, dict[str, str]] = {}
    for agent in app.agents.values():
        channel = agent.channel
        if isinstance(channel, faust.TopicT) and channel.internal:
            topics.update({name: {} for name in channel.topics})
    for table in app.tables.values():
        topics[table.changelog_topic.get_topic_name()] = {"cleanup.policy": "compact"}
    return topics


def _serve_metrics(app: faust.App) -> None:
    """Faust's sensors (bare_app) and the project's metrics on /metrics: what Faust's
    `setup_prometheus_sensors` does."""

    @app.page("/metrics")
    async def exposition(self: web.View, request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        # aiohttp's Response, which Faust's web server returns as is; Faust types views
        # with its own wrapper class
        return Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})  # type: ignore[return-value]


def _serve_liveness(app: App) -> None:
    """/livez: 200 while every agent runs, 503 once one has stopped (Kubernetes' liveness
    probe restarts the pod; the worker also exits by itself, streams/patches)."""

    @app.page("/livez")
    async def liveness(self: web.View, request: web.Request) -> web.Response:
        stopped = stopped_agents(app)
        if app.failure is None and not stopped:
            return self.json({"status": "ok"})
        reason = repr(app.failure[1]) if app.failure else "agent task ended"
        # with no agent stopped, there is a failure (checked above), which mypy cannot see
        body = {"status": "failed", "agents": stopped or [app.failure[0]], "reason": reason}  # type: ignore[index]
        return self.json(body, status=503)
