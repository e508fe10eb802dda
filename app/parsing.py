"""JSON request bodies → validated float64 matrices: a fast path for good input, pydantic for 422s.

The contract's rules for a transaction (an object of exactly the 30 features, each a finite JSON
number) are pydantic's strict models in app/schemas.py, whose errors are the 422s clients see.
Validating 30,000 numbers through them costs more than scoring them, so a body first goes through
msgspec's decoder into structs of the same fields: it applies the same rules (a JSON number, not
a string, boolean or null; every feature and no other key; finite) without building a dict per
transaction. Whatever it refuses, for any reason, goes to the strict models: msgspec only ever
accepts sooner, never differently (tests/test_parsing.py holds it to that).

A field named twice in one object is refused (422 `duplicate_field`): JSON parsers keep one of
the values, msgspec and pydantic the last, so a first value that breaks the rules (`NaN`, a
string) would otherwise pass unjudged, and a proxy that reads the first would see other features
than the model scores.
"""

import functools
from collections.abc import Callable, Mapping
from itertools import chain
from typing import Annotated, Any, TypeVar, cast

import msgspec
import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from app.errors import MAX_REPORTED_ERRORS, validation_error
from app.features import FEATURE_DTYPE, FEATURE_NAMES, N_FEATURES, row_values, to_matrix
from app.jsonnames import Members, count_colons, decoded_noting_repeats

Parsed = TypeVar("Parsed")

# gc=False: 1,000 of them per batch, never in a cycle, need not be tracked by the collector.
_Transaction = msgspec.defstruct(
    "Transaction",
    [(name, float) for name in FEATURE_NAMES],
    forbid_unknown_fields=True,
    frozen=True,
    gc=False,
)
_astuple = msgspec.structs.astuple
_single = msgspec.json.Decoder(_Transaction)


