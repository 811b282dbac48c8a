"""`parcel-risk`: the one console command, with a subcommand per job.

Flags override PARCEL_RISK_* environment variables, which override the defaults in
streams/settings.py. Errors a person can fix are printed in one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:  # the CLI imports what a command needs when it runs: a fast start
    from models.synthetic import GeneratorConfig

from streams.security import connection
from streams.settings import ROOT, Settings, from_env

# text is printed as written: a message that quotes `[columns]`, a path or a label name is
# not rich markup, and a long one is not folded into several lines
err = Console(stderr=True, markup=False, emoji=False, soft_wrap=True)
out = Console(markup=False, emoji=False, soft_wrap=True)


def _error(message: object, word: str = "error") -> None:
    err.print(Text.assemble((f"{word}:", "red"), " ", str(message)))


def _settings(a: argparse.Namespace) -> Settings:
    """Settings from the environment and flags; a clear error (exit 2) if they are unusable."""
    s = from_env(
        broker=a.broker,
        topic_prefix=a.prefix,
        partitions=getattr(a, "partitions", None),
        model_dir=Path(a.model_dir) if a.model_dir else None,
    )
    try:
        s.check()
    except ValueError as exc:
        _error(exc)
        sys.exit(2)
    return s


def cmd_worker(a: argparse.Namespace) -> int:
    import faust
    import uvloop

    from models.registry import ArtifactError, load
    from models.rules import RulesError
    from streams.app import create_app, internal_topics, settle_heap
    from streams.serving import (
        CONTROL_KEY,
        SHADOW_KEY,
        ModelServer,
        limit_model_threads,
        promoted,
        verified,
    )
    from streams.topics import ensure_topics

    s = _settings(a).with_(
        **{
            k: v
            for k, v in {
                "web_port": a.web_port,
                "app_id": a.app_id,
                "batch_size": a.batch_size,
                "model_version": a.model_version,
                "store": a.store,
            }.items()
            if v is not None
        }
    )
    s.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    asyncio.run(ensure_topics(s))
    latest, control_offset = asyncio.run(promoted(s))
    version = s.model_version or latest.get(CONTROL_KEY, {}).get("version")
    shadow = None
    if latest.get(SHADOW_KEY, {}).get("version"):
        try:  # a shadow that does not load is no reason not to serve
            shadow = verified(s.model_dir, latest[SHADOW_KEY])
        except ArtifactError as exc:
            _error(exc, "no shadow")
    try:
        artifact = load(s.model_dir, version)
        server = ModelServer(s, artifact, control_offset, shadow)
    except (ArtifactError, ValueError) as exc:
        _error(exc)
        return 2
    limit_model_threads(s.model_threads)  # the model's OpenMP runtime is loaded by now
    try:
        app = create_app(s, server)
    except RulesError as exc:
        _error(f"rules refused: {exc}")
        return 2
    asyncio.run(ensure_topics(s, internal=internal_topics(app)))  # before the group is joined
    err.print(
        f"worker {s.app_id}: model {artifact.version}, broker {s.bootstrap}, "
        f"metrics http://{s.web_host}:{s.web_port}/metrics"
    )
    uvloop.install()  # Faust's worker creates its loop after this
    worker = faust.Worker(app, loglevel=s.log_level, quiet=True)
    # Faust's start-up spinner sets the root logger to DEBUG so that every record spins it,
    # and leaves it there: every library debug() call then builds a record (~10% of CPU)
    worker.spinner = None
    settle_heap()
    worker.execute_from_commandline()
    return 0


def cmd_promote(a: argparse.Namespace) -> int:
    from models.registry import ArtifactError
    from streams.serving import promote
    from streams.topics import ensure_topics

    s = _settings(a)
    if (a.version is None) != a.stop_shadow:
        _error("name a VERSION to promote, or --stop-shadow alone")
        return 2
    try:
        asyncio.run(ensure_topics(s))
        record = asyncio.run(promote(s, a.version, a.by, shadow=a.shadow or a.stop_shadow))
    except ArtifactError as exc:
        _error(exc, "refused")
        return 2
    if record["version"] is None:
        err.print(f"stopped the shadow on {s.topic('control_topic')}")
        return 0
    err.print(
        f"{'shadow' if a.shadow else 'promoted'} {record['version']} "
        f"(sha256 {record['sha256'][:12]}...) on {s.topic('control_topic')}"
    )
    return 0


def cmd_monitor(a: argparse.Namespace) -> int:
    import orjson

    from streams.monitor import monitor, show

    try:
        since = (
            datetime.fromisoformat(a.since) if a.since else datetime.now(UTC) - timedelta(days=1)
        )
    except ValueError:
        _error(f"--since {a.since!r} is not an ISO 8601 time")
        return 2
    summary = asyncio.run(monitor(_settings(a), int(since.timestamp() * 1000)))
    if a.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        show(summary, out)
    return 0


def cmd_topics(a: argparse.Namespace) -> int:
    from streams.topics import all_topics, ensure_topics

    s = _settings(a)
    asyncio.run(ensure_topics(s))
    for name in all_topics(s):
        out.print(name)
    return 0


def _gen_config(a: argparse.Namespace) -> GeneratorConfig:
    from models.synthetic import GeneratorConfig

    start = datetime.now(UTC) if a.rate else GeneratorConfig.start
    return GeneratorConfig(
        seed=a.seed,
        bad_fraction=a.bad_fraction,
        start=start,
        parcels_per_second=a.rate or GeneratorConfig.parcels_per_second,
    )


def cmd_generate(a: argparse.Namespace) -> int:
    from rich.progress import Progress

    if not 0.0 <= a.bad_fraction < 1.0:
        _error("--bad-fraction must be in [0, 1)")
        return 2
    if a.count <= 0:
        _error("--count must be positive")
        return 2
    config = _gen_config(a)
    if a.dataset:
        from models.dataset import generated_rows, write_jsonl

        n = write_jsonl(generated_rows(config, a.count), Path(a.dataset))
        err.print(f"wrote {n:,} labelled parcels to {a.dataset}")
        return 0
    from streams.feed import feed
    from streams.topics import ensure_topics

    s = _settings(a)
    asyncio.run(ensure_topics(s))
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("producing", total=None)
        stats = asyncio.run(
            feed(
                s,
                config,
                a.count,
                a.rate,
                Path(a.labels) if a.labels else None,
                progress=lambda n: bar.update(task, completed=n),
            )
        )
    err.print(
        f"produced {stats.events:,} records ({stats.bad:,} malformed) for "
        f"{stats.parcels:,} parcels in {stats.seconds:.1f}s "
        f"({stats.events / max(stats.seconds, 1e-9):,.0f} records/s)"
    )
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from models import training
    from models.registry import ArtifactError, load, versions

    s = _settings(a)
    out_dir = Path(a.out) if a.out else s.model_dir
    if a.if_missing and versions(out_dir):
        try:  # a model of other features (an older build's) is as good as none
            load(out_dir)
        except ArtifactError as exc:
            err.print(f"{exc}: training one for this build")
        else:
            err.print(f"a model already exists in {out_dir}; not training")
            return 0
    if a.data and a.train:
        _error("--data is one file to split; --train, --valid, --test are split already")
        return 2
    if a.train and not a.valid:
        _error("--train needs --valid (thresholds are chosen on it)")
        return 2
    files = [Path(f) for f in ([a.data] if a.data else [a.train, a.valid, a.test]) if f]
    if not files:
        err.print(f"no --data: training on {a.synthetic:,} synthetic parcels (seed {a.seed})")
    started = time.monotonic()
    try:
        dates = [_utc(d) for d in a.split_at or ()]
        version, meta = training.run(
            files,
            Path(a.mapping) if a.mapping else None,
            out_dir,
            s.model_dir,
            training.TrainConfig(seed=a.seed),
            a.synthetic,
            dates,
            a.refit,
        )
    except ValueError as exc:
        _error(exc)
        return 2
    rows = meta["data"]["rows"]
    err.print(f"trained {version} on {rows:,} rows in {time.monotonic() - started:.0f}s")
    _print_metrics(meta["test_metrics"], f"{meta['measured_on']} period")
    out.print(version)
    return 0


def _utc(text: str) -> datetime:
    """An ISO 8601 date or time; one without a zone is UTC."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or time") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def cmd_evaluate(a: argparse.Namespace) -> int:
    from models import report
    from models.mapping import load_data
    from models.registry import ArtifactError, load_named

    s = _settings(a)
    try:
        artifact = load_named(a.model, s.model_dir, tables=True)
        ds = load_data(Path(a.data), Path(a.mapping) if a.mapping else None)
        split_at = _utc(a.split_at).timestamp() if a.split_at else None
        result, path = report.evaluate(artifact, ds, Path(a.out), split_at)
    except (ArtifactError, ValueError) as exc:
        _error(exc)
        return 2
    _print_metrics(result.metrics, f"{artifact.version} on {a.data}")
    err.print(f"report: {path}")
    if a.scores_out:
        n = report.write_scores(Path(a.scores_out), result, artifact.thresholds)
        err.print(f"scores of {n:,} rows: {a.scores_out}")
    return 0


