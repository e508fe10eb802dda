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
# The fields as our writers write them (a small hash keeps insertion order): checked in bulk.
_LAYOUT = [*_NAMES, _WRITTEN_AT]
_LAYOUT_LENGTH = 2 * len(_LAYOUT)
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
    statuses, problems = [FOUND] * len(replies), {}
    in_layout: list[int] = []  # the common case, whose fields are checked all at once
    others: list[int] = []
    for index, reply in enumerate(replies):
        if type(reply) is list and len(reply) == _LAYOUT_LENGTH:
            in_layout.append(index)
        elif not isinstance(reply, list):
            statuses[index], problems[index] = INVALID, Problems(not_a_hash=True)
        elif not reply:
            statuses[index] = NOT_FOUND
        else:
            others.append(index)
    flat = None if others else _layout_values([replies[index] for index in in_layout])
    if flat is None:  # fields of another writer (any order, no `_written_at`): one by one
        flat = []
        for index in sorted([*in_layout, *others]):
            values = _feature_values(replies[index])
            if isinstance(values, Problems):
                statuses[index], problems[index] = INVALID, values
            else:
                flat.extend(values)
    found = [index for index, status in enumerate(statuses) if status == FOUND]
    rows, bad = _checked(flat, 0, len(found))
    for position in bad:
        values = flat[position * N_FEATURES : (position + 1) * N_FEATURES]
        statuses[found[position]] = INVALID
        problems[found[position]] = _diagnose(list(zip(FEATURE_NAMES, values, strict=True)))
    return Parsed(statuses, rows, problems)


def _layout_values(replies: list[list[bytes]]) -> list[bytes] | None:
    """The 30 values of each reply, all in one flat list, when every reply lists its fields as
    our writers do (a small hash keeps insertion order); else None."""
    flat = list(chain.from_iterable(replies))
    if flat[0::2] != _LAYOUT * len(replies):
        return None
    values = flat[1::2]
    del values[N_FEATURES :: N_FEATURES + 1]  # the `_written_at` values
    return values


def _checked(flat: list[bytes], start: int, stop: int) -> tuple[np.ndarray, list[int]]:
    """Rows `start` to `stop` of `flat`: the valid ones as a matrix, and the invalid positions.

    A failing range is halved until the bad rows are alone: a few bad records among 1,000 cost
    a few more bulk checks, not 1,000 small ones.
    """
    values = flat[start * N_FEATURES : stop * N_FEATURES]
    rows = _one_row(values) if stop - start == 1 else _bulk_matrix(values, stop - start)
    if rows is not None:
        return rows, []
    if stop - start == 1:
        return np.empty((0, N_FEATURES), FEATURE_DTYPE), [start]
    middle = (start + stop) // 2
    first, first_bad = _checked(flat, start, middle)
    second, second_bad = _checked(flat, middle, stop)
    return np.concatenate((first, second)), first_bad + second_bad


def _feature_values(reply: list[bytes]) -> Sequence[bytes] | Problems:
    """The 30 values in registry order, or which fields are missing, unknown or malformed."""
    record = dict(zip(reply[0::2], reply[1::2], strict=True))
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


def _bulk_matrix(values: Sequence[bytes], rows: int) -> np.ndarray | None:
    """`rows` rows of 30 values at once, or None if any value is not the text of a finite JSON
    number. Only number characters pass the first check, so whatever orjson then parses is a
    number (no `true`, `null`, strings or whitespace); a value holding a comma changes the count.
    """
    if not rows:
        return np.empty((0, N_FEATURES), FEATURE_DTYPE)
    joined = b",".join(values)
    if joined.translate(None, _NUMBER_CHARACTERS):
        return None
    try:
        parsed = orjson.loads(b"[%b]" % joined)  # 1e999 and overflowing integers are errors
    except orjson.JSONDecodeError:
        return None
    if len(parsed) != rows * N_FEATURES:
        return None
    matrix = np.array(parsed, dtype=FEATURE_DTYPE).reshape(rows, N_FEATURES)
    return matrix if np.isfinite(matrix).all() else None


def _one_row(values: Sequence[bytes]) -> np.ndarray | None:
    """A single record by the rules themselves: the bulk check only ever speeds them up."""
    row = _bulk_matrix(values, 1)
    if row is not None:
        return row
    if _diagnose(list(zip(FEATURE_NAMES, values, strict=True))) != Problems():
        return None
    return np.array([[float(value) for value in values]], dtype=FEATURE_DTYPE)


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
