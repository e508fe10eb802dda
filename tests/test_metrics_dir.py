"""app.metrics_dir: which directory a worker shares, and which directories are stale."""

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from app import metrics_dir


@pytest.fixture
def tmpdir_(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp dir of this process (tempfile caches it) and of the children it spawns."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv(metrics_dir.MULTIPROC_ENV, raising=False)
    return tmp_path


def identity(pid: int) -> str:
    start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    return f"{pid}-{start}"


def directory_a_worker_uses(queue: "multiprocessing.Queue[str | None]") -> None:
    metrics_dir.use_supervisor_dir()
    queue.put(os.environ.get(metrics_dir.MULTIPROC_ENV))


def spawn_workers(count: int) -> list[str | None]:
    context = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
    queue = context.Queue()
    workers = [context.Process(target=directory_a_worker_uses, args=(queue,)) for _ in range(count)]
    for worker in workers:
        worker.start()
    found = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    return found


def test_workers_of_one_supervisor_share_its_directory(tmpdir_: Path) -> None:
    expected = str(tmpdir_ / f"fraud-metrics-{identity(os.getpid())}")
    assert spawn_workers(2) == [expected, expected]
    assert oct(Path(expected).stat().st_mode & 0o777) == "0o700"


def test_a_configured_directory_is_kept(tmpdir_: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(metrics_dir.MULTIPROC_ENV, str(tmpdir_ / "operator"))
    assert spawn_workers(1) == [str(tmpdir_ / "operator")]
    assert list(tmpdir_.glob("fraud-metrics-*")) == []


def test_a_single_process_sets_nothing(tmpdir_: Path) -> None:
    metrics_dir.use_supervisor_dir()  # pytest itself is no multiprocessing child
    assert metrics_dir.MULTIPROC_ENV not in os.environ
    assert list(tmpdir_.glob("fraud-metrics-*")) == []


def test_directories_of_exited_supervisors_are_removed(tmpdir_: Path) -> None:
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                            capture_output=True, text=True)  # fmt: skip
    mine = identity(os.getpid())
    dead = tmpdir_ / f"fraud-metrics-{exited.stdout.strip()}-1234"
    reused = tmpdir_ / f"fraud-metrics-{os.getpid()}-1"  # our pid, another process's start time
    live = tmpdir_ / f"fraud-metrics-{mine}"
    unrelated = tmpdir_ / "fraud-metrics-notes"
    for directory in (dead, reused, live, unrelated):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"")
    metrics_dir.remove_stale()
    assert sorted(tmpdir_.iterdir()) == sorted([live, unrelated])


def test_a_link_in_its_place_is_not_used(tmpdir_: Path) -> None:
    elsewhere = tmpdir_ / "elsewhere"
    elsewhere.mkdir()
    (tmpdir_ / f"fraud-metrics-{identity(os.getpid())}").symlink_to(elsewhere)
    assert metrics_dir.create_for(os.getpid()) is None
