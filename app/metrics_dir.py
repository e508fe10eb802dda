"""The prometheus multiprocess directory: one per supervisor, which its workers find by themselves.

prometheus_client picks its value class (in memory, or files in PROMETHEUS_MULTIPROC_DIR) when it
is first imported, so app.metrics calls `use_supervisor_dir()` before importing it. The directory
is named by the supervisor's pid and start time: a later run, even one that reuses the pid, gets
a fresh directory, and a run's workers clean up the directories of supervisors that have exited.
"""

import multiprocessing
import os
import shutil
import stat
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "fraud-metrics-"


def use_supervisor_dir() -> None:
    """In a worker of uvicorn's supervisor (`--workers N`), share the supervisor's directory.

    Nothing to do when the directory is configured (by an operator, or by `python -m app`) or when
    this is a single process (plain `uvicorn app.main:app`), whose own registry is the whole story.
    """
    parent = multiprocessing.parent_process()
    if os.environ.get(MULTIPROC_ENV) or parent is None or parent.pid is None:
        return
    directory = create_for(parent.pid)
    if directory is not None:
        os.environ[MULTIPROC_ENV] = str(directory)


def create_for(pid: int) -> Path | None:
    """The (new or existing) directory of supervisor `pid`; None if it cannot be made safely."""
    remove_stale()
    name = _identity(pid)
    if name is None:
        return None  # no /proc, or the supervisor is gone
    directory = Path(tempfile.gettempdir()) / f"{PREFIX}{name}"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        info = directory.lstat()
    except OSError:
        return None
    # The temp dir is shared: never write into a directory (or a link) someone else put there.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return None
    return directory


def remove_stale() -> None:
    """Remove our directories whose supervisor has exited: their counts belong to no live run."""
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = path.name.removeprefix(PREFIX).split("-", 1)[0]
        if not pid.isdigit() or _identity(int(pid)) == path.name.removeprefix(PREFIX):
            continue
        try:
            owned = path.lstat().st_uid == os.getuid() and path.is_dir()
        except OSError:
            continue
        if owned:
            shutil.rmtree(path, ignore_errors=True)


def _identity(pid: int) -> str | None:
    """`pid-starttime` (clock ticks after boot, from /proc), or None when the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return f"{pid}-{fields[19]}"  # field 22 of proc(5); fields[0] is field 3, the state
