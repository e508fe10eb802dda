"""JSON log lines. An exception is logged by its type alone: its text may quote feature values,
and the contract allows no stack trace in a log line (the request id ties it to its request)."""

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came through `extra=` and is logged.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            line["error_type"] = record.exc_info[0].__name__
        return orjson.dumps(line, default=str).decode()


def log_config(level: str = "INFO") -> dict[str, Any]:
    """dictConfig for the app's and uvicorn's loggers; uvicorn's access log stays off."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "app": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure_unless_configured() -> None:
    """The same JSON lines under a server that did not set them up (plain `uvicorn
    app.main:app`, which imports the app after configuring its own logging): uvicorn's access
    log would carry the query string, where a client may have put its key, and the app's lines
    would have no handler. A set-up that already handles the app's loggers (the start command's,
    or an operator's `--log-config` naming `app`) is left as it is."""
    if logging.getLogger("app").handlers:
        return
    level = logging.getLevelName(logging.getLogger("uvicorn.error").getEffectiveLevel())
    logging.config.dictConfig(log_config(level))
