"""The X-API-Key check: constant-time comparison against every configured key."""

import hashlib
from secrets import compare_digest
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from app.errors import InvalidApiKey

# auto_error=False: FastAPI would answer a missing key with its own 401; the contract says 403.
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your API key")


class KeyRing:
    """The accepted keys, each with a stable pseudonym that can name its client in rate limits."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self._keys = keys
        self._texts = tuple(key.decode("utf-8", "surrogateescape") for key in keys)
        self._pseudonyms = tuple(hashlib.sha256(key).hexdigest()[:16] for key in keys)

    def redact(self, text: str) -> str:
        """`text` (a path someone sent) with every accepted key in it replaced: a client that
        puts its key in the URL must not find it in the logs."""
        for key in self._texts:
            if key in text:
                text = text.replace(key, "[api-key]")
        return text

    def found_in(self, text: str) -> bool:
        """Whether `text` (a header someone sent, to be echoed and logged) holds an accepted key."""
        return any(key in text for key in self._texts)

    def identify(self, presented: str | None) -> str | None:
        """The pseudonym of the matching key, or None; every key is compared, matched or not."""
        if not presented:
            return None
        candidate = presented.encode("utf-8", "surrogateescape")
        matched = None
        for key, pseudonym in zip(self._keys, self._pseudonyms, strict=True):
            if compare_digest(candidate, key):
                matched = pseudonym
        return matched


async def require_api_key(
    request: Request, presented: Annotated[str | None, Security(api_key_header)]
) -> str:
    """The calling client's pseudonym (never the key itself), or 403."""
    client = request.app.state.key_ring.identify(presented)
    if client is None:
        raise InvalidApiKey
    request.state.client = client
    return client
