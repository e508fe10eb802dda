"""`materialize`: an offline-store file into Redis, every row checked before anything is written."""

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from app.features import encode_value
from app.featurestore.wording import counted
from app.featurestore.writer import StoreWriteError, StoreWriter
from app.offline import OfflineDataError, OfflineTable, read_offline

EXIT_STORE, EXIT_DATA = 1, 2
CHUNK_ROWS = 1000  # records per round trip


def materialize(
    source: Path,
    *,
    uri: str,
    prefix: str,
    ttl: int,
    id_column: str | None,
    skip_invalid: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Load `source`, ids from `id_column` or, when None, each row's 0-based position.

    Exit status 0; 2 when the file or a row is refused (Redis untouched); 1 when Redis fails.
    """
    out, err = out or sys.stdout, err or sys.stderr
    started = time.perf_counter()
    try:
        table = read_offline(source, id_column=id_column)
    except OfflineDataError as error:
        print(f"error: {error}", file=err)
        return EXIT_DATA
    skipped = table.bad
    if len(skipped) and not skip_invalid:
        print(
            f"error: {table.refusal()}. Nothing was written: fix these rows, or pass "
            "--skip-invalid to load the others.",
            file=err,
        )
        return EXIT_DATA
    for row in table.bad_rows() if len(skipped) else ():
        print(f"skipped {row}", file=err)
    valid = np.flatnonzero(~table.codes.any(axis=1))
    if not len(valid):
        print(f"error: {source.name} has no valid row to load", file=err)
        return EXIT_DATA

    written = 0
    try:
        writer = StoreWriter(uri, prefix, ttl)
        try:
            writer.check()
            for count in _write_records(writer, table, valid, err):
                written += count
            writer.write_meta(rows=written, source=source.name)
        finally:
            writer.close()
    except StoreWriteError as error:
        done = (
            f"At least {written:,} of {len(valid):,} records were written; the"
            if written
            else "The"
        )
        print(
            f"error: {error}. {done} meta record was not written; loading again is safe.", file=err
        )
        return EXIT_STORE
    seconds = time.perf_counter() - started
    note = f" ({counted(len(skipped), 'invalid row')} skipped)" if len(skipped) else ""
    print(
        f"materialized {counted(written, 'row')} of {source.name} under {prefix}{note}: "
        f"{seconds:.1f} s, {written / seconds:,.0f} rows/s",
        file=out,
    )
    return 0


def _write_records(
    writer: StoreWriter, table: OfflineTable, valid: np.ndarray, err: TextIO
) -> Iterator[int]:
    """Chunks of records, one round trip each; yields how many each chunk wrote."""
    with tqdm(total=len(valid), unit="rows", disable=not err.isatty(), file=err) as progress:
        for count in writer.write_chunks(_chunks(writer, table, valid)):
            progress.update(count)
            yield count


def _chunks(
    writer: StoreWriter, table: OfflineTable, valid: np.ndarray
) -> Iterator[tuple[bytes, int]]:
    ids = table.ids
    for start in range(0, len(valid), CHUNK_ROWS):
        rows = valid[start : start + CHUNK_ROWS].tolist()
        written_at = int(time.time())
        payload = b"".join(
            writer.record_commands(
                ids[row] if ids is not None else str(row), map(encode_value, values), written_at
            )
            for row, values in zip(rows, table.features[rows].tolist(), strict=True)
        )
        yield payload, len(rows)
