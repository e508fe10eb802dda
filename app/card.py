"""The model card: the JSON written beside each artifact by training and read when serving."""

import json
from pathlib import Path
from typing import Any

import numpy as np

from app.features import FEATURE_NAMES

CARD_SUFFIX = ".card.json"


def card_path(artifact: Path) -> Path:
    """`fraud-model.joblib` and `fraud-model.onnx` share `fraud-model.card.json`."""
    return artifact.with_suffix(CARD_SUFFIX)


def read_card(artifact: Path) -> dict[str, Any] | None:
    """The card beside an artifact, or None when there is none."""
    path = card_path(artifact)
    if not path.is_file():
        return None
    card = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(card, dict):
        raise ValueError(f"{path.name} is not a JSON object")
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
