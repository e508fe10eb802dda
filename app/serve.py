"""The start command: validate the configuration, then hand over to uvicorn's worker supervisor.

uvicorn restarts a worker that dies, so a configuration error found inside the workers would loop;
it is found here, in the parent, before any worker starts, and the process exits non-zero.
"""

import argparse
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess, multiprocess

from app import metrics_dir
from app.config import Settings, get_settings_or_exit
from app.conversion import CONVERSION_DIR_ENV, convert_for_workers
from app.logs import log_config

APP = "app.main:app"
HTTP_PROTOCOL = "app.protocol:BoundedHttpToolsProtocol"  # a string: the workers import it, not us


class ReusePortWorker(multiprocess.Process):
    """A uvicorn worker that listens on its own SO_REUSEPORT socket.

    With one shared socket, whichever worker wakes first can take every keep-alive connection
    (one core busy, the other idle: PERF-NOTES). With a socket each, the kernel spreads new
    connections over the workers by hashing their addresses.
    """

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # runs in the worker
        super().target([bind_reuse_port(self.config.host, self.config.port, self.config.backlog)])


def bind_reuse_port(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def port_is_free(host: str, port: int) -> bool:
    """Checked in the parent: workers that cannot bind would only say so one by one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


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
        target=convert_for_workers,
        args=(settings.model_path, settings.model_sha256, directory),
        daemon=True,
    )
    child.start()
    child.join(timeout=600)
    if child.is_alive():
        child.kill()
    os.environ[CONVERSION_DIR_ENV] = str(directory)
    return directory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout-keep-alive", type=int, default=75)
    parser.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=20,
        help="seconds a SIGTERM waits for requests under way before cancelling them (20)",
    )
    parser.add_argument(
        "--balance",
        choices=("reuseport", "shared"),
        default="reuseport",
        help="reuseport: a listening socket per worker (default); shared: uvicorn's single socket",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = get_settings_or_exit()
    if not port_is_free(args.host, args.port):
        print(f"cannot listen on {args.host}:{args.port}: address in use", file=sys.stderr)
        return 2
    metrics_path, own_metrics_path = prepare_metrics_dir()
    conversion_dir = convert_once_for_workers(settings)
    config = uvicorn.Config(
        APP,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
        access_log=False,
        log_config=log_config(args.log_level.upper()),
        loop="uvloop",
        http=HTTP_PROTOCOL,
        server_header=False,
    )
    try:
        if args.workers == 1:
            uvicorn.Server(config).run()
        elif args.balance == "reuseport":
            # uvicorn's supervisor (restarts, signals) with our worker class; uvicorn is pinned.
            multiprocess.Process = ReusePortWorker  # type: ignore[misc]
            Multiprocess(config, sockets=[]).run()
        else:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        if own_metrics_path:
            shutil.rmtree(metrics_path, ignore_errors=True)
        if conversion_dir is not None:
            shutil.rmtree(conversion_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