def _print_metrics(metrics: dict, title: str) -> None:
    """Per label the capacity-bound figures, P@n%, R@n% and Revenue@n% (when the data has a
    value at stake), a row each, with the base rate and AUCs beside them."""
    import math

    from rich import box
    from rich.table import Table

    from models.evaluation import TOP_PERCENTS

    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)  # 80 columns
    t.add_column("label", no_wrap=True)
    for c in ("", *(f"@{n}%" for n in TOP_PERCENTS), "base rate", "ROC AUC", "PR AUC"):
        t.add_column(c, justify="right")
    shown = [("P", "precision"), ("R", "recall"), ("Rev", "revenue")]
    if all(math.isnan(m[f"revenue@{n}%"]) for m in metrics.values() for n in TOP_PERCENTS):
        shown.pop()  # no value column: no Revenue@n%
    for label, m in metrics.items():
        for k, (short, key) in enumerate(shown):
            first = (f"{m[x]:.4f}" for x in ("base_rate", "roc_auc", "pr_auc"))
            t.add_row(
                label if k == 0 else "",
                short,
                *(f"{m[f'{key}@{n}%']:.3f}" for n in TOP_PERCENTS),
                *(first if k == 0 else ()),
            )
    err.print(t)


def cmd_export(a: argparse.Namespace) -> int:
    from streams.export import export

    n = asyncio.run(export(_settings(a), Path(a.out), a.since))
    err.print(f"exported {n:,} labelled decisions to {a.out}")
    return 0


