"""Speed of the feature store paths, in-process against a throw-away local redis-server.

    .venv/bin/python scripts/featurestore_speed.py [--rows 284807] [--skip-load]

Prints: the CPU and wall time of OnlineStore.fetch for 1 id and for 1,000 ids (median of rounds),
the offline reader on a generated file of --rows rows (CSV and Parquet), and `materialize` of
that Parquet file (rows/s). Nothing is asserted: compare runs on the same machine only.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import redis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.features import FEATURE_NAMES, record_fields, transaction_key
from app.featurestore.materialize import materialize
from app.featurestore.online import OnlineStore
from app.offline import read_offline
from app.synthetic import generate

PREFIX = "speed:v1"


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


async def fetch_speed(uri: str, rows: np.ndarray) -> None:
    client = redis.Redis.from_url(uri)
    pipeline = client.pipeline(transaction=False)
    ids = [f"tx-{index}" for index in range(len(rows))]
    for transaction_id, row in zip(ids, rows, strict=True):
        fields = record_fields(row.tolist(), time.time())
        pipeline.hset(transaction_key(PREFIX, transaction_id), mapping=fields)  # type: ignore[arg-type]
    pipeline.execute()
    store = OnlineStore(uri, PREFIX, timeout_ms=5000)
    await store.start()
    for count, repeat in ((1, 2000), (1000, 20)):
        asked = ids[:count]
        fetched = await store.fetch(asked)
        assert np.array_equal(fetched.matrix, rows[:count])
        cpu, wall = [], []
        for _ in range(7):
            started_cpu, started = time.process_time(), time.perf_counter()
            for _ in range(repeat):
                await store.fetch(asked)
            cpu.append((time.process_time() - started_cpu) / repeat)
            wall.append((time.perf_counter() - started) / repeat)
        unit, scale = ("µs", 1e6) if count == 1 else ("ms", 1e3)
        print(
            f"fetch {count:>5} ids: CPU {statistics.median(cpu) * scale:8.2f} {unit} "
            f"(min {min(cpu) * scale:.2f}), wall {statistics.median(wall) * scale:8.2f} {unit} "
            f"(min {min(wall) * scale:.2f})"
        )
    await store.close()


def write_files(directory: Path, count: int) -> tuple[Path, Path]:
    features, _ = generate(rows=count, seed=42)
    ids = pa.array([f"tx-{index:07d}" for index in range(count)])
    text = {
        name: pa.array([repr(v) for v in features[:, i].tolist()])
        for i, name in enumerate(FEATURE_NAMES)
    }
    csv_file, parquet_file = directory / "features.csv", directory / "features.parquet"
    pa_csv.write_csv(pa.table({"transaction_id": ids, **text}), csv_file)
    numbers = {name: features[:, index] for index, name in enumerate(FEATURE_NAMES)}
    pq.write_table(pa.table({"transaction_id": ids, **numbers}), parquet_file)
    return csv_file, parquet_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=284_807)
    parser.add_argument("--skip-load", action="store_true", help="only the fetch figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        process, uri = start_redis(directory)
        try:
            rows, _ = generate(rows=1000, seed=3)
            uvloop.run(fetch_speed(uri, rows))
            if args.skip_load:
                return
            csv_file, parquet_file = write_files(directory, args.rows)
            for path in (csv_file, parquet_file):
                started_cpu, started = time.process_time(), time.perf_counter()
                table = read_offline(path, id_column="transaction_id")
                print(
                    f"read and check {table.rows:,} rows of {path.suffix[1:]}: "
                    f"wall {time.perf_counter() - started:.2f} s, "
                    f"CPU {time.process_time() - started_cpu:.2f} s (all threads)"
                )
            materialize(parquet_file, uri=uri, prefix=PREFIX, ttl=3600, id_column="transaction_id")
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
