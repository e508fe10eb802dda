"""Stored records → feature rows, by the request body's rules, validated in bulk."""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from app.features import FEATURE_DTYPE, FEATURE_NAMES, N_FEATURES, NUMBER_TEXT, WRITTEN_AT_FIELD

FOUND, NOT_FOUND, INVALID = "found", "not_found", "invalid"

_NAMES = tuple(name.encode() for name in FEATURE_NAMES)
_WRITTEN_AT = WRITTEN_AT_FIELD.encode()
_ALLOWED = frozenset((*_NAMES, _WRITTEN_AT))
# The two field orders our own writers produce (hashes keep insertion order while small).
_IN_ORDER = (list(_NAMES), [*_NAMES, _WRITTEN_AT])
_IN_REGISTRY_ORDER = itemgetter(*_NAMES)
_NAME_PAIRS = tuple(zip(FEATURE_NAMES, _NAMES, strict=True))
# Every character a JSON number can hold, and the separator of the bulk check.
_NUMBER_CHARACTERS = b"0123456789+-.eE,"
_MAX_NAMES_LOGGED = 10
_MAX_NAME_LENGTH = 64


@dataclass(frozen=True)
class Problems:
    """Why a stored record is not a transaction: field names only, never values."""

    missing: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    not_a_number: tuple[str, ...] = ()
    not_finite: tuple[str, ...] = ()
    not_a_hash: bool = False

    def as_log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"not_a_hash": True} if self.not_a_hash else {}
        for name in ("missing", "unknown", "not_a_number", "not_finite"):
            if getattr(self, name):
                fields[name] = list(getattr(self, name))
        return fields


@dataclass(frozen=True)
class Parsed:
    """One status per record; the found records' rows in order; the invalid ones' problems."""

    statuses: list[str]
    matrix: np.ndarray
    problems: dict[int, Problems] = field(default_factory=dict)


def parse_records(replies: Sequence[Any]) -> Parsed:
    """HGETALL replies (RESP2: flat field, value lists; an error for a key that is not a hash)."""
    statuses: list[str] = []
    problems: dict[int, Problems] = {}
    candidates: list[tuple[int, Sequence[bytes]]] = []
    for index, reply in enumerate(replies):
        if not isinstance(reply, list):
            statuses.append(INVALID)
            problems[index] = Problems(not_a_hash=True)
        elif not reply:
            statuses.append(NOT_FOUND)
        else:
            values = _feature_values(reply)
            if isinstance(values, Problems):
                statuses.append(INVALID)
                problems[index] = values
            else:
                statuses.append(FOUND)
                candidates.append((index, values))

    matrix = _bulk_matrix([values for _, values in candidates])
    if matrix is None:  # some value breaks the rules: find which, record by record
        rows = []
        for index, values in candidates:
            row = _bulk_matrix([values])
            if row is None:
                statuses[index] = INVALID
                problems[index] = _diagnose(list(zip(FEATURE_NAMES, values, strict=True)))
            else:
                rows.append(row)
        matrix = np.concatenate(rows) if rows else np.empty((0, N_FEATURES), FEATURE_DTYPE)
    return Parsed(statuses, matrix, problems)


def _feature_values(reply: list[bytes]) -> Sequence[bytes] | Problems:
    """The 30 values in registry order, or which fields are missing, unknown or malformed."""
    names = reply[0::2]
    if names in _IN_ORDER:
        return reply[1 : 2 * N_FEATURES : 2]
    record = dict(zip(names, reply[1::2], strict=True))
    if record.keys() <= _ALLOWED and len(record) - (_WRITTEN_AT in record) == N_FEATURES:
        return _IN_REGISTRY_ORDER(record)
    present = {name: record[raw] for name, raw in _NAME_PAIRS if raw in record}
    unknown = [_printable(name) for name in record if name not in _ALLOWED]
    malformed = _diagnose(list(present.items()))
    return Problems(
        missing=tuple(name for name in FEATURE_NAMES if name not in present),
        unknown=tuple(unknown[:_MAX_NAMES_LOGGED]),
        not_a_number=malformed.not_a_number,
        not_finite=malformed.not_finite,
    )


def _bulk_matrix(rows: Sequence[Sequence[bytes]]) -> np.ndarray | None:
    """All rows at once, or None if any value is not the text of a finite JSON number.

    Only number characters pass the first check, so whatever orjson parses is a number (no
    `true`, `null`, strings or whitespace); a value holding a comma changes the count.
    """
    if not rows:
        return np.empty((0, N_FEATURES), FEATURE_DTYPE)
    joined = b",".join(chain.from_iterable(rows))
    if joined.translate(None, _NUMBER_CHARACTERS):
        return None
    try:
        values = orjson.loads(b"[%b]" % joined)  # 1e999 and overflowing integers are errors
    except orjson.JSONDecodeError:
        return None
    if len(values) != len(rows) * N_FEATURES:
        return None
    matrix = np.array(values, dtype=FEATURE_DTYPE).reshape(len(rows), N_FEATURES)
    return matrix if np.isfinite(matrix).all() else None


def _diagnose(named_values: Sequence[tuple[str, bytes]]) -> Problems:
    not_a_number, not_finite = [], []
    for name, value in named_values:
        if NUMBER_TEXT.fullmatch(value) is None:
            not_a_number.append(name)
        elif not math.isfinite(float(value)):
            not_finite.append(name)
    return Problems(not_a_number=tuple(not_a_number), not_finite=tuple(not_finite))


def _printable(name: bytes) -> str:
    """A field name someone else wrote, fit for a log line."""
    text = name.decode("utf-8", "replace")
    return text if len(text) <= _MAX_NAME_LENGTH else text[:_MAX_NAME_LENGTH] + "…"
