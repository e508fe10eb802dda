"""Redis commands in RESP, packed by hiredis in C (redis-py's asyncio packer is pure Python)."""

import hiredis


def pack(*args: bytes | str | int) -> bytes:
    """One command, e.g. pack("HGETALL", key), as the bytes Redis reads."""
    return hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub allows one element
