"""The fast JSON path accepts only what the strict models accept, with bit-identical values."""

import json
from typing import Any

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api.scoring import batch_parser, parse_transaction
from app.features import FEATURE_NAMES
from app.parsing import (
    MAX_REPORTED_ERRORS,
    fast_batch,
    fast_transaction,
    matrix_of_models,
    require_json,
    strict,
)
from app.schemas import Transaction, batch_request_model

MAX_BATCH = 5
BATCH_MODEL = batch_request_model(MAX_BATCH)
BASE = {name: float(index) / 7 for index, name in enumerate(FEATURE_NAMES)}

# Number literals where two correct parsers could still disagree: halfway cases, the edges of the
# subnormals, underflow to zero, huge integers that fit in a double and ones that overflow it.
TRICKY_LITERALS = [
    "0", "-0", "-0.0", "1E5", "1e+5", "1.5e-5", "123456789012345678901234567890",
    "9007199254740993", "18446744073709551616", "1" * 309, "1" * 400, "1e308", "1.8e308",
    "1e999", "-1e999", "2.2250738585072011e-308", "4.9406564584124654e-324", "1e-400",
    "-1e-400", "0.1", "1.0000000000000002220446049250313080847263336181640625",
    "3.4028235677973366e38", "NaN", "Infinity", "-Infinity", "01", "1.", ".5", "+1", "0x10",
    "true", "false", "null", '"1.5"', "[1]", "{}",
]  # fmt: skip


def body_with(name: str, literal: str) -> bytes:
    """A transaction with one feature's value written as this exact JSON text."""
    parts = [f'"{key}":{literal if key == name else repr(BASE[key])}' for key in FEATURE_NAMES]
    return ("{" + ",".join(parts) + "}").encode()


def strict_matrix(body: bytes) -> np.ndarray | None:
    try:
        return matrix_of_models([strict(Transaction, body)])
    except RequestValidationError:
        return None


def fast_matrix(body: bytes) -> np.ndarray | None:
    return fast_transaction(body)


def assert_fast_agrees(body: bytes) -> None:
    """Fast accepts ⇒ strict accepts the same values, to the bit (the sign of zero included)."""
    fast, expected = fast_matrix(body), strict_matrix(body)
    if fast is not None:
        assert expected is not None, body[:200]
        assert fast.tobytes() == expected.tobytes(), body[:200]


@pytest.mark.parametrize("literal", TRICKY_LITERALS)
@pytest.mark.parametrize("name", ["Time", "V14", "Amount"])
def test_tricky_literals(name: str, literal: str) -> None:
    body = body_with(name, literal)
    assert_fast_agrees(body)
    # And the route's parser (fast path first) gives the strict verdict either way.
    expected = strict_matrix(body)
    if expected is None:
        with pytest.raises(RequestValidationError):
            parse_transaction(body)
    else:
        assert parse_transaction(body).tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"[]",
        b"null",
        b"1.5",
        b'"x"',
        json.dumps([BASE]).encode(),
        json.dumps({**BASE, "extra": 1.0}).encode(),
        json.dumps({k: v for k, v in BASE.items() if k != "V3"}).encode(),
        json.dumps({k: v for k, v in BASE.items() if k != "V3"} | {"v3": 1.0}).encode(),
        json.dumps(BASE).encode().replace(b'"Time"', b'"\\u0054ime"'),
        json.dumps(BASE).encode().replace(b'"Time"', b'"Time ', 1),
        # a key given twice: both refuse it
        json.dumps(BASE).encode().replace(b"{", b'{"Amount": 99.5, ', 1),
        json.dumps(BASE).encode()[:-5],
        b"\xff\xfe",
        json.dumps(BASE).encode() + b" trailing",
    ],
)
def test_odd_documents(body: bytes) -> None:
    assert_fast_agrees(body)


def validation_errors(parse: Any, body: bytes) -> list[dict[str, Any]]:
    with pytest.raises(RequestValidationError) as raised:
        parse(body)
    return list(raised.value.errors())


REPEATED = {"msg": "Field given more than once", "type": "duplicate_field"}


