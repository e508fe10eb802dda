"""The request bodies wrk sends, one file per scenario, and the rows the feature store holds."""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.features import FEATURE_NAMES, row_to_dict
from app.synthetic import generate

MOCK_BODY = Path(__file__).resolve().parents[1] / "model" / "mock-request-body.json"
BATCH_SEED = 7
STORE_ROWS = 10_000  # ids b0 … b9999 in the online store, for the by-id scenarios


@dataclass(frozen=True)
class Body:
    """A body file, and the length of its JSON header when it uses OIP's binary extension."""

    path: Path
    header_length: int | None = None


def single_transaction() -> dict[str, float]:
    """model/mock-request-body.json when present, else one generated transaction."""
    if MOCK_BODY.is_file():
        body = json.loads(MOCK_BODY.read_text(encoding="utf-8"))
        return {name: float(body[name]) for name in FEATURE_NAMES}
    features, _ = generate(rows=1, seed=BATCH_SEED)
    return row_to_dict(features[0].tolist())


def batch_rows(rows: int) -> np.ndarray:
    """Generated rows: the same distribution the default model was trained on, fraud included."""
    features, _ = generate(rows=rows, seed=BATCH_SEED)
    return features


def store_ids(count: int) -> list[str]:
    return [f"b{index}" for index in range(count)]


def _compact(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def oip_binary(matrix: np.ndarray) -> tuple[bytes, int]:
    """An OIP infer request with the binary extension: FP32 rows in, binary outputs back."""
    tensor = np.ascontiguousarray(matrix, dtype="<f4").tobytes()
    header = _compact(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": list(matrix.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return header + tensor, len(header)


def write(directory: Path, rows: int) -> dict[str, Body]:
    """Compact bodies (as a client would send them) for wrk's Lua scripts to read."""
    single = single_transaction()
    matrix = batch_rows(rows)
    ids = store_ids(STORE_ROWS)
    binary, header_length = oip_binary(matrix)
    contents: dict[str, tuple[bytes, int | None]] = {
        "single": (_compact(single), None),
        "batch": (_compact({"transactions": [row_to_dict(r) for r in matrix.tolist()]}), None),
        "by-id": (_compact({"transaction_id": ids[42]}), None),
        "by-id-batch": (_compact({"transaction_ids": ids[:rows]}), None),
        "v2-single": (
            _compact(
                {
                    "inputs": [
                        {
                            "name": "features",
                            "shape": [1, len(FEATURE_NAMES)],
                            "datatype": "FP64",
                            "data": [single[name] for name in FEATURE_NAMES],
                        }
                    ]
                }
            ),
            None,
        ),
        "v2-binary": (binary, header_length),
    }
    bodies = {}
    for name, (content, length) in contents.items():
        path = directory / f"{name}.body"
        path.write_bytes(content)
        bodies[name] = Body(path, length)
    return bodies


def write_store_source(directory: Path) -> Path:
    """The offline-store file the bench materializes: STORE_ROWS generated rows with ids."""
    features, _ = generate(rows=STORE_ROWS, seed=BATCH_SEED)
    path = directory / "store.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["transaction_id", *FEATURE_NAMES])
        for transaction_id, row in zip(store_ids(STORE_ROWS), features.tolist(), strict=True):
            writer.writerow([transaction_id, *map(repr, row)])
    return path
