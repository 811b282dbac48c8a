"""Compliance sampling: a random share of parcels examined whatever their scores.

Violation rates are measurable only on a random sample (targeted exams are a biased sample
of what the model chose), and sampled outcomes are unbiased labels. A parcel is selected by
a keyed hash of its HAWB, so a replay or a rescore selects the same parcels and nobody
without the key can tell which ones will be: its draw, uniform in [0, 1), is below its
filer's rate for the week.

The sample is stratified by filer: each filer's rate for a week is set from its entries of
the week before so that it gets at least `min_per_week` sampled entries (with a margin: a
filer of steady volume falls short in one week in a hundred), and the other filers' rates come down
so that the whole stays at `share`. A filer not seen the week before gets the rate of a
filer of median size. The rates are inverse weights too: `violation_rate` weighs each
sampled outcome by 1 / its rate, so the overall figure is not tilted towards small filers.
"""

from __future__ import annotations

import hmac
import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from models.parcel import ParcelView
from models.records import event_epoch

WEEK = 7 * 86_400.0
_MONDAY = 3 * 86_400.0  # 1970-01-01 was a Thursday: weeks start on Mondays, 00:00 UTC


@dataclass(frozen=True)
class SamplingPolicy:
    share: float = 0.002  # of all parcels
    min_per_week: int = 2  # sampled entries per filer and week


def week(epoch: float) -> int:
    """The week (Monday to Sunday, UTC) of an event time, as a number."""
    return int((epoch + _MONDAY) // WEEK)


def draw(key: bytes, hawb: str) -> float:
    """The HAWB's keyed draw, uniform in [0, 1): the same for a replay or a rescore."""
    digest = hmac.digest(key, b"compliance-sample:" + hawb.encode(), "sha256")
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _target(minimum: int, miss: float = 0.01) -> float:
    """The expected number of samples that leaves fewer than `minimum` in a share `miss`
    of weeks (Poisson)."""
    mean = float(minimum)
    while minimum > 0:
        short = sum(math.exp(-mean) * mean**k / math.factorial(k) for k in range(minimum))
        if short <= miss:
            break
        mean += 0.05
    return mean


def rates(last_week: Mapping[str, int], policy: SamplingPolicy) -> dict[str, float]:
    """Each filer's sampling rate for a week, from its entries of the week before.

    Filers too small for their minimum at the share get the rate that gives it; the rest
    share what is left of `share` x all entries (never less than nothing: when the minimums
    alone take more, the share is exceeded rather than a filer short of its minimum).
    """
    counts = {f: n for f, n in last_week.items() if n > 0}
    budget = policy.share * sum(counts.values())
    target = _target(policy.min_per_week)
    fixed: set[str] = set()
    scale = 1.0
    while True:
        free = sum(n for f, n in counts.items() if f not in fixed)
        spent = sum(min(target, counts[f]) for f in fixed)
        scale = max(0.0, (budget - spent) / (policy.share * free)) if free else 0.0
        more = {
            f for f, n in counts.items() if f not in fixed and n * policy.share * scale < target
        }
        if not more:
            break
        fixed |= more
    return {
        f: min(1.0, target / n) if f in fixed else policy.share * scale for f, n in counts.items()
    }


def rate_of(filer: str, week_rates: Mapping[str, float], policy: SamplingPolicy) -> float:
    """A filer's rate this week; one not seen last week gets a median filer's rate."""
    if filer in week_rates:
        return week_rates[filer]
    return statistics.median(week_rates.values()) if week_rates else policy.share


def selected(key: bytes, hawb: str, rate: float) -> bool:
    return draw(key, hawb) < rate


@dataclass(frozen=True)
class Estimate:
    violative: int  # sampled parcels found violative
    examined: int  # sampled parcels examined
    rate: float  # weighted violation rate
    low: float  # 95% interval
    high: float


def wilson(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% interval for a proportion (sound for small n and rates near 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def violation_rate(outcomes: Iterable[tuple[bool, float]]) -> Estimate:
    """The violation rate estimated on sampled exams, each (violative, its sampling rate):
    weighted by 1 / rate, with Wilson's interval on the effective sample size (Kish)."""
    rows = [(v, 1.0 / r) for v, r in outcomes if r > 0]
    if not rows:
        return Estimate(0, 0, math.nan, 0.0, 1.0)
    w = sum(x for _, x in rows)
    rate = sum(x for v, x in rows if v) / w
    effective = w * w / sum(x * x for _, x in rows)
    low, high = wilson(rate * effective, effective)
    return Estimate(sum(v for v, _ in rows), len(rows), rate, low, high)


class Sampler:
    """Selects parcels with an entry for the compliance sample, stratified by filer: each
    week's rates come from the filers' entries of the week before, read through
    `entries_in(week)` (reference data every worker reads alike: the worker's board of
    filers), computed again only when `version(week)` of that week changes (late entries
    of the week before still counting in). Without counts for the week before (no
    `entries_in`, a board that has read no scorecard of that week) every filer is sampled
    at the flat share. A parcel without an entry yet is not sampled: its filer is not known."""

    def __init__(
        self,
        key: bytes,
        entries_in: Callable[[int], Mapping[str, int]] | None = None,
        version: Callable[[int], int] | None = None,
    ) -> None:
        self.key = key
        self.entries_in = entries_in or (lambda _week: {})
        self.version = version or (lambda _week: 0)
        self._rates: dict[tuple[int, SamplingPolicy], tuple[int, dict[str, float]]] = {}

    def rate(self, view: ParcelView, policy: SamplingPolicy) -> float | None:
        """The parcel's sampling rate if it is selected, else None."""
        entry = view.get("entry")
        if entry is None or policy.share <= 0:
            return None
        w = week(event_epoch(entry))
        version = self.version(w - 1)
        cached = self._rates.get((w, policy))
        if cached is None or cached[0] != version:
            if len(self._rates) > 8:  # old weeks and policies
                self._rates.clear()
            cached = self._rates[w, policy] = (version, rates(self.entries_in(w - 1), policy))
        r = rate_of(entry["filer_code"], cached[1], policy)
        return r if selected(self.key, view["hawb"], r) else None


def reason(view: ParcelView, rate: float, policy: SamplingPolicy) -> str:
    """What an analyst reads on a sampled parcel."""
    filer = (view.get("entry") or {}).get("filer_code", "?")
    return (
        f"compliance sample: selected at random for exam whatever its score "
        f"({policy.share:.2%} of parcels; filer {filer}'s entries at {rate:.2%} this week)"
    )