@pytest.mark.parametrize("first", ["NaN", '"x"', "null", "1.25", "1e999", "true"])
def test_a_feature_given_twice_is_refused_whatever_its_first_value(first: str) -> None:
    # Both decoders keep the last value: a first one that breaks the rules would pass unjudged.
    body = json.dumps(BASE).encode().replace(b'"V14": ', f'"V14": {first}, "V14": '.encode(), 1)
    assert fast_transaction(body) is None
    assert validation_errors(parse_transaction, body) == [{"loc": ("body", "V14"), **REPEATED}]


def test_a_feature_given_twice_in_a_batch_is_located_at_its_transaction() -> None:
    good = json.dumps(BASE)
    twice = good.replace('"Amount": ', '"Amount": 2.5, "Amount": ', 1)
    body = f'{{"transactions": [{good}, {twice}, {good}, {twice}]}}'.encode()
    parse = batch_parser(MAX_BATCH)
    assert fast_batch(MAX_BATCH)(body) is None
    assert validation_errors(parse, body) == [
        {"loc": ("body", "transactions", 1, "Amount"), **REPEATED},
        {"loc": ("body", "transactions", 3, "Amount"), **REPEATED},
    ]
    repeated_list = f'{{"transactions": [{good}], "transactions": [{good}]}}'.encode()
    assert validation_errors(parse, repeated_list) == [
        {"loc": ("body", "transactions"), **REPEATED}
    ]


def test_the_fast_path_still_takes_what_has_no_repeated_name() -> None:
    # Colons are counted to see a repeated name: escapes, spaces and a batch's own key are not one.
    spaced = json.dumps(BASE, indent=2).encode().replace(b'"Time"', b'"\\u0054ime"')
    assert fast_transaction(spaced) is not None
    batch = f'{{ "transactions" : [ {spaced.decode()} , {json.dumps(BASE)} ] }}'.encode()
    matrix = fast_batch(MAX_BATCH)(batch)
    assert matrix is not None
    assert matrix.shape == (2, len(FEATURE_NAMES))


json_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(FEATURE_NAMES), json_values, min_size=28),
    st.booleans(),
)
def test_random_transactions(values: dict[str, Any], add_unknown: bool) -> None:
    document = {**values, "unknown": 1.0} if add_unknown else values
    assert_fast_agrees(json.dumps(document).encode())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({name: st.floats(-1e6, 1e6) for name in FEATURE_NAMES})))
def test_batches_agree_with_the_strict_model(transactions: list[dict[str, float]]) -> None:
    body = json.dumps({"transactions": transactions}).encode()
    parse = batch_parser(MAX_BATCH)
    if 1 <= len(transactions) <= MAX_BATCH:
        expected = matrix_of_models(strict(BATCH_MODEL, body).transactions)
        assert parse(body).tobytes() == expected.tobytes()
        fast = fast_batch(MAX_BATCH)(body)
        assert fast is not None  # a valid batch takes the fast path
        assert fast.tobytes() == expected.tobytes()
    else:
        with pytest.raises(RequestValidationError):
            parse(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"transactions": [%s], "transactions": [%s, %s]}',  # the last key wins, in both
        b'{"transactions": [%s, %s, %s, %s, %s, %s]}',  # one over MAX_BATCH
        b'{"transactions": [%s]} ',
        b'{"transactions": [%s],}',
        b'{"transactions": [[%s]]}',
        b'{"Transactions": [%s]}',
        b'{"transactions": [%s, null]}',
        b'{"transactions": [%s, 1.5]}',
        b'{"transactions": [%s, {}]}',
    ],
)
def test_odd_batches(body: bytes) -> None:
    transaction = json.dumps(BASE).encode()
    document = body % ((transaction,) * body.count(b"%s"))
    fast = fast_batch(MAX_BATCH)(document)
    try:
        expected = matrix_of_models(strict(BATCH_MODEL, document).transactions)
    except RequestValidationError:
        expected = None
    if fast is not None:
        assert expected is not None
        assert fast.tobytes() == expected.tobytes()


