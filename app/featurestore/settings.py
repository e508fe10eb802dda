"""The store's settings for the commands: FEATURE_STORE_* as the service reads them, no API_KEY."""

from typing import Any

from pydantic import BaseModel, ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config import ENV_FILE, Settings, describe_error, describe_unreadable_env_file


class _FromEnvironment(BaseSettings):
    model_config = SettingsConfigDict(env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore")


# The service's own field definitions (defaults, bounds, patterns), so the two cannot drift.
StoreSettings: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "StoreSettings",
    __base__=_FromEnvironment,
    **{
        name: (field.annotation, field)
        for name, field in Settings.model_fields.items()
        if name.startswith("feature_store_")
    },
)


def store_settings(**overrides: Any) -> Any:
    """FEATURE_STORE_* from the environment or `.env`, with command-line values on top.

    Raises ValueError with a message naming each bad variable, never its value.
    """
    try:
        return StoreSettings(
            **{key: value for key, value in overrides.items() if value is not None}
        )
    except ValidationError as error:
        raise ValueError(describe_error(error).removeprefix("configuration error: ")) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(describe_unreadable_env_file(error)) from None
