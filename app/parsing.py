"""JSON request bodies → validated float64 matrices: a fast path for good input, pydantic for 422s.

The contract's rules for a transaction (an object of exactly the 30 features, each a finite JSON
number) are pydantic's strict models in app/schemas.py. Validating 30,000 numbers through them
costs more than scoring them, so well-formed bodies take a fast path: orjson parses, and C-level
checks (types, key counts, finiteness) accept only input the strict models accept with the same
values. Anything else goes to the strict models, whose errors are the 422s clients see.
"""

from collections.abc import Callable
from itertools import chain
from operator import itemgetter
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.errors import validation_error
from app.features import FEATURE_DTYPE, FEATURE_NAMES, N_FEATURES, row_values, to_matrix

Parsed = TypeVar("Parsed")

_features_of: "itemgetter[tuple[Any, ...]]" = itemgetter(*FEATURE_NAMES)
# bool is a subclass of int but not a JSON number; type() is exact, isinstance() would admit it.
_NUMBER_TYPES = frozenset((float, int))


def require_json(content_type: str | None) -> None:
    """FastAPI's rule: no Content-Type, application/json or application/*+json; else 422."""
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


def strict(model: type[BaseModel], body: bytes) -> Any:
    """The body validated by a strict model in one pass from bytes, or FastAPI's 422.

    pydantic-core's own JSON parser reports NaN/Infinity tokens, overflowing literals and huge
    integers as errors, with the location of each (json.loads would accept some of them).
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise validation_error(error, "body") from None


def parse_with_fast_path(
    body: bytes,
    fast: Callable[[Any], Parsed | None],
    model: type[BaseModel],
    from_model: Callable[[Any], Parsed],
) -> Parsed:
    """`fast(orjson document)` when it accepts the body, else the strict model's verdict."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if document is not None:
        parsed = fast(document)
        if parsed is not None:
            return parsed
    return from_model(strict(model, body))


def matrix_of_objects(items: list[Any]) -> np.ndarray | None:
    """The (n, 30) matrix when every item is a valid transaction object, else None."""
    if set(map(type, items)) != {dict}:
        return None
    # Each object holds every feature (else itemgetter raises) and n × 30 keys in all: so no
    # object has a key that is not a feature.
    if sum(map(len, items)) != N_FEATURES * len(items):
        return None
    try:
        rows = list(map(_features_of, items))
    except KeyError:
        return None
    values = list(chain.from_iterable(rows))
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return None
    matrix = np.array(values, dtype=FEATURE_DTYPE).reshape(-1, N_FEATURES)
    # orjson already refuses NaN and Infinity tokens and literals that overflow a double.
    if not np.isfinite(matrix).all():
        return None
    return matrix


def matrix_of_models(transactions: list[Any]) -> np.ndarray:
    """The (n, 30) matrix of transactions validated by the strict model."""
    return to_matrix(row_values(transaction) for transaction in transactions)
