"""The offline reader: CSV and Parquet into registry order, every cell held to the request rules."""

import csv
import json
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.card import card_path
from app.features import FEATURE_NAMES
from app.offline import BadRow, OfflineDataError, read_offline
from app.synthetic import generate
from tests.conftest import SAMPLE_CSV, needs_sample, write_csv
from tests.server import run_in_repo

FEATURES, LABELS = generate(rows=40, seed=5, fraud_rate=0.3)
SECRET = "4242.4242"  # a value no message may repeat


def csv_rows(features: np.ndarray = FEATURES) -> list[list[str]]:
    return [[repr(value) for value in row] for row in features.tolist()]


def labelled_csv(path: Path, rows: list[list[str]] | None = None) -> Path:
    rows = csv_rows() if rows is None else rows
    labelled = [[*row, str(label)] for row, label in zip(rows, LABELS.tolist(), strict=True)]
    return write_csv(path, [*FEATURE_NAMES, "Class"], labelled)


def problems(path: Path, **options: object) -> list[str]:
    return [str(row) for row in read_offline(path, **options).bad_rows()]  # type: ignore[arg-type]


def test_csv_and_parquet_read_into_registry_order(tmp_path: Path) -> None:
    """Columns in any order, others ignored; the same numbers from either format."""
    order = [*reversed(FEATURE_NAMES)]
    ids = [f"tx:{index}" for index in range(40)]
    header = ["note", "transaction_id", *order, "Class"]
    rows = [
        ["x", transaction_id, *(repr(row[FEATURE_NAMES.index(name)]) for name in order), str(label)]
        for transaction_id, row, label in zip(ids, FEATURES.tolist(), LABELS.tolist(), strict=True)
    ]
    csv_file = write_csv(tmp_path / "data.csv", header, rows)
    columns = {"note": ["x"] * 40, "transaction_id": ids}
    columns |= {name: FEATURES[:, FEATURE_NAMES.index(name)] for name in order}
    columns["Class"] = LABELS
    parquet_file = tmp_path / "data.parquet"
    pq.write_table(pa.table(columns), parquet_file)

    for path in (csv_file, parquet_file):
        table = read_offline(path, label=True, id_column="transaction_id")
        assert table.features.dtype == np.float64
        assert np.array_equal(table.features, FEATURES), path
        assert table.labels is not None
        assert table.labels.tolist() == LABELS.tolist()
        assert table.ids == ids
        assert table.bad.tolist() == []
        assert table.columns == (*FEATURE_NAMES, "Class", "transaction_id")


@needs_sample
def test_the_real_sample_reads_exactly(tmp_path: Path) -> None:
    table = read_offline(SAMPLE_CSV, label=True)
    with SAMPLE_CSV.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    expected = np.array([[float(record[name]) for name in FEATURE_NAMES] for record in records])
    assert table.rows == 1000
    assert np.array_equal(table.features, expected)
    assert table.labels is not None
    assert int(table.labels.sum()) == 300
    assert table.ids is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is missing"),
        ("abc", "is not a number"),
        ("1_000", "is not a number"),
        ("nan", "is not a number"),
        ("inf", "is not a number"),
        ("-Infinity", "is not a number"),
        (".5", "is not a number"),
        ("5.", "is not a number"),
        ("+1", "is not a number"),
        ("01", "is not a number"),
        ("0x10", "is not a number"),
        (" 1", "is not a number"),
        ("1,5", "is not a number"),
        ("1e999", "is not finite"),
        ("-1" + "0" * 400, "is not finite"),
    ],
)
def test_a_csv_cell_must_be_the_text_of_a_finite_json_number(
    tmp_path: Path, text: str, reason: str
) -> None:
    rows = csv_rows()
    rows[7][12] = text
    path = write_csv(tmp_path / "cells.csv", list(FEATURE_NAMES), rows)
    assert problems(path) == [f"row 7 (line 9): V12 {reason}"]


@pytest.mark.parametrize(
    ("text", "value"), [("-0", -0.0), ("1E+5", 1e5), ("1e-400", 0.0), ("7", 7.0)]
)
def test_every_json_number_is_read(tmp_path: Path, text: str, value: float) -> None:
    rows = csv_rows()
    rows[0][0] = text
    table = read_offline(write_csv(tmp_path / "ok.csv", list(FEATURE_NAMES), rows))
    assert table.bad.tolist() == []
    assert table.features[0, 0] == value


def test_quoted_csv_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(FEATURE_NAMES)
        writer.writerows(csv_rows())
    assert np.array_equal(read_offline(path).features, FEATURES)


