"""The offline store: a CSV or Parquet file → features in registry order, every cell checked.

Cells follow the request body's rules: present, a number (in a CSV the text of a JSON number,
features.NUMBER_TEXT; in Parquet a numeric column), finite. Rows are numbered from 0 in file
order, header and blank lines not counted: the id `--row-number-ids` gives a row, and its pandas
index. A CSV row's message also gives its line in the file (the header is line 1).
"""

import contextlib
import csv
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from app.features import FEATURE_DTYPE, FEATURE_NAMES, N_FEATURES, NUMBER_TEXT, TRANSACTION_ID

LABEL = "Class"
PARQUET_SUFFIXES = (".parquet", ".pq")

# What is wrong with a cell; 0 is nothing.
MISSING, NOT_A_NUMBER, NOT_FINITE, NOT_A_LABEL, NOT_AN_ID, DUPLICATE_ID = range(1, 7)
REASONS = {
    MISSING: "is missing",
    NOT_A_NUMBER: "is not a number",
    NOT_FINITE: "is not finite",
    NOT_A_LABEL: "is not 0 or 1",
    NOT_AN_ID: "is not a transaction id (1-128 of A-Z a-z 0-9 . _ : -)",
    DUPLICATE_ID: "repeats the id of another row",
}
_NUMBER = f"^(?:{NUMBER_TEXT.pattern.decode()})$"  # RE2 reads Python's syntax for these
_ID = f"^(?:{TRANSACTION_ID.pattern})$"


class OfflineDataError(ValueError):
    """The file cannot be used at all; the message says why (never a cell's value)."""


@dataclass(frozen=True)
class BadRow:
    """A row that breaks the rules: where it is and what is wrong, by column."""

    row: int
    line: int | None
    problems: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        where = f"row {self.row}" if self.line is None else f"row {self.row} (line {self.line})"
        return f"{where}: " + ", ".join(f"{column} {reason}" for column, reason in self.problems)


@dataclass(frozen=True)
class OfflineTable:
    """A file's rows: features (NaN in bad cells), labels and ids when asked for, and problems."""

    path: Path
    features: np.ndarray
    labels: np.ndarray | None
    ids: list[str] | None
    columns: tuple[str, ...]
    codes: np.ndarray  # (rows, columns) uint8: the problem of each checked cell, 0 for none

    @property
    def rows(self) -> int:
        return len(self.features)

    @property
    def bad(self) -> np.ndarray:
        """Indices of the rows with at least one problem, in file order."""
        return np.flatnonzero(self.codes.any(axis=1))

    def bad_rows(self, limit: int | None = None) -> list[BadRow]:
        """The first `limit` bad rows (all by default), each with its problems by column."""
        rows = self.bad[:limit].tolist()
        lines = _csv_lines(self.path, rows) if not is_parquet(self.path) else {}
        return [
            BadRow(
                row,
                lines.get(row),
                tuple(
                    (column, REASONS[int(code)])
                    for column, code in zip(self.columns, self.codes[row], strict=True)
                    if code
                ),
            )
            for row in rows
        ]

    def refusal(self, limit: int = 5) -> str:
        """One line saying how many rows are bad and what is wrong with the first ones."""
        bad = self.bad
        shown = "; ".join(str(row) for row in self.bad_rows(limit))
        more = f"; and {len(bad) - limit} more" if len(bad) > limit else ""
        return f"{self.path.name}: {len(bad)} of {self.rows} rows break the rules: {shown}{more}"


def read_offline(path: Path, *, label: bool = False, id_column: str | None = None) -> OfflineTable:
    """Read and check the 30 features (+ `Class` with `label`, + `id_column`) of every row.

    Raises OfflineDataError for a file that cannot be used at all (unreadable, a column missing,
    a Parquet column that is not numeric, a malformed CSV, no rows); bad cells are in `codes`.
    """
    columns = (*FEATURE_NAMES, *((LABEL,) if label else ()), *((id_column,) if id_column else ()))
    if len(set(columns)) != len(columns):
        raise OfflineDataError(f"the id column cannot be one of the model's columns: {id_column}")
    try:
        if is_parquet(path):
            table = _read_parquet(path, columns, id_column)
        else:
            table = _read_csv(path, columns)
    except OSError as error:
        raise OfflineDataError(f"cannot read {path}: {error.strerror or 'not readable'}") from None
    if table.num_rows == 0:
        raise OfflineDataError(f"{path.name} has no data rows")

    codes = np.zeros((table.num_rows, len(columns)), dtype=np.uint8)
    features = np.empty((table.num_rows, N_FEATURES), dtype=FEATURE_DTYPE)
    numeric = (*FEATURE_NAMES, LABEL) if label else FEATURE_NAMES
    # Arrow's kernels release the GIL: one column per core.
    with ThreadPoolExecutor(max_workers=pa.cpu_count()) as pool:
        checked = list(pool.map(_numbers, (table.column(name) for name in numeric)))
    for index, (values, column_codes) in enumerate(checked[:N_FEATURES]):
        features[:, index], codes[:, index] = values, column_codes
    labels = None
    if label:
        values, codes[:, N_FEATURES] = checked[N_FEATURES]
        not_a_label = (codes[:, N_FEATURES] == 0) & (values != 0) & (values != 1)
        codes[not_a_label, N_FEATURES] = NOT_A_LABEL
        labels = np.where(codes[:, N_FEATURES] == 0, values, -1).astype(np.int64)
    ids = None
    if id_column:
        ids, codes[:, -1] = _ids(table.column(id_column))
    return OfflineTable(path, features, labels, ids, columns, codes)


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def _read_parquet(path: Path, columns: tuple[str, ...], id_column: str | None) -> pa.Table:
    try:
        schema = pq.read_schema(path)
    except pa.ArrowException:
        raise OfflineDataError(f"{path.name} is not a Parquet file") from None
    _require(path, columns, schema.names)
    for name in columns:
        kind = schema.field(name).type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if name == id_column:
            if not (numeric and pa.types.is_integer(kind)) and not _is_text(kind):
                raise OfflineDataError(f"{path.name}: column {name} is {kind}, not text or integer")
        elif not (numeric or pa.types.is_decimal(kind)):
            raise OfflineDataError(f"{path.name}: column {name} is {kind}, not numeric")
    try:
        return pq.read_table(path, columns=list(columns))
    except pa.ArrowException:
        raise OfflineDataError(f"{path.name}: its data cannot be read as Parquet") from None


