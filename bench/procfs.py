"""What the kernel knows about the server's processes: CPU time, RSS and open connections.

Read straight from /proc (Linux only) so the benchmark adds no dependency and no agent process.
"""

import os
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_ESTABLISHED = "01"


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces or parens)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # the process ended meanwhile
        return None
    return text.rpartition(")")[2].split()


def group_pids(pgid: int) -> list[int]:
    """Every live process in a process group (the server runs in its own session)."""
    pids = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            # fields[0] is the state, [1] the parent, [2] the process group.
            if fields and fields[2] == str(pgid) and fields[0] != "Z":
                pids.append(int(entry.name))
    return sorted(pids)


def worker_pids(parent: int) -> list[int]:
    """uvicorn's workers: the parent's children started by multiprocessing's spawn."""
    workers = []
    for pid in group_pids(parent):
        fields = _stat_fields(pid)
        if fields and fields[1] == str(parent) and "spawn_main" in _cmdline(pid):
            workers.append(pid)
    return workers


def _cmdline(pid: int) -> str:
    try:
        return (
            (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def cpu_seconds(pids: list[int]) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds of each process, all its threads (live or ended) included."""
    seconds = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            # utime and stime are the 14th and 15th fields of stat, [11] and [12] here.
            seconds[pid] = (int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS)
    return seconds


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot, over all cores (from /proc/stat).

    Compared with the server's and wrk's own time, it shows how much other work shared the
    cores during a measurement: on a shared machine that is the main source of noise.
    """
    fields = (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def rss_mib(pid: int) -> float | None:
    """Resident set size of one process, in MiB."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _established_inodes(port: int) -> set[str]:
    """Socket inodes of established TCP connections whose local port is `port` (server side)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local address "0100007F:1F90", state "01" = ESTABLISHED, inode in column 10.
            if fields[3] == _ESTABLISHED and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(fields[9])
    return inodes


def connections_per_pid(port: int, pids: list[int]) -> dict[int, int]:
    """How many established connections to `port` each process holds open right now."""
    wanted = {f"socket:[{inode}]" for inode in _established_inodes(port)}
    counts = {}
    for pid in pids:
        count = 0
        fd_dir = PROC / str(pid) / "fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                count += os.readlink(fd_dir / name) in wanted
            except OSError:  # closed between listdir and readlink
                continue
        counts[pid] = count
    return counts
