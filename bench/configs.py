"""The server configurations compared: engine × connection balance × artifact."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    name: str
    engine: str | None  # MODEL_ENGINE; None leaves it unset (auto)
    balance: str  # `--balance`
    expected_engine: str  # what the workers must report, or the comparison means nothing
    artifact: str = ".joblib"  # MODEL_PATH is the model with this suffix
    about: str = ""

    def model_path(self, model: Path) -> Path:
        return model.with_suffix(self.artifact)


CONFIGS = {
    config.name: config
    for config in (
        Config("sklearn", "sklearn", "shared", "sklearn",
               about="the original design: scikit-learn in the threadpool, one shared socket"),
        Config("default", None, "reuseport", "onnx",
               about="the service's defaults: ONNX converted at load, a socket per worker"),
        Config("default-shared", None, "shared", "onnx",
               about="ONNX with one shared socket: isolates the connection-balance effect"),
        Config("onnx-artifact", None, "reuseport", "onnx", artifact=".onnx",
               about="the exported .onnx served directly: no scikit-learn forest in memory"),
    )
}  # fmt: skip
DEFAULT_CONFIGS = ("sklearn", "default", "default-shared")
SMOKE_CONFIGS = ("sklearn", "default")
BASELINE, CANDIDATE = "sklearn", "default"