def test_rows_are_numbered_from_zero_and_lines_count_the_header_and_blank_lines(
    tmp_path: Path,
) -> None:
    rows = csv_rows()
    rows[3][0] = "abc"
    rows[9][29] = ""
    rows[9][1] = "1e999"
    lines = [",".join(FEATURE_NAMES)] + [",".join(row) for row in rows]
    lines.insert(3, "")  # a blank line before row 2: not a row, but a line
    path = tmp_path / "blank.csv"
    path.write_text("\n".join(lines) + "\n")
    table = read_offline(path)
    assert table.rows == 40
    assert table.bad.tolist() == [3, 9]
    assert table.bad_rows() == [
        BadRow(3, 6, (("Time", "is not a number"),)),
        BadRow(9, 12, (("V1", "is not finite"), ("Amount", "is missing"))),
    ]
    assert table.refusal(limit=1) == (
        "blank.csv: 2 of 40 rows break the rules: row 3 (line 6): Time is not a number; and 1 more"
    )
    assert np.isnan(table.features[3, 0])
    assert np.array_equal(np.delete(table.features, [3, 9], axis=0), np.delete(FEATURES, [3, 9], 0))


def test_a_row_after_a_quoted_value_spanning_lines_is_named_by_its_own_line(
    tmp_path: Path,
) -> None:
    rows = [[*row, "a note"] for row in csv_rows()]
    rows[1][30] = "two\nlines"  # an extra column's quoted value: row 1 takes lines 3 and 4
    rows[4][2] = "bad"
    path = tmp_path / "multiline.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow([*FEATURE_NAMES, "note"])
        writer.writerows(rows)
    bad_line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if ",bad," in text)

    assert bad_line == 7
    assert [str(row) for row in read_offline(path).bad_rows()] == [
        "row 4 (line 7): V2 is not a number"
    ]


def test_labels_must_be_zero_or_one(tmp_path: Path) -> None:
    rows = [[*row, str(label)] for row, label in zip(csv_rows(), LABELS.tolist(), strict=True)]
    rows[2][30], rows[5][30], rows[6][30] = "2", "yes", "1.0"
    path = write_csv(tmp_path / "labels.csv", [*FEATURE_NAMES, "Class"], rows)
    table = read_offline(path, label=True)
    assert [str(row) for row in table.bad_rows()] == [
        "row 2 (line 4): Class is not 0 or 1",
        "row 5 (line 7): Class is not a number",
    ]
    assert table.labels is not None
    assert table.labels[6] == 1


def test_parquet_nulls_and_non_finite_values_are_bad_cells(tmp_path: Path) -> None:
    columns = {name: pa.array(FEATURES[:, index]) for index, name in enumerate(FEATURE_NAMES)}
    v3 = FEATURES[:, 3].copy()
    v3[[1, 2]] = [np.nan, -np.inf]
    columns["V3"] = pa.array(v3)
    columns["V4"] = pa.array([None, *FEATURES[1:, 4].tolist()], type=pa.float64())
    columns["Time"] = pa.array(FEATURES[:, 0].astype(np.int64))  # integer columns are numbers
    columns["Amount"] = pa.array([Decimal(str(round(v, 2))) for v in FEATURES[:, 29].tolist()])
    path = tmp_path / "cells.parquet"
    pq.write_table(pa.table(columns), path)
    table = read_offline(path)
    assert [str(row) for row in table.bad_rows()] == [
        "row 0: V4 is missing",
        "row 1: V3 is not finite",
        "row 2: V3 is not finite",
    ]
    assert np.array_equal(table.features[:, 0], FEATURES[:, 0].astype(np.int64))
    assert np.allclose(table.features[:, 29], FEATURES[:, 29], atol=0.006)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("V2", pa.array(["1.5"] * 40), "cells.parquet: column V2 is string, not numeric"),
        ("V2", pa.array([True] * 40), "cells.parquet: column V2 is bool, not numeric"),
        (
            "transaction_id",
            pa.array([1.5] * 40),
            "cells.parquet: column transaction_id is double, not text or integer",
        ),
    ],
)
def test_a_parquet_column_of_the_wrong_type_refuses_the_file(
    tmp_path: Path, column: str, values: pa.Array, message: str
) -> None:
    columns = {name: pa.array(FEATURES[:, index]) for index, name in enumerate(FEATURE_NAMES)}
    columns["transaction_id"] = pa.array([f"t{index}" for index in range(40)])
    columns[column] = values
    path = tmp_path / "cells.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(OfflineDataError) as refused:
        read_offline(path, id_column="transaction_id")
    assert str(refused.value) == message


def test_ids_follow_the_transaction_id_rule_and_may_not_repeat(tmp_path: Path) -> None:
    ids = [f"ok-{index}" for index in range(40)]
    ids[1], ids[2], ids[3] = "", "no spaces", "x" * 129
    ids[10] = ids[20] = ids[30] = "twice"
    header = ["transaction_id", *FEATURE_NAMES]
    rows = [[transaction_id, *row] for transaction_id, row in zip(ids, csv_rows(), strict=True)]
    path = write_csv(tmp_path / "ids.csv", header, rows)
    reason = "transaction_id is not a transaction id (1-128 of A-Z a-z 0-9 . _ : -)"
    assert problems(path, id_column="transaction_id") == [
        f"row 1 (line 3): {reason}",
        f"row 2 (line 4): {reason}",
        f"row 3 (line 5): {reason}",
        "row 10 (line 12): transaction_id repeats the id of another row",
        "row 20 (line 22): transaction_id repeats the id of another row",
        "row 30 (line 32): transaction_id repeats the id of another row",
    ]


