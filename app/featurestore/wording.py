"""Counts in the store commands' messages, read by people and grepped by scripts."""


def counted(count: int, noun: str) -> str:
    """`1 record`, `2 records`, `1,000 records`: the count with thousands separators, and the
    noun in the singular for exactly one."""
    return f"{count:,} {noun if count == 1 else noun + 's'}"
