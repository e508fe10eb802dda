"""`push`: JSON lines on standard input, as a stream consumer pipes them; each valid one written."""

import sys
from collections.abc import Iterator
from typing import Annotated, BinaryIO, TextIO

from pydantic import BaseModel, Field, ValidationError, create_model

from app.features import TRANSACTION_ID, encode_value, row_values
from app.featurestore.wording import counted
from app.featurestore.writer import StoreWriteError, StoreWriter
from app.parsing import REPEATED_FIELD, repeated_fields
from app.schemas import SINGLE_BODY_LIMIT, Transaction

EXIT_STORE, EXIT_BAD_LINES = 1, 2
_MAX_ERRORS_PER_LINE = 3
_MAX_NAME_LENGTH = 64  # an unknown field's name is the sender's, of any length
MAX_LINE_BYTES = SINGLE_BODY_LIMIT  # a longer line is refused unread, as a longer body is

# The request body's own model (strict numbers, finite, no unknown field) plus the id.
TransactionId = Annotated[str, Field(pattern=f"^(?:{TRANSACTION_ID.pattern})$")]
PushedRecord: type[BaseModel] = create_model(
    "PushedRecord", __base__=Transaction, transaction_id=(TransactionId, ...)
)


def push(
    *,
    uri: str,
    prefix: str,
    ttl: int,
    lines: BinaryIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Exit status 0; 2 if any line was bad (the others were written); 1 when Redis fails."""
    lines, out, err = lines or sys.stdin.buffer, out or sys.stdout, err or sys.stderr
    pushed = bad = 0
    try:
        writer = StoreWriter(uri, prefix, ttl)
        try:
            writer.check()
            for number, line in enumerate(_bounded_lines(lines), start=1):
                if line is None:
                    print(f"line {number}: longer than {MAX_LINE_BYTES:,} bytes", file=err)
                    bad += 1
                    continue
                text = line.rstrip(b"\r\n")
                if not text.strip():
                    continue
                if repeated := repeated_fields(text):
                    print(f"line {number}: {_repeated(repeated)}", file=err)
                    bad += 1
                    continue
                try:
                    record = PushedRecord.model_validate_json(text)
                except ValidationError as error:
                    print(f"line {number}: {_reasons(error)}", file=err)
                    bad += 1
                    continue
                try:
                    writer.write_record(
                        record.transaction_id,  # type: ignore[attr-defined]
                        [encode_value(value) for value in row_values(record)],
                    )
                except StoreWriteError as error:
                    # A timeout does not say whether Redis applied it.
                    message = f"line {number} may not have been written (sending it again is safe)"
                    raise StoreWriteError(f"{message}: {error}") from None
                pushed += 1
        finally:
            writer.close()
    except StoreWriteError as error:
        written = "1 record was" if pushed == 1 else f"{pushed:,} records were"
        print(f"error: {error}; {written} written before it", file=err)
        return EXIT_STORE
    print(
        f"pushed {counted(pushed, 'record')} under {prefix}; {counted(bad, 'bad line')} skipped",
        file=out,
    )
    return EXIT_BAD_LINES if bad else 0


def _bounded_lines(stream: BinaryIO) -> Iterator[bytes | None]:
    """Each line, or None for one over MAX_LINE_BYTES, whose rest is read and dropped in
    pieces: one huge line must not take the consumer's memory."""
    while line := stream.readline(MAX_LINE_BYTES + 1):
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield None


def _repeated(locations: list[tuple[str | int, ...]]) -> str:
    """A line's names given twice, worded as _reasons words a problem."""
    return _listed([(location, REPEATED_FIELD) for location in locations])


def _reasons(error: ValidationError) -> str:
    """Where and what, as the API's 422 says it, without the input."""
    items = error.errors(include_input=False, include_url=False)
    return _listed([(item["loc"], item["msg"]) for item in items])


def _listed(problems: list[tuple[tuple[str | int, ...], str]]) -> str:
    worded = []
    for location, message in problems[:_MAX_ERRORS_PER_LINE]:
        where = ".".join(str(part) for part in location)[:_MAX_NAME_LENGTH]
        worded.append(f"{where}: {message}" if where else message)
    more = len(problems) - _MAX_ERRORS_PER_LINE
    return "; ".join(worded) + (f"; and {more} more" if more > 0 else "")
