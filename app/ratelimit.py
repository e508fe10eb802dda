"""Per-client rate limits on `limits`, in memory or shared through Redis; fails open."""

import logging
import math
import time
from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from app import metrics

log = logging.getLogger("app.ratelimit")

_STORAGE_TIMEOUT_SECONDS = 0.25
_RETRY_STORAGE_AFTER_SECONDS = 5.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)


def async_storage(uri: str) -> Storage:
    """The asyncio flavour of a `limits` storage URI (memory://, redis://…)."""
    if uri.startswith("memory://"):
        storage = storage_from_string("async+memory://")
    else:
        storage = storage_from_string(
            f"async+{uri}",
            implementation="redispy",
            wrap_exceptions=True,
            socket_connect_timeout=_STORAGE_TIMEOUT_SECONDS,
            socket_timeout=_STORAGE_TIMEOUT_SECONDS,
        )
    assert isinstance(storage, Storage)  # the async+ schemes give asyncio storages
    return storage


class RateLimiter:
    """Fixed windows per client; on a storage failure it lets requests through and says so once."""

    def __init__(self, rate: str, storage_uri: str) -> None:
        self.items: list[RateLimitItem] = parse_many(rate)
        self.storage = async_storage(storage_uri)
        self.strategy = FixedWindowRateLimiter(self.storage)
        self._skip_until = 0.0
        self._failing = False

    async def check(self, client: str) -> Decision:
        if time.monotonic() < self._skip_until:  # storage failed moments ago: not asked again
            metrics.RATE_LIMIT_ERRORS.inc()
            return Decision(True)
        try:
            decision = await self._check(client)
        except StorageError as error:
            self._fail_open(error)
            return Decision(True)
        if self._failing:
            self._failing = False
            log.warning("rate-limit storage reachable again: limits enforced")
        return decision

    async def _check(self, client: str) -> Decision:
        strictest: tuple[RateLimitItem, float, int] | None = None
        for item in self.items:
            allowed = await self.strategy.hit(item, client)
            reset_at, remaining = await self.strategy.get_window_stats(item, client)
            if not allowed:
                return Decision(False, _headers(item, reset_at, 0, refused=True))
            if strictest is None or remaining < strictest[2]:
                strictest = (item, reset_at, remaining)
        assert strictest is not None
        return Decision(True, _headers(*strictest))

    def _fail_open(self, error: StorageError) -> None:
        metrics.RATE_LIMIT_ERRORS.inc()
        self._skip_until = time.monotonic() + _RETRY_STORAGE_AFTER_SECONDS
        if not self._failing:
            self._failing = True
            log.error(
                "rate-limit storage unreachable (%s): no limits enforced; retrying every %.0f s",
                type(error.storage_error).__name__,
                _RETRY_STORAGE_AFTER_SECONDS,
            )


def _headers(
    item: RateLimitItem, reset_at: float, remaining: int, refused: bool = False
) -> dict[str, str]:
    headers = {
        "X-RateLimit-Limit": str(item.amount),
        "X-RateLimit-Remaining": str(max(remaining, 0)),
        "X-RateLimit-Reset": str(math.ceil(reset_at)),
    }
    if refused:
        headers["Retry-After"] = str(max(1, math.ceil(reset_at - time.time())))
    return headers
