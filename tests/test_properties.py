"""Property tests of the request schema, in process: any finite number scores, nothing else does."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.features import FEATURE_NAMES
from tests.conftest import API_KEY, HEADERS, running_client

EXAMPLES = settings(max_examples=200, deadline=None)
THRESHOLD = 50

features = st.sampled_from(FEATURE_NAMES)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# JSON integers are numbers too; these stay inside a double's range (1.8e308).
finite_numbers = st.one_of(finite_floats, st.integers(min_value=-(10**300), max_value=10**300))


def overflowing_literal(mantissa: int, exponent: int, negative: bool) -> str:
    return f"{'-' if negative else ''}{mantissa}e{exponent}"


non_finite_literals = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity"]),
    # 1e999-style: at least 1e309, beyond the largest double.
    st.builds(
        overflowing_literal,
        st.integers(min_value=1, max_value=9),
        st.integers(min_value=309, max_value=100_000),
        st.booleans(),
    ),
    st.builds(lambda e, m: f"{m}E+{e}", st.integers(309, 5000), st.integers(1, 10**6)),
    # Huge integer literals: 310 digits or more, with or without a sign.
    st.integers(min_value=10**309, max_value=10**2000).map(str),
    st.integers(min_value=10**309, max_value=10**2000).map(lambda n: f"-{n}"),
)

json_scalars = st.one_of(st.none(), st.booleans(), finite_floats, st.text(max_size=20))
non_numbers = st.one_of(
    st.text(max_size=40),
    finite_floats.map(repr),  # numeric strings: "1.5" is not a number
    st.integers().map(str),
    st.sampled_from(["NaN", "Infinity", "1e999", ""]),
    st.booleans(),
    st.none(),
    st.lists(json_scalars, max_size=5),
    st.dictionaries(st.text(max_size=10), json_scalars, max_size=5),
)


@pytest.fixture(scope="module")
def scoring_client(model_path: Path) -> Iterator[TestClient]:
    """One in-process app for every example (the conftest `client` is per test function)."""
    service = Settings(  # type: ignore[call-arg]
        _env_file=None,
        api_key=API_KEY,
        model_path=model_path,
        fraud_threshold=THRESHOLD,
        rate_limit="1000000/minute",
    )
    with running_client(service) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def base_body(mock_body: dict[str, float]) -> dict[str, float]:
    assert list(mock_body) == list(FEATURE_NAMES)
    return mock_body


def body_with(base: dict[str, Any], feature: str, literal: str) -> str:
    """The transaction as JSON text, with `feature` set to a raw JSON literal."""
    members = (
        f"{json.dumps(name)}: {literal if name == feature else json.dumps(value)}"
        for name, value in base.items()
    )
    return "{" + ", ".join(members) + "}"


def post(test_client: TestClient, text: str) -> Any:
    headers = {**HEADERS, "Content-Type": "application/json"}
    return test_client.post("/v1/fraud-score", content=text.encode(), headers=headers)


def assert_valid_score(response: Any) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"fraud-score", "is-fraud", "model-version", "ood-warning"}
    score = body["fraud-score"]
    assert type(score) is int
    assert 0 <= score <= 100
    assert body["is-fraud"] is (score >= THRESHOLD)
    assert type(body["ood-warning"]) is bool
    assert isinstance(body["model-version"], str)
    assert body["model-version"]


def keys_anywhere(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(keys_anywhere(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_anywhere(item) for item in value))
    return set()


def assert_refused(response: Any, feature: str) -> None:
    """422 in FastAPI's shape, every error located at the feature, and no echo of the input."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert "input" not in keys_anywhere(body)
    assert body["detail"]
    for error in body["detail"]:
        assert set(error) == {"loc", "msg", "type"}
        assert error["loc"][:2] == ["body", feature]


@EXAMPLES
@given(values=st.fixed_dictionaries(dict.fromkeys(FEATURE_NAMES, finite_numbers)))
def test_any_finite_numbers_score(scoring_client: TestClient, values: dict[str, float]) -> None:
    assert_valid_score(post(scoring_client, json.dumps(values)))


@EXAMPLES
@given(feature=features, value=finite_numbers)
def test_any_finite_number_in_any_feature_scores(
    scoring_client: TestClient, base_body: dict[str, float], feature: str, value: float
) -> None:
    assert_valid_score(post(scoring_client, body_with(base_body, feature, json.dumps(value))))


@EXAMPLES
@given(feature=features, literal=non_finite_literals)
def test_non_finite_values_are_refused_naming_the_feature(
    scoring_client: TestClient, base_body: dict[str, float], feature: str, literal: str
) -> None:
    response = post(scoring_client, body_with(base_body, feature, literal))
    assert_refused(response, feature)
    if len(literal) >= 5:
        assert literal not in response.text


@EXAMPLES
@given(feature=features, value=non_numbers)
def test_non_numbers_are_refused_naming_the_feature(
    scoring_client: TestClient, base_body: dict[str, float], feature: str, value: Any
) -> None:
    literal = json.dumps(value)
    assert_refused(post(scoring_client, body_with(base_body, feature, literal)), feature)
