"""`python -m app.featurestore materialize | push` against a real redis-server."""

import csv
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from app.features import FEATURE_NAMES, WRITTEN_AT_FIELD, meta_key, transaction_key
from app.featurestore.writer import StoreWriteError, StoreWriter
from app.synthetic import generate
from tests.conftest import ROOT, SAMPLE_CSV, needs_sample
from tests.conftest import write_csv as write_rows_csv
from tests.redis_server import RedisServer, requires_redis
from tests.server import free_port

pytestmark = requires_redis

PREFIX = "test:v1"
FEATURES, LABELS = generate(rows=40, seed=9, fraud_rate=0.2)
IDS = [f"tx-{index:03d}" for index in range(40)]
SECRET = "4242.4242"  # no output may repeat it
TTL_RANGE = "--ttl must be from 1 to 315,360,000 seconds (ten years)"


@pytest.fixture
def server(shared_redis: RedisServer) -> RedisServer:
    shared_redis.client().flushall()
    return shared_redis


def run_store(
    *args: str | Path, cwd: Path, stdin: str | None = None, stderr: Any = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    """The command in a clean environment: no API_KEY, nothing from a developer's shell."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "app.featurestore", *map(str, args)],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=300,
        check=False,
    )


def materialize(server: RedisServer, source: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_store(
        "materialize", "--source", source, "--uri", server.uri, "--prefix", PREFIX, *args,
        cwd=source.parent,
    )  # fmt: skip


def write_csv(path: Path, rows: list[list[str]] | None = None) -> Path:
    """transaction_id, the 30 features as repr() text, and Class (which the loader ignores)."""
    if rows is None:
        rows = [[repr(value) for value in row] for row in FEATURES.tolist()]
    labelled = [
        [transaction_id, *row, str(label)]
        for transaction_id, row, label in zip(IDS, rows, LABELS.tolist(), strict=True)
    ]
    return write_rows_csv(path, ["transaction_id", *FEATURE_NAMES, "Class"], labelled)


def write_parquet(path: Path) -> Path:
    columns = {name: FEATURES[:, index] for index, name in enumerate(FEATURE_NAMES)}
    pq.write_table(pa.table({"transaction_id": IDS, **columns, "Class": LABELS}), path)
    return path


def record(client: redis.Redis, transaction_id: str) -> dict[str, str]:
    raw = client.hgetall(transaction_key(PREFIX, transaction_id))
    return {name.decode(): value.decode() for name, value in raw.items()}  # type: ignore[union-attr]


def features_of(stored: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in stored.items() if name != WRITTEN_AT_FIELD}


def expected(row: np.ndarray) -> dict[str, str]:
    return {name: repr(value) for name, value in zip(FEATURE_NAMES, row.tolist(), strict=True)}


SUMMARY = re.compile(
    r"materialized (\d+) rows? of (\S+) under test:v1(.*): \d+\.\d s, [\d,]+ rows/s\n"
)


@pytest.mark.parametrize("writer", [write_csv, write_parquet], ids=["csv", "parquet"])
def test_materialize_writes_the_documented_layout(
    tmp_path: Path, server: RedisServer, writer: Any
) -> None:
    source = writer(tmp_path / f"data.{writer.__name__.removeprefix('write_')}")
    started = int(time.time())
    result = materialize(server, source, "--ttl", "3600")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar without a terminal
    summary = SUMMARY.fullmatch(result.stdout)
    assert summary, result.stdout
    assert summary.groups() == ("40", source.name, "")
    client = server.client()
    assert client.dbsize() == 41
    for transaction_id, row in zip(IDS, FEATURES, strict=True):
        stored = record(client, transaction_id)
        assert list(stored) == [*FEATURE_NAMES, WRITTEN_AT_FIELD]
        assert features_of(stored) == expected(row)
        assert started <= int(stored[WRITTEN_AT_FIELD]) <= time.time()
        assert 3500 <= client.ttl(transaction_key(PREFIX, transaction_id)) <= 3600
    meta = {k.decode(): v.decode() for k, v in client.hgetall(meta_key(PREFIX)).items()}  # type: ignore[union-attr]
    assert meta.keys() == {"features", "materialized_at", "rows", "source"}
    assert meta["features"] == ",".join(FEATURE_NAMES)
    assert (meta["rows"], meta["source"]) == ("40", source.name)
    assert started <= int(meta["materialized_at"]) <= time.time()
    assert client.ttl(meta_key(PREFIX)) == -1


def test_the_meta_record_is_written_after_every_record(tmp_path: Path, server: RedisServer) -> None:
    """MONITOR shows every command Redis runs, in order."""
    seen: list[str] = []
    listening = threading.Event()

    def watch() -> None:
        with server.client().monitor() as monitor:
            listening.set()
            while (command := monitor.next_command()["command"]) != "ECHO done":
                seen.append(command)

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert listening.wait(10)
    result = materialize(server, write_csv(tmp_path / "data.csv"))
    server.client().echo("done")
    watcher.join(timeout=30)
    assert result.returncode == 0, result.stderr
    touching_records = [i for i, command in enumerate(seen) if f"{PREFIX}:txn:" in command]
    touching_meta = [i for i, command in enumerate(seen) if meta_key(PREFIX) in command]
    assert len(touching_records) == 40 * 3  # DEL, HSET, EXPIRE per record
    assert touching_meta
    assert max(touching_records) < min(touching_meta)


def test_materialize_again_is_idempotent_and_replaces_whole_records(
    tmp_path: Path, server: RedisServer
) -> None:
    client = server.client()
    stale = transaction_key(PREFIX, IDS[5])
    client.hset(stale, mapping={"V1": "1.0", "from_an_old_pipeline": "1"})
    source = write_csv(tmp_path / "data.csv")
    assert materialize(server, source, "--ttl", "600").returncode == 0
    first = {transaction_id: features_of(record(client, transaction_id)) for transaction_id in IDS}
    client.expire(stale, 5)
    result = materialize(server, source, "--ttl", "600")
    assert result.returncode == 0, result.stderr
    again = {transaction_id: features_of(record(client, transaction_id)) for transaction_id in IDS}
    assert again == first
    assert first[IDS[5]] == expected(FEATURES[5])  # the stale field is gone
    assert client.dbsize() == 41
    assert client.ttl(stale) > 5  # the TTL is set anew


def test_a_refused_load_leaves_redis_untouched(tmp_path: Path, server: RedisServer) -> None:
    client = server.client()
    client.hset(transaction_key(PREFIX, IDS[0]), mapping={"V1": "0.5"})
    rows = [[repr(value) for value in row] for row in FEATURES.tolist()]
    rows[7][12] = SECRET + "x"
    rows[30][29] = ""
    result = materialize(server, write_csv(tmp_path / "data.csv", rows))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: data.csv: 2 of 40 rows break the rules: row 7 (line 9): V12 is not a number; "
        "row 30 (line 32): Amount is missing. Nothing was written: fix these rows, or pass "
        "--skip-invalid to load the others.\n"
    )
    assert client.keys("*") == [transaction_key(PREFIX, IDS[0]).encode()]
    assert record(client, IDS[0]) == {"V1": "0.5"}


def test_repeated_ids_refuse_the_file(tmp_path: Path, server: RedisServer) -> None:
    source = write_csv(tmp_path / "data.csv")
    text = source.read_text().replace(IDS[3] + ",", IDS[1] + ",")
    source.write_text(text)
    result = materialize(server, source)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: data.csv: 2 of 40 rows break the rules: row 1 (line 3): transaction_id repeats "
        "the id of another row; row 3 (line 5): transaction_id repeats the id of another row."
    )
    assert server.client().dbsize() == 0


def test_skip_invalid_loads_the_others_and_reports_each_skipped_row(
    tmp_path: Path, server: RedisServer
) -> None:
    rows = [[repr(value) for value in row] for row in FEATURES.tolist()]
    rows[3][0] = "nan"
    rows[8][29] = "1e999"
    result = materialize(server, write_csv(tmp_path / "data.csv", rows), "--skip-invalid")
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "skipped row 3 (line 5): Time is not a number\n"
        "skipped row 8 (line 10): Amount is not finite\n"
    )
    summary = SUMMARY.fullmatch(result.stdout)
    assert summary, result.stdout
    assert summary.groups() == ("38", "data.csv", " (2 invalid rows skipped)")
    client = server.client()
    loaded = sorted(key.decode() for key in client.keys(f"{PREFIX}:txn:*"))
    assert loaded == sorted(transaction_key(PREFIX, i) for i in IDS if i not in (IDS[3], IDS[8]))
    assert client.hget(meta_key(PREFIX), "rows") == b"38"


@needs_sample
def test_row_number_ids_on_the_real_sample(server: RedisServer) -> None:
    result = run_store(
        "materialize", "--source", "creditcard-sample.csv", "--row-number-ids",
        "--uri", server.uri, "--prefix", PREFIX, cwd=SAMPLE_CSV.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    client = server.client()
    with SAMPLE_CSV.open(newline="") as handle:
        for position, cells in enumerate(csv.DictReader(handle)):
            stored = features_of(record(client, str(position)))
            assert stored == {name: repr(float(cells[name])) for name in FEATURE_NAMES}
    assert position == 999
    assert client.dbsize() == 1001
    assert client.hget(meta_key(PREFIX), "source") == b"creditcard-sample.csv"


def test_a_progress_bar_on_a_terminal(tmp_path: Path, server: RedisServer) -> None:
    leader, follower = pty.openpty()
    # A terminal of 100 columns: tqdm sizes its bar to the terminal (a new pty has 0).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        result = materialize_with_stderr(server, write_csv(tmp_path / "data.csv"), follower)
        os.close(follower)
        follower = -1
        shown = read_all(leader)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert result.returncode == 0
    assert "100%" in shown
    assert "40/40" in shown


def materialize_with_stderr(
    server: RedisServer, source: Path, stderr: int
) -> subprocess.CompletedProcess[str]:
    return run_store(
        "materialize", "--source", source, "--uri", server.uri, "--prefix", PREFIX,
        cwd=source.parent, stderr=stderr,
    )  # fmt: skip


def read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_an_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    result = run_store(
        "materialize", "--source", write_csv(tmp_path / "data.csv"), "--uri", closed,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        "error: cannot reach the feature store (ConnectionError). The meta record was not "
        "written; loading again is safe.\n"
    )


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path, server: RedisServer) -> None:
    result = materialize(server, tmp_path / "absent.csv")
    assert result.returncode == 2
    assert (
        result.stderr
        == f"error: cannot read {tmp_path / 'absent.csv'}: No such file or directory\n"
    )


def test_the_store_comes_from_dotenv_without_an_api_key(
    tmp_path: Path, server: RedisServer
) -> None:
    (tmp_path / ".env").write_text(
        f"FEATURE_STORE_URI={server.uri}\nFEATURE_STORE_PREFIX=from-env\n"
    )
    result = run_store("materialize", "--source", write_csv(tmp_path / "data.csv"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert server.client().exists("from-env:meta", "from-env:txn:tx-000") == 2


def test_a_dotenv_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    env = b"FEATURE_STORE_PREFIX=caf\xe9\n"
    (tmp_path / ".env").write_bytes(env)
    result = run_store("push", cwd=tmp_path, stdin="")
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"error: cannot read .env: not UTF-8 text (at byte {env.index(0xE9)})\n"
    ), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no feature store: set FEATURE_STORE_URI (environment or .env) or pass --uri"),
        (
            ("--uri", "redis://127.0.0.1:1/0", "--prefix", "has space"),
            "--prefix String should match pattern '^[A-Za-z0-9._:-]+$'",
        ),
        (("--uri", "redis://127.0.0.1:1/0", "--ttl", "0"), TTL_RANGE),
        # Redis would refuse the EXPIRE after MULTI applied the rest: keys that never expire.
        (("--uri", "redis://127.0.0.1:1/0", "--ttl", "9999999999999999"), TTL_RANGE),
        (("--uri", "redis://127.0.0.1:1/0", "--ttl", "315360001"), TTL_RANGE),
        (
            ("--uri", "http://127.0.0.1:1/0"),
            "--uri must be empty (by-id routes off) or a redis://, rediss:// or unix:// URI",
        ),
    ],
)
def test_bad_settings_are_usage_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run_store("materialize", "--source", tmp_path / "x.csv", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.endswith(f"error: {message}\n")
    assert "Traceback" not in result.stderr


def pushed_line(transaction_id: str, row: np.ndarray, **changes: Any) -> str:
    body = {"transaction_id": transaction_id, **dict(zip(FEATURE_NAMES, row.tolist(), strict=True))}
    body |= changes
    return json.dumps({k: v for k, v in body.items() if v is not ...})


def test_push_writes_each_valid_line_and_reports_each_bad_one(
    tmp_path: Path, server: RedisServer
) -> None:
    lines = [
        pushed_line("p-1", FEATURES[1]),
        '{"transaction_id": "p-2", "Time": ' + SECRET + ",",  # cut short
        "",
        pushed_line("p-4", FEATURES[4]),
        pushed_line("p-5", FEATURES[5], V3=SECRET),  # a string, not a number
        pushed_line("p 6", FEATURES[6]),
        pushed_line("p-7", FEATURES[7], merchant=SECRET),
        pushed_line("p-8", FEATURES[8], Amount=...),
        pushed_line("p-9", FEATURES[9], V1=float(SECRET)).replace(SECRET, SECRET + "e999"),
        pushed_line("p-10", FEATURES[10], merchant=SECRET * 20_000),  # refused unread
        pushed_line("p-11", FEATURES[11]),
        pushed_line("p-12", FEATURES[12]).replace('"V2": ', '"V2": NaN, "V2": ', 1),
    ]
    result = run_store(
        "push", "--uri", server.uri, "--prefix", PREFIX, "--ttl", "120",
        cwd=tmp_path, stdin="\n".join(lines) + "\n",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == "pushed 3 records under test:v1; 8 bad lines skipped\n"
    assert result.stderr.splitlines() == [
        "line 2: Invalid JSON: EOF while parsing a value at line 1 column 44",
        "line 5: V3: Input should be a valid number",
        "line 6: transaction_id: String should match pattern '^(?:[A-Za-z0-9._:-]{1,128})$'",
        "line 7: merchant: Extra inputs are not permitted",
        "line 8: Amount: Field required",
        "line 9: V1: Input should be a finite number",
        "line 10: longer than 65,536 bytes",
        "line 12: V2: Field given more than once",
    ]
    assert SECRET not in result.stderr
    client = server.client()
    assert sorted(client.keys(f"{PREFIX}:*")) == [
        transaction_key(PREFIX, transaction_id).encode()
        for transaction_id in ("p-1", "p-11", "p-4")
    ]
    for transaction_id, row in (("p-1", FEATURES[1]), ("p-4", FEATURES[4]), ("p-11", FEATURES[11])):
        stored = record(client, transaction_id)
        assert list(stored) == [*FEATURE_NAMES, WRITTEN_AT_FIELD]
        assert features_of(stored) == expected(row)
        assert 100 <= client.ttl(transaction_key(PREFIX, transaction_id)) <= 120


def test_push_of_good_lines_only_exits_zero(tmp_path: Path, server: RedisServer) -> None:
    lines = "".join(pushed_line(f"q-{i}", FEATURES[i]) + "\n" for i in range(5))
    result = run_store("push", "--uri", server.uri, "--prefix", PREFIX, cwd=tmp_path, stdin=lines)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "pushed 5 records under test:v1; 0 bad lines skipped\n"
    assert server.client().dbsize() == 5


def test_push_counts_one_record_and_one_bad_line_in_the_singular(
    tmp_path: Path, server: RedisServer
) -> None:
    lines = pushed_line("s-1", FEATURES[0]) + "\n" + "{}\n"
    result = run_store("push", "--uri", server.uri, "--prefix", PREFIX, cwd=tmp_path, stdin=lines)
    assert result.returncode == 2
    assert result.stdout == "pushed 1 record under test:v1; 1 bad line skipped\n"


def test_materialize_counts_one_row_and_one_skipped_row_in_the_singular(
    tmp_path: Path, server: RedisServer
) -> None:
    rows = [[IDS[i], *(repr(value) for value in FEATURES[i].tolist())] for i in (0, 1)]
    rows[1][1] = "nan"  # the second row's Time
    source = write_rows_csv(tmp_path / "data.csv", ["transaction_id", *FEATURE_NAMES], rows)
    result = materialize(server, source, "--skip-invalid")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "materialized 1 row of data.csv under test:v1 (1 invalid row skipped): "
    )


def test_push_to_an_unreachable_redis_fails_at_once(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    result = run_store(
        "push", "--uri", closed, cwd=tmp_path, stdin=pushed_line("r-1", FEATURES[0]) + "\n"
    )
    assert result.returncode == 1
    assert result.stderr == (
        "error: cannot reach the feature store (ConnectionError); 0 records were written "
        "before it\n"
    )


def test_a_transaction_redis_applies_in_part_is_reported_as_such(server: RedisServer) -> None:
    """EXEC applies the commands that succeed: an EXPIRE Redis refuses leaves the record, without
    a TTL. The commands refuse such a --ttl; the writer still says what happened."""
    writer = StoreWriter(server.uri, PREFIX, ttl=2**62)
    try:
        with pytest.raises(StoreWriteError, match="did not apply all of a record's transaction"):
            writer.write_record("t-1", [repr(value) for value in FEATURES[0].tolist()])
    finally:
        writer.close()
    assert server.client().ttl(transaction_key(PREFIX, "t-1")) == -1
