"""The v1 record schemas (design.md) and their validation.

Records stay plain dicts because per-record objects cost more than the scoring itself at
tens of thousands of parcels per second. Validation is strict and every failure names the
field and the reason, because an analyst or a carrier's integrator has to be able to fix
the sender from the dead-letter record alone.

Each field rule is stated once and has two forms: a msgspec type (decoded and checked in C)
that accepts exactly the values already in normal form, and a Python check that normalises
(strips, upper-cases) or says in words why not. A record goes through the C decoder; only
one it refuses goes through the Python checks, which then name the field and the reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, Literal, NotRequired, TypedDict, cast

import msgspec
import orjson

SCHEMA_VERSION: Final = 1
MAX_RECORD_BYTES: Final = 256 * 1024
MAX_TEXT = 512
MAX_LINES = 999
MAX_VALUE_USD = 10_000_000.0
MAX_WEIGHT_KG = 5_000.0
MAX_PIECES = 10_000

ENTRY_TYPES: Final = frozenset({"86", "11", "01"})
OUTCOMES: Final = frozenset({"released", "seized_narcotics", "seized_ipr", "undervalued", "other"})
CATEGORIES: Final = ("fentanyl", "counterfeit", "undervaluation")
ACTIONS: Final = frozenset({"hold", "review", "sample"})
# the category each seizure outcome confirms (a release or "other" confirms none)
FINDINGS: Final = {
    "seized_narcotics": "fentanyl",
    "seized_ipr": "counterfeit",
    "undervalued": "undervaluation",
}

# ASCII only: Python's \d also matches other scripts' digits ("໒၃..." is not an HTS number)
_HAWB = re.compile(r"[A-Z0-9]{1,12}", re.ASCII)
_DIGITS11 = re.compile(r"\d{11}", re.ASCII)
_ENTRY_NUMBER = re.compile(r"[A-Z0-9]{3}\d{8}", re.ASCII)
_ALNUM3 = re.compile(r"[A-Z0-9]{3}", re.ASCII)
_ISO2 = re.compile(r"[A-Z]{2}", re.ASCII)
_IATA = re.compile(r"[A-Z]{3}", re.ASCII)
_PORT = re.compile(r"\d{4}", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_HTS_ANY = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2})?)?)?", re.ASCII)
_HTS10 = re.compile(r"\d{10}", re.ASCII)


class RecordError(ValueError):
    """A record that cannot be used: which field and why (the dead-letter reason)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


Record = dict[str, Any]
Check = Callable[[Any, str], Any]
Scan = Callable[[Any, list[str]], int]


@dataclass(frozen=True)
class Rule:
    """One field's rule: `check` normalises a value or says why not; `typ` is the msgspec
    type of the values `check` returns unchanged, in plain JSON (`_plain`: its strings
    have no whitespace at either end). `exact`: `typ` (with `code`, for a code field) is the
    whole rule (else `check` also runs on what the C decoder accepted)."""

    check: Check
    typ: Any
    exact: bool = True
    code: str = ""  # a code field's tag: its pattern (`_code`), checked by `_codes_match`
    # objects and lists of them: the keys in a value, and its codes appended (tag, code)
    scan: Scan | None = None


# Codes (waybills, entry numbers, country codes...) are matched all at once per record:
# one regular expression over `tag, code, ...` joined by _SEP, where each tag names its
# code's pattern, instead of one call into Python's `re` per field from the C decoder.
_SEP: Final = "\x1f"
_TAGS: dict[str, str] = {}  # pattern -> tag


def _code(rx: re.Pattern[str]) -> str:
    """The tag of a code pattern."""
    return _TAGS.setdefault(rx.pattern, chr(ord("a") + len(_TAGS)))


def mawb_check_digit(serial7: str) -> int:
    """IATA air waybill check digit: the 7-digit serial modulo 7."""
    return int(serial7) % 7


def entry_check_digit(filer: str, serial7: str) -> int:
    """CBP entry-number check digit (mod-10 Luhn over the filer code and serial).

    Letters in the filer code count as their position in the alphabet, as CBP's
    ACE/ABI check does for alphanumeric filer codes.
    """
    digits = [int(c) if c.isdigit() else (ord(c) - 55) % 10 for c in filer + serial7]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


# -- field checks: each returns the (possibly normalised) value or raises RecordError ----------


