"""The model card: the JSON written beside each artifact by training and read when serving."""

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.features import FEATURE_NAMES
from app.schemas import TrainingMetrics

CARD_SUFFIX = ".card.json"


def card_path(artifact: Path) -> Path:
    """`fraud-model.joblib` and `fraud-model.onnx` share `fraud-model.card.json`."""
    return artifact.with_suffix(CARD_SUFFIX)


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Moments(_Section):
    mean: float = Field(allow_inf_nan=False)
    std: float = Field(ge=0, allow_inf_nan=False)


class _Versions(_Section):
    scikit_learn: str | None = Field(None, alias="scikit-learn")


class _Params(_Section):
    n_estimators: int | None = None


class _HoldoutScores(_Section):
    mean: float | None = None
    std: float | None = None


class _ServedCard(_Section):
    """The fields the service reads (for model-info, the OOD bounds, the drift baseline), with
    the types training writes; any other field is the card's own business."""

    features: list[str] | None = None
    trained_at: str | None = None
    versions: _Versions | None = None
    n_estimators: int | None = None
    params: _Params | None = None
    metrics: TrainingMetrics | None = None  # model-info's own model of them
    feature_stats: dict[str, _Moments] | None = None
    feature_importance: dict[str, float] | None = None
    holdout_scores: _HoldoutScores | None = None


def read_card(artifact: Path) -> dict[str, Any] | None:
    """The card beside an artifact, or None when there is none. Raises ValueError, naming the
    fields but never their values, for a card that is not what training writes: a hand-edited
    card is refused at load (503 and a log line), not found out by a 500 later."""
    path = card_path(artifact)
    if not path.is_file():
        return None
    card = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(card, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    try:
        _ServedCard.model_validate(card)
    except ValidationError as error:
        fields = sorted({".".join(map(str, e["loc"][:2])) for e in error.errors()})
        named = ", ".join(fields[:10])
        raise ValueError(f"{path.name}: {named} not of the type training writes") from None
    return card


def write_card(artifact: Path, card: dict[str, Any]) -> Path:
    """Write the card beside the artifact; returns its path."""
    path = card_path(artifact)
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def feature_moments(card: dict[str, Any] | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-feature training mean and standard deviation in FEATURE_NAMES order, if recorded."""
    stats = (card or {}).get("feature_stats") or {}
    if set(stats) != set(FEATURE_NAMES):
        return None, None
    mean = np.array([stats[name]["mean"] for name in FEATURE_NAMES], dtype=np.float64)
    std = np.array([stats[name]["std"] for name in FEATURE_NAMES], dtype=np.float64)
    return mean, std
