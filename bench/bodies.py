"""The request bodies wrk sends: one realistic transaction, and a batch of generated ones."""

import json
from pathlib import Path

from app.features import FEATURE_NAMES, row_to_dict
from app.synthetic import generate

MOCK_BODY = Path(__file__).resolve().parents[1] / "model" / "mock-request-body.json"
BATCH_SEED = 7


def single_transaction() -> dict[str, float]:
    """model/mock-request-body.json when present, else one generated transaction."""
    if MOCK_BODY.is_file():
        body = json.loads(MOCK_BODY.read_text(encoding="utf-8"))
        return {name: float(body[name]) for name in FEATURE_NAMES}
    features, _ = generate(rows=1, seed=BATCH_SEED)
    return row_to_dict(features[0].tolist())


def batch(rows: int) -> dict[str, list[dict[str, float]]]:
    """Generated rows: the same distribution the default model was trained on, fraud included."""
    features, _ = generate(rows=rows, seed=BATCH_SEED)
    return {"transactions": [row_to_dict(values) for values in features.tolist()]}


def write(directory: Path, batch_rows: int) -> tuple[Path, Path]:
    """Compact JSON files (as a client would send them) for wrk's Lua script to read."""
    single_path, batch_path = directory / "single.json", directory / "batch.json"
    single_path.write_text(json.dumps(single_transaction(), separators=(",", ":")))
    batch_path.write_text(json.dumps(batch(batch_rows), separators=(",", ":")))
    return single_path, batch_path