def _text(max_len: int = MAX_TEXT, min_len: int = 1) -> Rule:
    def check(v: Any, f: str) -> str:
        if not isinstance(v, str):
            raise RecordError(f, f"expected a string, got {_typename(v)}")
        s = v.strip()
        if len(s) < min_len:
            raise RecordError(f, "is empty")
        if len(s) > max_len:
            raise RecordError(f, f"too long ({len(s)} characters, at most {max_len})")
        return s

    return Rule(check, Annotated[str, msgspec.Meta(min_length=min_len, max_length=max_len)])


def _pattern(rx: re.Pattern[str], what: str) -> Rule:
    """Codes: upper-cased and stripped, then matched (the patterns are upper case and ASCII)."""

    def check(v: Any, f: str) -> str:
        if not isinstance(v, str):
            raise RecordError(f, f"expected a string, got {_typename(v)}")
        s = v.strip().upper()
        if not rx.fullmatch(s):
            raise RecordError(f, f"{_clip(v)!r} is not {what}")
        return s

    return Rule(check, str, code=_code(rx))


def _number(lo: float, hi: float, lo_open: bool = False) -> Rule:
    def check(v: Any, f: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise RecordError(f, f"expected a number, got {_typename(v)}")
        x = float(v)
        if not math.isfinite(x):
            raise RecordError(f, "is not a finite number")
        if x < lo or (lo_open and x == lo):
            raise RecordError(f, f"{x:g} is absurd (must be {'>' if lo_open else '>='} {lo:g})")
        if x > hi:
            raise RecordError(f, f"{x:g} is absurd (at most {hi:g})")
        return x

    bounds = msgspec.Meta(gt=lo, le=hi) if lo_open else msgspec.Meta(ge=lo, le=hi)
    return Rule(check, Annotated[float, bounds])


def _integer(lo: int, hi: int) -> Rule:
    def check(v: Any, f: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise RecordError(f, f"expected an integer, got {_typename(v)}")
        if not lo <= v <= hi:
            raise RecordError(f, f"{v} is absurd (must be between {lo} and {hi})")
        return v

    return Rule(check, Annotated[int, msgspec.Meta(ge=lo, le=hi)])


# Event times before this are absurd (no parcel record of this system predates it)
EARLIEST_EVENT_TIME: Final = datetime(2000, 1, 1, tzinfo=UTC)


def _check_timestamp(v: Any, f: str) -> str:
    """An ISO 8601 instant: with a time zone, because a naive time is a different instant
    for every reader (and once crashed the scoring stage)."""
    if not isinstance(v, str):
        raise RecordError(f, f"expected an ISO 8601 timestamp string, got {_typename(v)}")
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise RecordError(f, f"{_clip(v)!r} is not an ISO 8601 timestamp") from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise RecordError(f, f"{_clip(v)!r} has no time zone (add Z or an offset such as +00:00)")
    if t < EARLIEST_EVENT_TIME:
        raise RecordError(f, f"{_clip(v)!r} is absurd (before {EARLIEST_EVENT_TIME.year})")
    return v


_timestamp = Rule(_check_timestamp, str, exact=False)


def event_epoch(rec: Record) -> float:
    """A validated record's event time, in seconds since the epoch."""
    return datetime.fromisoformat(rec["event_time"]).timestamp()


def _check_date(v: Any, f: str) -> str:
    if not isinstance(v, str):
        raise RecordError(f, f"expected an ISO 8601 date string, got {_typename(v)}")
    try:
        date.fromisoformat(v[:10])
    except ValueError:
        raise RecordError(f, f"{_clip(v)!r} is not an ISO 8601 date") from None
    return v


_date = Rule(_check_date, str, exact=False)


def _one_of(allowed: frozenset[str]) -> Rule:
    def check(v: Any, f: str) -> str:
        if not isinstance(v, str):
            raise RecordError(f, f"expected a string, got {_typename(v)}")
        if v not in allowed:
            raise RecordError(f, f"{_clip(v)!r} is not one of {', '.join(sorted(allowed))}")
        return v

    return Rule(check, cast(Any, Literal)[tuple(sorted(allowed))])


def _hts(rx: re.Pattern[str], what: str, dotted: bool = False) -> Rule:
    """`dotted`: codes that often come as 6404.19, normalised after the C decoder."""

    def check(v: Any, f: str) -> str:
        if not isinstance(v, str):
            raise RecordError(f, f"expected a string, got {_typename(v)}")
        s = v.replace(".", "").replace(" ", "")
        if not rx.fullmatch(s):
            raise RecordError(f, f"{_clip(v)!r} is not {what}")
        return s

    if dotted:
        return Rule(check, str, exact=False)
    return Rule(check, str, code=_code(rx))  # the pattern has no dots or spaces


def _obj(spec: Spec) -> Rule:
    def check(v: Any, f: str) -> Record:
        return _validate(v, spec, f + ".")

    codes = [(name, rule.code) for name, (rule, _req) in spec.items() if rule.code]
    nested = [(name, rule.scan) for name, (rule, _req) in spec.items() if rule.scan is not None]

    def scan(v: Record, out: list[str]) -> int:
        for name, tag in codes:
            x = v.get(name)
            if x is not None:
                out += (tag, x)
        n = len(v)
        for name, inner in nested:
            x = v.get(name)
            if x is not None:
                n += inner(x, out)
        return n

    exact = all(rule.exact for rule, _required in spec.values())
    return Rule(check, _typed_dict(spec), exact, scan=scan)


def _list_of(item: Rule, lo: int, hi: int) -> Rule:
    def check(v: Any, f: str) -> list[Any]:
        if not isinstance(v, list):
            raise RecordError(f, f"expected a list, got {_typename(v)}")
        if not lo <= len(v) <= hi:
            raise RecordError(f, f"has {len(v)} items (must have {lo} to {hi})")
        return [item.check(x, f"{f}[{i}]") for i, x in enumerate(v)]

    typ = Annotated[list[item.typ], msgspec.Meta(min_length=lo, max_length=hi)]  # type: ignore[name-defined]
    if item.code:
        raise ValueError("lists of codes are not scanned")  # none in the schemas
    inner = item.scan
    scan = None if inner is None else (lambda v, out: sum(inner(x, out) for x in v))
    return Rule(check, typ, item.exact, scan=scan)


def _typed_dict(spec: Spec) -> Any:
    """The msgspec type of a spec's objects: optional fields may be absent or null (as
    `_validate` allows); unknown fields are dropped, which the key count in `_typed` notices."""
    fields = {
        name: rule.typ if required else NotRequired[rule.typ | None]
        for name, (rule, required) in spec.items()
    }
    return TypedDict("Record", fields)  # type: ignore[operator]


def _typename(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(v), "null" if v is None else type(v).__name__
    )


def _clip(v: Any, n: int = 40) -> str:
    s = str(v)
    return s if len(s) <= n else s[:n] + "..."


# A spec maps field -> (rule, required).
Spec = Mapping[str, tuple[Rule, bool]]

_NAME = _text(200)
_PARTY_BASE: dict[str, tuple[Rule, bool]] = {
    "name": (_NAME, True),
    "address": (_text(300), True),
    "city": (_text(100), True),
    "country": (_pattern(_ISO2, "an ISO 3166 alpha-2 country code"), True),
}
SHIPPER: Spec = _PARTY_BASE
CONSIGNEE: Spec = {
    **_PARTY_BASE,
    "state": (_text(50), False),
    "zip": (_text(20), False),
}

MANIFEST: Spec = {
    "schema_version": (_integer(1, 1), True),
    "event_time": (_timestamp, True),
    "hawb": (_pattern(_HAWB, "a house air waybill (1-12 letters or digits)"), True),
    "mawb": (_pattern(_DIGITS11, "a master air waybill (11 digits)"), True),
    "carrier": (_text(100), True),
    "flight": (_text(10), True),
    "origin_airport": (_pattern(_IATA, "a 3-letter IATA airport code"), True),
    "arrival_port": (_pattern(_PORT, "a 4-digit CBP port code"), True),
    "arrival_date": (_date, True),
    "shipper": (_obj(SHIPPER), True),
    "consignee": (_obj(CONSIGNEE), True),
    "description": (_text(), True),
    "pieces": (_integer(1, MAX_PIECES), True),
    "weight_kg": (_number(0.0, MAX_WEIGHT_KG, lo_open=True), True),
    "declared_value": (_number(0.0, MAX_VALUE_USD), True),
    "currency": (_pattern(_CURRENCY, "an ISO 4217 currency code"), True),
    "hts": (_hts(_HTS_ANY, "an HS/HTS code of 4, 6, 8 or 10 digits", dotted=True), False),
}

ENTRY_LINE: Spec = {
    "hts": (_hts(_HTS10, "a 10-digit HTS number"), True),
    "description": (_text(), True),
    "country_of_origin": (_pattern(_ISO2, "an ISO 3166 alpha-2 country code"), True),
    "quantity": (_integer(1, 1_000_000), True),
    "value_usd": (_number(0.0, MAX_VALUE_USD), True),
}

ENTRY: Spec = {
    "schema_version": (_integer(1, 1), True),
    "event_time": (_timestamp, True),
    "entry_number": (
        _pattern(_ENTRY_NUMBER, "an entry number (3-character filer code, 8 digits)"),
        True,
    ),
    "entry_type": (_one_of(ENTRY_TYPES), True),
    "filer_code": (_pattern(_ALNUM3, "a 3-character filer code"), True),
    "hawb": (_pattern(_HAWB, "a house air waybill (1-12 letters or digits)"), True),
    "mawb": (_pattern(_DIGITS11, "a master air waybill (11 digits)"), True),
    "port_of_entry": (_pattern(_PORT, "a 4-digit CBP port code"), True),
    "estimated_arrival": (_date, False),  # required for Type 86 by policy (rules.py)
    "shipper": (_obj(SHIPPER), True),
    "consignee": (_obj(CONSIGNEE), True),
    "lines": (_list_of(_obj(ENTRY_LINE), 1, MAX_LINES), True),
    "seller": (_text(200), False),
    "marketplace": (_text(200), False),
    "listing_url": (_text(2000), False),
    "final_deliver_to": (_text(300), False),
}

DISPOSITION: Spec = {
    "schema_version": (_integer(1, 1), True),
    "event_time": (_timestamp, True),
    "hawb": (_pattern(_HAWB, "a house air waybill (1-12 letters or digits)"), True),
    "outcome": (_one_of(OUTCOMES), True),
    "examined_at": (_timestamp, True),
    "analyst": (_text(100), True),
    "note": (_text(2000, min_len=0), False),
}

_SCORES: Spec = {c: (_number(0.0, 1.0), True) for c in CATEGORIES}
HOLD: Spec = {
    "schema_version": (_integer(1, 1), True),
    "hawb": (_pattern(_HAWB, "a house air waybill (1-12 letters or digits)"), True),
    "entry_number": (Rule(lambda v, f: v, Any), False),
    "scores": (_obj(_SCORES), True),
    "category": (_one_of(frozenset(CATEGORIES)), True),
    "action": (_one_of(ACTIONS), True),
    "reasons": (_list_of(_text(500), 0, 50), True),
    "rules": (_list_of(_text(200), 0, 50), True),
    "model_version": (_text(100), True),
    "event_time": (_timestamp, True),
    "scored_at": (_timestamp, True),
}


def _validate(v: Any, spec: Spec, prefix: str = "") -> Record:
    if not isinstance(v, dict):
        raise RecordError(prefix.rstrip(".") or "record", f"expected an object, got {_typename(v)}")
    out: Record = dict(v)
    for name, (rule, required) in spec.items():
        if name not in v or v[name] is None:
            if required:
                raise RecordError(prefix + name, "missing required field")
            continue
        out[name] = rule.check(v[name], prefix + name)
    return out


def _extra_checks_manifest(r: Record) -> None:
    mawb = r["mawb"]
    if int(mawb[10]) != mawb_check_digit(mawb[3:10]):
        raise RecordError("mawb", f"check digit {mawb[10]} does not match serial {mawb[3:10]}")


def _extra_checks_entry(r: Record) -> None:
    _extra_checks_manifest(r)
    en = r["entry_number"]
    expected = entry_check_digit(en[:3], en[3:10])
    if int(en[10]) != expected:
        raise RecordError(
            "entry_number", f"check digit {en[10]} does not match (expected {expected})"
        )
    if en[:3] != r["filer_code"]:
        raise RecordError(
            "filer_code", f"{r['filer_code']!r} differs from the entry number's {en[:3]!r}"
        )


KINDS: Final = {
    "manifest": (MANIFEST, _extra_checks_manifest),
    "entry": (ENTRY, _extra_checks_entry),
    "disposition": (DISPOSITION, None),
    "hold": (HOLD, None),
}
_RECORDS: Final = {kind: _obj(spec) for kind, (spec, _extra) in KINDS.items()}
_DECODERS: Final = {kind: msgspec.json.Decoder(rule.typ) for kind, rule in _RECORDS.items()}
_CODES: Final = re.compile(
    "(?:(?:" + "|".join(f"{t}{_SEP}(?:{rx})" for rx, t in _TAGS.items()) + f"){_SEP})*",
    re.ASCII,
)
# the checks the C decoder cannot make (time zones, dates, dotted codes): run on what it
# accepted
_CHECKED_AFTER: Final = {
    kind: [(name, rule.check) for name, (rule, _required) in spec.items() if not rule.exact]
    for kind, (spec, _extra) in KINDS.items()
}


def validate(kind: str, obj: Any) -> Record:
    """Validate an already-decoded record of `kind`; returns the normalised record."""
    spec, extra = KINDS[kind]
    rec = _validate(obj, spec)
    if extra is not None:
        extra(rec)
    return rec


def decode(
    kind: str, raw: bytes | None, max_bytes: int = MAX_RECORD_BYTES, latest: float | None = None
) -> Record:
    """Bytes off the wire -> validated record, or RecordError saying why not.

    `latest` (epoch seconds): event times after it are refused. The worker passes the wall
    clock plus a tolerance: a record from the future is a sender's bug, and one such record
    must not reach the stages that reason about time.
    """
    if raw is None:
        raise RecordError("record", "empty message (no value)")
    if len(raw) > max_bytes:
        raise RecordError("record", f"too large ({len(raw)} bytes, at most {max_bytes})")
    rec = _typed(kind, raw)
    if rec is None:
        rec = _explained(kind, raw)
    if latest is not None and event_epoch(rec) > latest:
        ahead = datetime.fromtimestamp(latest, UTC).isoformat(timespec="seconds")
        raise RecordError(
            "event_time", f"{_clip(rec['event_time'])!r} is in the future (later than {ahead})"
        )
    return rec


# whitespace other than ASCII, which str.strip() removes too
_UNICODE_SPACE: Final = re.compile(
    rb"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80"
)


def _plain(raw: bytes) -> bool:
    """Compact JSON without escapes, as producers write it: no backslash, no line breaks or
    tabs (JSON strings cannot hold them raw), no space beside a quote, no Unicode space.
    Then no string has whitespace at either end, and `":` ends exactly the keys."""
    return not (
        b"\\" in raw
        or b"\n" in raw
        or b"\r" in raw
        or b"\t" in raw
        or b'" ' in raw
        or b' "' in raw
        or (not raw.isascii() and _UNICODE_SPACE.search(raw))
    )


def _typed(kind: str, raw: bytes) -> Record | None:
    """The record as the C decoder reads it, or None where the Python checks must decide:
    JSON that is not plain, a record the C decoder refuses, or keys in the bytes that it
    did not keep (unknown or repeated ones)."""
    if not _plain(raw):
        return None
    try:
        rec: Record = _DECODERS[kind].decode(raw)
    except (msgspec.MsgspecError, ValueError):  # ValueError: not UTF-8
        return None
    codes: list[str] = []
    if raw.count(b'":') != cast(Scan, _RECORDS[kind].scan)(rec, codes):
        return None
    if not _codes_match(codes):
        return None
    for name, check in _CHECKED_AFTER[kind]:
        if rec.get(name) is not None:
            rec[name] = check(rec[name], name)
    extra = KINDS[kind][1]
    if extra is not None:
        extra(rec)
    return rec


def _codes_match(codes: list[str]) -> bool:
    """Every code (tag, code, ...) matches its tag's pattern: one match over all of them. A
    code holding the separator would shift the others, so the separators are counted too."""
    joined = _SEP.join(codes) + _SEP
    return _CODES.fullmatch(joined) is not None and joined.count(_SEP) == len(codes)


def _explained(kind: str, raw: bytes) -> Record:
    """The Python path: parses, normalises, and raises RecordError naming the field."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "utf-8" in msg.lower() or "surrogate" in msg.lower():
            raise RecordError("record", "not valid UTF-8") from None
        if "depth limit" in msg.lower() or "recursion" in msg.lower():
            raise RecordError("record", "nested too deeply") from None
        raise RecordError("record", f"not valid JSON ({_clip(msg, 80)})") from None
    rec = validate(kind, obj)
    _check_unique_keys(raw, obj)
    return rec


_KEY_END: Final = re.compile(rb'"\s*:')


def _key_count(obj: Any) -> int:
    """Keys in all objects of a parsed value (iterative: nesting may be ~1000 deep)."""
    n, stack = 0, [obj]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            n += len(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return n


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise RecordError(k, "duplicate key (parsers disagree on which value counts)")
        seen[k] = v
    return seen


def _check_unique_keys(raw: bytes, obj: Any) -> None:
    """Refuse a repeated key: orjson keeps the last value, other readers the first.

    Fast path: without a backslash no string can hold a quote, so every `"` + `:` ends a
    key and their count equals the parsed key count exactly when no key repeats. Otherwise
    the slow, exact parse decides.
    """
    if b"\\" not in raw and len(_KEY_END.findall(raw)) == _key_count(obj):
        return
    try:
        json.loads(raw, object_pairs_hook=_refuse_duplicates)
    except RecursionError:
        raise RecordError("record", "nested too deeply") from None


def encode(rec: Mapping[str, Any]) -> bytes:
    """Records on the wire are compact UTF-8 JSON."""
    return orjson.dumps(rec, option=orjson.OPT_SERIALIZE_NUMPY)
