"""Targeting rules and policy, beside the model, from a TOML file analysts can edit.

Watch lists (shippers, consignee addresses, HS prefixes), de minimis policy (threshold,
entry types that may claim it, origins excluded from a date on) and analyst-written
conditions on a parcel's fields. A rule that matches forces a hold or a review and puts its
name on the decision. Policy changes: it lives here, not in code. A file with a mistake is
refused as a whole, naming the line and the reason, and the rules in force stay.

    [policy]
    de_minimis_usd = 800
    de_minimis_entry_types = ["86"]
    [[policy.excluded_origins]]
    countries = ["CN", "HK"]
    from = "2025-05-02"

    [[rule]]
    name = "tablet-press-parts"
    action = "hold"                 # hold | review
    category = "fentanyl"
    hs_prefix = ["847989", "847990"]

    [[rule]]
    name = "cheap-branded-goods"
    action = "review"
    category = "counterfeit"
    when = "declared_value_usd < 20 and desc_brand == 1 and origin in ('CN', 'HK')"
"""

from __future__ import annotations

import ast
import functools
import logging
import math
import operator
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from models import parcel
from models.features import FEATURES, INDEX
from models.filers import Thresholds, thresholds_from
from models.parcel import DE_MINIMIS_USD, ParcelView
from models.records import CATEGORIES, Record
from models.sampling import SamplingPolicy

log = logging.getLogger(__name__)
_T = TypeVar("_T")
ACTIONS = {"review": 1, "hold": 2}
FIELDS = (*FEATURES, "origin", "entry_type", "hs", "description", "carrier", "port")


class RulesError(ValueError):
    """A rules file that cannot be used: the line and the reason."""


