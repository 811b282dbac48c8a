"""The v1 schemas: good records pass, bad ones fail naming the field and the reason."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.records import (
    _SEP,
    RecordError,
    _codes_match,
    _explained,
    decode,
    encode,
    entry_check_digit,
    mawb_check_digit,
    validate,
)
from tests.samples import ENTRY, MANIFEST


def test_good_manifest_decodes_and_normalises_hts() -> None:
    rec = decode("manifest", encode(MANIFEST))
    assert rec["hawb"] == "HX12345678"
    assert rec["hts"] == "640411"  # dots removed


def test_good_entry_decodes() -> None:
    rec = decode("entry", encode(ENTRY))
    assert rec["lines"][0]["value_usd"] == 24.5


def _broken(base: dict[str, Any], path: str, value: Any) -> bytes:
    rec = copy.deepcopy(base)
    node = rec
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is KeyError:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return orjson.dumps(rec)


def _digits(ascii_digits: str, zero: int) -> str:
    """The same number in another script's digits (which Python's \\d also matches)."""
    return "".join(chr(zero + int(c)) for c in ascii_digits)


@pytest.mark.parametrize(
    ("kind", "path", "value", "field", "words"),
    [
        ("manifest", "weight_kg", -1.0, "weight_kg", "absurd"),
        ("manifest", "weight_kg", "heavy", "weight_kg", "expected a number"),
        ("manifest", "declared_value", 3e9, "declared_value", "absurd"),
        ("manifest", "hts", "640", "hts", "not an HS/HTS code"),
        ("manifest", "hawb", KeyError, "hawb", "missing required field"),
        ("manifest", "mawb", "78412345670", "mawb", "check digit"),
        ("manifest", "shipper.country", "China", "shipper.country", "ISO 3166"),
        ("manifest", "pieces", True, "pieces", "expected an integer"),
        ("manifest", "event_time", "yesterday", "event_time", "ISO 8601"),
        ("entry", "lines.0.hts", "6404", "lines[0].hts", "10-digit"),
        ("entry", "entry_type", "99", "entry_type", "not one of"),
        ("entry", "lines", [], "lines", "must have 1"),
        ("entry", "entry_number", "AB100123450", "entry_number", "check digit"),
        # issue 15: valid in form, absurd or ambiguous in meaning
        ("manifest", "event_time", "2026-06-01T10:00:00", "event_time", "no time zone"),
        ("manifest", "event_time", "1970-01-01T00:00:00Z", "event_time", "absurd"),
        ("entry", "event_time", "2026-06-01T10:00", "event_time", "no time zone"),
        # digits of other scripts: full-width, Devanagari, Arabic-Indic
        ("entry", "lines.0.hts", _digits("6404110000", 0xFF10), "lines[0].hts", "10-digit"),
        ("entry", "port_of_entry", _digits("2720", 0x0966), "port_of_entry", "4-digit"),
        ("manifest", "mawb", _digits("78412345675", 0x0660), "mawb", "11 digits"),
    ],
)
def test_bad_field_is_named(kind: str, path: str, value: Any, field: str, words: str) -> None:
    base = MANIFEST if kind == "manifest" else ENTRY
    with pytest.raises(RecordError) as info:
        decode(kind, _broken(base, path, value))
    assert info.value.field == field
    assert words in info.value.reason


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"hawb": "\xff\xfe"}', "UTF-8"),
        (b"[1, 2]", "expected an object"),
        (None, "empty message"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"weight_kg": NaN}', "not valid JSON"),
    ],
)
def test_undecodable_bytes(raw: bytes | None, words: str) -> None:
    with pytest.raises(RecordError) as info:
        decode("manifest", raw)
    assert info.value.field == "record"
    assert words in info.value.reason


def test_too_large_is_refused_before_parsing() -> None:
    with pytest.raises(RecordError, match="too large"):
        decode("manifest", b" " * 1000 + encode(MANIFEST), max_bytes=500)


@pytest.mark.parametrize(
    "raw",
    [
        encode(MANIFEST)[:-1] + b',"hawb":"OTHER1"}',  # top level
        encode(MANIFEST)[:-1] + b', "hawb" : "OTHER1"}',  # with whitespace
        encode(ENTRY).replace(b'"value_usd":', b'"value_usd":1,"value_usd":', 1),  # nested
        encode({**MANIFEST, "note": 'a \\"quoted\\" word'})[:-1] + b',"hawb":"X1"}',
    ],
)
def test_duplicate_keys_are_refused(raw: bytes) -> None:
    """Readers disagree on which of two values counts, so neither may."""
    kind = "entry" if b"entry_number" in raw and b"lines" in raw else "manifest"
    with pytest.raises(RecordError, match="duplicate key"):
        decode(kind, raw)


@given(st.text(alphabet='ab":\\ ,{}', max_size=30))
def test_strings_that_look_like_keys_are_not_duplicates(text: str) -> None:
    """A value holding quotes, colons and backslashes never trips the duplicate check."""
    assert decode("manifest", encode({**MANIFEST, "note": text, "extra": {"k": text}}))


def test_disposition_outcome_checked() -> None:
    d = {
        "schema_version": 1,
        "event_time": "2025-03-05T00:00:00Z",
        "hawb": "HX1",
        "outcome": "seized_ipr",
        "examined_at": "2025-03-04T10:00:00Z",
        "analyst": "a.b",
    }
    assert validate("disposition", d)["outcome"] == "seized_ipr"
    with pytest.raises(RecordError, match="outcome"):
        validate("disposition", {**d, "outcome": "burned"})


@given(st.binary(max_size=2000))
def test_random_bytes_never_escape_as_other_errors(raw: bytes) -> None:
    """Whatever arrives, decode either succeeds or raises RecordError: never anything else."""
    try:
        decode("entry", raw)
    except RecordError as err:
        assert err.field and err.reason


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=30,
    )
)
def test_random_json_values_are_rejected_with_a_reason(obj: Any) -> None:
    with pytest.raises(RecordError):
        decode("manifest", json.dumps(obj).encode())


def test_check_digits() -> None:
    assert mawb_check_digit("1234567") == 1234567 % 7
    # Luhn property: appending the check digit makes the weighted sum a multiple of ten
    d = entry_check_digit("123", "4567890")
    digits = [int(c) for c in "1234567890" + str(d)]
    total = sum(
        x if i % 2 == 0 else (x * 2 - 9 if x * 2 > 9 else x * 2)
        for i, x in enumerate(reversed(digits))
    )
    assert total % 10 == 0


def test_event_time_in_the_future_is_refused_against_the_given_bound() -> None:
    late = _broken(MANIFEST, "event_time", "9999-12-31T00:00:00Z")
    assert decode("manifest", late)["hawb"]  # no bound: offline data may be anything valid
    with pytest.raises(RecordError) as info:
        decode("manifest", late, latest=1_800_000_000.0)
    assert info.value.field == "event_time" and "in the future" in info.value.reason
    assert decode("manifest", encode(MANIFEST), latest=1_800_000_000.0)


def _paths(rec: Any, prefix: str = "") -> list[str]:
    """Every field of a record, nested ones as a.b or lines.0.c."""
    if isinstance(rec, list):
        return [p for i, v in enumerate(rec) for p in _paths(v, f"{prefix}{i}.")]
    out = []
    for k, v in rec.items():
        out.append(prefix + k)
        if isinstance(v, dict | list):
            out += _paths(v, f"{prefix}{k}.")
    return out


def _outcome(kind: str, raw: bytes, fn: Any) -> Any:
    try:
        return fn(kind, raw)
    except RecordError as err:
        return (err.field, err.reason)


@settings(max_examples=300)
@given(
    kind_path=st.one_of(
        *(
            st.tuples(st.just(kind), st.sampled_from([*_paths(base), "extra_field"]))
            for kind, base in (("manifest", MANIFEST), ("entry", ENTRY))
        )
    ),
    value=st.one_of(
        st.text(alphabet=" .\t\u00a0\u3000aZ09-:T+", max_size=14),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.none(),
        st.just(KeyError),
    ),
    pretty=st.booleans(),
)
def test_the_c_decoder_agrees_with_the_python_checks(
    kind_path: tuple[str, str], value: Any, pretty: bool
) -> None:
    """Whatever decides, the record and the dead-letter reason are the Python checks'."""
    kind, path = kind_path
    base = MANIFEST if kind == "manifest" else ENTRY
    raw = _broken(base, path, 1 if path == "extra_field" and value is KeyError else value)
    if pretty:
        raw = json.dumps(orjson.loads(raw)).encode()
    assert _outcome(kind, raw, decode) == _outcome(kind, raw, _explained)


def test_a_code_holding_the_separator_cannot_shift_the_others() -> None:
    """Codes are matched as one string, tags and codes joined by a separator: a code with
    a separator inside (and a valid-looking code after it) is refused, not read as two."""
    assert _codes_match(["a", "CN", "b", "ABC"])
    assert not _codes_match(["a", "CN" + _SEP + "b" + _SEP + "ABC"])
    assert not _codes_match(["a", "CN", "b", "abc"])
    raw = encode(ENTRY).replace(b'"country":"CN"', b'"country":"C\x1fN"', 1)
    with pytest.raises(RecordError) as info:
        decode("entry", raw)
    assert info.value.field == "record"  # not JSON: a raw control character