def _read_csv(path: Path, columns: tuple[str, ...]) -> pa.Table:
    header = _csv_header(path)
    _require(path, columns, header)
    if len(set(header)) != len(header):
        twice = sorted({name for name in header if header.count(name) > 1})
        raise OfflineDataError(f"{path.name}: columns named twice: {', '.join(twice)}")
    ragged: list[pa_csv.InvalidRow] = []
    try:
        return _arrow_csv(path, header, columns, ragged, threads=True)
    except pa.ArrowInvalid:
        if not ragged:  # Arrow's message quotes the offending text: say it in our own words
            raise OfflineDataError(f"{path.name} is not a UTF-8 CSV file") from None
    if ragged[0].number is None:  # Arrow numbers lines only when it reads in one thread
        with contextlib.suppress(pa.ArrowInvalid):
            _arrow_csv(path, header, columns, ragged, threads=False)
    line = ragged[-1]
    where = "a line" if line.number is None else f"line {line.number}"
    raise OfflineDataError(
        f"{path.name}: {where} has {line.actual_columns} fields, the header {line.expected_columns}"
    )


def _arrow_csv(
    path: Path,
    header: list[str],
    columns: tuple[str, ...],
    ragged: list[pa_csv.InvalidRow],
    *,
    threads: bool,
) -> pa.Table:
    def refuse(line: pa_csv.InvalidRow) -> str:
        ragged.append(line)
        return "error"

    return pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(column_names=header, skip_rows=1, use_threads=threads),
        parse_options=pa_csv.ParseOptions(invalid_row_handler=refuse),
        # Text, checked in _numbers: Arrow's own parser also takes nan, inf, +1 and .5.
        convert_options=pa_csv.ConvertOptions(
            include_columns=list(columns),
            column_types=dict.fromkeys(columns, pa.string()),
            strings_can_be_null=False,
        ),
    )


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            first = next(csv.reader(handle), None)
        except (UnicodeDecodeError, csv.Error):
            raise OfflineDataError(f"{path.name}: its first line is not a CSV header") from None
    if not first:
        raise OfflineDataError(f"{path.name} is empty: no header")
    return [name.strip() for name in first]


def _require(path: Path, columns: tuple[str, ...], present: list[str]) -> None:
    missing = [name for name in columns if name not in present]
    if missing:
        raise OfflineDataError(f"{path.name} lacks required columns: {', '.join(missing)}")


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _numbers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN where bad) and the problem codes of one column."""
    codes = np.zeros(len(column), dtype=np.uint8)
    if _is_text(column.type):
        present = pc.greater(pc.binary_length(column), 0)
        number = pc.and_(present, pc.match_substring_regex(column, _NUMBER))
        values = pc.cast(pc.if_else(number, column, None), pa.float64())
        codes[~_mask(present)] = MISSING
        codes[_mask(present) & ~_mask(number)] = NOT_A_NUMBER
    else:
        values = pc.cast(column, pa.float64(), safe=False)  # large integers round, as JSON's do
        codes[~_mask(pc.is_valid(column))] = MISSING
    array = values.to_numpy()  # nulls become NaN
    codes[(codes == 0) & ~np.isfinite(array)] = NOT_FINITE
    return array, codes


def _ids(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """The ids as text and their problem codes: not an id, or an id on several rows."""
    text = column if _is_text(column.type) else pc.cast(column, pa.string())
    valid = pc.fill_null(pc.match_substring_regex(text, _ID), False)
    codes = np.where(_mask(valid), 0, NOT_AN_ID).astype(np.uint8)
    counts = pa.table({"id": text}).group_by("id").aggregate([("id", "count")])
    repeated = counts.filter(pc.greater(counts.column("id_count"), 1)).column("id")
    if len(repeated):
        codes[(codes == 0) & _mask(pc.is_in(text, value_set=repeated.combine_chunks()))] = (
            DUPLICATE_ID
        )
    return text.to_pylist(), codes


def _mask(booleans: pa.ChunkedArray | pa.Array) -> np.ndarray:
    filled = pc.fill_null(booleans, False)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def _csv_lines(path: Path, rows: list[int]) -> dict[int, int]:
    """The line in the file of each given data row (blank lines are not rows; the header is 1)."""
    wanted, found = set(rows), {}
    for row, line in _data_lines(path):
        if row in wanted:
            found[row] = line
            if len(found) == len(wanted):
                break
    return found


def _data_lines(path: Path) -> Iterator[tuple[int, int]]:
    """(row, the line it starts on), read as CSV: a quoted value may span lines."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        next(reader, None)  # the header
        row, last_line = 0, reader.line_num
        for fields in reader:
            first_line, last_line = last_line + 1, reader.line_num
            if fields:  # a blank line is not a row
                yield row, first_line
                row += 1
