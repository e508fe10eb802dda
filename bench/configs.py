"""The server configurations compared, and which scenarios each one runs."""

from dataclasses import dataclass
from pathlib import Path

# The original three: enough to compare engines and connection balance.
ORIGINAL = ("single-c1", "single-c20", "batch")
# What "unchanged" compares: run by servers with the same history (the same warm-up and
# measurements before), since a server that also ran the other scenarios first answers slower.
PLAIN = ("single-c20", "batch")
# Each ratio's two scenarios run one after the other (explain right after the plain route it is
# compared with): a server's cost per request drifts over a run, by up to 25 % in one round.
ALL_SCENARIOS = (
    "single-c1", "single-c20", "explain-c20",
    "batch", "explain-batch",
    "by-id-c1", "by-id-c20", "by-id-batch",
    "v2-json-c20", "v2-binary",
)  # fmt: skip


@dataclass(frozen=True)
class Config:
    name: str
    engine: str | None  # MODEL_ENGINE; None leaves it unset (auto)
    balance: str  # `--balance`
    expected_engine: str  # what the workers must report, or the comparison means nothing
    artifact: str = ".joblib"  # MODEL_PATH is the model with this suffix
    about: str = ""
    scenarios: tuple[str, ...] = ORIGINAL
    http: str = "bounded"  # `--http`
    feature_store: bool = False  # FEATURE_STORE_URI set to the bench's Redis

    def model_path(self, model: Path) -> Path:
        return model.with_name(model.stem + self.artifact)


CONFIGS = {
    config.name: config
    for config in (
        Config("sklearn", "sklearn", "shared", "sklearn",
               about="the original design: scikit-learn in the threadpool, one shared socket"),
        Config("default", None, "reuseport", "onnx", scenarios=ALL_SCENARIOS, feature_store=True,
               about="the service's defaults: ONNX converted at load, a socket per worker"),
        Config("default-shared", None, "shared", "onnx", scenarios=("single-c20",),
               about="ONNX with one shared socket: isolates the connection-balance effect"),
        Config("plain", None, "reuseport", "onnx", scenarios=PLAIN,
               about="the defaults, the plain routes alone: the reference of the two below"),
        Config("no-reasons", None, "reuseport", "onnx", artifact="-no-reasons.onnx",
               scenarios=PLAIN,
               about="an .onnx without the explain graph: the plain path before reason codes"),
        Config("stock-http", None, "reuseport", "onnx", http="httptools",
               scenarios=PLAIN,
               about="uvicorn's own httptools protocol, without the header limits and timeouts"),
        Config("onnx-artifact", None, "reuseport", "onnx", artifact=".onnx",
               about="the exported .onnx served directly: no scikit-learn forest in memory"),
    )
}  # fmt: skip
DEFAULT_CONFIGS = ("sklearn", "default", "default-shared", "plain", "no-reasons", "stock-http")
SMOKE_CONFIGS = ("sklearn", "default")
BASELINE, CANDIDATE = "sklearn", "default"
