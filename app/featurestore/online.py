"""The online store client: stored features by transaction id, one Redis round trip per fetch."""

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from app import metrics
from app.features import FEATURE_NAMES, meta_features, meta_key, transaction_key
from app.featurestore.records import FOUND, INVALID, NOT_FOUND, parse_records
from app.featurestore.resp import pack

log = logging.getLogger("app.featurestore")

RETRY_AFTER_UNREACHABLE = 1  # seconds: an outage of Redis is usually a blip or a failover
RETRY_AFTER_MISMATCH = 60  # a meta record with other features waits for an operator
MISMATCH_DETAIL = (
    "The online feature store was materialized with other features than this service's (its "
    "meta record says so): by-id scoring resumes once it is materialized again"
)

_META_UNKNOWN, _META_MATCHES, _META_ABSENT, _META_MISMATCH = "unknown", "ok", "absent", "mismatch"
_UNSEEN = object()  # no reply for the meta record yet (None is a reply: the record is absent)


class FeatureStoreUnavailable(Exception):
    """Redis unreachable, slower than FEATURE_STORE_TIMEOUT_MS, or its meta record's feature list
    differs from the registry. Message safe to log (no values, no URI credentials)."""

    def __init__(self, message: str, retry_after: int, detail: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.detail = detail
        """What to tell the client, when it is not the usual "cannot be reached"."""


@dataclass(frozen=True)
class Fetched:
    """Per requested id, in request order: "found", "not_found" or "invalid"; and the found
    records' features as an (number of "found", 30) float64 matrix, in request order."""

    statuses: tuple[str, ...]
    matrix: np.ndarray


class OnlineStore:
    """One connection pool per worker; every fetch is one pipelined round trip under a deadline.

    The round trip also reads the meta record's feature list, so a store materialized with
    other features is refused as soon as it is seen: at start, at the first contact after an
    outage, or when the loader rewrites it while the service runs.
    """

    def __init__(self, uri: str, prefix: str, timeout_ms: int) -> None:
        self._prefix = prefix
        self._timeout = timeout_ms / 1000
        self._timeout_ms = timeout_ms
        # RESP2: flat HGETALL replies, parsed by hiredis without building a dict per record.
        # No retries and no per-read socket timeout: the one deadline per fetch is the budget.
        self._pool = ConnectionPool.from_url(
            uri,
            protocol=2,
            socket_connect_timeout=self._timeout,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
        )
        # The whole (small) hash: one without a `features` field is told from no hash at all.
        self._meta_command = pack("HGETALL", meta_key(prefix))
        self._meta_state = _META_UNKNOWN
        self._meta_seen: object = _UNSEEN
        self._reachable: bool | None = None

    async def start(self) -> None:
        """Check the meta record; never raises, never waits longer than the timeout."""
        try:
            (meta,) = await self._round_trip(self._meta_command, 1)
        except Exception as error:  # start-up never fails on the store
            self._mark_unreachable(self._describe(error))
            return
        self._mark_reachable()
        self._check_meta(meta)
        if self._meta_state == _META_ABSENT:
            log.info("feature store has no meta record yet: records are checked one by one")

    async def fetch(self, ids: Sequence[str]) -> Fetched:
        """Each id's stored features; raises FeatureStoreUnavailable. Duplicates read once."""
        started = time.perf_counter()
        unique = list(dict.fromkeys(ids))
        try:
            replies = await self._round_trip(self._commands(unique), 1 + len(unique))
        except Exception as error:  # whatever redis-py raises, the store is down
            metrics.observe_lookups({"error": len(ids)}, time.perf_counter() - started)
            reason = self._describe(error)
            self._mark_unreachable(reason)
            raise FeatureStoreUnavailable(reason, RETRY_AFTER_UNREACHABLE) from None
        self._mark_reachable()
        self._check_meta(replies[0])
        if self._meta_state == _META_MISMATCH:
            metrics.observe_lookups({"error": len(ids)}, time.perf_counter() - started)
            raise FeatureStoreUnavailable(
                "feature store meta record lists other features than this service",
                RETRY_AFTER_MISMATCH,
                detail=MISMATCH_DETAIL,
            )
        parsed = parse_records(replies[1:])
        for index, problems in parsed.problems.items():
            log.warning(
                "invalid feature record",
                extra={"transaction_id": unique[index], **problems.as_log_fields()},
            )
        fetched = _in_request_order(ids, unique, parsed.statuses, parsed.matrix)
        metrics.observe_lookups(Counter(fetched.statuses), time.perf_counter() - started)
        return fetched

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._pool.aclose()

    def _commands(self, unique: list[str]) -> bytes:
        prefix = self._prefix
        return self._meta_command + b"".join(
            pack("HGETALL", transaction_key(prefix, transaction_id)) for transaction_id in unique
        )

    async def _round_trip(self, payload: bytes, count: int) -> list[Any]:
        connection = None
        try:
            async with asyncio.timeout(self._timeout):
                connection = await self._pool.get_connection()
                await connection.send_packed_command(payload, check_health=False)
                replies = await _read_replies(connection, count)
        except BaseException:
            # Replies may still be on their way: this connection must never serve another fetch.
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.disconnect(nowait=True)
            raise
        finally:
            if connection is not None:
                await self._pool.release(connection)
        code = _refusal(replies)
        if code is not None:
            # Redis answered, but not with data (an ACL, a password, a cluster redirect, a
            # replica still loading): the store is unavailable, not the records invalid.
            raise _Refused(code)
        return replies

    def _describe(self, error: Exception) -> str:
        """The failure, without the exception's text (it may name hosts or carry a URI)."""
        if isinstance(error, _Refused):
            return f"feature store refused the lookup ({error.code})"
        if type(error) is TimeoutError:  # asyncio.timeout's, not redis-py's
            return f"feature store did not answer within {self._timeout_ms} ms"
        return f"feature store unreachable ({type(error).__name__})"

    def _mark_unreachable(self, reason: str) -> None:
        # Redis may come back as another server (failover, restart with other data).
        self._meta_state, self._meta_seen = _META_UNKNOWN, _UNSEEN
        if self._reachable is not False:
            self._reachable = False
            log.error("%s: by-id scoring answers 503 until it is back", reason)

    def _mark_reachable(self) -> None:
        if self._reachable is False:
            log.warning("feature store reachable again")
        self._reachable = True

    def _check_meta(self, reply: object) -> None:
        if isinstance(reply, list) and reply == self._meta_seen:
            return
        self._meta_seen = reply
        listed = None
        if reply == []:
            state = _META_ABSENT
        elif isinstance(reply, list):
            fields = dict(zip(reply[0::2], reply[1::2], strict=True))
            if b"features" in fields:
                listed = meta_features({"features": fields[b"features"].decode("utf-8", "replace")})
            state = _META_MATCHES if listed == FEATURE_NAMES else _META_MISMATCH
        else:  # the meta key holds something other than a hash
            state = _META_MISMATCH
        if state == _META_MISMATCH and self._meta_state != _META_MISMATCH:
            log.error(
                "feature store meta record lists other features than this service: by-id scoring "
                "answers 503 rather than score misaligned columns; materialize again",
                extra=_feature_list_difference(listed),
            )
        elif state != _META_MISMATCH and self._meta_state == _META_MISMATCH:
            log.warning("feature store meta record matches this service's features again")
        self._meta_state = state


async def _read_replies(connection: AbstractConnection, count: int) -> list[Any]:
    """`count` replies, drained straight from the connection's hiredis reader, error replies
    included (in their place, as exception objects).

    Connection.read_response costs about 3 µs a reply in redis-py 8 (a timeout scope, a host
    string, health checks), and its parser's read_response is one coroutine call a reply: most
    of the CPU of a 1,000-id fetch, so this loop awaits the socket only when hiredis needs more
    bytes. read_response would also raise on the first error reply (a key that is not a hash)
    with later replies still unread.
    """
    parser: Any = connection._parser
    gets = parser._reader.gets
    replies: list[Any] = []
    while len(replies) < count:
        reply = gets()
        if reply is NOT_ENOUGH_DATA:
            await parser.read_from_socket()
        elif isinstance(reply, ConnectionError):  # as redis-py's own read_response raises it
            raise reply
        else:
            replies.append(reply)
    return replies


class _Refused(Exception):
    """Redis answered a fetch with an error that is not about a record; `code` is safe to log."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _refusal(replies: list[Any]) -> str | None:
    """What the first error reply that says nothing about a record is (NOPERM, NOAUTH, MOVED,
    LOADING…: a redis-py error class, or Redis's code), or None. WRONGTYPE is the record's own
    fault: a key that is not a hash. Never the message: it may name keys or hosts."""
    for reply in replies:
        if isinstance(reply, Exception):
            code = str(reply).split(" ", 1)[0]
            if code == "WRONGTYPE":
                continue
            if type(reply) is ResponseError and code.isascii() and code.isalpha():
                return code if code.isupper() else type(reply).__name__
            return type(reply).__name__
    return None


def _in_request_order(
    ids: Sequence[str], unique: list[str], statuses: list[str], matrix: np.ndarray
) -> Fetched:
    if len(unique) == len(ids):
        return Fetched(tuple(statuses), matrix)
    position = {transaction_id: index for index, transaction_id in enumerate(unique)}
    row_of_found = np.cumsum([status == FOUND for status in statuses]) - 1
    requested = [position[transaction_id] for transaction_id in ids]
    rows = [row_of_found[index] for index in requested if statuses[index] == FOUND]
    return Fetched(tuple(statuses[index] for index in requested), matrix[rows])


def _feature_list_difference(listed: tuple[str, ...] | None) -> dict[str, Any]:
    if listed is None:
        return {"meta_features": None}
    return {
        "meta_features": len(listed),
        "missing": [name for name in FEATURE_NAMES if name not in listed][:10],
        "unexpected": [name[:64] for name in listed if name not in FEATURE_NAMES][:10],
        "same_names_other_order": sorted(listed) == sorted(FEATURE_NAMES),
    }


__all__ = ["FOUND", "INVALID", "NOT_FOUND", "FeatureStoreUnavailable", "Fetched", "OnlineStore"]
