"""Request and response bodies, built from FEATURE_NAMES; the JSON keys are hyphenated."""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from app.features import FEATURE_NAMES, TRANSACTION_ID

# strict: a JSON number only (no "1.5", true or null); allow_inf_nan=False: NaN, Infinity and
# literals that overflow a double (1e999, a 400-digit integer) are refused as non-finite.
FeatureValue = Annotated[float, Field(strict=True, allow_inf_nan=False)]

SINGLE_BODY_LIMIT = 64 * 1024
"""Bytes: the largest body of one transaction (the single routes' limit, `push`'s per line)."""

_STRICT_OBJECT = ConfigDict(extra="forbid", strict=True)
_HYPHENATED = ConfigDict(
    alias_generator=lambda name: name.replace("_", "-"), populate_by_name=True, frozen=True
)

Transaction: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "Transaction",
    __config__=ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"description": "One card transaction: the 30 model features."},
    ),
    **{name: (FeatureValue, ...) for name in FEATURE_NAMES},
)


def batch_request_model(max_batch_size: int) -> type[BaseModel]:
    """The batch body, whose length bound is the configured MAX_BATCH_SIZE."""
    return create_model(
        "BatchRequest",
        __config__=_STRICT_OBJECT,
        transactions=(list[Transaction], Field(min_length=1, max_length=max_batch_size)),  # type: ignore[valid-type]
    )


class Reason(BaseModel):
    """How many fraud-score points one feature moved this transaction's score, and its value."""

    feature: str
    contribution: float = Field(description="points (100 × probability); may be negative")
    value: float = Field(description="the feature's value as scored")


TransactionId = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=128, pattern=f"^{TRANSACTION_ID.pattern}$"
    ),
    Field(description="1-128 characters of A-Z a-z 0-9 . _ : -", examples=["txn-000042"]),
]


class ByIdRequest(BaseModel):
    """Score the features the online store holds for one transaction id."""

    model_config = _STRICT_OBJECT

    transaction_id: TransactionId


def by_id_batch_request_model(max_batch_size: int) -> type[BaseModel]:
    """The by-id batch body, whose length bound is the configured MAX_BATCH_SIZE."""
    return create_model(
        "ByIdBatchRequest",
        __config__=_STRICT_OBJECT,
        transaction_ids=(list[TransactionId], Field(min_length=1, max_length=max_batch_size)),
    )


class ScoreResult(BaseModel):
    """The verdict on one transaction."""

    model_config = _HYPHENATED

    fraud_score: int = Field(ge=0, le=100, description="round(100 × P(fraud))")
    is_fraud: bool = Field(description="fraud-score >= FRAUD_THRESHOLD")
    ood_warning: bool = Field(
        description="some feature lies more than 3 standard deviations from its training mean"
    )
    reasons: list[Reason] | None = Field(
        None, description="with explain=true: the largest contributions, largest first"
    )
    baseline: float | None = Field(
        None,
        description="with explain=true: the score before any split; baseline + every "
        "feature's contribution = 100 × P(fraud)",
    )


class ScoreResponse(ScoreResult):
    """The single endpoint's answer."""

    model_version: str


class BatchResponse(BaseModel):
    """The batch endpoint's answer: one result per transaction, in request order."""

    model_config = _HYPHENATED

    model_version: str
    results: list[ScoreResult]


class ByIdResponse(ScoreResponse):
    """The by-id answer: the single endpoint's, for the stored features, plus the id."""

    transaction_id: str


class ByIdResult(BaseModel):
    """One id's outcome in a by-id batch: scored (with the single route's fields) or why not."""

    model_config = _HYPHENATED

    transaction_id: str
    status: str = Field(description="scored, not_found or invalid_record")
    fraud_score: int | None = Field(None, ge=0, le=100)
    is_fraud: bool | None = None
    ood_warning: bool | None = None
    model_version: str | None = None
    reasons: list[Reason] | None = None
    baseline: float | None = None


class ByIdBatchResponse(BaseModel):
    """The by-id batch answer: one result per id, in request order."""

    model_config = _HYPHENATED

    model_version: str
    results: list[ByIdResult]


class TrainingMetrics(BaseModel):
    """Hold-out metrics recorded by training (null where the artifact came without a card)."""

    model_config = _HYPHENATED

    pr_auc: float | None = Field(None, description="average precision on the hold-out")
    roc_auc: float | None = None
    precision: float | None = Field(None, description="at the training threshold")
    recall: float | None = Field(None, description="at the training threshold")
    threshold: float | None = Field(None, description="the score threshold training evaluated")
    rows: int | None = Field(None, description="rows used by training, hold-out included")
    train_rows: int | None = None
    holdout_rows: int | None = None


class ModelInfo(BaseModel):
    """What is being served, read from the model card and the loaded artifact."""

    model_config = _HYPHENATED

    model_version: str
    trained_at: str | None
    sklearn_version: str | None
    engine: str = Field(description="onnx or sklearn")
    explanation: str | None = Field(
        description="the reason codes served: tree-path, or null when the model carries none"
    )
    n_estimators: int | None
    features: list[str]
    feature_importance: dict[str, float]
    threshold: float
    metrics: TrainingMetrics
    artifact_sha256: str


class Health(BaseModel):
    """Readiness, for the load balancer."""

    status: str
    model_loaded: bool


class Liveness(BaseModel):
    """Liveness, for the container's health check."""

    status: str


class ErrorBody(BaseModel):
    """Every error: FastAPI's `detail`, plus a machine-readable `error` where one applies."""

    detail: Any
    error: str | None = None