def cmd_filers(a: argparse.Namespace) -> int:
    import orjson
    from rich.table import Table

    from streams.export import filer_cards

    try:
        datetime.fromisoformat(a.since or "2000-01-01")
    except ValueError:
        _error(f"--since {a.since!r} is not an ISO 8601 time")
        return 2
    cards = asyncio.run(filer_cards(_settings(a), a.since))
    if a.code:
        code = a.code.upper()
        if code not in cards:
            _error(f"no entries of filer {code}")
            return 2
        cards = {code: cards[code]}
    if a.json:
        for c in sorted(cards):
            print(orjson.dumps(cards[c].as_dict(a.evidence)).decode())
        return 0
    t = Table("filer", "entries", "late", "invalid", "holds", "exams targeted", "exams sampled",
              "sampled violation rate (95% CI)", "status")  # fmt: skip
    for c in sorted(cards):
        card, sh = cards[c], cards[c].shares()
        rate = (
            f"{card.sampled_violative} of {card.sampled_exams}: "
            f"{sh['sampled_violation_rate']:.1%} ({sh['sampled_low']:.1%}-{sh['sampled_high']:.1%})"
            if card.sampled_exams
            else "no sampled exams"
        )
        state = card.status + (f" ({'; '.join(card.why)})" if card.why else "")
        t.add_row(
            c,
            f"{card.entries:,}",
            f"{sh['late_share']:.1%}",
            f"{sh['invalid_share']:.1%}",
            f"{card.holds:,}",
            f"{card.targeted_violative} of {card.targeted_exams} violative",
            f"{card.sampled_exams}",
            rate,
            state,
        )
    out.print(t)
    if a.evidence:
        for c in sorted(cards):
            e = Table("entry number", "HAWB", "date", "found", title=f"filer {c}: evidence")
            for row in cards[c].evidence:
                e.add_row(row["entry_number"], row["hawb"] or "-", row["date"], row["found"])
            out.print(e)
    return 0


