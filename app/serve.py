"""The start command: validate the configuration, then hand over to uvicorn's worker supervisor.

uvicorn restarts a worker that dies, so a configuration error found inside the workers would loop;
it is found here, in the parent, before any worker starts, and the process exits non-zero.
"""

import argparse
import asyncio
import errno
import functools
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess, multiprocess

from app import metrics_dir
from app.config import Settings, get_settings_or_exit, os_error_reason
from app.conversion import CONVERSION_DIR_ENV, convert_in_child
from app.logs import log_config

APP = "app.main:app"
# Strings: the workers import them, not the start command.
HTTP_PROTOCOLS = {"bounded": "app.protocol:BoundedHttpToolsProtocol", "httptools": "httptools"}
# Of the exit bound, what the workers' grace period leaves for cancelling what is still stuck,
# the app's shutdown and the processes' exit; and how late uvicorn's supervisor sees a signal.
EXIT_RESERVE = 2
SIGNAL_POLL = 0.5

log = logging.getLogger("uvicorn.error")


class ReusePortWorker(multiprocess.Process):
    """A uvicorn worker that listens on its own SO_REUSEPORT socket.

    With one shared socket, whichever worker wakes first can take every keep-alive connection
    (one core busy, the other idle: PERF-NOTES). With a socket each, the kernel spreads new
    connections over the workers by hashing their addresses.
    """

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # runs in the worker
        super().target([bind_reuse_port(self.config.host, self.config.port, self.config.backlog)])

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


class DrainingServer(uvicorn.Server):
    """A worker's server that accepts what the kernel queued for it before closing its socket.

    Closing a listening socket resets the connections queued on it, whose clients have connected
    and sent a request; accepted, they are answered like the worker's other connections.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        queued = [connection for sock in sockets or [] for connection in accept_queued(sock)]
        for server in self.servers:  # then closed at once: nothing more can queue
            server.close()
        for sock in sockets or []:
            sock.close()
        protocol = functools.partial(
            self.config.http_protocol_class,  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        loop = asyncio.get_running_loop()
        for connection in queued:
            await loop.connect_accepted_socket(protocol, connection)
        await super().shutdown(sockets)


def accept_queued(listener: socket.socket) -> list[socket.socket]:
    listener.setblocking(False)
    accepted: list[socket.socket] = []
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:  # BlockingIOError: the queue is empty
            return accepted
        accepted.append(connection)


def bind_reuse_port(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def why_not_listen(host: str, port: int) -> str | None:
    """Why the workers could not listen there, or None: checked in the parent, as workers that
    cannot bind would only say so one by one, and be restarted."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror:
            return "the host name does not resolve to an address"
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return "address in use"
            if error.errno == errno.EADDRNOTAVAIL:
                return "not an address of this machine"
            return os_error_reason(error)
    return None


class Supervisor(Multiprocess):
    """uvicorn's supervisor, whose wait for its workers at shutdown ends at the exit bound.

    A worker normally exits within its grace period; one that does not (a thread that cannot be
    cancelled keeps the interpreter alive) is killed, so the service still exits in time.
    """

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], bound: int) -> None:
        super().__init__(config, sockets)
        self.bound = bound

    def join_all(self) -> None:
        deadline = time.monotonic() + self.bound - SIGNAL_POLL
        for worker in self.processes:
            worker.process.join(max(deadline - time.monotonic(), 0))
            if worker.process.exitcode is None:
                log.error("worker [%s] still running at the shutdown bound: killed", worker.pid)
                worker.kill()
                worker.process.join()


def worker_grace(bound: int) -> int:
    """How long a worker waits for requests under way, for the whole service to exit in `bound`."""
    return max(bound - math.ceil(min(EXIT_RESERVE, bound / 4)), 0)


