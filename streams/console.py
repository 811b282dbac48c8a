"""Terminal views for people: the live dashboard of `make run` and the analysts' hold list.

Both read the output topics like any other subscriber would (a consumer with no group,
from the end or from a time), so what they show is what analysts receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streams.security import connection, reader
from streams.settings import Settings
from streams.supervise import Child, describe_exit, first_failure
from streams.topics import INPUT_TOPICS, partitions


async def tail(
    s: Settings,
    topics: list[str],
    from_end: bool = True,
    since_ms: int | None = None,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield (topic, decoded value) from the topics' partitions, without a consumer group."""
    consumer = AIOKafkaConsumer(
        **reader(s),
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in await partitions(s, t)]
        if not tps:
            raise RuntimeError(f"no such topics: {', '.join(topics)}")
        consumer.assign(tps)
        if since_ms is not None:
            offsets = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            for tp, ot in offsets.items():
                if ot is None:
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, ot.offset)
        elif from_end:
            await consumer.seek_to_end(*tps)
        else:  # explicit: seek_to_beginning can resolve to the end after other lookups
            for tp, offset in (await consumer.beginning_offsets(tps)).items():
                consumer.seek(tp, offset)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            if not batches:
                yield "", {}
            for tp, msgs in batches.items():
                for m in msgs:
                    try:
                        yield tp.topic, orjson.loads(m.value)
                    except orjson.JSONDecodeError:
                        continue
    finally:
        await consumer.stop()


def hold_row(h: dict[str, Any]) -> tuple[str, ...]:
    top = max(h["scores"].values())
    return (
        h["scored_at"][11:19],
        h["hawb"],
        h["category"],
        h["action"],
        f"{top:.3f}",
        h["shipper"]["name"][:24],
        "; ".join(h["reasons"][:2])[:90],
    )


def holds_table(rows: list[tuple[str, ...]], title: str = "latest holds") -> Table:
    t = Table(title=title, expand=True)
    for col in ("time", "hawb", "category", "action", "score", "shipper", "reasons"):
        t.add_column(
            col,
            overflow="fold" if col == "reasons" else "ellipsis",
            ratio=4 if col == "reasons" else None,
        )
    for r in rows:
        t.add_row(*r)
    return t


