"""Code quality gates that run with the suite: ruff lint and format, mypy on app/."""

import sys

import pytest

from tests.server import run_in_repo


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "app"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_passes(command: list[str]) -> None:
    result = run_in_repo(sys.executable, "-m", *command, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