def prepare_metrics_dir() -> tuple[Path, bool]:
    """PROMETHEUS_MULTIPROC_DIR for the workers, set before they start; True if it is ours.

    An operator's directory is emptied of an earlier run's files; otherwise this supervisor's own
    directory (the one its workers would find by themselves, see app.metrics_dir).
    """
    configured = os.environ.get(metrics_dir.MULTIPROC_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        return directory, False
    directory = metrics_dir.create_for(os.getpid()) or Path(tempfile.mkdtemp(prefix="fraud-"))
    os.environ[metrics_dir.MULTIPROC_ENV] = str(directory)
    return directory, True


def convert_once_for_workers(settings: Settings) -> Path | None:
    """Convert a .joblib to ONNX once, in a child that exits, for every worker to pick up.

    Workers then never unpickle the artifact nor import scikit-learn and skl2onnx (~120 MiB
    each); a worker that finds no verdict (the child failed) converts for itself.
    """
    if settings.model_path.suffix.lower() != ".joblib" or settings.model_engine == "sklearn":
        return None
    directory = Path(tempfile.mkdtemp(prefix="fraud-conversion-"))
    child = multiprocessing.get_context("spawn").Process(
        target=convert_in_child,
        args=(settings.model_path, settings.model_sha256, directory),
        daemon=True,
    )
    child.start()
    child.join(timeout=600)
    if child.is_alive():
        child.kill()
    os.environ[CONVERSION_DIR_ENV] = str(directory)
    return directory


def integer_from(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`, or a usage error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=integer_from(1, 65535), default=8888)
    parser.add_argument("--workers", type=integer_from(1, 64), default=2)
    parser.add_argument("--timeout-keep-alive", type=integer_from(1, 3600), default=75)
    parser.add_argument(
        "--timeout-graceful-shutdown",
        type=integer_from(1, 3600),
        default=20,
        help="seconds within which a SIGTERM ends the service: requests under way are finished "
        "first, and those still stuck near the end are cancelled (20)",
    )
    parser.add_argument(
        "--balance",
        choices=("reuseport", "shared"),
        default="reuseport",
        help="reuseport: a listening socket per worker (default); shared: uvicorn's single socket",
    )
    parser.add_argument(
        "--http",
        choices=tuple(HTTP_PROTOCOLS),
        default="bounded",
        help="bounded: uvicorn's httptools protocol with the contract's header and body limits "
        "and timeouts (default); httptools: uvicorn's own, without them (to compare)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = get_settings_or_exit()
    if problem := why_not_listen(args.host, args.port):
        print(f"cannot listen on {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 2
    metrics_path, own_metrics_path = prepare_metrics_dir()
    conversion_dir = convert_once_for_workers(settings)
    config = uvicorn.Config(
        APP,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_graceful_shutdown=worker_grace(args.timeout_graceful_shutdown),
        access_log=False,
        log_config=log_config(args.log_level.upper()),
        loop="uvloop",
        http=HTTP_PROTOCOLS[args.http],
        server_header=False,
    )
    try:
        if args.workers == 1:
            # uvicorn raises the signal again once it has shut down; this handler then lets the
            # start command return 0 instead of dying of the SIGTERM it already handled.
            signal.signal(signal.SIGTERM, lambda *_: None)
            # Our socket, not one uvicorn opens itself: the draining server accepts what the
            # kernel queued on it before closing it, as each worker of several does.
            DrainingServer(config).run(sockets=[config.bind_socket()])
        elif args.balance == "reuseport":
            # uvicorn's supervisor (restarts, signals) with our worker class; uvicorn is pinned.
            multiprocess.Process = ReusePortWorker  # type: ignore[misc]
            Supervisor(config, [], args.timeout_graceful_shutdown).run()
        else:
            Supervisor(config, [config.bind_socket()], args.timeout_graceful_shutdown).run()
    finally:
        if own_metrics_path:
            shutil.rmtree(metrics_path, ignore_errors=True)
        if conversion_dir is not None:
            shutil.rmtree(conversion_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
