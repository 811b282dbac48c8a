"""`parcel-risk monitor`: the models in production, from the decisions and dispositions.

Reads parcels.decisions (from a time on) and targeting.dispositions to their current end,
loads the references of the models named there, and prints models/monitor.py's summary as
tables or JSON.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from models.drift import Reference, reference_of
from models.monitor import summarise
from models.records import CATEGORIES
from models.registry import ArtifactError, load
from streams.export import read_topic
from streams.settings import Settings


def _reference(s: Settings, version: str) -> Reference | None:
    try:
        return reference_of(load(s.model_dir, version).meta)
    except ArtifactError:
        return None  # not in this model folder: no drift for it


async def monitor(s: Settings, since_ms: int | None) -> dict[str, Any]:
    decisions = await read_topic(s, s.topic("decisions_topic"), since_ms)
    dispositions = await read_topic(s, s.topic("dispositions_topic"))
    versions = {d["model_version"] for d in decisions}
    versions |= {d["shadow"]["model_version"] for d in decisions if d.get("shadow")}
    return summarise(decisions, dispositions, {v: _reference(s, v) for v in versions})


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def show(summary: dict[str, Any], out: Console) -> None:
    models = Table(title="models")
    for col in ("model", "role", "decisions", "holds / reviews", "score PSI", "hit rate"):
        models.add_column(col, justify="left" if col in ("model", "role") else "right")
    for m in summary["models"]:
        actions = "\n".join(
            f"{c}: {_pct(m['actions'][c]['hold'])} / {_pct(m['actions'][c]['review'])}"
            for c in CATEGORIES
        )
        drift = m["drift"]
        psi = (
            "\n".join(f"{c}: {v:.3f}" for c, v in drift["scores"].items())
            if drift
            else "no reference"
        )
        hits = "\n".join(
            f"{c}: {_pct(o['hit_rate'])} of {o['examined']}" for c, o in m["outcomes"].items()
        )
        models.add_row(m["version"], m["role"], f"{m['decisions']:,}", actions, psi, hits)
    out.print(models)
    if not summary["disagreements"]:
        out.print("no shadow model scored these decisions")
        return
    table = Table(title="serving vs shadow")
    for col in ("serving", "shadow", "decisions", "disagree", "most often"):
        table.add_column(col)
    for d in summary["disagreements"]:
        top = "\n".join(f"{k}: {n:,}" for k, n in list(d["by"].items())[:5])
        table.add_row(d["serving"], d["shadow"], f"{d['decisions']:,}", f"{d['disagree']:,}", top)
    out.print(table)