class _KeyProblem(ValueError):
    """A problem with one key of a rule, so the error can point at that key's line."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


@dataclass(frozen=True)
class Match:
    rule: str
    action: str
    category: str
    reason: str


@dataclass(frozen=True)
class Rule:
    name: str
    action: str
    category: str
    shippers: frozenset[str] = frozenset()
    consignees: frozenset[str] = frozenset()
    hs_prefix: tuple[str, ...] = ()
    when: Callable[[Mapping[str, Any]], bool] | None = None
    when_text: str = ""
    # `when` over a batch's feature matrix, if it reads only numbers (else per parcel)
    when_columns: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass(frozen=True)
class Policy:
    de_minimis_usd: float = DE_MINIMIS_USD
    entry_types: frozenset[str] = frozenset({"86"})
    excluded: tuple[tuple[frozenset[str], date], ...] = ()
    # Section 321 checks, each from its date on (None: off): filed prior to or upon arrival,
    # with the estimated arrival, and one consignee's de minimis value a day in aggregate
    late_filing_from: date | None = None
    estimated_arrival_from: date | None = None
    daily_aggregate_usd: float | None = None


@dataclass(frozen=True)
class Trusted:
    """A trusted party (a C-TPAT filer or importer, a known shipper) over its dates."""

    name: str
    filers: frozenset[str] = frozenset()
    importers: frozenset[str] = frozenset()  # consignee address keys, as watch lists
    shippers: frozenset[str] = frozenset()
    start: date = date.min
    end: date = date.max  # inclusive


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    policy: Policy = field(default_factory=Policy)
    sampling: SamplingPolicy = field(default_factory=SamplingPolicy)
    trusted: tuple[Trusted, ...] = ()
    trust_factor: float = 1.0  # a trusted parcel's model hold thresholds, times this
    filers: Thresholds = field(default_factory=Thresholds)  # scorecard status

    def trust(self, view: ParcelView, keys: tuple[str, str] | None = None) -> str | None:
        """The trusted-party entry that applies to this parcel on its date, if any. `keys`:
        the parcel's shipper and consignee keys when the caller has them."""
        if not self.trusted:
            return None
        skey, ckey = keys or parcel.keys(view)
        entry = view.get("entry")
        filer = entry["filer_code"] if entry else None
        day = None  # read only for a party on a list: most parcels are on none
        for t in self.trusted:
            if filer in t.filers or ckey in t.importers or skey in t.shippers:
                day = day or datetime.fromisoformat(parcel.event_time(view)).date()
                if t.start <= day <= t.end:
                    return t.name
        return None

    def evaluate(
        self, view: ParcelView, features: Any, keys: tuple[str, str] | None = None
    ) -> list[Match]:
        """Every rule and policy check this parcel meets. `keys`: the parcel's shipper and
        consignee keys when the caller has them, else made from the view."""
        return self.evaluate_batch([view], features[np.newaxis], [keys] if keys else None)[0]

    def evaluate_batch(
        self,
        views: Sequence[ParcelView],
        X: np.ndarray,
        keys: Sequence[tuple[str, str]] | None = None,
    ) -> list[list[Match]]:
        """Every rule and policy check each parcel meets; `X`: their feature rows. Conditions
        that read only numbers run once on the batch's columns; a parcel's facts are made
        only for the others."""
        on_columns = [r.when_columns(X).tolist() if r.when_columns else None for r in self.rules]
        per_parcel = any(r.when is not None and r.when_columns is None for r in self.rules)
        values = X[:, INDEX["declared_value_usd"]].tolist()
        out: list[list[Match]] = []
        for i, view in enumerate(views):
            facts = _facts(view, X[i]) if per_parcel else {}
            hs = parcel.hs_code(view)
            skey, ckey = keys[i] if keys else parcel.keys(view)
            found: list[Match] = []
            for r, hits in zip(self.rules, on_columns, strict=True):
                why = ""
                if r.shippers and skey in r.shippers:
                    why = f"shipper on watch list '{r.name}'"
                elif r.consignees and ckey in r.consignees:
                    why = f"consignee address on watch list '{r.name}'"
                elif r.hs_prefix and hs and hs.startswith(r.hs_prefix):
                    why = f"HS {hs[:6]} on watch list '{r.name}'"
                elif r.when is not None and (hits[i] if hits is not None else _safe(r.when, facts)):
                    why = f"rule '{r.name}': {r.when_text}"
                if why:
                    found.append(Match(r.name, r.action, r.category, why))
            found.extend(self._de_minimis(view, values[i]))
            out.append(found)
        return out

    def _de_minimis(self, view: ParcelView, value: float) -> list[Match]:
        """`value`: the parcel's declared_value_usd feature."""
        entry = view.get("entry")
        if entry is None or entry["entry_type"] not in self.policy.entry_types:
            return []
        day = datetime.fromisoformat(entry["event_time"]).date()
        return [
            *self._eligibility(day, entry, parcel.parties(view)[0]["country"], value),
            *self._filing(view, day, entry),
            *self._aggregate(view, entry),
        ]

    def _filing(self, view: ParcelView, day: date, entry: Record) -> list[Match]:
        """Filed prior to or upon arrival (89 FR 2630), with the estimated arrival (CSMS
        61421135): a day after the manifest's arrival date or the entry's own estimate is
        late."""
        p, out = self.policy, []
        eta = entry.get("estimated_arrival")
        if p.estimated_arrival_from is not None and day >= p.estimated_arrival_from and not eta:
            out.append(
                Match(
                    "t86_no_eta",
                    "review",
                    "undervaluation",
                    f"type {entry['entry_type']} entry {entry['entry_number']} filed without "
                    "its estimated arrival",
                )
            )
        if p.late_filing_from is None or day < p.late_filing_from:
            return out
        manifest = view.get("manifest")
        arrivals = [("manifest arrival", manifest["arrival_date"])] if manifest else []
        arrivals += [("its estimated arrival", eta)] if eta else []
        for what, arrival in arrivals:
            if day > date.fromisoformat(arrival[:10]):
                out.append(
                    Match(
                        "late_t86",
                        "review",
                        "undervaluation",
                        f"ineligible for de minimis: type {entry['entry_type']} entry "
                        f"{entry['entry_number']} filed {day.isoformat()}, after {what} "
                        f"{arrival[:10]}",
                    )
                )
                break
        return out

    def _aggregate(self, view: ParcelView, entry: Record) -> list[Match]:
        """One consignee's de minimis value a day in aggregate (CSMS 61264910): the day's
        other parcels (consignee history) and this one."""
        limit = self.policy.daily_aggregate_usd
        before = (view.get("consignee_history") or {}).get("value_today", 0.0)
        value = parcel.entry_value_usd(entry)
        if limit is None or not before or before + value <= limit:
            return []
        return [
            Match(
                "de_minimis_aggregate",
                "review",
                "undervaluation",
                f"consignee's de minimis value today ${before + value:,.2f} "
                f"(${before:,.2f} before this ${value:,.2f} parcel) over ${limit:,.0f}",
            )
        ]

    def _eligibility(self, day: date, entry: Record, origin: str, value: float) -> list[Match]:
        for countries, since in self.policy.excluded:
            if day >= since and ("*" in countries or origin in countries):
                return [
                    Match(
                        "de-minimis-ineligible",
                        "review",
                        "undervaluation",
                        f"ineligible for de minimis: origin {origin} excluded since "
                        f"{since.isoformat()}, filed as type {entry['entry_type']}",
                    )
                ]
        if value == value and value > self.policy.de_minimis_usd:
            return [
                Match(
                    "de-minimis-ineligible",
                    "review",
                    "undervaluation",
                    f"ineligible for de minimis: declared ${value:,.2f} over "
                    f"${self.policy.de_minimis_usd:,.0f}",
                )
            ]
        return []


