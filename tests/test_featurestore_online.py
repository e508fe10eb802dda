"""The online store client against a real redis-server: statuses, logs, metrics and outages."""

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY

from app.features import (
    FEATURE_NAMES,
    meta_key,
    meta_record,
    record_fields,
    transaction_key,
)
from app.featurestore.online import (
    MISMATCH_DETAIL,
    RETRY_AFTER_MISMATCH,
    RETRY_AFTER_UNREACHABLE,
    FeatureStoreUnavailable,
    Fetched,
    OnlineStore,
)
from app.logs import JsonFormatter
from app.synthetic import generate
from tests.redis_server import RedisServer, requires_redis, start_redis
from tests.server import free_port

pytestmark = [requires_redis, pytest.mark.anyio]

PREFIX = "test:v1"
TIMEOUT_MS = 200  # the budget of a lookup here: generous for a loaded test machine
HANG_BOUND = 3.0  # seconds: far above the budget, far below redis-py's own 5 s socket timeout
ROWS, _ = generate(rows=1000, seed=11)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("featurestore")


@pytest.fixture
def server(shared_redis: RedisServer) -> RedisServer:
    """The module's Redis, emptied for each test."""
    shared_redis.client().flushall()
    return shared_redis


@pytest.fixture
def own_redis(workdir: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, to stop, freeze and restart."""
    running = start_redis(workdir)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            os.kill(running.process.pid, signal.SIGCONT)  # a frozen server ignores SIGTERM
        running.stop()


def write(client: redis.Redis, transaction_id: str, fields: dict[str, str]) -> None:
    key = transaction_key(PREFIX, transaction_id)
    client.delete(key)
    client.hset(key, mapping=fields)  # type: ignore[arg-type]


def write_rows(server: RedisServer, count: int, *, prefix_id: str = "tx") -> list[str]:
    client = server.client()
    ids = [f"{prefix_id}-{index}" for index in range(count)]
    pipeline = client.pipeline(transaction=False)
    for transaction_id, row in zip(ids, ROWS[:count], strict=True):
        pipeline.hset(transaction_key(PREFIX, transaction_id), mapping=stored(row))  # type: ignore[arg-type]
    pipeline.execute()
    return ids


def stored(row: np.ndarray) -> dict[str, str]:
    return record_fields(row.tolist(), written_at=time.time())


def write_meta(server: RedisServer, features: tuple[str, ...] = FEATURE_NAMES) -> None:
    record = meta_record(rows=1, source="test.csv", materialized_at=time.time())
    record["features"] = ",".join(features)
    server.client().hset(meta_key(PREFIX), mapping=record)  # type: ignore[arg-type]


def lookups(outcome: str) -> float:
    value = REGISTRY.get_sample_value("fraud_feature_store_lookups_total", {"outcome": outcome})
    return value or 0.0


def fetches() -> float:
    return REGISTRY.get_sample_value("fraud_feature_store_lookup_duration_seconds_count") or 0.0


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def store_log() -> Iterator[list[logging.LogRecord]]:
    """What logger app.featurestore emits at INFO and above, however logging is configured."""
    logger, kept = logging.getLogger("app.featurestore"), _Kept()
    level = logger.level
    logger.addHandler(kept)
    logger.setLevel(logging.INFO)
    try:
        yield kept.records
    finally:
        logger.removeHandler(kept)
        logger.setLevel(level)


def messages(records: list[logging.LogRecord], level: int = logging.WARNING) -> list[str]:
    return [record.getMessage() for record in records if record.levelno >= level]


async def opened(server: RedisServer, timeout_ms: int = TIMEOUT_MS) -> OnlineStore:
    store = OnlineStore(server.uri, PREFIX, timeout_ms)
    await store.start()
    return store


async def fetch_once(server: RedisServer, ids: list[str]) -> Fetched:
    """Start a client as a worker does, fetch `ids` once, close it."""
    store = await opened(server)
    try:
        return await store.fetch(ids)
    finally:
        await store.close()


async def test_found_not_found_invalid_in_request_order_with_duplicates(
    server: RedisServer,
) -> None:
    ids = write_rows(server, 3)
    write(server.client(), "bad", {**stored(ROWS[3]), "V4": "abc"})
    store = await opened(server)
    try:
        asked = [ids[2], "absent", ids[0], "bad", ids[2], ids[1], "absent"]
        fetched = await store.fetch(asked)
    finally:
        await store.close()
    assert fetched.statuses == (
        "found", "not_found", "found", "invalid", "found", "found", "not_found",
    )  # fmt: skip
    assert fetched.matrix.dtype == np.float64
    assert np.array_equal(fetched.matrix, ROWS[[2, 0, 2, 1]])


async def test_a_batch_of_a_thousand_is_read_exactly(server: RedisServer) -> None:
    ids = write_rows(server, 1000)
    store = await opened(server, timeout_ms=5000)  # a loaded machine may take a while here
    try:
        fetched = await store.fetch(ids[::-1])
    finally:
        await store.close()
    assert fetched.statuses == ("found",) * 1000
    assert np.array_equal(fetched.matrix, ROWS[::-1])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"V9": None}, {"missing": ["V9"]}),
        ({"V9": "abc"}, {"not_a_number": ["V9"]}),
        ({"V9": "1_000"}, {"not_a_number": ["V9"]}),
        ({"V9": "1e999"}, {"not_finite": ["V9"]}),
        ({"V9": "nan"}, {"not_a_number": ["V9"]}),
        ({"V9": "inf"}, {"not_a_number": ["V9"]}),
        ({"V9": "-inf", "Amount": "9e999"}, {"not_a_number": ["V9"], "not_finite": ["Amount"]}),
        ({"merchant": "4242-4242"}, {"unknown": ["merchant"]}),
    ],
    ids=["missing", "abc", "1_000", "1e999", "nan", "inf", "two", "unknown"],
)
async def test_invalid_records_are_logged_with_id_and_field_names_never_values(
    server: RedisServer,
    store_log: list[logging.LogRecord],
    change: dict[str, str | None],
    problem: dict[str, list[str]],
) -> None:
    (good,) = write_rows(server, 1)
    fields = {**stored(ROWS[5]), **{k: v for k, v in change.items() if v is not None}}
    for name in [name for name, value in change.items() if value is None]:
        del fields[name]
    write(server.client(), "broken:1", fields)
    store = await opened(server)
    before = lookups("invalid")
    try:
        fetched = await store.fetch(["broken:1", good, "broken:1"])
    finally:
        await store.close()
    assert fetched.statuses == ("invalid", "found", "invalid")
    assert np.array_equal(fetched.matrix, ROWS[[0]])
    assert lookups("invalid") - before == 2  # per id asked

    invalid = [r for r in store_log if r.getMessage() == "invalid feature record"]
    assert len(invalid) == 1  # looked up once, logged once
    (record,) = invalid
    assert record.levelname == "WARNING"
    assert record.transaction_id == "broken:1"  # type: ignore[attr-defined]
    assert {key: getattr(record, key) for key in problem} == problem
    assert not {"missing", "unknown", "not_a_number", "not_finite"} - problem.keys() & set(
        vars(record)
    ) - set(problem)
    line = JsonFormatter().format(record)
    secret = [value for name, value in fields.items() if name.startswith("V") or name == "Amount"]
    assert [value for value in secret if value in line] == []


async def test_a_key_that_is_not_a_hash_is_an_invalid_record(
    server: RedisServer, store_log: list[logging.LogRecord]
) -> None:
    server.client().set(transaction_key(PREFIX, "plain"), "4242")
    store = await opened(server)
    try:
        fetched = await store.fetch(["plain"])
    finally:
        await store.close()
    assert fetched.statuses == ("invalid",)
    assert fetched.matrix.shape == (0, 30)
    (record,) = [r for r in store_log if r.getMessage() == "invalid feature record"]
    assert record.not_a_hash is True  # type: ignore[attr-defined]
    assert "4242" not in JsonFormatter().format(record)


async def test_an_expired_record_is_not_found(server: RedisServer) -> None:
    (transaction_id,) = write_rows(server, 1)
    key = transaction_key(PREFIX, transaction_id)
    server.client().pexpire(key, 300)
    store = await opened(server)
    try:
        assert (await store.fetch([transaction_id])).statuses == ("found",)
        while server.client().exists(key):
            await asyncio.sleep(0.05)
        fetched = await store.fetch([transaction_id])
    finally:
        await store.close()
    assert fetched.statuses == ("not_found",)


async def test_metrics_count_ids_by_outcome_and_fetches(server: RedisServer) -> None:
    ids = write_rows(server, 2)
    write(server.client(), "bad", {**stored(ROWS[3]), "Time": "nan"})
    store = await opened(server)
    counts = {outcome: lookups(outcome) for outcome in ("found", "not_found", "invalid", "error")}
    fetched_before = fetches()
    try:
        await store.fetch([ids[0], ids[1], ids[0], "none", "bad"])
        await store.fetch(["none"])
    finally:
        await store.close()
    assert {outcome: lookups(outcome) - counts[outcome] for outcome in counts} == {
        "found": 3, "not_found": 2, "invalid": 1, "error": 0,
    }  # fmt: skip
    assert fetches() - fetched_before == 2


async def test_a_frozen_redis_is_unavailable_within_the_budget_then_recovers(
    own_redis: RedisServer, store_log: list[logging.LogRecord]
) -> None:
    """SIGSTOP: connections are accepted but nothing answers. Replies the frozen server sends
    after SIGCONT must not reach a later fetch: each id carries its own values."""
    ids = write_rows(own_redis, 4)
    store = await opened(own_redis)
    errors_before = lookups("error")
    try:
        assert (await store.fetch(ids[:2])).statuses == ("found", "found")
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(FeatureStoreUnavailable) as refused:
                await store.fetch(ids[:3])
            assert time.monotonic() - started < HANG_BOUND
            assert refused.value.retry_after == RETRY_AFTER_UNREACHABLE
            assert str(refused.value) == f"feature store did not answer within {TIMEOUT_MS} ms"
        os.kill(own_redis.process.pid, signal.SIGCONT)
        fetched = await store.fetch([ids[3], ids[1]])
    finally:
        await store.close()
    assert fetched.statuses == ("found", "found")
    assert np.array_equal(fetched.matrix, ROWS[[3, 1]])
    assert lookups("error") - errors_before == 6  # 3 ids asked, twice
    assert messages(store_log) == [
        f"feature store did not answer within {TIMEOUT_MS} ms: by-id scoring answers 503 until "
        "it is back",
        "feature store reachable again",
    ]


async def test_start_against_a_frozen_redis_returns_within_the_budget(
    own_redis: RedisServer, store_log: list[logging.LogRecord]
) -> None:
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    store = OnlineStore(own_redis.uri, PREFIX, TIMEOUT_MS)
    started = time.monotonic()
    await store.start()  # never raises
    assert time.monotonic() - started < HANG_BOUND
    await store.close()
    assert messages(store_log) == [
        f"feature store did not answer within {TIMEOUT_MS} ms: by-id scoring answers 503 until "
        "it is back",
    ]


async def test_a_cancelled_fetch_leaves_no_pending_reply_behind(own_redis: RedisServer) -> None:
    ids = write_rows(own_redis, 3)
    store = await opened(own_redis, timeout_ms=10_000)
    try:
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        with pytest.raises(TimeoutError):  # the caller gave up (a client went away, a shutdown)
            await asyncio.wait_for(store.fetch([ids[0]]), 0.1)
        os.kill(own_redis.process.pid, signal.SIGCONT)
        fetched = await store.fetch([ids[2]])
    finally:
        await store.close()
    assert fetched.statuses == ("found",)
    assert np.array_equal(fetched.matrix, ROWS[[2]])


async def test_redis_restarted_on_the_same_port_is_used_again_by_the_same_client(
    workdir: Path, own_redis: RedisServer, store_log: list[logging.LogRecord]
) -> None:
    ids = write_rows(own_redis, 2)
    store = await opened(own_redis)
    try:
        assert (await store.fetch(ids)).statuses == ("found", "found")
        own_redis.stop()
        for _ in range(2):
            with pytest.raises(FeatureStoreUnavailable) as refused:
                await store.fetch(ids)
            assert str(refused.value) == "feature store unreachable (ConnectionError)"
        restarted = start_redis(workdir, own_redis.port)
        try:
            write_rows(restarted, 2)
            fetched = await store.fetch(ids[::-1])
        finally:
            restarted.stop()
    finally:
        await store.close()
    assert fetched.statuses == ("found", "found")
    assert np.array_equal(fetched.matrix, ROWS[[1, 0]])
    assert messages(store_log) == [
        "feature store unreachable (ConnectionError): by-id scoring answers 503 until it is back",
        "feature store reachable again",
    ]


async def test_a_meta_record_with_other_features_is_refused_and_logged_once(
    server: RedisServer, store_log: list[logging.LogRecord]
) -> None:
    ids = write_rows(server, 2)
    write_meta(server, ("Time", *(f"V{i}" for i in range(1, 29))))  # Amount dropped
    errors_before = lookups("error")
    store = await opened(server)
    try:
        for _ in range(3):
            with pytest.raises(FeatureStoreUnavailable) as refused:
                await store.fetch(ids)
            assert refused.value.retry_after == RETRY_AFTER_MISMATCH
            assert str(refused.value) == (
                "feature store meta record lists other features than this service"
            )
        write_meta(server)  # materialized again with this service's features
        fetched = await store.fetch(ids)
    finally:
        await store.close()
    assert fetched.statuses == ("found", "found")
    assert lookups("error") - errors_before == 6
    refusal = (
        "feature store meta record lists other features than this service: by-id scoring answers "
        "503 rather than score misaligned columns; materialize again"
    )
    assert messages(store_log) == [
        refusal, "feature store meta record matches this service's features again",
    ]  # fmt: skip
    assert store_log[0].missing == ["Amount"]  # type: ignore[attr-defined]
    assert store_log[0].unexpected == []  # type: ignore[attr-defined]


async def test_the_meta_record_is_read_at_the_first_contact_when_redis_was_down_at_start(
    workdir: Path, store_log: list[logging.LogRecord]
) -> None:
    port = free_port()
    store = OnlineStore(f"redis://127.0.0.1:{port}/0", PREFIX, TIMEOUT_MS)
    await store.start()  # nothing listens yet: no exception
    later = start_redis(workdir, port)
    try:
        ids = write_rows(later, 1)
        write_meta(later, tuple(reversed(FEATURE_NAMES)))
        with pytest.raises(FeatureStoreUnavailable, match="meta record lists other features"):
            await store.fetch(ids)
    finally:
        later.stop()
        await store.close()
    assert messages(store_log)[0] == (
        "feature store unreachable (ConnectionError): by-id scoring answers 503 until it is back"
    )
    assert messages(store_log)[1:] == ["feature store reachable again", messages(store_log)[2]]
    assert messages(store_log)[2].startswith("feature store meta record lists other features")
    assert store_log[-1].same_names_other_order is True  # type: ignore[attr-defined]


async def test_no_meta_record_is_accepted(
    server: RedisServer, store_log: list[logging.LogRecord]
) -> None:
    ids = write_rows(server, 1)
    fetched = await fetch_once(server, ids)
    assert fetched.statuses == ("found",)
    assert messages(store_log, logging.INFO) == [
        "feature store has no meta record yet: records are checked one by one"
    ]


async def test_a_meta_record_without_its_feature_list_is_refused(
    server: RedisServer, store_log: list[logging.LogRecord]
) -> None:
    """A meta hash that exists but lists no features cannot vouch for the columns: refused, as
    one of other features is, and accepted again once the list is there."""
    ids = write_rows(server, 1)
    write_meta(server)
    server.client().hdel(meta_key(PREFIX), "features")
    store = await opened(server)
    try:
        with pytest.raises(FeatureStoreUnavailable) as refused:
            await store.fetch(ids)
        assert refused.value.retry_after == RETRY_AFTER_MISMATCH
        assert refused.value.detail == MISMATCH_DETAIL
        write_meta(server)
        fetched = await store.fetch(ids)
    finally:
        await store.close()
    assert fetched.statuses == ("found",)
    assert store_log[0].meta_features is None  # type: ignore[attr-defined]
    assert (
        messages(store_log)[-1] == "feature store meta record matches this service's features again"
    )


async def test_a_meta_record_of_this_registry_is_accepted_silently(
    server: RedisServer, store_log: list[logging.LogRecord]
) -> None:
    ids = write_rows(server, 1)
    write_meta(server)
    fetched = await fetch_once(server, ids)
    assert fetched.statuses == ("found",)
    assert messages(store_log, logging.INFO) == []


async def test_a_refused_record_is_an_unavailable_store_not_an_invalid_record(
    own_redis: RedisServer, store_log: list[logging.LogRecord]
) -> None:
    """An ACL that allows the meta record but not the records: Redis answers NOPERM per key.
    The pipeline wrote nothing wrong; the store is unusable until an operator fixes it."""
    admin = own_redis.client()
    (written,) = write_rows(own_redis, 1)
    admin.acl_setuser(
        "scorer",
        enabled=True,
        passwords=["+scorer-pw"],
        keys=[meta_key(PREFIX)],
        commands=["+@all"],
    )
    uri = f"redis://scorer:scorer-pw@127.0.0.1:{own_redis.port}/0"
    store = OnlineStore(uri, PREFIX, TIMEOUT_MS)
    await store.start()
    try:
        for ids in ([written], [written, "never-written"]):
            with pytest.raises(FeatureStoreUnavailable) as refused:
                await store.fetch(ids)
            assert refused.value.retry_after == RETRY_AFTER_UNREACHABLE
            assert str(refused.value) == "feature store refused the lookup (NoPermissionError)"
    finally:
        await store.close()
    assert not [r for r in store_log if r.getMessage() == "invalid feature record"]
    assert not [r for r in store_log if "other features" in r.getMessage()]


async def test_a_password_now_required_is_an_unavailable_store_not_a_meta_mismatch(
    own_redis: RedisServer, store_log: list[logging.LogRecord]
) -> None:
    (written,) = write_rows(own_redis, 1)
    store = await opened(own_redis)
    try:
        assert (await store.fetch([written])).statuses == ("found",)
        admin = own_redis.client()
        admin.config_set("requirepass", "now-secret")
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal")  # every connection, ours too
        with pytest.raises(FeatureStoreUnavailable) as refused:
            await store.fetch([written])
        assert refused.value.retry_after == RETRY_AFTER_UNREACHABLE
    finally:
        await store.close()
    assert not [r for r in store_log if "other features" in r.getMessage()]
    assert "now-secret" not in " ".join(JsonFormatter().format(r) for r in store_log)