def test_parquet_integer_ids_are_read_as_decimal_text(tmp_path: Path) -> None:
    columns = {name: pa.array(FEATURES[:, index]) for index, name in enumerate(FEATURE_NAMES)}
    columns["id"] = pa.array(range(1000, 1040))
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table(columns), path)
    assert read_offline(path, id_column="id").ids == [str(value) for value in range(1000, 1040)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read {path}: No such file or directory"),
        ("", "data.csv is empty: no header"),
        (",".join(FEATURE_NAMES) + "\n", "data.csv has no data rows"),
        (",".join(FEATURE_NAMES[1:]) + "\n1\n", "data.csv lacks required columns: Time"),
        (
            ",".join(FEATURE_NAMES) + ",V1\n",
            "data.csv: columns named twice: V1",
        ),
        (
            ",".join(FEATURE_NAMES) + "\n" + ",".join([SECRET] * 30) + "\n" + SECRET + "\n",
            "data.csv: line 3 has 1 fields, the header 30",
        ),
    ],
    ids=["absent", "empty", "header-only", "missing-column", "named-twice", "ragged"],
)
def test_a_file_that_cannot_be_used_is_refused_with_a_message(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(OfflineDataError) as refused:
        read_offline(path)
    assert str(refused.value) == message.format(path=path)
    assert SECRET not in str(refused.value)


def test_a_file_that_is_not_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_text(",".join(FEATURE_NAMES) + "\n")
    with pytest.raises(OfflineDataError, match=r"^data\.parquet is not a Parquet file$"):
        read_offline(path)


def test_messages_name_rows_and_columns_never_values(tmp_path: Path) -> None:
    rows = csv_rows()
    rows[4][8] = SECRET + "x"
    rows[5][9] = SECRET + "e999"
    table = read_offline(write_csv(tmp_path / "secret.csv", list(FEATURE_NAMES), rows))
    assert SECRET not in table.refusal()
    assert [str(row) for row in table.bad_rows()] == [
        "row 4 (line 6): V8 is not a number",
        "row 5 (line 7): V9 is not finite",
    ]


def run_train(*args: str) -> dict[str, object]:
    result = run_in_repo(sys.executable, "-m", "app.train", *args, timeout=300)
    assert result.returncode == 0, result.stderr
    out = Path(args[args.index("--out") + 1])
    return json.loads(card_path(out).read_text())  # type: ignore[no-any-return]


@needs_sample
def test_training_on_parquet_equals_training_on_the_same_csv(tmp_path: Path) -> None:
    table = read_offline(SAMPLE_CSV, label=True)
    assert table.labels is not None
    columns = {name: table.features[:, index] for index, name in enumerate(FEATURE_NAMES)}
    parquet_file = tmp_path / "sample.parquet"
    pq.write_table(pa.table({**columns, "Class": table.labels}), parquet_file)

    options = ("--trees", "20", "--no-onnx")
    from_csv = run_train("--data", str(SAMPLE_CSV), "--out", str(tmp_path / "a/m.joblib"), *options)
    from_parquet = run_train(
        "--data", str(parquet_file), "--out", str(tmp_path / "b/m.joblib"), *options
    )
    assert from_csv["data"] == {
        "source": "csv",
        "file": SAMPLE_CSV.name,
        "rows": 1000,
        "fraud_rows": 300,
    }
    assert from_parquet["data"] == {
        "source": "parquet", "file": "sample.parquet", "rows": 1000, "fraud_rows": 300,
    }  # fmt: skip
    for section in ("metrics", "feature_stats", "feature_importance", "holdout_scores"):
        assert from_parquet[section] == from_csv[section], section
    digests = [card["artifacts"]["m.joblib"]["sha256"] for card in (from_csv, from_parquet)]  # type: ignore[index]
    assert digests[0] == digests[1]


def test_training_refuses_a_parquet_file_with_a_bad_label(tmp_path: Path) -> None:
    columns = {name: FEATURES[:, index] for index, name in enumerate(FEATURE_NAMES)}
    labels = LABELS.copy()
    labels[3] = 2
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({**columns, "Class": labels}), path)
    result = run_in_repo(
        sys.executable, "-m", "app.train", "--data", path, "--out", tmp_path / "m.joblib"
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: labels.parquet: 1 of 40 rows break the rules: row 3: Class is not 0 or 1\n"
    )
    assert not (tmp_path / "m.joblib").exists()
