"""The Open Inference Protocol's tensor codec: infer requests → a float64 matrix, Scores → answers.

JSON and the binary tensor data extension both land on the same validated (n, 30) float64 matrix
the /v1 parsers build, so every protocol shares one Scorer. Messages name what is wrong (an input,
a count, a type), never a feature value: they go back to the client verbatim.
"""

from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from app.features import FEATURE_DTYPE, N_FEATURES
from app.jsonnames import repeats_a_name
from app.model import Scores

MODEL_NAME = "fraud"
INPUT_NAME = "features"
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_EXTENSION = "binary_tensor_data"

# Little-endian, as the extension specifies; BOOL travels as one byte per element.
INPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
OUTPUT_DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "INT32": np.dtype("<i4"),
    "BOOL": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class OutputSpec:
    """One output tensor of the model: its datatype and the columns per row (1: shape [-1])."""

    datatype: str
    columns: int = 1

    @property
    def shape(self) -> list[int]:
        return [-1] if self.columns == 1 else [-1, self.columns]


OUTPUTS = {
    "fraud_probability": OutputSpec("FP32"),
    "fraud_score": OutputSpec("INT32"),
    "is_fraud": OutputSpec("BOOL"),
    "ood_warning": OutputSpec("BOOL"),
    "contributions": OutputSpec("FP32", N_FEATURES),
}
CONTRIBUTIONS = "contributions"
DEFAULT_OUTPUTS = tuple(name for name in OUTPUTS if name != CONTRIBUTIONS)
# Parameters of extensions this server does not implement: ignoring them would answer differently
# from what the client asked for, so they are refused.
_UNSUPPORTED = {
    "classification": "classification",
    "shared_memory_region": "shared-memory",
}
_NUMBER_TYPES = frozenset((float, int))  # exact types: bool is an int subclass, not a JSON number
_MAX_LENGTH_DIGITS = 20  # int() of a longer header value could raise, not just be too large


class TensorError(ValueError):
    """An infer request that breaks the protocol or the model's input rules (a 400)."""


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


# Without `outputs`: the default outputs, all binary or all JSON.
_DEFAULT_REQUEST = {
    binary: tuple(RequestedOutput(name, binary) for name in DEFAULT_OUTPUTS)
    for binary in (False, True)
}


@dataclass(frozen=True)
class InferRequest:
    """A validated infer request: the rows to score, the outputs wanted and the id to echo."""

    matrix: np.ndarray
    outputs: tuple[RequestedOutput, ...]
    id: str | None = None

    @property
    def wants_contributions(self) -> bool:
        return any(output.name == CONTRIBUTIONS for output in self.outputs)


def parse_infer(body: bytes, header_length: str | None, max_rows: int) -> InferRequest:
    """An infer request body (JSON, or JSON + binary tensors) → InferRequest, or TensorError."""
    header, binary = _split(body, header_length)
    document = _json_object(header, binary_hint=header_length is None)
    request_id = document.get("id")
    if request_id is not None and type(request_id) is not str:
        raise TensorError("'id' must be a string")
    parameters = _parameters(document, "the request")
    binary_default = _flag(parameters, "binary_data_output", "the request")
    inputs = document.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
        raise TensorError(f"'inputs' must be a list of one tensor, '{INPUT_NAME}'")
    matrix = _matrix(inputs[0], binary, max_rows)
    outputs = _outputs(document.get("outputs"), binary_default)
    if repeats_a_name(header, document, numbers_only=inputs[0].get("data")):
        raise TensorError(
            "a name is given twice in one JSON object of the request (parsers differ on which "
            "value counts)"
        )
    return InferRequest(matrix, outputs, request_id)


def header_length_of(values: list[str]) -> str | None:
    """The one Inference-Header-Content-Length of a request. Repeated with different values it
    is refused, as a repeated Content-Length is: a proxy taking the last would split the body
    elsewhere than this service."""
    if len({value.strip() for value in values}) > 1:
        raise TensorError(f"{HEADER_LENGTH} is given {len(values)} times, with different values")
    return values[0] if values else None


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary payload after it, as the extension's header delimits them."""
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_LENGTH_DIGITS):
        raise TensorError(f"{HEADER_LENGTH} must be a decimal byte count")
    length = int(text)
    if length > len(body):
        raise TensorError(f"{HEADER_LENGTH} is {length} bytes; the body has only {len(body)}")
    return body[:length], memoryview(body)[length:]


