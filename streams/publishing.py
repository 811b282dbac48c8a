"""What the worker produces, as Kafka messages: which output, which key, which bytes.

The records themselves (decisions, holds, dead letters) are built in models/outputs.py
(filer scorecards in models/filers.py);
here they get their topic and their encoding. Decisions and holds are keyed by HAWB; a
hold goes to the holds topic and to its category's, encoded once; a dead letter keeps its
original record's key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.filers import Scorecard
from models.outputs import Source, dead_letter
from models.pipeline import Failures, Incoming, ScoreResult
from models.records import RecordError, encode


@dataclass(frozen=True)
class Outgoing:
    """One message to produce: which output ('decisions', 'holds', 'deadletter'), key, value."""

    output: str
    key: bytes
    value: bytes


def scored(res: ScoreResult) -> list[Outgoing]:
    """A scored batch's messages: every decision, and each hold twice (all holds, and the
    hold's own category for the team that handles it)."""
    out = [Outgoing("decisions", d["hawb"].encode(), encode(d)) for d in res.decisions]
    for hold in res.holds:
        key, value = hold["hawb"].encode(), encode(hold)
        out.append(Outgoing("holds", key, value))
        out.append(Outgoing(f"holds.{hold['category']}", key, value))
    return out


def filer_cards(cards: Sequence[Scorecard]) -> list[Outgoing]:
    """Filers' current scorecards, with their entries per week and the entries behind their
    figures, keyed by filer code (the topic is compacted)."""
    return [Outgoing("filers", c.filer.encode(), encode(c.as_dict(evidence=True))) for c in cards]


def dead_letters(dead: Sequence[tuple[Incoming, RecordError]]) -> list[Outgoing]:
    return [
        Outgoing(
            "deadletter", item.source.key or b"", encode(dead_letter(item.source, item.raw, err))
        )
        for item, err in dead
    ]


def failed_letters(dead: Failures) -> list[Outgoing]:
    """Dead letters of stage messages that raised: the source names the input record (its
    topic, partition, offset), the bytes are the stage message that carried it."""
    out = []
    for m, err in dead:
        letter = dead_letter(Source(**m["source"]), encode(m), err)
        out.append(Outgoing("deadletter", b"", encode(letter)))
    return out