def _facts(view: ParcelView, features: Any) -> dict[str, Any]:
    """What a condition can name: the features, and a few facts of the parcel's own."""
    entry, manifest = view.get("entry"), view.get("manifest")
    facts: dict[str, Any] = dict(zip(FEATURES, features.tolist(), strict=True))
    facts.update(
        origin=parcel.parties(view)[0]["country"],
        hs=parcel.hs_code(view),
        entry_type=entry["entry_type"] if entry else "",
        description=parcel.description(view).lower(),
        carrier=manifest["carrier"] if manifest else "",
        port=entry["port_of_entry"] if entry else parcel.primary(view)["arrival_port"],
    )
    return facts


def _safe(check: Callable[[Mapping[str, Any]], bool], facts: Mapping[str, Any]) -> bool:
    try:
        return bool(check(facts))
    except (TypeError, ValueError):
        return False  # a comparison with a missing value is not a match


# -- the condition language: comparisons, and/or/not, in, literals, field names --------------

_CMP = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def compile_condition(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """A condition string -> a function of the parcel's facts; ValueError if not allowed."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a condition ({exc.msg})") from None
    return _compile(tree.body)


def _compile(node: ast.AST) -> Callable[[Mapping[str, Any]], Any]:
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda f: all(p(f) for p in parts)
        return lambda f: any(p(f) for p in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _compile(node.operand)
        return lambda f: not inner(f)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _compile(node.operand)
        return lambda f: -inner(f)
    if isinstance(node, ast.Compare):
        left = _compile(node.left)
        pairs = [
            (_CMP[type(op)], _compile(c))
            for op, c in zip(node.ops, node.comparators, strict=True)
            if type(op) in _CMP
        ]
        if len(pairs) != len(node.ops):
            raise ValueError("only ==, !=, <, <=, >, >=, in, not in compare")

        def compare(f: Mapping[str, Any]) -> bool:
            a = left(f)
            for op, right in pairs:
                b = right(f)
                if isinstance(a, float) and math.isnan(a):
                    return False
                if not op(a, b):
                    return False
                a = b
            return True

        return compare
    if isinstance(node, ast.Name):
        if node.id not in FIELDS:
            raise ValueError(f"unknown field {node.id!r}")
        name = node.id
        return lambda f: f[name]
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str):
        value = node.value
        return lambda f: value
    if isinstance(node, ast.Tuple | ast.List):
        items = [_compile(e) for e in node.elts]
        return lambda f: tuple(i(f) for i in items)
    raise ValueError(f"{type(node).__name__} is not allowed in a condition")


Column = Callable[[np.ndarray], np.ndarray]


def column_condition(text: str) -> Column | None:
    """A valid condition -> the same test over a batch's feature matrix (a bool per row),
    if it reads only numeric features and numbers; None if it names a text field or could
    raise per parcel (a tuple outside `in`): those are evaluated per parcel on its facts."""
    col = _column(ast.parse(text, mode="eval").body)
    return None if col is None else (lambda X: _truth(col(X)))


def _truth(v: np.ndarray) -> np.ndarray:
    """Python's truth of each value: NaN is true, as bool(nan) is."""
    return v if v.dtype == np.bool_ else v != 0


def _number(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float64) if v.dtype == np.bool_ else v


def _column(node: ast.AST) -> Column | None:
    """`_compile`'s meaning on columns: and/or/not on truth values, a comparison is false
    from a NaN on its left on, `in` tests equality with each item. Every value is a float64
    (features are float32, exactly widened) or a bool."""
    if isinstance(node, ast.BoolOp):
        parts = [_column(v) for v in node.values]
        if any(p is None for p in parts):
            return None
        join = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        return lambda X: functools.reduce(join, [_truth(p(X)) for p in parts])  # type: ignore[misc]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        inner = _column(node.operand)
        if inner is None:
            return None
        if isinstance(node.op, ast.Not):
            return lambda X: ~_truth(inner(X))
        return lambda X: -_number(inner(X))
    if isinstance(node, ast.Compare):
        return _compare_columns(node)
    if isinstance(node, ast.Name) and node.id in INDEX:
        j = INDEX[node.id]
        return lambda X: X[:, j].astype(np.float64)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, int) and abs(node.value) > 2**53:
            return None  # not exactly a float: Python compares it exactly, numpy would not
        value = float(node.value)
        return lambda X: np.full(len(X), value)
    return None


