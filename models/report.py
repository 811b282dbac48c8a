"""The evaluation report a data scientist reads before promoting a model.

Markdown with the capacity-bound figures first (P@n%, R@n%, Revenue@n% beside the base
rate), then drift between two periods of the data (has the traffic moved, and away from
what the model was trained on?), then PNG plots: precision-recall curves, calibration,
score distributions and lift by examined share. Written with matplotlib's non-interactive
backend, so it runs headless.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve

from models.dataset import LabelledSet
from models.drift import ALERT_PSI
from models.evaluation import (
    TOP_PERCENTS,
    Evaluation,
    PeriodDrift,
    at_top,
    evaluate_model,
    period_drift,
)
from models.registry import Artifact
from models.scoring import decide


def _pr_plot(Y: np.ndarray, S: np.ndarray, labels: Sequence[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 4))
    for ax, j, lab in zip(np.atleast_1d(axes), range(len(labels)), labels, strict=True):
        if 0 < Y[:, j].sum() < len(Y):
            p, r, _ = precision_recall_curve(Y[:, j], S[:, j])
            ax.plot(r, p)
        ax.axhline(Y[:, j].mean(), linestyle="--", color="grey", label="base rate")
        ax.set(title=lab, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _calibration_plot(Y: np.ndarray, S: np.ndarray, labels: Sequence[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 4))
    for ax, j, lab in zip(np.atleast_1d(axes), range(len(labels)), labels, strict=True):
        if 0 < Y[:, j].sum() < len(Y):
            frac, mean = calibration_curve(Y[:, j], S[:, j], n_bins=10, strategy="quantile")
            ax.plot(mean, frac, marker="o")
        hi = max(float(S[:, j].max()), 1e-3)
        ax.plot([0, hi], [0, hi], linestyle="--", color="grey")
        ax.set(title=f"{lab}: calibration", xlabel="predicted", ylabel="observed")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _distribution_plot(Y: np.ndarray, S: np.ndarray, labels: Sequence[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 4))
    bins = np.logspace(-6, 0, 50)
    for ax, j, lab in zip(np.atleast_1d(axes), range(len(labels)), labels, strict=True):
        s = np.clip(S[:, j], 1e-6, 1.0)
        ax.hist(s[Y[:, j] == 0], bins=bins, alpha=0.6, density=True, label="clean")
        if (Y[:, j] == 1).any():
            ax.hist(s[Y[:, j] == 1], bins=bins, alpha=0.6, density=True, label=lab)
        ax.set(xscale="log", title=f"{lab}: scores", xlabel="score")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _lift_plot(
    Y: np.ndarray, S: np.ndarray, values: np.ndarray, labels: Sequence[str], path: Path
) -> None:
    pcts = np.array([0.5, 1, 2, 3, 5, 7.5, 10, 15, 20])
    fig, ax = plt.subplots(figsize=(6, 4))
    for j, lab in enumerate(labels):
        base = Y[:, j].mean()
        if base > 0:
            lift = [at_top(Y[:, j], S[:, j], values, p)["precision"] / base for p in pcts]
            ax.plot(pcts, lift, marker="o", label=lab)
    ax.axhline(1.0, linestyle="--", color="grey")
    ax.set(xlabel="share of parcels examined (%)", ylabel="lift over base rate", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(
    out: Path,
    title: str,
    metrics: Mapping[str, Mapping[str, Any]],
    Y: np.ndarray,
    S: np.ndarray,
    values: np.ndarray,
    labels: Sequence[str],
    notes: Sequence[str] = (),
    baselines: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    sampled: Mapping[str, Mapping[str, float]] | None = None,
    memorisation: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    sections: Sequence[str] = (),
) -> Path:
    """Write report.md and its plots into `out`; returns the Markdown file. `sections` are
    Markdown lines placed after the figures, before the plots."""
    out.mkdir(parents=True, exist_ok=True)
    plots = {
        "precision-recall": "pr_curves.png",
        "calibration": "calibration.png",
        "score distributions": "score_distributions.png",
        "lift by share examined": "lift.png",
    }
    _pr_plot(Y, S, labels, out / plots["precision-recall"])
    _calibration_plot(Y, S, labels, out / plots["calibration"])
    _distribution_plot(Y, S, labels, out / plots["score distributions"])
    _lift_plot(Y, S, values, labels, out / plots["lift by share examined"])
    lines = [f"# {title}", "", *notes, ""]
    head = (
        ["label", "base rate"]
        + [f"{k}@{n}%" for n in TOP_PERCENTS for k in ("P", "R", "Rev")]
        + ["ROC AUC", "PR AUC", "ECE"]
    )
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name: str, m: Mapping[str, Any]) -> str:
        cells = [name, f"{m['base_rate']:.4f}"]
        for n in TOP_PERCENTS:
            cells += [f"{m[f'{k}@{n}%']:.3f}" for k in ("precision", "recall", "revenue")]
        cells += [f"{m['roc_auc']:.3f}", f"{m['pr_auc']:.3f}", f"{m['calibration_error']:.4f}"]
        return "| " + " | ".join(cells) + " |"

    for lab, m in metrics.items():
        lines.append(row(lab, m))
    for base_name, base_metrics in (baselines or {}).items():
        for lab, m in base_metrics.items():
            lines.append(row(f"{lab} ({base_name})", m))
    lines += [
        "",
        "P = precision, R = recall, Rev = share of the value at stake caught, "
        "each among the top n% of parcels by score; ECE = expected calibration error.",
        "",
        *sections,
    ]
    if sampled:
        lines += _sample_table(sampled)
    if memorisation:
        lines += _section(
            "Memorisation check",
            "The same figures on rows whose key columns were seen in training and on rows "
            "never seen (each group ranked on its own). A model that remembers rather than "
            "generalises does well only on the first.",
            head,
        )
        for group, group_metrics in memorisation.items():
            for lab, m in group_metrics.items():
                lines.append(row(f"{lab}, {group} ({m['n']:,} rows)", m))
        lines.append("")
    for name, file in plots.items():
        lines += [f"## {name.capitalize()}", "", f"![{name}]({file})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _section(title: str, text: str, head: Sequence[str]) -> list[str]:
    """A report section's first lines: its title, a sentence, and the head of its table."""
    return [f"## {title}", "", text, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def _sample_table(sampled: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The same measures estimated on the compliance sample (unbiased)."""
    head = ["label", "sampled", "violative", "rate (95% CI)"] + [
        f"{k}@{n}%" for n in TOP_PERCENTS for k in ("P", "R")
    ]
    lines = _section(
        "On the compliance sample",
        "Estimated on the randomly sampled parcels only, each weighted by 1 / its sampling "
        "rate: the figures above count only what was examined, which is what targeting chose.",
        head,
    )
    for lab, m in sampled.items():
        cells = [lab, f"{m['sampled']:.0f}", f"{m['violative']:.0f}"]
        cells.append(f"{m['rate']:.3f} ({m['low']:.3f}-{m['high']:.3f})")
        cells += [f"{m[f'{k}@{n}%']:.3f}" for n in TOP_PERCENTS for k in ("precision", "recall")]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_scores(path: Path, result: Evaluation, thresholds: Mapping[str, Any]) -> int:
    """Per-row output for the data scientist's own analyses: id, time, each label's score and
    the action the thresholds give (CSV, or Parquet by the file's suffix); returns the rows."""
    labels = result.data.labels
    actions, categories = decide(result.scores, thresholds, labels)
    columns: dict[str, list[Any]] = {
        "id": result.data.ids,
        "time": [datetime.fromtimestamp(t, UTC).isoformat() for t in result.data.times],
        **{lab: result.scores[:, j].tolist() for j, lab in enumerate(labels)},
        "action": [a or "" for a in actions],
        "category": [c or "" for c in categories],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), path)
    else:
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            w.writerows(zip(*columns.values(), strict=True))
    return len(result.data)


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def drift_section(d: PeriodDrift) -> list[str]:
    """The report's drift section: PSI per label score and watched feature."""
    lines = [
        "## Drift between two periods",
        "",
        f"Earlier: {d.sizes[0]:,} parcels before {_day(d.boundary)}; later: "
        f"{d.sizes[1]:,} parcels from then on. Population stability index (PSI): below "
        f"0.1 stable, 0.1-0.2 moderate, above {ALERT_PSI} a shift (the worker's alert line).",
        "",
    ]
    head = ["", "later vs earlier"]
    if d.vs_reference is not None:
        head += ["earlier vs training", "later vs training"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, value in d.between.items():
        kind, name = key
        cells = [f"{name} {kind}", f"{value:.3f}" + (" **shift**" if value > ALERT_PSI else "")]
        if d.vs_reference is not None:
            cells += [f"{v:.3f}" for v in d.vs_reference[key]]
        lines.append("| " + " | ".join(cells) + " |")
    if d.vs_reference is None:
        lines += ["", "The model was stored without a training reference: periods compared only."]
    return [*lines, ""]


def evaluate(
    artifact: Artifact, ds: LabelledSet, out: Path, split_at: float | None = None
) -> tuple[Evaluation, Path]:
    """`parcel-risk evaluate`: measure the model on the data, write the report to `out`;
    the drift section splits the data at `split_at` (epoch seconds; default its median
    event time)."""
    result = evaluate_model(artifact, ds)
    constant = artifact.meta.get("constant_features")
    try:
        drift = drift_section(period_drift(artifact, ds, split_at))
    except ValueError as exc:
        drift = ["## Drift between two periods", "", f"Not measured: {exc}.", ""]
    path = write_report(
        out,
        f"Evaluation of {artifact.version}",
        result.metrics,
        result.data.Y,
        result.scores,
        result.data.values,
        result.data.labels,
        notes=[
            f"Data: {ds.source} ({len(result.data):,} rows).",
            f"Trained on: {artifact.meta['data']['source']}.",
            *(
                [f"Constant in training, so no help to the model: {', '.join(constant) or 'none'}."]
                if constant is not None
                else []
            ),
        ],
        sampled=result.sampled,
        memorisation=result.memorisation,
        sections=drift,
    )
    return result, path
