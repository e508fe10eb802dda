"""The Open Inference Protocol's bodies as pydantic models, for the OpenAPI document only.

app/oip.py validates requests itself (binary tensors have no JSON schema); these models describe
the JSON form, so the documented schema and the codec must agree: tests fuzz one against the other.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from app.features import N_FEATURES
from app.oip import INPUT_DTYPES, INPUT_NAME, OUTPUTS

FeatureRow = Annotated[list[float], Field(min_length=N_FEATURES, max_length=N_FEATURES)]
# Literals built from the codec's constants: typed Any, since mypy cannot read them.
OutputName: Any = Literal[tuple(OUTPUTS)]
InputName: Any = Literal[INPUT_NAME]
Columns: Any = Literal[N_FEATURES]
InputDatatype: Any = Literal[tuple(INPUT_DTYPES)]


class InferParameters(BaseModel):
    """Request parameters; others are accepted and ignored."""

    binary_data_output: bool | None = Field(
        None, description="every output as binary data after the JSON (unless an output says)"
    )


class OutputParameters(BaseModel):
    binary_data: bool | None = Field(None, description="this output as binary data")


class RequestedOutput(BaseModel):
    """An output to return; without `outputs`, all but `contributions` are."""

    name: OutputName
    parameters: OutputParameters | None = None


def infer_request_model(max_batch_size: int) -> type[BaseModel]:
    """The JSON form of an infer request; its row bound is the configured MAX_BATCH_SIZE."""
    tensor = create_model(
        "InferInputTensor",
        __config__=ConfigDict(
            json_schema_extra={
                "description": f"The one input: N transactions × the {N_FEATURES} features in "
                "registry order (see GET /v2/models/fraud). `data` is row-major, flat or as rows. "
                "With the binary tensor data extension `data` is absent and `parameters` holds "
                "`binary_data_size`, the byte count of the little-endian values that follow the "
                "JSON header (whose length is the Inference-Header-Content-Length request header)."
            }
        ),
        name=(InputName, ...),
        datatype=(InputDatatype, ...),
        shape=(tuple[Annotated[int, Field(ge=1, le=max_batch_size)], Columns], ...),
        parameters=(dict[str, Any] | None, None),
        data=(
            Annotated[
                list[float],
                Field(min_length=N_FEATURES, max_length=N_FEATURES * max_batch_size),
            ]
            | Annotated[list[FeatureRow], Field(min_length=1, max_length=max_batch_size)],
            ...,
        ),
    )
    return create_model(
        "InferRequest",
        id=(str | None, Field(None, description="echoed in the answer")),
        parameters=(InferParameters | None, None),
        inputs=(list[tensor], Field(min_length=1, max_length=1)),  # type: ignore[valid-type]
        outputs=(
            list[RequestedOutput] | None,
            Field(None, description="the outputs to return, in this order ([]: the default)"),
        ),
    )


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = Field(
        None,
        description="`binary_data_size` for a binary output; `baseline` for contributions",
    )
    data: list[float | bool] | None = Field(None, description="row-major (JSON outputs)")


class InferResponse(BaseModel):
    """The answer; with binary outputs, their bytes follow this JSON, in output order."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool


class OipError(BaseModel):
    """Every /v2 error: OIP's one `error` string."""

    error: str
