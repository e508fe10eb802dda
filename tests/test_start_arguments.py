"""The start command's own arguments: refused before anything starts, in one line, no traceback."""

import socket

import pytest

from app.serve import main, parse_args, why_not_listen
from tests.server import free_port


@pytest.mark.parametrize(
    ("argument", "value", "rule"),
    [
        ("--workers", "-3", "from 1 to 64"),  # uvicorn's supervisor then started no worker, forever
        ("--workers", "0", "from 1 to 64"),  # uvicorn ran one
        ("--port", "99999", "from 1 to 65535"),  # a traceback from bind()
        ("--port", "-1", "from 1 to 65535"),
        ("--port", "http", "from 1 to 65535"),
        ("--timeout-graceful-shutdown", "-1", "from 1 to 3600"),  # every request killed at once
        ("--timeout-keep-alive", "-5", "from 1 to 3600"),  # every connection closed after one
    ],
)
def test_a_bad_argument_is_a_usage_error_naming_it(
    capsys: pytest.CaptureFixture[str], argument: str, value: str, rule: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args([argument, value])
    assert exited.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == f"python -m app: error: argument {argument}: must be an integer {rule}"


def test_the_bounds_themselves_are_accepted() -> None:
    args = parse_args(["--port", "65535", "--workers", "1", "--timeout-graceful-shutdown", "1"])
    assert (args.port, args.workers, args.timeout_graceful_shutdown) == (65535, 1, 1)


def test_why_the_service_cannot_listen_is_said_as_it_is() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert why_not_listen("127.0.0.1", port) == "address in use"
    assert why_not_listen("127.0.0.1", free_port()) is None
    assert why_not_listen("nosuch.invalid", free_port()) == (
        "the host name does not resolve to an address"
    )
    assert why_not_listen("192.0.2.1", free_port()) == "not an address of this machine"


def test_the_start_command_says_so_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("API_KEY", "k" * 32)
    port = free_port()
    assert main(["--host", "192.0.2.1", "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        f"cannot listen on 192.0.2.1:{port}: not an address of this machine\n"
    )
