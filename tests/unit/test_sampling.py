"""Compliance sampling: keyed, stratified by filer, within its share, the same on a replay."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from models.sampling import (
    SamplingPolicy,
    draw,
    rate_of,
    rates,
    selected,
    violation_rate,
    week,
    wilson,
)
from models.synthetic import FILERS

KEY = b"test sampling key"


def _traffic(n: int, seed: int) -> list[tuple[str, str]]:
    """(HAWB, filer) for n entries, filers by the generator's shares."""
    rng = np.random.default_rng(seed)
    p = np.array([f.weight for f in FILERS])
    picks = rng.choice(len(FILERS), size=n, p=p / p.sum())
    return [(f"H{seed}X{i:07d}", FILERS[k].code) for i, k in enumerate(picks)]


def test_over_100k_parcels_the_share_holds_and_every_filer_gets_its_minimum() -> None:
    policy = SamplingPolicy()
    last_week = Counter(f for _, f in _traffic(100_000, seed=1))
    week_rates = rates(last_week, policy)
    parcels = _traffic(100_000, seed=2)
    sample = [(h, f) for h, f in parcels if selected(KEY, h, rate_of(f, week_rates, policy))]
    assert abs(len(sample) / len(parcels) - policy.share) < 0.1 * policy.share
    per_filer = Counter(f for _, f in sample)
    assert all(per_filer[f.code] >= policy.min_per_week for f in FILERS), per_filer
    # a replay, in another order, selects the same HAWBs
    again = [h for h, f in reversed(parcels) if selected(KEY, h, rate_of(f, week_rates, policy))]
    assert sorted(again) == sorted(h for h, _ in sample)


def test_small_filers_are_raised_and_the_rest_pay_for_it() -> None:
    policy = SamplingPolicy(share=0.01, min_per_week=2)
    r = rates({"BIG": 10_000, "MID": 2_000, "TNY": 50}, policy)
    assert r["TNY"] * 50 >= 6  # expected ~6.6: fewer than 2 in one week in a hundred
    assert r["BIG"] == r["MID"] < 0.01
    assert 10_000 * r["BIG"] + 2_000 * r["MID"] + 50 * r["TNY"] == pytest.approx(120.5)
    assert rates({"ONE": 3}, policy) == {"ONE": 1.0}  # everything, not more
    assert rate_of("NEW", r, policy) == r["MID"]  # unseen last week: a median filer's rate
    assert rate_of("NEW", {}, policy) == policy.share


def test_the_draw_is_keyed_uniform_and_stable() -> None:
    draws = [draw(KEY, f"H{i}") for i in range(20_000)]
    assert 0.49 < float(np.mean(draws)) < 0.51 and min(draws) >= 0 and max(draws) < 1
    assert draw(KEY, "H1") == draw(KEY, "H1") != draw(b"another key", "H1")


def test_weeks_start_on_monday() -> None:
    monday = 1_764_547_200.0  # 2025-12-01 00:00 UTC, a Monday
    assert week(monday) == week(monday + 7 * 86_400 - 1) == week(monday - 1) + 1


def test_violation_rate_is_weighted_by_sampling_rate_with_wilson_interval() -> None:
    low, high = wilson(8, 40)
    assert low == pytest.approx(0.105, abs=0.001) and high == pytest.approx(0.348, abs=0.001)
    plain = violation_rate([(True, 0.01)] * 8 + [(False, 0.01)] * 32)
    assert (plain.violative, plain.examined, plain.rate) == (8, 40, 0.2)
    assert (plain.low, plain.high) == pytest.approx((low, high))
    # a small filer sampled at 10x the rate counts a tenth as much
    mixed = violation_rate([(True, 0.1)] * 10 + [(False, 0.01)] * 10)
    assert mixed.rate == pytest.approx(1 / 11)
    assert violation_rate([]).examined == 0


def _view(hawb: str, filer: str, day: str) -> dict:
    return {
        "hawb": hawb,
        "entry": {"filer_code": filer, "event_time": f"{day}T12:00:00+00:00"},
    }


def test_the_worker_sampler_reads_the_boards_counts_of_the_week_before() -> None:
    """A small filer gets its minimum from the previous week's counts on the board; a
    board with no counts (a worker that has read no scorecard) samples at the flat share;
    late counts of the week before change the week's rates; two boards that agree select
    the same HAWBs."""
    from models.filers import Board
    from models.sampling import Sampler

    policy = SamplingPolicy(share=0.01, min_per_week=2)
    next_monday = "2025-03-10"
    w = week(1_740_960_000.0)  # 2025-03-03 00:00 UTC: the week before
    board = Board()
    sampler = Sampler(KEY, board.entries_in, board.version)
    parcels = [_view(f"T{i}", "TNY", next_monday) for i in range(50)]
    parcels += [_view(f"B{i}", "BIG", next_monday) for i in range(5_000)]

    def chosen(s: Sampler) -> dict[str, float]:
        return {v["hawb"]: r for v in parcels if (r := s.rate(v, policy)) is not None}

    flat = chosen(sampler)
    assert set(flat.values()) == {policy.share}  # empty board: every filer at the share
    board.update("BIG", {"weeks": {str(w): 5_000}})
    board.update("TNY", {"weeks": {str(w): 50}})
    live = chosen(sampler)  # the counts changed: the rates are computed again
    tiny = [h for h in live if h.startswith("T")]
    assert len(tiny) >= policy.min_per_week and live[tiny[0]] == pytest.approx(
        rates({"BIG": 5_000, "TNY": 50}, policy)["TNY"]
    )
    assert abs(len(live) - policy.share * 5_050) < 25
    other = Board()
    other.update("TNY", {"weeks": {str(w): 50}})
    other.update("BIG", {"weeks": {str(w): 5_000}})  # another order, the same counts
    assert chosen(Sampler(KEY, other.entries_in, other.version)) == live
