"""Stored records → rows by the request body's rules: the bulk check and its per-record fallback."""

import numpy as np
import orjson
import pytest
from redis.exceptions import ResponseError

from app.features import FEATURE_NAMES, WRITTEN_AT_FIELD, encode_value, record_fields
from app.featurestore.records import FOUND, INVALID, NOT_FOUND, Problems, parse_records
from app.synthetic import generate


def reply(fields: dict[str, str]) -> list[bytes]:
    """An HGETALL reply as hiredis gives it over RESP2: field, value, field, value…"""
    return [part.encode() for pair in fields.items() for part in pair]


def stored(values: np.ndarray) -> dict[str, str]:
    return record_fields(values.tolist(), written_at=1_796_000_000)


ROWS, _ = generate(rows=50, seed=3)


def test_records_in_registry_order_are_parsed_exactly() -> None:
    parsed = parse_records([reply(stored(row)) for row in ROWS])
    assert parsed.statuses == [FOUND] * 50
    assert parsed.problems == {}
    assert parsed.matrix.dtype == np.float64
    assert np.array_equal(parsed.matrix, ROWS)  # repr round-trips every float exactly


def test_any_field_order_and_no_written_at_are_accepted() -> None:
    """Another team's pipeline may write the fields in any order, or without `_written_at`."""
    shuffled = dict(reversed(stored(ROWS[0]).items()))
    without_time = {
        name: encode_value(value) for name, value in zip(FEATURE_NAMES, ROWS[1], strict=True)
    }
    parsed = parse_records([reply(shuffled), reply(without_time)])
    assert parsed.statuses == [FOUND, FOUND]
    assert np.array_equal(parsed.matrix, ROWS[:2])


def test_empty_reply_is_not_found_and_an_error_reply_is_invalid() -> None:
    wrong_type = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    parsed = parse_records([[], wrong_type, reply(stored(ROWS[0]))])
    assert parsed.statuses == [NOT_FOUND, INVALID, FOUND]
    assert parsed.problems == {1: Problems(not_a_hash=True)}
    assert np.array_equal(parsed.matrix, ROWS[:1])


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("abc", Problems(not_a_number=("V7",))),
        ("1_000", Problems(not_a_number=("V7",))),
        ("nan", Problems(not_a_number=("V7",))),
        ("inf", Problems(not_a_number=("V7",))),
        ("-Infinity", Problems(not_a_number=("V7",))),
        ("1e999", Problems(not_finite=("V7",))),
        ("1" + "0" * 400, Problems(not_finite=("V7",))),
        ("", Problems(not_a_number=("V7",))),
        (" 1", Problems(not_a_number=("V7",))),
        ("1,2", Problems(not_a_number=("V7",))),
        ("01", Problems(not_a_number=("V7",))),
        (".5", Problems(not_a_number=("V7",))),
        ("5.", Problems(not_a_number=("V7",))),
        ("+1", Problems(not_a_number=("V7",))),
        ("0x10", Problems(not_a_number=("V7",))),
        ("true", Problems(not_a_number=("V7",))),
        ('"1.5"', Problems(not_a_number=("V7",))),
        ("[1]", Problems(not_a_number=("V7",))),
    ],
)
def test_a_value_that_is_not_a_finite_json_number_makes_the_record_invalid(
    text: str, problems: Problems
) -> None:
    bad = {**stored(ROWS[1]), "V7": text}
    parsed = parse_records([reply(stored(ROWS[0])), reply(bad), reply(stored(ROWS[2]))])
    assert parsed.statuses == [FOUND, INVALID, FOUND]
    assert parsed.problems == {1: problems}
    assert np.array_equal(parsed.matrix, ROWS[[0, 2]])


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("-0", -0.0),
        ("1E+5", 1e5),
        ("1e-400", 0.0),
        ("12345678901234567890123", 1.2345678901234568e22),
    ],
)
def test_every_json_number_is_accepted(text: str, value: float) -> None:
    parsed = parse_records([reply({**stored(ROWS[0]), "Amount": text})])
    assert parsed.statuses == [FOUND]
    assert parsed.matrix[0, -1] == value


def test_missing_and_unknown_fields_are_named_without_values() -> None:
    fields = stored(ROWS[0])
    del fields["V3"], fields["Amount"]
    fields["V99"] = "1.0"
    fields["merchant"] = "ACME"
    fields["V5"] = "oops"
    parsed = parse_records([reply(fields)])
    assert parsed.statuses == [INVALID]
    assert parsed.problems[0] == Problems(
        missing=("V3", "Amount"), unknown=("V99", "merchant"), not_a_number=("V5",)
    )
    assert parsed.problems[0].as_log_fields() == {
        "missing": ["V3", "Amount"],
        "unknown": ["V99", "merchant"],
        "not_a_number": ["V5"],
    }
    assert parsed.matrix.shape == (0, 30)


def test_a_record_of_only_written_at_is_missing_every_feature() -> None:
    parsed = parse_records([reply({WRITTEN_AT_FIELD: "1"})])
    assert parsed.problems[0] == Problems(missing=FEATURE_NAMES)


def test_long_unknown_names_are_cut_and_counted_at_most_ten() -> None:
    fields = {**stored(ROWS[0]), **{f"extra{i}-" + "x" * 100: "1" for i in range(12)}}
    (problems,) = parse_records([reply(fields)]).problems.values()
    assert len(problems.unknown) == 10
    assert all(len(name) == 65 and name.endswith("…") for name in problems.unknown)


def test_many_records_one_bad_keeps_the_others_in_order() -> None:
    replies = [reply(stored(row)) for row in ROWS]
    replies[17] = reply({**stored(ROWS[17]), "Time": "1e999"})
    replies[31] = []
    parsed = parse_records(replies)
    assert parsed.statuses.count(FOUND) == 48
    assert (parsed.statuses[17], parsed.statuses[31]) == (INVALID, NOT_FOUND)
    assert np.array_equal(parsed.matrix, np.delete(ROWS, [17, 31], axis=0))


def test_the_bulk_check_only_speeds_the_rules_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were orjson to refuse what the rules accept, records would still be read by the rules."""

    def refuse(text: bytes) -> object:
        raise orjson.JSONDecodeError("refused", "", 0)

    monkeypatch.setattr("app.featurestore.records.orjson.loads", refuse)
    replies = [reply(stored(row)) for row in ROWS[:5]]
    replies[2] = reply({**stored(ROWS[2]), "V1": "abc"})
    parsed = parse_records(replies)
    assert parsed.statuses == [FOUND, FOUND, INVALID, FOUND, FOUND]
    assert parsed.problems == {2: Problems(not_a_number=("V1",))}
    assert np.array_equal(parsed.matrix, ROWS[[0, 1, 3, 4]])
