"""Model quality on a time-ordered synthetic set, against two simple baselines.

    python -m benchmarks.model_quality [--parcels 500000] [--seed 1] [--out reports/bench]
    python -m benchmarks.model_quality --parcels 150000 --compare 300/0.06/31 60/0.3/31

Generates traffic, replays it through the worker's stages (history, dispositions), trains
on the earliest 70%, picks thresholds on the next 15% and measures the last 15% (one row
per bill). In the same run it scores the test period with two baselines an analyst could
use without a model: the lowest declared value per kg first, and the shipper's prior
seizure rate (its examined parcels that ended in a seizure, per parcel sent). Prints
P@n%, R@n%, Revenue@n% and AUC per label and the ratios the targets are stated in.

`--compare` trains several settings (max_iter/learning_rate/max_leaf_nodes) on the same
data and split instead, and prints per setting the trees, P@1% and AUC per label (P@1% also
as a share of the first setting's) and the predict cost per decision on one thread: fewer
trees must not cost model quality, and the load of a shared machine varies between runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from models.dataset import from_generator
from models.evaluation import evaluate_scores
from models.features import INDEX, References, build_features
from models.model import ParcelRiskModel
from models.records import CATEGORIES
from models.report import write_report
from models.synthetic import GeneratorConfig
from models.training import TrainConfig, split_indices, train


def baselines(X: np.ndarray) -> dict[str, np.ndarray]:
    """Scores (n, n_labels) of the two baselines, the same for every label."""
    vpk = X[:, INDEX["log_value_per_kg"]]
    cheap = np.where(np.isnan(vpk), np.nanmax(vpk), vpk)
    parcels = np.nan_to_num(X[:, INDEX["shipper_parcels"]])
    seized = sum(
        np.nan_to_num(X[:, INDEX[f"shipper_{k}"]])
        for k in ("seized_narcotics", "seized_ipr", "undervalued")
    )
    rate = seized / np.maximum(parcels, 1.0)
    return {
        "lowest value/kg": np.repeat(-cheap[:, None], len(CATEGORIES), axis=1),
        "shipper prior seizure rate": np.repeat(rate[:, None], len(CATEGORIES), axis=1),
    }


def predict_us(model: ParcelRiskModel, X: np.ndarray, batch: int = 2_000) -> float:
    """CPU µs per row of `predict_proba` (three labels), one thread, worker-sized batches."""
    with threadpool_limits(limits=1):
        t0 = time.process_time()
        for i in range(0, len(X), batch):
            model.predict_proba(X[i : i + batch])
        return (time.process_time() - t0) / len(X) * 1e6


def compare(parcels: int, seed: int, specs: Sequence[str]) -> None:
    """Each setting trained and measured on the same data, split and test rows."""
    ds = from_generator(GeneratorConfig(seed=seed), parcels)
    _tr, _va, te = split_indices(ds.times, TrainConfig(seed=seed))
    te = te[ds.final[te]]
    print(f"parcels {parcels:,} -> {len(ds):,} rows; test bills {len(te):,}; seed {seed}")
    print(
        f"{'iter/lr/leaves':<16}{'trees':>14}{'train s':>9}{'predict µs':>12}  "
        + "".join(f"{'P@1% ' + lab[:5]:>18}" for lab in CATEGORIES)
        + "".join(f"{'AUC ' + lab[:5]:>11}" for lab in CATEGORIES),
        flush=True,
    )
    first: list[float] = []
    for spec in specs:
        it, lr, leaves = spec.split("/")
        cfg = TrainConfig(
            seed=seed, max_iter=int(it), learning_rate=float(lr), max_leaf_nodes=int(leaves)
        )
        t0 = time.monotonic()
        model, meta = train(ds, cfg)
        spent = time.monotonic() - t0
        X = build_features([ds.views[i] for i in te], References.from_dict(meta["references"]))
        m = evaluate_scores(ds.Y[te], model.predict_proba(X), ds.values[te], CATEGORIES)
        p1 = [m[lab]["precision@1%"] for lab in CATEGORIES]
        first = first or p1
        trees = "/".join(str(e.n_iter_ if e else 0) for e in model.estimators_)
        print(
            f"{spec:<16}{trees:>14}{spent:>9.0f}{predict_us(model, X):>12.1f}  "
            + "".join(f"{p:>11.3f} ({p / f:>4.0%})" for p, f in zip(p1, first, strict=True))
            + "".join(f"{m[lab]['roc_auc']:>11.3f}" for lab in CATEGORIES),
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parcels", type=int, default=500_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="reports/model_quality")
    p.add_argument("--compare", nargs="+", metavar="ITER/LR/LEAVES", help="settings to compare")
    a = p.parse_args()
    if a.compare:
        compare(a.parcels, a.seed, a.compare)
        return

    t0 = time.monotonic()
    ds = from_generator(GeneratorConfig(seed=a.seed), a.parcels)
    t1 = time.monotonic()
    model, meta = train(ds, TrainConfig(seed=a.seed))
    t2 = time.monotonic()
    _tr, _va, te = split_indices(ds.times, TrainConfig(seed=a.seed))
    te = te[ds.final[te]]
    refs = References.from_dict(meta["references"])
    X = build_features([ds.views[i] for i in te], refs)
    S = model.predict_proba(X)
    Y, values = ds.Y[te], ds.values[te]
    results = {"model": evaluate_scores(Y, S, values, CATEGORIES)}
    for name, scores in baselines(X).items():
        results[name] = evaluate_scores(Y, scores, values, CATEGORIES)

    print(
        f"parcels {a.parcels:,} -> {len(ds):,} decisions (rows); test bills {len(te):,}; "
        f"generate+replay {t1 - t0:.0f}s, train {t2 - t1:.0f}s"
    )
    print(
        f"{'label':<15}{'scorer':<28}{'base':>8}{'P@1%':>8}{'R@1%':>8}{'Rev@1%':>8}"
        f"{'P@5%':>8}{'R@5%':>8}{'AUC':>8}"
    )
    for lab in CATEGORIES:
        for name, res in results.items():
            m = res[lab]
            print(
                f"{lab:<15}{name:<28}{m['base_rate']:>8.4f}{m['precision@1%']:>8.3f}"
                f"{m['recall@1%']:>8.3f}{m['revenue@1%']:>8.3f}{m['precision@5%']:>8.3f}"
                f"{m['recall@5%']:>8.3f}{m['roc_auc']:>8.3f}"
            )
    print("\ntargets: P@1% >= 5x base rate, >= 2x the better baseline, AUC < 0.99")
    ok = True
    for lab in CATEGORIES:
        m = results["model"][lab]
        best_base = max(results[n][lab]["precision@1%"] for n in results if n != "model")
        lift = m["precision@1%"] / m["base_rate"] if m["base_rate"] else float("nan")
        vs = m["precision@1%"] / best_base if best_base else float("inf")
        passed = lift >= 5 and vs >= 2 and m["roc_auc"] < 0.99
        ok &= passed
        print(
            f"{lab:<15} P@1%/base = {lift:6.1f}x   P@1%/best baseline = {vs:6.1f}x   "
            f"AUC = {m['roc_auc']:.3f}   {'PASS' if passed else 'FAIL'}"
        )
    report = write_report(
        Path(a.out),
        f"Model quality benchmark ({a.parcels:,} parcels, seed {a.seed})",
        results["model"],
        Y,
        S,
        values,
        CATEGORIES,
        notes=[f"Test period: the last 15% of a time-ordered synthetic set, {len(te):,} bills."],
        baselines={k: v for k, v in results.items() if k != "model"},
    )
    print(f"report: {report}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