def test_batch_errors_come_from_the_strict_model_with_the_bad_index() -> None:
    transactions = [BASE, {**BASE, "V9": True}, BASE]
    with pytest.raises(RequestValidationError) as caught:
        batch_parser(MAX_BATCH)(json.dumps({"transactions": transactions}).encode())
    locations = [error["loc"] for error in caught.value.errors()]
    assert locations == [("body", "transactions", 1, "V9")]


@pytest.mark.parametrize(
    "document",
    [
        {"transactions": []},
        {"transactions": [BASE] * (MAX_BATCH + 1)},
        {"transactions": [BASE], "extra": 1},
        {"transactions": BASE},
        [BASE],
    ],
)
def test_batch_shapes_the_strict_model_refuses(document: Any) -> None:
    with pytest.raises(RequestValidationError):
        batch_parser(MAX_BATCH)(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        (None, True),
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/vnd.api+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
    ],
)
def test_content_type_rule(content_type: str | None, accepted: bool) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    if accepted:
        require_json(headers)
    else:
        with pytest.raises(RequestValidationError):
            require_json(headers)


@pytest.mark.parametrize(
    ("content_encoding", "accepted"),
    [("identity", True), ("Identity ", True), ("", True), ("gzip", False), ("br", False)],
)
def test_a_compressed_body_is_refused_by_its_header(content_encoding: str, accepted: bool) -> None:
    headers = {"content-type": "application/json", "content-encoding": content_encoding}
    if accepted:
        require_json(headers)
    else:
        with pytest.raises(RequestValidationError) as caught:
            require_json(headers)
        assert caught.value.errors()[0]["loc"] == ("header", "content-encoding")


def batch_errors(parse: Any, document: Any) -> list[dict[str, Any]]:
    with pytest.raises(RequestValidationError) as caught:
        parse(json.dumps(document).encode())
    return [{k: error[k] for k in ("loc", "msg", "type")} for error in caught.value.errors()]


BAD_TRANSACTIONS = [
    {**BASE, "V9": "1.5"},
    {**BASE, "V9": True, "Amount": None},
    {k: v for k, v in BASE.items() if k != "V3"},
    {**BASE, "surplus": 1, "more": 2},
    {**BASE, "V1": [1.0], "V2": {"x": 1}},
    {},
    None,
    1.5,
    "x",
    [BASE],
]


@pytest.mark.parametrize("bad", range(len(BAD_TRANSACTIONS)))
@pytest.mark.parametrize("position", [0, 2, 4])
def test_batch_errors_are_the_batch_models_own(bad: int, position: int) -> None:
    """Transactions judged one by one give the batch model's errors, locations and order."""
    transactions = [BASE] * MAX_BATCH
    transactions[position] = BAD_TRANSACTIONS[bad]
    transactions[-1] = BAD_TRANSACTIONS[(bad + 1) % len(BAD_TRANSACTIONS)]
    strict_model = lambda body: strict(BATCH_MODEL, body)  # noqa: E731
    assert batch_errors(batch_parser(MAX_BATCH), {"transactions": transactions}) == batch_errors(
        strict_model, {"transactions": transactions}
    )


def test_a_422_lists_the_first_errors_only() -> None:
    """Objects of hundreds of unknown keys: the first MAX_REPORTED_ERRORS of the model's list."""
    flooded = {f"k{index}": 0 for index in range(300)}
    document = {"transactions": [flooded] * 4}
    every = batch_errors(lambda body: strict(batch_request_model(4), body), document)
    assert len(every) == 4 * (300 + len(FEATURE_NAMES))
    assert batch_errors(batch_parser(4), document) == every[:MAX_REPORTED_ERRORS]


@pytest.mark.parametrize("length", [0, MAX_BATCH + 1, 50])
def test_a_batch_of_the_wrong_length_is_judged_by_its_length(length: int) -> None:
    for item in (BASE, BAD_TRANSACTIONS[3], None):
        document = {"transactions": [item] * length}
        strict_model = lambda body: strict(BATCH_MODEL, body)  # noqa: E731
        expected = batch_errors(strict_model, document)
        assert batch_errors(batch_parser(MAX_BATCH), document) == expected
        assert [error["type"] for error in expected] == ["too_short" if not length else "too_long"]