def require_json(headers: Mapping[str, str]) -> None:
    """FastAPI's rule for the Content-Type (none, application/json or application/*+json) and a
    body as it is, not compressed (a gzip body read as JSON would be a puzzling 422); else 422."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise RequestValidationError(
            [
                {
                    "loc": ("header", "content-encoding"),
                    "msg": "a compressed body is not accepted: send the JSON uncompressed",
                    "type": "content_encoding",
                }
            ]
        )
    content_type = headers.get("content-type")
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    raise RequestValidationError(
        [{"loc": ("body",), "msg": "Content-Type must be application/json", "type": "content_type"}]
    )


REPEATED_FIELD = "Field given more than once"


def repeated_fields(body: bytes) -> list[tuple[str | int, ...]]:
    """Where a name is given twice: in the body's object, or in an object of one of its lists
    (a batch's transactions), located as pydantic locates a field; none for any other body."""
    document = decoded_noting_repeats(body)
    if not isinstance(document, Members):
        return []
    locations: list[tuple[str | int, ...]] = [(name,) for name in document.repeated]
    for key, value in document.items():
        if type(value) is list:
            locations += [
                (key, index, name)
                for index, item in enumerate(value)
                if isinstance(item, Members)
                for name in item.repeated
            ]
    return locations


def refuse_repeated_fields(body: bytes) -> None:
    """422 `duplicate_field` at each name the body gives twice."""
    if locations := repeated_fields(body):
        raise RequestValidationError(
            [
                {"loc": ("body", *location), "msg": REPEATED_FIELD, "type": "duplicate_field"}
                for location in locations[:MAX_REPORTED_ERRORS]
            ]
        )


def strict(model: type[BaseModel], body: bytes) -> Any:
    """The body validated by a strict model in one pass from bytes, or FastAPI's 422.

    pydantic-core's own JSON parser reports NaN/Infinity tokens, overflowing literals and huge
    integers as errors, with the location of each (json.loads would accept some of them).
    """
    refuse_repeated_fields(body)
    return _validated(model, body)


def _validated(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise validation_error(error, "body") from None


def strict_batch(
    model: type[BaseModel], transaction: type[BaseModel], body: bytes, max_rows: int
) -> Any:
    """A batch validated by its strict model, its 422 limited to the first MAX_REPORTED_ERRORS.

    Unbounded, 150 objects of 600 unknown keys (790 KB) cost pydantic 1 s of the event loop and a
    10 MB answer; a body at the size limit, five times that.

    When the batch's shape is right (an object of one key, a list of 1 to `max_rows` items), its
    transactions are judged one by one, each re-serialised and validated as JSON by the
    transaction's own model (the batch model's errors, locations and order), until enough errors
    are found. A list of the wrong length is judged by its length alone, as the batch model
    judges it (its message gives the length), without validating what it holds. Invalid JSON and
    the literals orjson refuses have one error: the batch model reports it.
    """
    refuse_repeated_fields(body)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _validated(model, body)
    items = document.get("transactions") if type(document) is dict else None
    if type(items) is not list or len(document) != 1:
        return _validated(model, body)
    if not 1 <= len(items) <= max_rows:
        try:
            _lengths(max_rows).validate_python(items)
        except ValidationError as error:
            raise validation_error(error, "body", "transactions") from None
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            transaction.model_validate_json(orjson.dumps(item))
        except ValidationError as error:
            errors += validation_error(error, "body", "transactions", index).errors()
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    if errors:
        raise RequestValidationError(errors[:MAX_REPORTED_ERRORS])
    # Every transaction passes (and no name is repeated): the batch's rules have the last word.
    return _validated(model, body)


@functools.cache
def _lengths(max_rows: int) -> TypeAdapter[list[Any]]:
    """The batch model's length rule alone: its error for a list of any items, at no cost."""
    return TypeAdapter(Annotated[list[Any], Field(min_length=1, max_length=max_rows)])


def parse_with_fast_path(
    body: bytes,
    fast: Callable[[bytes], Parsed | None],
    judged: Callable[[bytes], Parsed],
) -> Parsed:
    """`fast(body)` when it accepts the body, else the strict models' verdict, `judged(body)`."""
    parsed = fast(body)
    if parsed is not None:
        return parsed
    return judged(body)


def fast_transaction(body: bytes) -> np.ndarray | None:
    """One transaction object → a (1, 30) matrix, or None for the strict model to judge."""
    try:
        transaction = _single.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if count_colons(body) != N_FEATURES:  # a name given twice (see app/jsonnames.py)
        return None
    return _finite(np.array([_astuple(transaction)], dtype=FEATURE_DTYPE))


def fast_batch(max_batch_size: int) -> Callable[[bytes], np.ndarray | None]:
    """`{"transactions": [1 … max_batch_size objects]}` → an (n, 30) matrix, or None."""
    batch = msgspec.defstruct(
        "BatchRequest",
        [
            (
                "transactions",
                Annotated[
                    list[_Transaction],  # type: ignore[valid-type]
                    msgspec.Meta(min_length=1, max_length=max_batch_size),
                ],
            )
        ],
        forbid_unknown_fields=True,
    )
    decoder = msgspec.json.Decoder(batch)

    def decode(body: bytes) -> np.ndarray | None:
        try:
            transactions = cast(Any, decoder.decode(body)).transactions
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if count_colons(body) != N_FEATURES * len(transactions) + 1:  # a name given twice
            return None
        # One flat iterator of floats: NumPy need not discover a nested shape (1.3 vs 1.8 ms).
        values = chain.from_iterable(map(_astuple, transactions))
        count = N_FEATURES * len(transactions)
        return _finite(np.fromiter(values, dtype=FEATURE_DTYPE, count=count))

    return decode


def _finite(matrix: np.ndarray) -> np.ndarray | None:
    # msgspec already refuses NaN and Infinity tokens and literals that overflow a double.
    return matrix.reshape(-1, N_FEATURES) if np.isfinite(matrix).all() else None


def matrix_of_models(transactions: list[Any]) -> np.ndarray:
    """The (n, 30) matrix of transactions validated by the strict model."""
    return to_matrix(row_values(transaction) for transaction in transactions)
