"""Writes the documented layout: one hash per transaction, replaced atomically, with a TTL."""

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from app.features import FEATURE_NAMES, WRITTEN_AT_FIELD, meta_key, meta_record, transaction_key
from app.featurestore.resp import pack

_TIMEOUT_SECONDS = 10.0
_FIELD_NAMES = tuple(name.encode() for name in FEATURE_NAMES)
_WRITTEN_AT = WRITTEN_AT_FIELD.encode()
_REPLIES_PER_RECORD = 5  # MULTI, DEL, HSET, EXPIRE, EXEC
_T = TypeVar("_T")


class StoreWriteError(Exception):
    """Redis refused or could not be reached; the message is safe to print (no URI, no value)."""


_MULTI, _EXEC = pack("MULTI"), pack("EXEC")


class StoreWriter:
    """A synchronous connection for the materialize and push commands."""

    def __init__(self, uri: str, prefix: str, ttl: int) -> None:
        self.prefix, self.ttl = prefix, ttl
        try:
            self._client = redis.Redis.from_url(
                uri,
                protocol=2,
                socket_timeout=_TIMEOUT_SECONDS,
                socket_connect_timeout=_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError:
            raise StoreWriteError("the URI is not a redis://, rediss:// or unix:// URI") from None

    def check(self) -> None:
        """Fail now, before anything is written, if Redis does not answer."""
        self._call(self._client.ping)

    def record_commands(self, transaction_id: str, values: Iterable[str], written_at: int) -> bytes:
        """MULTI, DEL, HSET (the 30 features in registry order and `_written_at`), EXPIRE, EXEC:
        a reader sees the old hash or the new one, never a mix, an older TTL or a gap."""
        key = transaction_key(self.prefix, transaction_id)
        fields: Iterable[bytes | str] = chain.from_iterable(zip(_FIELD_NAMES, values, strict=True))
        return b"".join(
            (
                _MULTI,
                pack("DEL", key),
                pack("HSET", key, *fields, _WRITTEN_AT, written_at),
                pack("EXPIRE", key, self.ttl),
                _EXEC,
            )
        )

    def write_record(self, transaction_id: str, values: Sequence[str]) -> None:
        """One record, at once (the push command)."""
        payload = self.record_commands(transaction_id, values, int(time.time()))
        for _ in self.write_chunks([(payload, 1)]):
            pass

    def write_chunks(self, chunks: Iterable[tuple[bytes, int]]) -> Iterator[int]:
        """Send chunks of packed records, yielding each chunk's record count once Redis applied it.

        One chunk stays in flight while the next is packed and sent, so this process and Redis
        work at the same time; replies are small, so neither side's buffers can fill up.
        """
        return _translated(self._pipelined(chunks))

    def write_meta(self, *, rows: int, source: str) -> None:
        """The meta record, replaced as a whole, written after every record (it has no TTL)."""
        key = meta_key(self.prefix)
        mapping = meta_record(rows=rows, source=source, materialized_at=time.time())

        def replace() -> None:
            with self._client.pipeline(transaction=True) as pipeline:
                pipeline.delete(key)
                pipeline.hset(key, mapping=mapping)  # type: ignore[arg-type]
                pipeline.execute()

        self._call(replace)

    def close(self) -> None:
        self._client.close()

    def _pipelined(self, chunks: Iterable[tuple[bytes, int]]) -> Iterator[int]:
        pool = self._client.connection_pool
        connection = pool.get_connection()
        in_flight: int | None = None
        try:
            for payload, records in chunks:
                connection.send_packed_command([payload])
                if in_flight is not None:
                    yield self._confirm(connection, in_flight)
                in_flight = records
            if in_flight is not None:
                yield self._confirm(connection, in_flight)
        except BaseException:
            connection.disconnect()  # replies may be left unread
            raise
        finally:
            pool.release(connection)

    def _confirm(self, connection: AbstractConnection, records: int) -> int:
        failure: str | None = None
        for index in range(1, records * _REPLIES_PER_RECORD + 1):
            reply = connection.read_response()
            if index % _REPLIES_PER_RECORD == 0 and failure is None:  # EXEC's: three results
                failure = _failure_of(reply)
        if failure is not None:
            # EXEC applies the commands that succeed: the record may be there, in part.
            raise StoreWriteError(f"Redis did not apply all of a record's transaction ({failure})")
        return records

    def _call(self, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except (redis.RedisError, OSError) as error:
            raise _store_error(error) from None


def _failure_of(exec_reply: object) -> str | None:
    """What went wrong in an EXEC's reply (Redis's own words quote no value of ours), or None."""
    if not isinstance(exec_reply, list):
        return "the transaction was aborted"
    errors = [result for result in exec_reply if isinstance(result, Exception)]
    return str(errors[0])[:200] if errors else None


def _translated(results: Iterator[_T]) -> Iterator[_T]:
    try:
        yield from results
    except (redis.RedisError, OSError) as error:
        raise _store_error(error) from None


def _store_error(error: Exception) -> StoreWriteError:
    if isinstance(error, redis.ResponseError):
        # Redis's own words (OOM, READONLY, NOAUTH…) quote no value of ours.
        return StoreWriteError(f"Redis refused the write: {str(error)[:200]}")
    return StoreWriteError(f"cannot reach the feature store ({type(error).__name__})")