def _compare_columns(node: ast.Compare) -> Column | None:
    left = _column(node.left)
    pairs: list[tuple[type[ast.cmpop], list[Column]]] = []
    for k, (op, c) in enumerate(zip(node.ops, node.comparators, strict=True)):
        if isinstance(op, ast.In | ast.NotIn) != isinstance(c, ast.Tuple | ast.List):
            return None  # `x in 3` or `x < (1, 2)`: a TypeError per parcel
        if isinstance(c, ast.Tuple | ast.List) and k < len(node.ops) - 1:
            return None  # a tuple as the next comparison's left side
        elts = c.elts if isinstance(c, ast.Tuple | ast.List) else [c]
        cols = [_column(e) for e in elts]
        if any(col is None for col in cols):
            return None
        pairs.append((type(op), cast(list[Column], cols)))
    if left is None:
        return None

    def compare(X: np.ndarray) -> np.ndarray:
        a = _number(left(X))
        out = np.ones(len(X), dtype=bool)
        for op, cols in pairs:
            values = [_number(col(X)) for col in cols]
            if op is ast.In or op is ast.NotIn:
                found = np.zeros(len(X), dtype=bool)
                for b in values:
                    found |= a == b
                met = found if op is ast.In else ~found
            else:
                met = _CMP[op](a, values[0])
            out &= ~np.isnan(a) & met
            a = values[0]
        return out

    return compare


# -- loading ------------------------------------------------------------------------------


def _rule_lines(text: str) -> list[int]:
    return [
        i + 1
        for i, line in enumerate(text.splitlines())
        if re.match(r"\s*\[\[\s*rule\s*\]\]", line)
    ]


def _key_line(lines: list[str], start: int, key: str) -> int:
    """The line of `key = ...` in the rule block that starts at index `start`."""
    for n in range(start, len(lines)):
        if n > start and re.match(r"\s*\[", lines[n]):
            break
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[n]):
            return n + 1
    return start + 1