def _json_object(header: bytes, *, binary_hint: bool) -> dict[str, Any]:
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError as error:
        raise TensorError(_not_json(header, error, binary_hint)) from None
    if type(document) is not dict:
        raise TensorError("the inference request must be a JSON object")
    return document


def _not_json(body: bytes, error: orjson.JSONDecodeError, binary_hint: bool) -> str:
    """What is wrong with a body that is not JSON, in words that cannot quote it."""
    position = error.pos
    document_end = position if error.msg.startswith("unexpected content after document") else None
    if error.msg.startswith("str is not valid UTF-8"):  # orjson checks the whole body first
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            position = bad.start
            document_end = _document_end(body[:position])
    if binary_hint and document_end is not None:
        # A JSON header and then bytes: binary tensors sent without their header's length.
        return (
            f"the inference request has bytes after its JSON (at character {document_end}): "
            f"binary tensors need the {HEADER_LENGTH} header"
        )
    return (
        f"the inference request is not valid JSON (at character {position}); NaN, Infinity "
        "and numbers beyond a double's range are not JSON numbers"
    )


def _document_end(text: bytes) -> int | None:
    """Where the JSON document at the start of `text` ends; None if there is not a whole one."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as error:
        if error.msg.startswith("unexpected content after document"):
            return int(error.pos)
        return None
    return len(text)


def _parameters(tensor: dict[str, Any], owner: str) -> dict[str, Any]:
    parameters = tensor.get("parameters")
    if parameters is None:
        return {}
    if type(parameters) is not dict:
        raise TensorError(f"'parameters' of {owner} must be an object")
    for name, extension in _UNSUPPORTED.items():
        if parameters.get(name) not in (None, 0):
            raise TensorError(f"the {extension} extension is not supported ({owner})")
    return parameters


def _flag(parameters: dict[str, Any], name: str, owner: str) -> bool | None:
    """The boolean parameter, None when absent; `null` is not a boolean either."""
    if name not in parameters:
        return None
    value = parameters[name]
    if type(value) is not bool:
        raise TensorError(f"'{name}' of {owner} must be true or false")
    return value


def _matrix(tensor: dict[str, Any], binary: memoryview, max_rows: int) -> np.ndarray:
    """The input tensor as a finite (n, 30) float64 matrix."""
    if tensor.get("name") != INPUT_NAME:
        raise TensorError(f"unknown input: the model's one input is '{INPUT_NAME}'")
    datatype = tensor.get("datatype")
    if type(datatype) is not str or datatype not in INPUT_DTYPES:
        raise TensorError(f"input '{INPUT_NAME}' must be FP32 or FP64")
    rows = _rows(tensor.get("shape"), max_rows)
    size = _binary_size(_parameters(tensor, f"input '{INPUT_NAME}'"))
    if size is None:
        if len(binary):
            raise TensorError(
                f"{len(binary)} bytes follow the JSON header, but no input has binary_data_size"
            )
        matrix = _from_json(tensor.get("data"), rows)
    else:
        if "data" in tensor:
            raise TensorError(f"input '{INPUT_NAME}' has both 'data' and binary_data_size")
        matrix = _from_binary(binary, size, rows, INPUT_DTYPES[datatype])
    if not np.isfinite(matrix).all():
        raise TensorError(f"input '{INPUT_NAME}' holds a non-finite value (NaN or infinity)")
    return matrix


def _rows(shape: Any, max_rows: int) -> int:
    if (
        type(shape) is not list
        or len(shape) != 2
        or not all(type(dim) is int for dim in shape)
        or shape[1] != N_FEATURES
    ):
        raise TensorError(f"input '{INPUT_NAME}' must have shape [N, {N_FEATURES}]")
    rows: int = shape[0]
    if not 1 <= rows <= max_rows:
        raise TensorError(
            f"input '{INPUT_NAME}' must have 1 to {max_rows} rows (shape [N, {N_FEATURES}])"
        )
    return rows


def _binary_size(parameters: dict[str, Any]) -> int | None:
    if "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]  # null is not absent, as for the other parameters
    if type(size) is not int or size < 0:
        raise TensorError("binary_data_size must be a byte count (an integer from 0 to 2**64 - 1)")
    return size


def _from_binary(binary: memoryview, size: int, rows: int, dtype: np.dtype[Any]) -> np.ndarray:
    expected = rows * N_FEATURES * dtype.itemsize
    if size != expected:
        raise TensorError(
            f"binary_data_size is {size} bytes; [{rows}, {N_FEATURES}] of "
            f"{'FP32' if dtype.itemsize == 4 else 'FP64'} takes {expected}"
        )
    if len(binary) != size:
        raise TensorError(
            f"{len(binary)} bytes follow the JSON header; binary_data_size says {size}"
        )
    values = np.frombuffer(binary, dtype=dtype).reshape(rows, N_FEATURES)
    return values.astype(FEATURE_DTYPE, copy=False)


def _from_json(data: Any, rows: int) -> np.ndarray:
    """`data` flat (row-major) or as rows of 30, every element a JSON number."""
    count = rows * N_FEATURES
    if type(data) is not list:
        raise TensorError(f"input '{INPUT_NAME}' needs 'data' (a list) or binary_data_size")
    values: list[Any] = data
    if data and type(data[0]) is list:
        if (
            set(map(type, data)) != {list}
            or len(data) != rows
            or set(map(len, data)) != {N_FEATURES}
        ):
            raise TensorError(
                f"input '{INPUT_NAME}': nested 'data' must be {rows} "
                f"{'row' if rows == 1 else 'rows'} of {N_FEATURES} numbers"
            )
        values = list(chain.from_iterable(data))
    elif len(data) != count:
        raise TensorError(
            f"input '{INPUT_NAME}' has {len(data)} values; shape [{rows}, {N_FEATURES}] "
            f"takes {count}"
        )
    if not set(map(type, values)) <= _NUMBER_TYPES:
        raise TensorError(
            f"input '{INPUT_NAME}': every value must be a JSON number (not a string, boolean, "
            "null or list)"
        )
    return np.array(values, dtype=FEATURE_DTYPE).reshape(rows, N_FEATURES)


def _outputs(requested: Any, binary_default: bool | None) -> tuple[RequestedOutput, ...]:
    """The outputs asked for (all but contributions by default), each binary or JSON."""
    default = bool(binary_default)
    if requested is None or requested == []:
        return _DEFAULT_REQUEST[default]
    if type(requested) is not list or not all(type(item) is dict for item in requested):
        raise TensorError("'outputs' must be a list of objects")
    outputs = []
    for item in requested:
        name = item.get("name")
        if type(name) is not str or name not in OUTPUTS:
            raise TensorError(f"unknown output: the model's outputs are {', '.join(OUTPUTS)}")
        owner = f"output '{name}'"
        binary = _flag(_parameters(item, owner), "binary_data", owner)
        outputs.append(RequestedOutput(name, default if binary is None else binary))
    names = [output.name for output in outputs]
    if len(set(names)) != len(names):
        raise TensorError("each output may be requested once")
    return tuple(outputs)


def _output_array(name: str, scores: Scores) -> np.ndarray:
    values = {
        "fraud_probability": scores.probability,
        "fraud_score": scores.fraud_score,
        "is_fraud": scores.is_fraud,
        "ood_warning": scores.ood_warning,
        "contributions": scores.contributions,
    }[name]
    assert values is not None, "contributions are scored when requested"
    return np.ascontiguousarray(values, dtype=OUTPUT_DTYPES[OUTPUTS[name].datatype])


def encode_infer(
    request: InferRequest, scores: Scores, model_version: str
) -> tuple[bytes, int | None]:
    """The answer's bytes, and the JSON header's length when binary outputs follow it."""
    described = []
    payloads = []
    for output in request.outputs:
        array = _output_array(output.name, scores)
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": OUTPUTS[output.name].datatype,
            "shape": list(array.shape),
        }
        parameters: dict[str, Any] = {}
        if output.name == CONTRIBUTIONS:
            parameters["baseline"] = scores.baseline
        if output.binary:
            payload = array.tobytes()
            parameters["binary_data_size"] = len(payload)
            payloads.append(payload)
        else:
            tensor["data"] = array.ravel()
        if parameters:
            tensor["parameters"] = parameters
        described.append(tensor)
    document: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": model_version}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = described
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not payloads:
        return header, None
    return b"".join((header, *payloads)), len(header)
