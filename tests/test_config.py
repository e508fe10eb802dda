"""Settings: defaults, the contract's refusals, messages naming the variable and not the value."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import PLACEHOLDER_API_KEY, Settings, describe_error
from tests.conftest import ROOT

GOOD_KEY = "a-perfectly-good-key-123456"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name in ("API_KEY", "API_KEYS", "FRAUD_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)  # type: ignore[call-arg]
    return describe_error(caught.value)


def test_defaults_match_the_contract() -> None:
    config = settings(api_key=GOOD_KEY)
    assert config.api_keys == ()
    assert config.fraud_threshold == 50
    assert config.model_path == Path("model/fraud-model.joblib")
    assert config.model_engine == "auto"
    assert config.model_sha256 == ""
    assert config.model_version == "1.0.0"
    assert config.app_version == "1.0.0"
    assert config.max_batch_size == 1000
    assert config.rate_limit == "6000/minute"
    assert config.rate_limit_storage_uri == "memory://"


def test_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", GOOD_KEY)
    monkeypatch.setenv("API_KEYS", " second-key-1234567890 , third-key-12345678901,")
    monkeypatch.setenv("FRAUD_THRESHOLD", "72.5")
    monkeypatch.setenv("MODEL_ENGINE", "sklearn")
    config = Settings(_env_file=None)  # type: ignore[call-arg]
    assert config.fraud_threshold == 72.5
    assert config.model_engine == "sklearn"
    assert config.accepted_keys == (
        GOOD_KEY.encode(),
        b"second-key-1234567890",
        b"third-key-12345678901",
    )


def test_reads_a_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_KEY", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text(f"API_KEY={GOOD_KEY}\nMAX_BATCH_SIZE=7\n")
    config = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert config.api_key.get_secret_value() == GOOD_KEY
    assert config.max_batch_size == 7


def test_missing_api_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refusal(monkeypatch) == "configuration error: API_KEY is required"


@pytest.mark.parametrize("threshold", ["-1", "100.5", "150", "abc", "nan", "inf", "", "1_0"])
def test_threshold_outside_0_to_100_is_refused(
    monkeypatch: pytest.MonkeyPatch, threshold: str
) -> None:
    message = refusal(monkeypatch, API_KEY=GOOD_KEY, FRAUD_THRESHOLD=threshold)
    assert message.startswith("configuration error: FRAUD_THRESHOLD")


@pytest.mark.parametrize("threshold", ["0", "100", "50", "12.5"])
def test_threshold_bounds_are_inclusive(threshold: str) -> None:
    assert settings(api_key=GOOD_KEY, fraud_threshold=threshold).fraud_threshold == float(threshold)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("short-key", "at least 16 characters"),
        (PLACEHOLDER_API_KEY, "placeholder"),
        ("clé-secrète-très-longue-123", "printable ASCII"),
        ("tab\tinside-a-long-enough-key", "printable ASCII"),
        (" padded-key-long-enough-0123 ", "printable ASCII"),
    ],
    ids=["empty", "blank", "short", "placeholder", "non-ascii", "control", "padded"],
)
def test_weak_keys_are_refused_with_a_way_to_make_one(
    monkeypatch: pytest.MonkeyPatch, key: str, reason: str
) -> None:
    message = refusal(monkeypatch, API_KEY=key)
    assert message.startswith("configuration error: API_KEY")
    assert reason in message
    assert "secrets.token_urlsafe" in message
    if key.strip():
        assert key not in message


def test_weak_rotation_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, API_KEY=GOOD_KEY, API_KEYS=f"{GOOD_KEY}-2,tiny")
    assert message.startswith("configuration error: API_KEYS")
    assert "tiny" not in message


def test_placeholder_is_the_one_in_env_example() -> None:
    assert f"API_KEY={PLACEHOLDER_API_KEY}" in (ROOT / ".env.example").read_text().splitlines()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MODEL_ENGINE", "tensorflow"),
        ("MAX_BATCH_SIZE", "0"),
        ("MAX_BATCH_SIZE", "many"),
        ("MAX_BATCH_SIZE", "1_000"),
        ("FEATURE_STORE_TIMEOUT_MS", "5_0"),
        ("MODEL_SHA256", "abc123"),
        ("RATE_LIMIT", "lots"),
        ("RATE_LIMIT", "0/minute"),  # every request a 429, forever
        ("RATE_LIMIT", "100/second;0/hour"),
        ("RATE_LIMIT_STORAGE_URI", "mongodb://db"),
        ("MODEL_VERSION", "v1/2"),  # /v2's /versions/{version} paths could not be reached
        ("MODEL_VERSION", "1.0 beta"),
        ("MODEL_VERSION", "1" * 65),
    ],
)
def test_other_invalid_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    assert refusal(monkeypatch, API_KEY=GOOD_KEY, **{name: value}).startswith(
        f"configuration error: {name}"
    )


@pytest.mark.parametrize("version", ["1.0.0", "2.1.0-rc.1+g4f2a", "2026-12-01T10:00", "v7~a_b"])
def test_versions_that_are_one_path_segment_are_kept(version: str) -> None:
    assert settings(api_key=GOOD_KEY, model_version=version).model_version == version


def test_sha256_is_normalised() -> None:
    assert settings(api_key=GOOD_KEY, model_sha256=" " + "AB" * 32 + " ").model_sha256 == "ab" * 32


def test_several_problems_are_reported_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, FRAUD_THRESHOLD="500")
    assert "\n" not in message
    assert "API_KEY" in message
    assert "FRAUD_THRESHOLD" in message


def test_env_example_lists_every_setting() -> None:
    documented = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert documented == {name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://127.0.0.1:6379/0", "must be empty (by-id routes off) or a redis://"),
        ("redis://127.0.0.1:port/0", "is not a valid Redis URI"),
    ],
)
def test_a_feature_store_uri_that_is_not_redis_is_refused(
    monkeypatch: pytest.MonkeyPatch, uri: str, reason: str
) -> None:
    message = refusal(monkeypatch, API_KEY=GOOD_KEY, FEATURE_STORE_URI=uri)
    assert message.startswith("configuration error: FEATURE_STORE_URI")
    assert reason in message
    assert "127.0.0.1" not in message


def test_an_empty_or_unix_feature_store_uri_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for uri, expected in (("  ", ""), ("unix:///run/redis.sock", "unix:///run/redis.sock")):
        monkeypatch.setenv("FEATURE_STORE_URI", uri)
        assert settings(api_key=GOOD_KEY).feature_store_uri == expected
