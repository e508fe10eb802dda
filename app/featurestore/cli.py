"""`python -m app.featurestore materialize | push`: fill the online store."""

import argparse
import sys
from pathlib import Path

from app.featurestore.materialize import materialize
from app.featurestore.push import push
from app.featurestore.settings import store_settings

DEFAULT_TTL = 604_800  # seconds: a week
# Redis refuses an EXPIRE whose deadline overflows its clock, after MULTI has already applied
# the record's DEL and HSET: a key that never expires. Ten years is longer than any use here.
MAX_TTL = 10 * 365 * 86_400
DEFAULT_ID_COLUMN = "transaction_id"
INTERRUPTED = 130  # the shell's status for SIGINT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.featurestore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser(
        "materialize",
        help="load a CSV or Parquet file into Redis",
        description="Check every row of a CSV or Parquet file, then write each as a hash.",
    )
    load.add_argument("--source", type=Path, required=True, help="CSV or Parquet file")
    ids = load.add_mutually_exclusive_group()
    ids.add_argument(
        "--id-column",
        default=DEFAULT_ID_COLUMN,
        help=f"the column holding each row's transaction id (default {DEFAULT_ID_COLUMN})",
    )
    ids.add_argument(
        "--row-number-ids",
        action="store_true",
        help="use each row's 0-based position in the file as its id",
    )
    load.add_argument(
        "--skip-invalid",
        action="store_true",
        help="load the valid rows and report each bad one, instead of refusing the file",
    )
    stream = commands.add_parser(
        "push",
        help="write JSON lines from standard input",
        description='Each line {"transaction_id": ..., <30 features>} is checked and written.',
    )
    for command in (load, stream):
        command.add_argument(
            "--ttl", type=int, default=DEFAULT_TTL, help=f"seconds (default {DEFAULT_TTL})"
        )
        command.add_argument("--uri", help="Redis URI (default FEATURE_STORE_URI)")
        command.add_argument("--prefix", help="key prefix (default FEATURE_STORE_PREFIX)")
    args = parser.parse_args(argv)
    if not 1 <= args.ttl <= MAX_TTL:
        parser.error(f"--ttl must be from 1 to {MAX_TTL:,} seconds (ten years)")
    try:
        settings = store_settings(feature_store_uri=args.uri, feature_store_prefix=args.prefix)
    except ValueError as error:
        parser.error(_named_as_flags(str(error), args))
    if not settings.feature_store_uri:
        parser.error("no feature store: set FEATURE_STORE_URI (environment or .env) or pass --uri")
    args.uri, args.prefix = settings.feature_store_uri, settings.feature_store_prefix
    return args


def _named_as_flags(message: str, args: argparse.Namespace) -> str:
    """A bad --uri or --prefix named as the flag it came from, not as the variable."""
    for flag, variable in (("--uri", "FEATURE_STORE_URI"), ("--prefix", "FEATURE_STORE_PREFIX")):
        if getattr(args, flag.removeprefix("--")) is not None:
            message = message.replace(variable, flag)
    return message


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "push":
            return push(uri=args.uri, prefix=args.prefix, ttl=args.ttl)
        return materialize(
            args.source,
            uri=args.uri,
            prefix=args.prefix,
            ttl=args.ttl,
            id_column=None if args.row_number_ids else args.id_column,
            skip_invalid=args.skip_invalid,
        )
    except KeyboardInterrupt:
        print("interrupted; running again is safe", file=sys.stderr)
        return INTERRUPTED