def parse(text: str, source: str = "rules") -> RuleSet:
    """Parse and check a rules file; RulesError names the line and the reason."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: {exc}") from None
    starts = _rule_lines(text)
    text_lines = text.splitlines()
    rules, names = [], set()
    for k, r in enumerate(doc.get("rule", [])):
        start = starts[k] if k < len(starts) else 0
        where = f"{source}:{start}"
        try:
            rules.append(_rule(r))
        except _KeyProblem as exc:
            line = _key_line(text_lines, start - 1, exc.key) if start else "?"
            raise RulesError(
                f"{source}:{line}: rule {r.get('name', '#' + str(k + 1))!r}: {exc}"
            ) from None
        except ValueError as exc:
            raise RulesError(f"{where}: rule {r.get('name', '#' + str(k + 1))!r}: {exc}") from None
        if r["name"] in names:
            raise RulesError(f"{where}: rule name {r['name']!r} used twice")
        names.add(r["name"])

    def section(marker: str, label: str, read: Callable[[], _T]) -> _T:
        try:
            return read()
        except (ValueError, TypeError, KeyError) as exc:
            line = next((i + 1 for i, s in enumerate(text_lines) if marker in s), "?")
            raise RulesError(f"{source}:{line}: {label}: {exc}") from None

    policy = section("policy", "policy", lambda: _policy(doc.get("policy", {})))
    sampling = section("[sampling]", "sampling", lambda: _sampling(doc.get("sampling", {})))
    trusted, factor = section("trust", "trusted parties", lambda: _trust(doc))
    filers = section("[filers]", "filers", lambda: thresholds_from(doc.get("filers", {})))
    return RuleSet(tuple(rules), policy, sampling, trusted, factor, filers)


def _rule(r: Mapping[str, Any]) -> Rule:
    allowed = {"name", "action", "category", "shippers", "consignee_addresses", "hs_prefix", "when"}
    unknown = set(r) - allowed
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    if not isinstance(r.get("name"), str) or not r["name"]:
        raise ValueError("needs a name")
    if r.get("action") not in ACTIONS:
        raise _KeyProblem("action", f"action must be hold or review, not {r.get('action')!r}")
    if r.get("category") not in CATEGORIES:
        raise _KeyProblem("category", f"category must be one of {', '.join(CATEGORIES)}")
    shippers = frozenset(parcel.shipper_key(*_split(s)) for s in r.get("shippers", []))
    consignees = frozenset(
        parcel.consignee_key(*_split(c)) for c in r.get("consignee_addresses", [])
    )
    prefixes = tuple(p.replace(".", "") for p in r.get("hs_prefix", []))
    if any(not p.isdigit() or not 2 <= len(p) <= 10 for p in prefixes):
        raise _KeyProblem("hs_prefix", "hs_prefix entries must be 2 to 10 digits")
    when_text = r.get("when", "")
    try:
        when = compile_condition(when_text) if when_text else None
    except ValueError as exc:
        raise _KeyProblem("when", str(exc)) from None
    if not (shippers or consignees or prefixes or when):
        raise ValueError("matches nothing: give shippers, consignee_addresses, hs_prefix or when")
    columns = column_condition(when_text) if when_text else None
    return Rule(
        r["name"],
        r["action"],
        r["category"],
        shippers,
        consignees,
        prefixes,
        when,
        when_text,
        columns,
    )


def _split(entry: str) -> tuple[str, str]:
    """'Name|CC' (shipper and country) or 'address|zip'."""
    if "|" not in entry:
        raise ValueError(f"{entry!r}: write 'name|country' or 'address|zip'")
    a, b = entry.rsplit("|", 1)
    return a, b


def _policy(p: Mapping[str, Any]) -> Policy:
    excluded = tuple(
        (frozenset(x["countries"]), date.fromisoformat(str(x["from"])))
        for x in p.get("excluded_origins", [])
    )
    unknown = set(p) - {
        "de_minimis_usd",
        "de_minimis_entry_types",
        "excluded_origins",
        "late_filing_from",
        "estimated_arrival_from",
        "daily_aggregate_usd",
    }
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    aggregate = p.get("daily_aggregate_usd")
    return Policy(
        float(p.get("de_minimis_usd", 800.0)),
        frozenset(p.get("de_minimis_entry_types", ["86"])),
        excluded,
        _day(p.get("late_filing_from")),
        _day(p.get("estimated_arrival_from")),
        float(aggregate) if aggregate is not None else None,
    )


def _trust(doc: Mapping[str, Any]) -> tuple[tuple[Trusted, ...], float]:
    trust = doc.get("trust", {})
    if set(trust) - {"factor"}:
        raise ValueError(f"unknown keys {sorted(set(trust) - {'factor'})}")
    factor = float(trust.get("factor", 1.0))
    if factor < 1.0:
        raise ValueError(f"factor must be >= 1 (trust never lowers a threshold), not {factor}")
    return tuple(_trusted(t) for t in doc.get("trusted", [])), factor


def _trusted(t: Mapping[str, Any]) -> Trusted:
    unknown = set(t) - {"name", "filers", "importers", "shippers", "from", "until"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    if not isinstance(t.get("name"), str) or not t["name"]:
        raise ValueError("each trusted party needs a name")
    filers = frozenset(str(f).upper() for f in t.get("filers", []))
    importers = frozenset(parcel.consignee_key(*_split(c)) for c in t.get("importers", []))
    shippers = frozenset(parcel.shipper_key(*_split(x)) for x in t.get("shippers", []))
    if not (filers or importers or shippers):
        raise ValueError(f"{t['name']!r} names no filers, importers or shippers")
    return Trusted(
        t["name"],
        filers,
        importers,
        shippers,
        _day(t.get("from")) or date.min,
        _day(t.get("until")) or date.max,
    )


def _sampling(p: Mapping[str, Any]) -> SamplingPolicy:
    unknown = set(p) - {"share", "min_per_week"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    default = SamplingPolicy()
    share = float(p.get("share", default.share))
    minimum = p.get("min_per_week", default.min_per_week)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, not {share}")
    if not isinstance(minimum, int) or minimum < 0:
        raise ValueError(f"min_per_week must be a whole number >= 0, not {minimum!r}")
    return SamplingPolicy(share, minimum)


def _day(value: Any) -> date | None:
    return date.fromisoformat(str(value)) if value is not None else None


class RulesFile:
    """The rules in force, reloaded when the file changes; a bad edit keeps the old ones,
    and says so in the log (the operator who edited it reads the log, not the worker)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.mtime = -1.0
        self.rules = RuleSet()
        self.last_error = ""
        if path is not None:
            try:
                text = path.read_text()
            except OSError as exc:  # e.g. the source tree's default, missing where installed
                raise RulesError(
                    f"{path}: cannot read the rules file ({exc.strerror}); point "
                    "PARCEL_RISK_RULES at one (deploy/rules.toml), or set it empty for the "
                    "model alone"
                ) from None
            self.rules = parse(text, str(path))  # refuse to start on a bad file
            self.mtime = path.stat().st_mtime

    def refresh(self) -> str | None:
        """Reload if changed; returns 'success', 'failure' or None (unchanged)."""
        if self.path is None:
            return None
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self.mtime:
                return None
            self.mtime = mtime
            self.rules = parse(self.path.read_text(), str(self.path))
        except (OSError, RulesError) as exc:
            self.last_error = str(exc)
            log.error("rules not reloaded, the old ones stay: %s", exc)
            return "failure"
        self.last_error = ""
        log.warning("rules reloaded from %s: %d rules", self.path, len(self.rules.rules))
        return "success"


