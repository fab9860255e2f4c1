"""What makes two customers, or two contacts of one customer, likely the same: their
match keys. Pure functions, unit-tested on their own.

A record has up to three keys, each a kind and a normalised value:
- `email`: the address case-folded and trimmed ("Ann@Acme.COM " = "ann@acme.com");
- `phone`: the last 9 digits of a number with at least 7 ("+84 912 345 678" =
  "0912-345-678"), so a national and an international spelling meet;
- `name`: the name's words as search folds them (case, accents and the letters Unicode
  does not decompose: "Đức" = "duc", ai/search.py), without the legal form of a
  company ("ACME Inc." = "Acme", "Công ty TNHH ABC" = "ABC", "株式会社トヨタ" =
  "トヨタ"); a contact's name key is its customer's too ("Ann Lee" of Acme and "Ann
  Lee" of Globex are two people).

Two records sharing any key are likely duplicates. Keys are the index, never the
truth: whoever reads one checks it against the record as it is now (`of_customer`,
`of_contact` on the record's current values)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal, cast

from ai.search import tokens

Kind = Literal["email", "phone", "name"]
KINDS: tuple[Kind, ...] = ("email", "phone", "name")
KEY_MAX = 400  # longer normalised values are cut (a name is at most 200 characters)
_NOT_DIGIT = re.compile(r"\D")
_CJK_PAIR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]{2}")
# Legal forms, as `tokens` spells them: dropped from a company's name key wherever
# they stand ("Acme GmbH", "Công ty Cổ phần Acme", "Acme Co., Ltd.").
_LEGAL_WORDS = frozenset({
    "inc", "incorporated", "llc", "llp", "lp", "ltd", "limited", "co", "corp",
    "corporation", "company", "plc", "gmbh", "ag", "kg", "ug", "se", "sa", "sas", "sarl",
    "srl", "spa", "bv", "nv", "oy", "oyj", "ab", "as", "asa", "aps", "pte", "pty", "kk",
    "jsc", "tnhh", "mtv", "cp", "the",
    # Korean words stay whole (NFKD spells a syllable in letters that are not CJK).
    *tokens("주식회사 유한회사"),
})  # fmt: skip
_LEGAL_RUNS = (
    ("cong", "ty"), ("co", "phan"), ("trach", "nhiem", "huu", "han"),
    ("mot", "thanh", "vien"), ("tap", "doan"),
    ("a", "s"), ("s", "a"), ("a", "g"), ("b", "v"), ("n", "v"), ("s", "p", "a"),
    ("s", "r", "l"), ("l", "l", "c"), ("p", "l", "c"),
    ("株", "式", "会", "社"), ("有", "限", "会", "社"), ("有", "限", "公", "司"),
    ("股", "份"), ("公", "司"),
)  # fmt: skip


def email_key(email: str | None) -> str | None:
    value = (email or "").strip().casefold()
    return f"email:{value[:KEY_MAX]}" if "@" in value else None


def phone_key(phone: str | None) -> str | None:
    digits = _NOT_DIGIT.sub("", phone or "")
    return f"phone:{digits[-9:]}" if len(digits) >= 7 else None


def name_words(name: str | None) -> list[str]:
    """A name's words as the name key reads them: folded like search's, CJK as single
    characters (search's neighbour pairs dropped), legal forms out; the name's own
    words when nothing else is left ("Limited" is a company too)."""
    words = [w for w in tokens(name or "") if not _CJK_PAIR.fullmatch(w)]
    kept = _without_runs(words)
    kept = [w for w in kept if w not in _LEGAL_WORDS]
    return kept or words


def _without_runs(words: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(words):
        for run in _LEGAL_RUNS:
            if tuple(words[i : i + len(run)]) == run:
                i += len(run)
                break
        else:
            out.append(words[i])
            i += 1
    return out


def name_key(name: str | None, within: int | None = None) -> str | None:
    """`name:<words>`, or `name:<within>:<words>` for a contact of customer `within`."""
    words = " ".join(name_words(name))
    if not words:
        return None
    scope = "" if within is None else f"{within}:"
    return f"name:{scope}{words}"[:KEY_MAX]


def of_customer(row: Mapping[str, Any]) -> list[str]:
    """A customer's keys (its `name`, `email`, `phone`)."""
    keys = (email_key(row.get("email")), phone_key(row.get("phone")), name_key(row.get("name")))
    return [k for k in keys if k is not None]


def of_contact(row: Mapping[str, Any]) -> list[str]:
    """A contact's keys (`first_name`, `last_name`, `email`, `phone`, `customer_id`)."""
    full = " ".join(p for p in (row.get("first_name"), row.get("last_name")) if p)
    keys = (
        email_key(row.get("email")),
        phone_key(row.get("phone")),
        name_key(full, int(row["customer_id"])),
    )
    return [k for k in keys if k is not None]


def kind_of(key: str) -> Kind:
    """The kind of a key: `email`, `phone` or `name`."""
    return cast(Kind, key.split(":", 1)[0])


def matched_on(keys: Iterable[str], other: Iterable[str]) -> list[Kind]:
    """The kinds of the keys two records share, in `KINDS` order."""
    shared = {kind_of(k) for k in set(keys) & set(other)}
    return [k for k in KINDS if k in shared]
