"""Settings read from the environment (or `.env`), validated once before anything serves."""

import os
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from limits import parse_many
from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from redis.connection import parse_url

from app.features import DEFAULT_STORE_PREFIX

PLACEHOLDER_API_KEY = "replace-me-with-a-random-key-of-32-chars"
MIN_API_KEY_LENGTH = 16
ENV_FILE = ".env"
STARTUP_FAILURE = 3  # uvicorn.config.STARTUP_FAILURE: its supervisor gives up on this status
MAKE_A_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_VERSION = re.compile(r"[A-Za-z0-9._+~:-]{1,64}")
_REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://", "redis+sentinel://", "redis+cluster://")


def redis_uri_or_empty(value: str) -> str:
    """FEATURE_STORE_URI's rule (the service's and the store commands'): empty, or Redis's."""
    value = value.strip()
    if not value:
        return value
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be empty (by-id routes off) or a redis://, rediss:// or unix:// URI")
    try:
        parse_url(value)
    except ValueError:
        raise ValueError("is not a valid Redis URI (redis://host:6379/0)") from None
    return value


class Settings(BaseSettings):
    """The contract's configuration; every field is an environment variable of the same name."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        protected_namespaces=(),
    )

    api_key: SecretStr
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    fraud_threshold: float = Field(50, ge=0, le=100, allow_inf_nan=False)
    model_path: Path = Path("model/fraud-model.joblib")
    model_engine: Literal["auto", "onnx", "sklearn"] = "auto"
    model_sha256: str = ""
    model_version: str = Field("1.0.0", min_length=1, max_length=64)
    app_version: str = Field("1.0.0", min_length=1, max_length=64)
    max_batch_size: int = Field(1000, ge=1, le=100_000)
    rate_limit: str = "6000/minute"
    rate_limit_storage_uri: str = "memory://"
    feature_store_uri: Annotated[str, AfterValidator(redis_uri_or_empty)] = ""
    feature_store_prefix: str = Field(
        DEFAULT_STORE_PREFIX, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$"
    )
    feature_store_timeout_ms: int = Field(50, ge=1, le=60_000)

    @field_validator("fraud_threshold", "max_batch_size", "feature_store_timeout_ms", mode="before")
    @classmethod
    def _no_digit_separators(cls, value: object) -> object:
        # Python's number syntax reads "1_0" as 10: a typo of 1.0 would serve with threshold 10.
        if isinstance(value, str) and "_" in value:
            raise ValueError("must be a plain number, without '_' between digits")
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("api_key", "api_keys")
    @classmethod
    def _refuse_weak_keys(cls, value: SecretStr | tuple[SecretStr, ...]) -> object:
        for key in value if isinstance(value, tuple) else (value,):
            secret = key.get_secret_value()
            if not secret.strip():
                raise ValueError(f"must not be empty; make one with: {MAKE_A_KEY}")
            if secret == PLACEHOLDER_API_KEY:
                raise ValueError(
                    f"is the placeholder from .env.example; make one with: {MAKE_A_KEY}"
                )
            if not (secret.isascii() and secret.isprintable()) or secret != secret.strip():
                # HTTP servers read header bytes as latin-1 and strip the ends: such a key
                # could never match what a client sends.
                raise ValueError(
                    "must be printable ASCII without spaces at either end (what an X-API-Key "
                    f"header carries as it is); make one with: {MAKE_A_KEY}"
                )
            if len(secret) < MIN_API_KEY_LENGTH:
                raise ValueError(
                    f"must be at least {MIN_API_KEY_LENGTH} characters; make one with: {MAKE_A_KEY}"
                )
        return value

    @field_validator("model_version")
    @classmethod
    def _one_path_segment(cls, value: str) -> str:
        # It is a segment of /v2/models/fraud/versions/{version}: a "/" or a space would make
        # those paths unreachable while the metadata announced the version.
        if not _VERSION.fullmatch(value):
            raise ValueError(
                "must be 1-64 characters of A-Z a-z 0-9 . _ + ~ : - (as in 1.0.0-rc.1+g4f2a)"
            )
        return value

    @field_validator("model_sha256")
    @classmethod
    def _hex_digest_or_empty(cls, value: str) -> str:
        digest = value.strip().lower()
        if digest and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
            raise ValueError("must be empty or a SHA-256 hex digest (64 hexadecimal characters)")
        return digest

    @field_validator("rate_limit")
    @classmethod
    def _parseable_rate(cls, value: str) -> str:
        try:
            items = parse_many(value)
        except ValueError:
            raise ValueError("must look like '6000/minute' (or '100/second;6000/minute')") from None
        if any(item.amount < 1 for item in items):  # 0/minute would refuse every request
            raise ValueError("must allow at least 1 request per period")
        return value

    @field_validator("rate_limit_storage_uri")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        if value != "memory://" and not value.startswith(_REDIS_SCHEMES):
            raise ValueError("must be memory:// or a redis:// URI")
        return value

    @property
    def accepted_keys(self) -> tuple[bytes, ...]:
        """Every key a client may send: API_KEY first, then the rotation keys of API_KEYS."""
        keys = (self.api_key, *self.api_keys)
        return tuple(key.get_secret_value().encode() for key in keys)


def describe_error(error: ValidationError) -> str:
    """One line naming each offending variable, never echoing its value (it may be a secret)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        name = str(item["loc"][0]).upper() if item["loc"] else "configuration"
        message = "is required" if item["type"] == "missing" else item["msg"]
        problems.append(f"{name} {message.removeprefix('Value error, ')}")
    return "configuration error: " + "; ".join(problems)


def os_error_reason(error: OSError) -> str:
    """The system's words for an OSError ("Permission denied"), without its paths or text."""
    return os.strerror(error.errno) if error.errno else type(error).__name__


def describe_unreadable_env_file(error: OSError | UnicodeDecodeError) -> str:
    """Why `.env` could not be read, without a byte of it (it holds the key)."""
    if isinstance(error, UnicodeDecodeError):
        return f"cannot read {ENV_FILE}: not UTF-8 text (at byte {error.start})"
    return f"cannot read {ENV_FILE}: {os_error_reason(error)}"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()  # type: ignore[call-arg]  # values come from the environment


def get_settings_or_exit() -> Settings:
    """Settings, or a one-line message on stderr and exit status 3.

    3 is uvicorn's start-up failure status: should a worker get here (`uvicorn app.main:app
    --workers 2` run without the preflight), its supervisor stops instead of respawning it.
    """
    try:
        return get_settings()
    except ValidationError as error:
        print(describe_error(error), file=sys.stderr)
        raise SystemExit(STARTUP_FAILURE) from None
    except (OSError, UnicodeDecodeError) as error:
        print(f"configuration error: {describe_unreadable_env_file(error)}", file=sys.stderr)
        raise SystemExit(STARTUP_FAILURE) from None