def merge(
    actions: list[str | None], categories: list[str | None], matches: list[list[Match]]
) -> tuple[list[str | None], list[str | None]]:
    """The stronger of the model's and the rules' action wins; rules never weaken a hold."""
    actions, categories = list(actions), list(categories)
    for i, ms in enumerate(matches):
        for m in ms:
            if ACTIONS[m.action] > ACTIONS.get(actions[i] or "", 0):
                actions[i], categories[i] = m.action, m.category
    return actions, categories


class HoldCap:
    """At most `per_hour` model-driven holds per category per hour, as exams allow.

    Beyond the cap a hold becomes a review (never dropped). Counts are per worker: with N
    workers sharing the traffic, set the cap to capacity / N.
    """

    def __init__(self, per_hour: int) -> None:
        self.per_hour = per_hour
        self.counts: dict[tuple[str, int], int] = {}

    def admit(self, category: str, hour: int) -> bool:
        if self.per_hour <= 0:
            return True
        key = (category, hour)
        if self.counts.get(key, 0) >= self.per_hour:
            return False
        self.counts[key] = self.counts.get(key, 0) + 1
        if len(self.counts) > 4 * len(CATEGORIES):  # forget old hours
            for old in sorted(self.counts, key=lambda k: k[1])[: len(CATEGORIES)]:
                del self.counts[old]
        return True