def cmd_dispose(a: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer

    from models.records import RecordError, encode, validate

    s = _settings(a)
    now = datetime.now(UTC).isoformat()
    record = {
        "schema_version": 1,
        "event_time": now,
        "hawb": a.hawb,
        "outcome": a.outcome,
        "examined_at": a.examined_at or now,
        "analyst": a.analyst,
    }
    if a.note:
        record["note"] = a.note
    try:
        record = validate("disposition", record)
    except RecordError as exc:
        _error(exc)
        return 2

    async def send() -> None:
        producer = AIOKafkaProducer(**connection(s), acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                s.topic("dispositions_topic"), encode(record), key=record["hawb"].encode()
            )
        finally:
            await producer.stop()

    asyncio.run(send())
    err.print(f"disposition {record['outcome']} for {record['hawb']} published")
    return 0


def cmd_holds(a: argparse.Namespace) -> int:
    from models.records import CATEGORIES
    from streams.console import holds

    if a.category and a.category not in CATEGORIES:
        _error(f"--category must be one of {', '.join(CATEGORIES)}")
        return 2
    since_ms = None
    if a.since:
        try:
            since_ms = int(datetime.fromisoformat(a.since).timestamp() * 1000)
        except ValueError:
            _error(f"--since {a.since!r} is not an ISO 8601 time")
            return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(holds(_settings(a), a.follow, a.category, a.min_score, since_ms, a.json))
    return 0


def _log_to_file() -> None:
    """Library warnings (aiokafka retries) go to a file, not over a live terminal view."""
    import logging

    path = ROOT / ".local" / "logs" / "console.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=path,
        level=logging.WARNING,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def cmd_watch(a: argparse.Namespace) -> int:
    from streams.console import watch

    _log_to_file()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch(_settings(a), a.seconds))
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    """The demo (streams/demo.py): exits 1, saying why, if a child died."""
    from streams import demo

    s = _settings(a)
    _log_to_file()
    feed = ["--count", str(a.count), "--rate", str(a.rate), "--bad-fraction", str(a.bad_fraction)]
    failed = demo.run(s, [*feed, "--seed", str(int(time.time()))], a.seconds, err)
    if failed is not None:
        with contextlib.suppress(OSError):
            _error(failed.failure())
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="parcel-risk", description=__doc__.splitlines()[0])
    p.add_argument("--broker", help="Kafka bootstrap host:port (PARCEL_RISK_BROKER)")
    p.add_argument("--prefix", help="topic name prefix (PARCEL_RISK_TOPIC_PREFIX)")
    p.add_argument("--model-dir", help="model artifacts folder (PARCEL_RISK_MODEL_DIR)")
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run a scoring worker (Faust)")
    w.add_argument("--web-port", type=int)
    w.add_argument("--app-id", help="consumer group / app id")
    w.add_argument("--batch-size", type=int)
    w.add_argument("--model-version")
    w.add_argument("--store", help="table store URL, e.g. rocksdb:// or memory://")
    w.set_defaults(func=cmd_worker)

    t = sub.add_parser("topics", help="create the product's topics")
    t.add_argument("--partitions", type=int)
    t.set_defaults(func=cmd_topics)

    g = sub.add_parser("generate", help="synthetic parcel traffic into Kafka (or a data set)")
    g.add_argument("--count", type=int, required=True)
    g.add_argument("--rate", type=float, default=0.0, help="parcels/s (0: as fast as possible)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--bad-fraction", type=float, default=0.0)
    g.add_argument("--labels", help="write ground-truth labels (JSONL) here")
    g.add_argument("--dataset", help="write a labelled training set (JSONL) instead of Kafka")
    g.add_argument("--partitions", type=int)
    g.set_defaults(func=cmd_generate)

    tr = sub.add_parser("train", help="train a model artifact")
    tr.add_argument(
        "--data", help="one labelled file, split by time (JSONL; CSV or Parquet with --mapping)"
    )
    tr.add_argument("--train", help="your own split: the training file (with --valid)")
    tr.add_argument("--valid", help="your validation file: thresholds are chosen on it")
    tr.add_argument("--test", help="your test file: the figures printed are measured on it")
    tr.add_argument(
        "--split-at",
        nargs="+",
        metavar="DATE",
        help="split --data here: validation from the first date, test from the second "
        "(one date: the test starts there)",
    )
    tr.add_argument(
        "--refit", action="store_true", help="fit the final model on train + validation"
    )
    tr.add_argument("--mapping", help="TOML column mapping for a table in another schema")
    tr.add_argument("--out", help="artifact folder (default: the model dir)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--synthetic",
        type=int,
        default=100_000,
        help="without --data: train on this many synthetic parcels",
    )
    tr.add_argument(
        "--if-missing", action="store_true", help="only if no model of this build exists"
    )
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="decisions + dispositions -> labelled training data")
    ex.add_argument("--out", required=True, help="JSONL file to write")
    ex.add_argument("--since", help="only decisions from this ISO 8601 time on")
    ex.set_defaults(func=cmd_export)

    ev = sub.add_parser("evaluate", help="measure a model on labelled data; write a report")
    ev.add_argument("--model", required=True, help="a version id or an artifact folder")
    ev.add_argument(
        "--data",
        required=True,
        help="labelled data: JSONL (generate --dataset, export), or CSV, Parquet or JSONL "
        "in another schema with --mapping",
    )
    ev.add_argument("--mapping", help="TOML column mapping for a table in another schema")
    ev.add_argument("--out", required=True, help="folder for report.md and plots")
    ev.add_argument(
        "--scores-out",
        help="write id, time, each label's score and the action per row (CSV; .parquet: Parquet)",
    )
    ev.add_argument(
        "--split-at",
        help="ISO 8601 time dividing the data's two periods for the drift section "
        "(default: its median event time)",
    )
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("promote", help="make running workers serve a model version")
    pr.add_argument("version", nargs="?", help="the artifact version to promote")
    pr.add_argument(
        "--shadow",
        action="store_true",
        help="score it beside the serving model on every decision; holds stay the serving one's",
    )
    pr.add_argument("--stop-shadow", action="store_true", help="end the shadow")
    pr.add_argument("--by", default=os.environ.get("USER", "unknown"), help="who promotes")
    pr.set_defaults(func=cmd_promote)

    fi = sub.add_parser("filers", help="filers' compliance scorecards (and their evidence)")
    fi.add_argument("code", nargs="?", help="one filer code")
    fi.add_argument("--since", help="only records from this ISO 8601 time on")
    fi.add_argument("--json", action="store_true", help="JSON lines, for pipes")
    fi.add_argument("--evidence", action="store_true", help="the entries behind each figure")
    fi.set_defaults(func=cmd_filers)

    mo = sub.add_parser(
        "monitor", help="models in production: decisions, actions, drift, hit rates, shadow"
    )
    mo.add_argument("--since", help="decisions from this ISO 8601 time on (default: a day ago)")
    mo.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    mo.set_defaults(func=cmd_monitor)

    dp = sub.add_parser("dispose", help="report an exam outcome for a parcel")
    dp.add_argument("hawb")
    dp.add_argument(
        "--outcome",
        required=True,
        help="released, seized_narcotics, seized_ipr, undervalued or other",
    )
    dp.add_argument("--note")
    dp.add_argument("--analyst", default=os.environ.get("USER", "unknown"))
    dp.add_argument("--examined-at", help="ISO 8601 time of the exam (default: now)")
    dp.set_defaults(func=cmd_dispose)

    ho = sub.add_parser("holds", help="list flagged parcels (analysts)")
    ho.add_argument("--follow", "-f", action="store_true", help="keep listing new holds")
    ho.add_argument("--category", help="fentanyl, counterfeit or undervaluation")
    ho.add_argument("--min-score", type=float, help="only holds with a score at least this")
    ho.add_argument("--since", help="from this ISO 8601 time")
    ho.add_argument("--json", action="store_true", help="JSON lines, for pipes")
    ho.set_defaults(func=cmd_holds)

    wa = sub.add_parser("watch", help="live dashboard of decisions and holds")
    wa.add_argument("--seconds", type=float)
    wa.set_defaults(func=cmd_watch)

    r = sub.add_parser("run", help="the demo: worker, synthetic feed and live dashboard")
    r.add_argument("--rate", type=float, default=300.0)
    r.add_argument("--count", type=int, default=10_000_000)
    r.add_argument("--bad-fraction", type=float, default=0.01)
    r.add_argument("--seconds", type=float)
    r.set_defaults(func=cmd_run)

    a = p.parse_args(argv)
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