class Rate:
    """Events per second over at least the last `span` seconds of wall time, however far
    apart it is read: the oldest sample kept is the last one before the span, so a slow
    reader gets the rate over the time since its previous read, never a 0 for lack of one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, span: float = 5.0) -> None:
        self.clock = clock
        self.span = span
        self.samples: deque[tuple[float, int]] = deque()

    def observe(self, total: int) -> None:
        """A running total (decisions so far, end offsets of the input topics) at this time."""
        now = self.clock()
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.span:
            self.samples.popleft()

    def per_second(self) -> float | None:
        """None until two observations exist: no rate is better than a made-up one."""
        if len(self.samples) < 2:
            return None
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None


def _per_s(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.0f}"


class Dashboard:
    """Counts decisions, holds and dead letters as they are published; renders with rich.

    Beside the decisions it shows what comes in (records/s appended to the input topics)
    and the backlog (records the worker group has not committed yet), from Kafka's offsets,
    so a worker that falls behind or stops shows as a rising lag, not only a low rate.
    """

    def __init__(
        self,
        s: Settings,
        latest: int = 12,
        clock: Callable[[], float] = time.monotonic,
        children: Sequence[Child] = (),
    ) -> None:
        self.s = s
        self.clock = clock
        self.started = clock()
        self.decisions = 0
        self.dead = 0
        self.flagged: Counter[tuple[str, str]] = Counter()
        self.latest: deque[tuple[str, ...]] = deque(maxlen=latest)
        self.decision_rate = Rate(clock)
        self.decision_rate.observe(0)  # counted from the start of the view
        self.input_rate = Rate(clock)
        self.lag: int | None = None
        self.offsets_error: str | None = None
        self.children = list(children)
        self.failed: Child | None = None

    def add(self, topic: str, value: dict[str, Any]) -> None:
        if topic == self.s.topic("decisions_topic"):
            self.decisions += 1
        elif topic == self.s.topic("holds_topic"):
            self.flagged[(value["category"], value["action"])] += 1
            self.latest.appendleft(hold_row(value))
        elif topic == self.s.topic("deadletter_topic"):
            self.dead += 1

    def offsets(self, input_end: int, lag: int) -> None:
        """The input topics' end offsets (summed) and the group's backlog, just read."""
        self.input_rate.observe(input_end)
        self.lag = lag
        self.offsets_error = None

    def rate(self) -> float:
        """Decisions per second over the last few seconds of wall time."""
        self.decision_rate.observe(self.decisions)
        return self.decision_rate.per_second() or 0.0

    def render(self) -> Group:
        summary = Table.grid(padding=(0, 3))
        lag = (
            f"lag [bold]{self.lag:,}[/] records"
            if self.lag is not None
            else f"lag [dim]{escape(self.offsets_error or 'reading...')}[/]"
        )
        summary.add_row(
            f"[bold]{self.rate():,.0f}[/] decisions/s",
            f"input [bold]{_per_s(self.input_rate.per_second())}[/] records/s",
            lag,
        )
        summary.add_row(
            f"decisions [bold]{self.decisions:,}[/]",
            f"dead letters [bold]{self.dead:,}[/]",
            f"up {self.clock() - self.started:,.0f}s",
        )
        cats = Table.grid(padding=(0, 3))
        cats.add_row(
            *(
                f"{c}: [red]{self.flagged[(c, 'hold')]}[/] hold / "
                f"[yellow]{self.flagged[(c, 'review')]}[/] review"
                for c in ("fentanyl", "counterfeit", "undervaluation")
            )
        )
        parts: list[Any] = [summary, cats]
        if self.children:
            parts.append("   ".join(_state(c) for c in self.children))
        view: list[Any] = [Panel(Group(*parts), title="parcel-risk live")]
        if self.failed is not None:
            view.append(failure_panel(self.failed))
        view.append(holds_table(list(self.latest)))
        return Group(*view)


def _state(child: Child) -> str:
    code = child.proc.poll()
    if code is None:
        return f"{child.name} pid {child.pid} [green]running[/]"
    if child.failure() is None:
        return f"{child.name} pid {child.pid} [dim]finished[/]"
    return f"{child.name} pid {child.pid} [red]{describe_exit(code)}[/]"


def failure_panel(child: Child) -> Panel:
    """Which process died, how, and the last lines of its log: the first thing to read."""
    lines = "\n".join(escape(ln) for ln in child.last_lines())
    return Panel(  # markup parsed here, so any console prints it the same
        Text.from_markup(
            f"[bold red]{escape(child.failure() or child.name)}[/]; stopping the rest.\n"
            f"last lines of {escape(str(child.log))}:\n{lines}"
        ),
        title="stopped",
        border_style="red",
    )


def backlog(
    inputs: Iterable[TopicPartition],
    committed: Mapping[TopicPartition, int],
    end: Mapping[TopicPartition, int],
    start: Mapping[TopicPartition, int],
) -> int:
    """Records the group has yet to commit: on the input topics and on every other topic it
    has committed on (the stage topics), changelogs excepted (state, not work). An input
    partition never committed counts from its first record (the worker reads from earliest)."""
    total = 0
    for tp in {*inputs, *committed}:
        if tp.topic.endswith("-changelog") or tp not in end:
            continue
        done = committed.get(tp, -1)
        total += max(0, end[tp] - (done if done >= 0 else start.get(tp, 0)))
    return total


async def poll_offsets(s: Settings, board: Dashboard, every_s: float = 2.0) -> None:
    """Feed the board the input topics' end offsets and the group's backlog, until cancelled.

    Kafka's offsets, not the worker's /metrics: they are there with any number of workers,
    and a dead or stuck worker shows as a growing lag instead of a gap. A failure (the
    broker away) is shown and logged, and the clients are made again.
    """
    import logging

    log = logging.getLogger(__name__)
    while True:
        try:
            await _poll_offsets(s, board, every_s)
        except Exception as exc:  # the view goes on without the figure, saying why
            board.offsets_error = f"unknown ({type(exc).__name__})"
            log.warning("reading offsets for the view failed: %r", exc)
            await asyncio.sleep(every_s)


async def _poll_offsets(s: Settings, board: Dashboard, every_s: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    consumer = AIOKafkaConsumer(**reader(s), enable_auto_commit=False, group_id=None)
    admin = AIOKafkaAdminClient(**connection(s), request_timeout_ms=10_000)
    try:
        await consumer.start()
        await admin.start()
        inputs = [
            TopicPartition(s.topic(name), p)
            for name in INPUT_TOPICS
            for p in await partitions(s, s.topic(name))
        ]
        while True:
            committed = {
                tp: om.offset
                for tp, om in (await admin.list_consumer_group_offsets(s.app_id)).items()
            }
            end = await consumer.end_offsets(list({*inputs, *committed}))
            start = await consumer.beginning_offsets(inputs)
            board.offsets(sum(end[tp] for tp in inputs), backlog(inputs, committed, end, start))
            await asyncio.sleep(every_s)
    finally:
        await consumer.stop()
        await admin.close()


def hold_matches(h: dict[str, Any], category: str | None, min_score: float | None) -> bool:
    if category and h.get("category") != category:
        return False
    return not (min_score is not None and max(h["scores"].values()) < min_score)


async def holds(
    s: Settings,
    follow: bool,
    category: str | None,
    min_score: float | None,
    since_ms: int | None,
    as_json: bool,
    idle_s: float = 2.0,
) -> int:
    """Print holds: a readable table for people, or JSON lines (--json) for pipes.

    Without --follow it prints what is on the topic (from --since, or all) and exits once
    nothing new arrives for `idle_s`; with --follow it keeps going until Ctrl-C.
    """
    import sys

    topic = s.topic("holds_topic")
    shown = 0
    rows: list[tuple[str, ...]] = []
    quiet_since = time.monotonic()
    live = None if as_json or not follow else Live(holds_table([]), refresh_per_second=4)
    if live:
        live.start()
    try:
        async for t, value in tail(s, [topic], from_end=False, since_ms=since_ms):
            if t:
                quiet_since = time.monotonic()
                if not hold_matches(value, category, min_score):
                    continue
                shown += 1
                if as_json:
                    sys.stdout.write(orjson.dumps(value).decode() + "\n")
                    sys.stdout.flush()
                else:
                    rows.append(hold_row(value))
                    if live:
                        live.update(holds_table(rows[-40:], title=f"holds ({shown:,})"))
            elif not follow and time.monotonic() - quiet_since > idle_s:
                break
    finally:
        if live:
            live.stop()
    if not as_json and not follow:
        from rich.console import Console

        Console().print(holds_table(rows, title=f"holds ({shown:,})"))
    return shown


async def watch(
    s: Settings,
    seconds: float | None = None,
    children: Sequence[Child] = (),
) -> Dashboard:
    """Live dashboard until Ctrl-C (or `seconds`, or one of `children` dying: then the
    board's `failed` names it and the view shows why)."""
    board = Dashboard(s, children=children)
    topics = [s.topic("decisions_topic"), s.topic("holds_topic"), s.topic("deadletter_topic")]
    deadline = time.monotonic() + seconds if seconds else None
    last = checked = 0.0
    offsets = asyncio.create_task(poll_offsets(s, board))
    try:
        with Live(board.render(), refresh_per_second=4, screen=False) as live:
            async for topic, value in tail(s, topics):
                if topic:
                    board.add(topic, value)
                now = time.monotonic()
                if children and now - checked > 0.5:
                    checked = now
                    board.failed = first_failure(children)
                if now - last > 0.25 or board.failed:
                    live.update(board.render())
                    last = now
                if board.failed or (deadline and now > deadline):
                    break
    finally:
        offsets.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await offsets
    return board
