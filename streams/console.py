"""Terminal views for people: the live dashboard of `make run` and the analysts' hold list.

Both read the output topics like any other subscriber would (a consumer with no group,
from the end or from a time), so what they show is what analysts receive.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from streams.security import connection
from streams.settings import Settings
from streams.topics import partitions


async def tail(
    s: Settings,
    topics: list[str],
    from_end: bool = True,
    since_ms: int | None = None,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield (topic, decoded value) from the topics' partitions, without a consumer group."""
    consumer = AIOKafkaConsumer(
        **connection(s),
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


class Dashboard:
    """Counts decisions, holds and dead letters as they are published; renders with rich."""

    def __init__(self, s: Settings, latest: int = 12) -> None:
        self.s = s
        self.started = time.monotonic()
        self.decisions = 0
        self.dead = 0
        self.flagged: Counter[tuple[str, str]] = Counter()
        self.latest: deque[tuple[str, ...]] = deque(maxlen=latest)
        self.window: deque[tuple[float, int]] = deque()

    def add(self, topic: str, value: dict[str, Any]) -> None:
        if topic == self.s.topic("decisions_topic"):
            self.decisions += 1
        elif topic == self.s.topic("holds_topic"):
            self.flagged[(value["category"], value["action"])] += 1
            self.latest.appendleft(hold_row(value))
        elif topic == self.s.topic("deadletter_topic"):
            self.dead += 1

    def rate(self) -> float:
        now = time.monotonic()
        self.window.append((now, self.decisions))
        while self.window and now - self.window[0][0] > 5.0:
            self.window.popleft()
        (t0, d0) = self.window[0]
        return (self.decisions - d0) / (now - t0) if now > t0 else 0.0

    def render(self) -> Group:
        summary = Table.grid(padding=(0, 3))
        summary.add_row(
            f"[bold]{self.rate():,.0f}[/] parcels/s",
            f"decisions [bold]{self.decisions:,}[/]",
            f"dead letters [bold]{self.dead:,}[/]",
            f"up {time.monotonic() - self.started:,.0f}s",
        )
        cats = Table.grid(padding=(0, 3))
        cats.add_row(
            *(
                f"{c}: [red]{self.flagged[(c, 'hold')]}[/] hold / "
                f"[yellow]{self.flagged[(c, 'review')]}[/] review"
                for c in ("fentanyl", "counterfeit", "undervaluation")
            )
        )
        return Group(
            Panel(Group(summary, cats), title="parcel-risk live"), holds_table(list(self.latest))
        )


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


async def watch(s: Settings, seconds: float | None = None) -> Dashboard:
    """Live dashboard until Ctrl-C (or `seconds`)."""
    board = Dashboard(s)
    topics = [s.topic("decisions_topic"), s.topic("holds_topic"), s.topic("deadletter_topic")]
    deadline = time.monotonic() + seconds if seconds else None
    last = 0.0
    with Live(board.render(), refresh_per_second=4, screen=False) as live:
        async for topic, value in tail(s, topics):
            if topic:
                board.add(topic, value)
            now = time.monotonic()
            if now - last > 0.25:
                live.update(board.render())
                last = now
            if deadline and now > deadline:
                break
    return board
